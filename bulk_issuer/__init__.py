"""Issue Navigatr digital badges to whole cohorts, fast and safely.

```python
summary = await bulk_issuer.issue_badges(
    "cohort.csv", badge_id=51, auth=bulk_issuer.PersonalAccessToken(token)
)
```
"""

from __future__ import annotations

from importlib import metadata as _metadata

from .auth import CredentialsRejected, PasswordAuth, PersonalAccessToken, Secret
from .client import DEFAULT_BASE_URL
from .engine import BadgeIssuer, FatalError, issue_badges
from .journal import Journal
from .learners import InputError, Learner, Problem, Row
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
    "FatalError",
    "InputError",
    "Journal",
    "Learner",
    "Outcome",
    "Pacer",
    "PasswordAuth",
    "PersonalAccessToken",
    "Problem",
    "Rate",
    "ReadOptions",
    "RetryPolicy",
    "Row",
    "Secret",
    "Status",
    "Summary",
    "__version__",
    "issue_badges",
]
