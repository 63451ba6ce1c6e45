"""The per-learner state machine: every decision about one learner, and no I/O.

The engine feeds it what happened (an answer to the issue call, no answer, a lookup's
result) and it returns what to do next: send the issue call, verify with the server
whether an earlier send was processed, wait, or finish with a status. Whoever owns the
sockets (`engine.py`) carries the actions out, in the spirit of h11 and httpx's auth flow.

Replies that prove the request was not processed (401, 429, 503, a connection that never
opened) are retried on the request path (`retry.py`) before they reach this machine; what
arrives here is a final answer to one send, or the news that a send went unanswered.

```
start ──► Send ──► 2xx, JSON (the assertion) ───────► Finish issued
 │         │  ├──► 409 "already has it" ────────────► Finish already held
 │         │  ├──► other 409 ──► Verify ─ held ─────► Finish already held
 │         │  │                          └ not held ► Finish failed (the 409's detail)
 │         │  ├──► 4xx (400, 422, ...) ─────────────► Finish failed
 │         │  ├──► 401 / 403 / 404 (badge unknown) ─► Finish not attempted, stop the run
 │         │  │    (a row's own badge: the executor fails its learners instead)
 │         │  └──► no answer, 500/502/504, ──► Verify
 │         │       a 2xx, not the assertion   ├ held ──────► Finish issued (verified)
 │         │                                  ├ not held ──► Wait ──► Send
 │         │                                  └ can't tell ► Finish unconfirmed
 └─ earlier send unanswered ──► Verify                        (or resend, if allowed)
```
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from .outcomes import Status
from .retry import RetryPolicy

__all__ = [
    "Action",
    "Finish",
    "LearnerFlow",
    "Lookup",
    "Send",
    "Stop",
    "Verify",
    "Wait",
]

#: How a 409 says the learner already has the badge (Navigatr does not document its
#: wording): "already has", "already holds", "already issued", "already awarded",
#: "already been issued", "duplicate assertion", "already exists". Believed only where
#: the badge's list cannot tell: a 409 is always looked up first.
_HELD_409 = re.compile(
    r"already\s+(has|have|holds?|issued|awarded|received|exists?"
    r"|been\s+(issued|awarded|given|granted|received))"
    r"|duplicate\s+(assertion|recipient|award|badge)",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Send:
    """Send the issue call (the engine marks the learner `sending` and commits first)."""


@dataclass(frozen=True, slots=True)
class Verify:
    """Ask the server whether the learner holds the badge."""

    why: str


@dataclass(frozen=True, slots=True)
class Wait:
    """Wait `seconds` (unless the run is stopping), then do `then`."""

    seconds: float
    why: str
    then: Send | Verify


@dataclass(frozen=True, slots=True)
class Stop:
    """Why the whole run must stop: the server refused the credentials or the badge.

    For a refused badge (403, 404) the message follows the badge's name: "badge 51 ...".
    """

    message: str
    http_status: int


@dataclass(frozen=True, slots=True)
class Finish:
    """The learner is settled (for this run)."""

    status: Status
    http_status: int | None = None
    reason: str | None = None
    assertion_id: str | None = None
    flags: tuple[str, ...] = ()
    stop: Stop | None = None


Action = Send | Verify | Wait | Finish


@dataclass(frozen=True, slots=True)
class Lookup:
    """What the server said when asked whether the learner holds the badge.

    Attributes:
        held: True or False when the answer could be read and proves it; None when the
            server could not be asked or its answer proves nothing (`why` says which).
        assertion_id: the assertion that holds it, when found.
        why: why the answer proves nothing.
    """

    held: bool | None
    assertion_id: str | None = None
    why: str = ""


class LearnerFlow:
    """One learner's way to a final status.

    Args:
        attempts: unanswered sends after which the learner is given up (each checked with
            the server before the next).
        backoff: the wait after the n-th unanswered send (1-based).
        verify_first: an earlier run's send went unanswered (the journal says `sending`).
        resend_unconfirmed: send again when the server cannot tell whether an unanswered
            send was processed (flagged `resent_unverified`); otherwise finish unconfirmed.
    """

    def __init__(
        self,
        *,
        attempts: int,
        backoff: Callable[[int], float],
        verify_first: bool = False,
        resend_unconfirmed: bool = False,
    ) -> None:
        self._attempts = attempts
        self._backoff = backoff
        self._verify_first = verify_first
        self._resend_unconfirmed = resend_unconfirmed
        self._unanswered = 0
        #: Unanswered sends during an outage of the endpoint: not held against the learner.
        self._excused = 0
        self._conflict: tuple[int, str] | None = None
        self._last: tuple[int | None, str] = (None, "no answer")
        self._page = False  # the last send was answered 2xx, but not with the assertion
        self._other: str | None = None  # ... or with one for another recipient or badge
        self._flags: list[str] = []

    @classmethod
    def under(cls, policy: RetryPolicy, *, verify_first: bool) -> LearnerFlow:
        """A flow with the attempts, backoff and resend rule of `policy`.

        Args:
            policy: the run's retry policy.
            verify_first: an earlier send went unanswered (journal or shared ledger).

        Returns:
            A new flow, not yet started.
        """
        return cls(
            attempts=policy.attempts,
            backoff=policy.backoff,
            verify_first=verify_first,
            resend_unconfirmed=policy.resend_unconfirmed,
        )

    def start(self) -> Action:
        """The first action."""
        if self._verify_first:
            return Verify("an earlier run's send went unanswered")
        return Send()

    def answered(
        self,
        status: int,
        detail: str,
        *,
        assertion_id: str | None = None,
        badge_confirmed: bool = False,
        outage: bool = False,
        assertion: bool = True,
        other: str | None = None,
    ) -> Action:
        """The issue call was answered.

        Args:
            status: the HTTP status, after the request path's own retries.
            detail: the server's explanation, for reasons.
            assertion_id: the new assertion's id, from a 2xx body.
            badge_confirmed: the badge exists: the API answered for it, or it has been
                issued to someone in this run.
            outage: a 500/502/504 came while the endpoint fails for every sender: it does
                not count against this learner's attempts (the client's outage limit stops
                the run if it lasts).
            assertion: the body was the assertion record the API answers a success with
                (not a page, nor JSON of another shape).
            other: a 2xx's assertion names another recipient or badge (what it names):
                the learner is looked up, and never sent again by this run.
        """
        self._last = (status, detail)
        self._page = 200 <= status < 300 and not assertion
        if self._page:
            # A page (a proxy's, a portal's) or no body at all, with a 2xx: nothing says
            # the call reached the API. The server is asked, as after no answer.
            said = f" ({detail})" if detail and detail != f"HTTP {status}" else ""
            why = f"HTTP {status} without the assertion{said}"
            return self._unanswered_send(status, why, outage, asked=why)
        if 200 <= status < 300 and other is not None:
            # Another learner's assertion, or another badge's: a server mixing its answers
            # up. Whether this one went through, only the list can say.
            self._other = other
            why = f"HTTP {status} with an assertion for {other}"
            return self._unanswered_send(status, why, outage, asked=why)
        if 200 <= status < 300:
            return self._finish(Status.ISSUED, status, None, assertion_id)
        if status == 409:
            # A conflict names no assertion: the list says whether the learner holds it
            # (a 409 worded as held may mean something else: "already been archived").
            self._conflict = (status, detail)
            return Verify(f"HTTP 409 ({detail}): does the learner hold the badge?")
        if status == 401:
            return self._stop(status, f"the server refused the credentials (HTTP 401): {detail}")
        if status == 403:
            return self._stop(
                status, f"is not permitted for these credentials (HTTP 403): {detail}"
            )
        if status == 404:
            if badge_confirmed:
                # The badge exists (the API answered for it, or issued it to others in
                # this run): what is missing is this learner's own reference, a
                # provider_id or recipient_id.
                return self._finish(Status.FAILED, status, detail)
            return self._stop(status, f"is not found (HTTP 404): {detail}")
        if status == 429:
            return self._finish(Status.FAILED, status, f"rate limited too often: {detail}")
        if status == 503:
            return self._finish(Status.FAILED, status, f"unavailable too often: {detail}")
        if status >= 500:
            return self._unanswered_send(status, detail, outage)
        if 300 <= status < 400:
            return self._finish(Status.FAILED, status, f"unexpected redirect: {detail}")
        return self._finish(Status.FAILED, status, detail)

    def no_answer(self, why: str, *, outage: bool = False) -> Action:
        """The send went unanswered (timeout, dropped connection): it may have been processed.

        Args:
            why: what happened, for reasons.
            outage: the endpoint fails for every sender (see `answered`).
        """
        self._page = False
        return self._unanswered_send(None, why, outage)

    def looked_up(self, lookup: Lookup) -> Action:
        """The server's answer to `Verify`."""
        if self._conflict is not None:
            status, detail = self._conflict
            self._conflict = None
            says_held = _HELD_409.search(detail) is not None
            if lookup.held or (lookup.held is None and says_held):
                return self._finish(Status.HELD, status, detail, lookup.assertion_id)
            if says_held:
                detail = f"{detail} (but the badge's assertions list shows it not held)"
            return self._finish(Status.FAILED, status, detail)
        if lookup.held:
            self._flags.append("verified")
            return self._finish(Status.ISSUED, self._last[0], None, lookup.assertion_id)
        if self._other is not None:
            # Sending again could issue another learner, or another badge, again.
            return self._finish(
                Status.UNCONFIRMED,
                self._last[0],
                f"the server answered HTTP {self._last[0]} with an assertion for "
                f"{self._other}, and its list does not show this learner holding the badge"
                f"{'' if lookup.held is False else f' ({lookup.why})'}; not sent again: "
                "check in Navigatr",
            )
        if lookup.held is None:
            if not self._resend_unconfirmed:
                what = f"the send got {self._last[1]}" if self._page else "a send went unanswered"
                return self._finish(
                    Status.UNCONFIRMED,
                    self._last[0],
                    f"{what} and the server could not be asked whether it was issued "
                    f"({lookup.why}); not sent again",
                )
            if "resent_unverified" not in self._flags:  # one flag, however many resends
                self._flags.append("resent_unverified")
        if self._unanswered - self._excused >= self._attempts:
            last_status, last_detail = self._last
            return self._finish(
                Status.FAILED,
                last_status,
                f"gave up after {self._unanswered} unanswered attempts: {last_detail}",
            )
        if self._unanswered == 0:
            return Send()
        return Wait(self._backoff(self._unanswered), "retry after an unanswered send", Send())

    def _unanswered_send(
        self, status: int | None, why: str, outage: bool, *, asked: str | None = None
    ) -> Action:
        self._unanswered += 1
        self._excused += outage
        self._last = (status, why)
        what = asked or (f"HTTP {status}" if status is not None else why)
        return Verify(f"{what}: was it issued?")

    def _stop(self, status: int, message: str) -> Finish:
        subject = "the badge " if status in (403, 404) else ""
        return self._finish(
            Status.NOT_ATTEMPTED,
            status,
            f"not issued: {subject}{message}",
            stop=Stop(message, status),
        )

    def _finish(
        self,
        status: Status,
        http_status: int | None,
        reason: str | None,
        assertion_id: str | None = None,
        *,
        stop: Stop | None = None,
    ) -> Finish:
        return Finish(status, http_status, reason, assertion_id, tuple(self._flags), stop)
