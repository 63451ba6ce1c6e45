"""Issue Navigatr digital badges to whole cohorts, fast and safely.

A script issues a cohort (a CSV, JSON Lines or workbook file, or Learner objects or dicts)
and gets the counts back; every row ends in exactly one count of the `Summary`:

    summary = bulk_issuer.issue_badges_sync(
        "cohort.csv", badge_id=51, auth=bulk_issuer.PersonalAccessToken(token),
        journal="cohort-51.db",  # a rerun resumes and sends nobody twice
    )

In async code, `await bulk_issuer.issue_badges(...)` takes the same arguments.

A service issuing badges as course completions arrive keeps one `BadgeIssuer` open and
calls it from as many tasks as it likes; they share its pacer, token, connections and
journal, and each learner is issued exactly once:

    async with bulk_issuer.BadgeIssuer(auth=auth, journal="lms.db") as issuer:
        outcome = await issuer.issue(learner, badge_id=51)   # an `Outcome`

The library prints nothing unless the application configured structlog or logging, or
passes `logger=` or `on_event=` (the typed events of `bulk_issuer.events`). Every error
it raises on purpose derives from `Error`: `InputError` (`.path`, `.row`),
`JournalError` (`.path`), and `StoppedError` (`.summary`) with `FatalError` (credentials
or badge refused) and `UnavailableError` (`.host`, `.retry_after`; a rerun resumes).
The README and the `examples/` folder show both uses in full.
"""

from __future__ import annotations

import logging as _logging
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

# The library's standard loggers (`bulk_issuer`, `bulk_issuer.coordination`) print nothing
# unless the application gives logging a handler: without this one, Python's last-resort
# handler printed a failed store write's traceback to stderr (the usual NullHandler of a
# library; the application's own configuration is left alone).
_logging.getLogger(__name__).addHandler(_logging.NullHandler())

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
