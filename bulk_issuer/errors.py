"""The errors bulk_issuer raises on purpose: one family, each with what a caller can act on.

Every one derives from `Error`, and each says which exit status the command line gives
it (`exit_status`): the one table of failures to exit codes lives here.

```
Error
├── InputError          the input cannot be read or is not what it must be     (2)
├── JournalError        the journal cannot be used (in use by another run)     (2)
└── StoppedError        a run stopped early; `.summary` says what was done
    ├── FatalError      the server refused the credentials or the badge        (3)
    │   └── CredentialsRejected
    └── UnavailableError  the API (or coordinator) could not be reached or
                          stayed unavailable; a rerun resumes                  (4)
```
Anything else that escapes is a bug: exit 70.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from .outcomes import Summary

__all__ = [
    "EXIT_BUG",
    "EXIT_FATAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_SOME_FAILED",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "CredentialsRejected",
    "Error",
    "FatalError",
    "InputError",
    "JournalError",
    "StoppedError",
    "UnavailableError",
    "exit_status",
]

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_FATAL = 3
EXIT_UNAVAILABLE = 4
EXIT_BUG = 70
EXIT_INTERRUPTED = 130


class Error(Exception):
    """The base of every error bulk_issuer raises on purpose.

    Catch it to catch them all; `str(error)` says what happened and what to do. Wrong
    arguments (a rate that cannot be read, `workers=0`) raise `ValueError` instead.

    Attributes:
        exit_status: the command line's exit status for it.
    """

    exit_status: ClassVar[int] = EXIT_BUG


class InputError(Error, ValueError):
    """The input cannot be read, or is not what it must be. Nothing was sent because of it.

    Attributes:
        row: the row it concerns (as a spreadsheet numbers them), when there is one.
        path: the file it concerns, when there is one.
    """

    exit_status = EXIT_USAGE

    def __init__(self, message: str, *, row: int | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.row = row
        self.path = path


class JournalError(Error, ValueError):
    """The journal cannot be used: in use by another run, or not a journal.

    Attributes:
        path: the journal's file.
    """

    exit_status = EXIT_USAGE

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class StoppedError(Error):
    """A run stopped before every learner was settled.

    Attributes:
        summary: what was done before the stop (None when the run never started).
    """

    def __init__(self, message: str, summary: Summary | None = None) -> None:
        super().__init__(message)
        self.summary = summary


class FatalError(StoppedError):
    """The server refused the credentials or the badge; nothing more can be sent.

    Attributes:
        summary: what was done before the stop (None when the run never started).
    """

    exit_status = EXIT_FATAL


class CredentialsRejected(FatalError):
    """The server refused the credentials: a refused login, or a 401 a new token did not cure.

    Attributes:
        summary: what was done before the stop (None when the run never started).
    """


class UnavailableError(StoppedError):
    """The API could not be reached, or stayed unavailable; a rerun resumes.

    Attributes:
        summary: what was done before the stop (None when the run never started).
        host: the host that could not be reached, or that asked to wait.
        retry_after: seconds after which the server said to come back, when it said.
    """

    exit_status = EXIT_UNAVAILABLE

    def __init__(
        self,
        message: str,
        summary: Summary | None = None,
        *,
        host: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, summary)
        self.host = host
        self.retry_after = retry_after


def exit_status(exc: BaseException) -> int:
    """The command line's exit status for an exception that ended a run."""
    if isinstance(exc, Error):
        return exc.exit_status
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_BUG
