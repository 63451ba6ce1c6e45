"""Outcomes: one record per learner, the run's summary, and the structured log events."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import structlog

__all__ = ["Outcome", "Status", "Summary", "flag_notes", "json_lines_logger", "redactor"]


class Status(enum.StrEnum):
    """What became of one learner in this run."""

    ISSUED = "issued"
    HELD = "already_held"
    SKIPPED = "skipped"
    FAILED = "failed"
    INVALID = "invalid"
    #: An earlier send went unanswered and the server could not say whether it was issued.
    UNCONFIRMED = "unconfirmed"
    #: Not sent: the run stopped first (Ctrl-C, a fatal answer, the API unavailable).
    NOT_ATTEMPTED = "not_attempted"


#: The stable event name for each status.
EVENTS = {
    Status.ISSUED: "badge.issued",
    Status.HELD: "badge.already_held",
    Status.SKIPPED: "learner.skipped",
    Status.FAILED: "badge.failed",
    Status.INVALID: "learner.invalid",
    Status.UNCONFIRMED: "badge.unconfirmed",
    Status.NOT_ATTEMPTED: "learner.not_attempted",
}

#: The statuses after which the learner holds the badge.
HOLDS = frozenset({Status.ISSUED, Status.HELD, Status.SKIPPED})


#: What each flag on an outcome means, for results files.
FLAG_NOTES = {
    "verified": "an earlier attempt went unanswered; the server confirmed it had issued",
    "resent_unverified": (
        "sent again without checking: the server could not be asked whether an unanswered "
        "attempt had issued it; look for a second claim email"
    ),
}


def flag_notes(flags: Iterable[str]) -> str:
    """The flags of an outcome in words."""
    return "; ".join(FLAG_NOTES.get(flag, flag) for flag in flags if flag)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one input row.

    Args:
        row: the row number as a spreadsheet shows the input (header = row 1).
        email: the address as written in the input.
        badge_id: the badge it was for.
        status: issued, already held, skipped (done by an earlier run), failed, invalid,
            unconfirmed or not attempted.
        attempts: issue calls sent for this learner, over all runs.
        http_status: the last answer's status, if any.
        reason: why it failed, was invalid or skipped.
        assertion_id: the server's id for the issued badge, when known.
        fields: the row's own columns, for a failures file.
        flags: notes such as `verified` or `resent_unverified`.
        queued: it needed a request in this run (the progress bar counts only these).
    """

    row: int
    email: str
    badge_id: int | None
    status: Status
    attempts: int = 0
    http_status: int | None = None
    reason: str | None = None
    assertion_id: str | None = None
    fields: dict[str, str] = field(default_factory=dict, repr=False)
    flags: tuple[str, ...] = ()
    queued: bool = False

    def event(self) -> dict[str, Any]:
        """The flat key/value fields of this outcome's log event.

        Returns:
            row, email, badge_id, attempts, http_status, reason, assertion_id (and flags).
        """
        return {
            "row": self.row,
            "email": self.email,
            "badge_id": self.badge_id,
            "attempts": self.attempts,
            "http_status": self.http_status,
            "reason": self.reason,
            "assertion_id": self.assertion_id,
            **({"flags": list(self.flags)} if self.flags else {}),
        }


@dataclass(slots=True)
class Summary:
    """The counts of a run. `ok` is true when every learner now holds the badge.

    Every row of the input is in exactly one of the first seven counts.

    Attributes:
        issued: learners issued the badge by this run.
        already_held: learners who held it already (looked up on the server).
        skipped: learners done by an earlier run or call (the journal says so).
        failed: learners the server refused, or whose sends were all used up.
        invalid: rows not sent: invalid, duplicates, or without a badge.
        unconfirmed: learners whose send went unanswered and the server could not be
            asked; the next run asks it first.
        not_attempted: learners not sent because the run stopped first.
        retries: requests sent again (after a 429, a 5xx, a dropped connection, ...).
        rate_limited: 429 answers received.
        requests: requests sent in all (logins and look-ups included).
        token_calls: logins (`POST /v1/token`).
        elapsed: seconds the run took.
        stopped: why the run stopped early, in words; None when it did not.
        interrupted: the run was stopped by `stop()` (Ctrl-C) rather than by the server.
    """

    issued: int = 0
    already_held: int = 0
    skipped: int = 0
    failed: int = 0
    invalid: int = 0
    unconfirmed: int = 0
    not_attempted: int = 0
    retries: int = 0
    rate_limited: int = 0
    requests: int = 0
    token_calls: int = 0
    elapsed: float = 0.0
    stopped: str | None = None
    interrupted: bool = False

    @property
    def total(self) -> int:
        """Rows accounted for: each input row is in exactly one count."""
        return sum(getattr(self, name) for name in _COUNTERS.values())

    @property
    def ok(self) -> bool:
        """Every learner holds the badge: nothing failed, nothing invalid, nothing left."""
        return not (
            self.failed
            or self.invalid
            or self.unconfirmed
            or self.not_attempted
            or self.stopped
            or self.interrupted
        )

    @property
    def rate(self) -> float:
        """Badges issued per second of the run."""
        return self.issued / self.elapsed if self.elapsed > 0 else 0.0

    def count(self, outcome: Outcome) -> None:
        """Add one outcome to its count.

        Args:
            outcome: a learner's outcome.
        """
        name = _COUNTERS[outcome.status]
        setattr(self, name, getattr(self, name) + 1)

    def as_dict(self) -> dict[str, Any]:
        """The counts as plain values, for the `run.finished` event and JSON output.

        Returns:
            Each count by name, with `elapsed` and `rate` (badges issued per second).
        """
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return {**values, "elapsed": round(self.elapsed, 3), "rate": round(self.rate, 3)}


#: The Summary field that counts each status.
_COUNTERS = {
    Status.ISSUED: "issued",
    Status.HELD: "already_held",
    Status.SKIPPED: "skipped",
    Status.FAILED: "failed",
    Status.INVALID: "invalid",
    Status.UNCONFIRMED: "unconfirmed",
    Status.NOT_ATTEMPTED: "not_attempted",
}

Processor = Callable[[Any, str, MutableMapping[str, Any]], MutableMapping[str, Any]]


def redactor(secrets: Callable[[], Iterable[str]]) -> Processor:
    """A structlog processor that masks any known secret wherever it appears in an event.

    Secrets are kept out of events by construction; this is the second lock on the door.
    """

    def scrub(value: Any, known: list[str]) -> Any:
        if isinstance(value, str):
            for secret in known:
                if secret in value:
                    value = value.replace(secret, "********")
            return value
        if isinstance(value, dict):
            return {k: scrub(v, known) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [scrub(v, known) for v in value]
        return value

    def process(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        known = [s for s in secrets() if s]
        if not known:
            return event
        for name, value in list(event.items()):
            event[name] = scrub(value, known)
        return event

    return process


def json_lines_logger(stream: TextIO, secrets: Callable[[], Iterable[str]]) -> Any:
    """A structlog logger writing one JSON object per line to `stream`, secrets masked.

    Built without touching structlog's global configuration: a program that embeds the
    library keeps its own.
    """
    return structlog.wrap_logger(
        structlog.WriteLogger(stream),
        processors=[
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.add_log_level,
            redactor(secrets),
            structlog.processors.JSONRenderer(
                serializer=lambda obj, **kw: json.dumps(obj, ensure_ascii=False, default=str)
            ),
        ],
    )
