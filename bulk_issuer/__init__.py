"""Issue Navigatr digital badges to whole cohorts, fast and safely.

```python
import bulk_issuer

summary = bulk_issuer.issue_badges_sync(
    "cohort.csv", badge_id=51, auth=bulk_issuer.PersonalAccessToken(token)
)
```
"""

from __future__ import annotations

from importlib import metadata as _metadata

from .api import issue_badges, issue_badges_sync
from .auth import PasswordAuth, PersonalAccessToken, Secret
from .client import DEFAULT_BASE_URL
from .engine import BadgeIssuer, Preflight
from .errors import (
    CredentialsRejected,
    Error,
    FatalError,
    InputError,
    JournalError,
    StoppedError,
    UnavailableError,
)
from .events import Event, EventSink
from .journal import Journal
from .learners import Learner, Problem, Row
from .outcomes import Outcome, Status, Summary
from .pacing import Pacer, Rate
from .readers import ReadOptions
from .retry import RetryPolicy

try:
    __version__ = _metadata.version("bulk-issuer")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "DEFAULT_BASE_URL",
    "BadgeIssuer",
    "CredentialsRejected",
    "Error",
    "Event",
    "EventSink",
    "FatalError",
    "InputError",
    "Journal",
    "JournalError",
    "Learner",
    "Outcome",
    "Pacer",
    "PasswordAuth",
    "PersonalAccessToken",
    "Preflight",
    "Problem",
    "Rate",
    "ReadOptions",
    "RetryPolicy",
    "Row",
    "Secret",
    "Status",
    "StoppedError",
    "Summary",
    "UnavailableError",
    "__version__",
    "issue_badges",
    "issue_badges_sync",
]
