"""Retries on the request path: what one reply means for the request that drew it.

Every request (login, lookup, badge check, issue) takes the same path through the client:
a pacer slot, a credential, one exchange with a deadline, then `RequestRetry.step`, a pure
decision on the reply: hand it to the caller, refresh the token and send again, or wait
and send again. Only replies that prove the request was *not* processed are sent again
here (401, 429, 503, a connection that never opened); a reply that leaves it unknown
whether an issue call was processed (a timeout, a dropped connection, 500/502/504) goes
back to the caller, which asks the server before any resend (`flow.py`).

All durations are in seconds.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

__all__ = [
    "Again",
    "Deliver",
    "Refresh",
    "RequestRetry",
    "RetryPolicy",
    "Step",
    "TooLong",
    "retry_after",
]

#: Answers that say the request was not processed and may be sent again as it is.
NOT_PROCESSED = frozenset({429, 503})

#: Token refreshes one request may draw with 401s: the first always, later ones only when
#: the request outlived its token (see `RequestRetry.step`).
MOST_REFRESHES = 3


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long and how often to retry.

    Args:
        attempts: sends of one issue call or one request before it is given up (429s
            not counted). For an issue call, each unanswered send is checked with the
            server before the next.
        base: the first backoff's upper bound.
        cap: no backoff is longer than this.
        rate_limited_attempts: 429s one request may draw before it is given up.
        max_wait: the longest `Retry-After` honoured; a server asking for longer stops the
            run cleanly (exit 4) with the time to come back.
        outage: how long the API may stay unavailable (every request failing, 429s
            included) before the run stops (exit 4); a shorter outage is ridden out.
        unreachable: how long to keep trying a host that has never answered at all
            (refused, DNS, TLS) before the run stops (exit 4).
        deadline: the most one exchange may take, from sending the request to the last
            byte of the reply; past it the reply counts as never received.
        resend_unconfirmed: send an issue call again even when an earlier send went
            unanswered and the server cannot be asked whether it was processed (its lookup
            is refused, unreadable or down). Off: such a learner is reported unconfirmed.

    Raises:
        ValueError: a count below 1, a negative or NaN duration.
    """

    attempts: int = 6
    base: float = 1.0
    cap: float = 30.0
    rate_limited_attempts: int = 30
    max_wait: float = 120.0
    outage: float = 120.0
    unreachable: float = 20.0
    deadline: float = 60.0
    resend_unconfirmed: bool = False

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if self.rate_limited_attempts < 1:
            raise ValueError(
                f"rate_limited_attempts must be at least 1, got {self.rate_limited_attempts}"
            )
        for name in ("base", "cap", "max_wait", "outage", "unreachable"):
            if not getattr(self, name) >= 0:  # NaN too
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if not self.deadline > 0:
            raise ValueError(f"deadline must be more than 0 seconds, got {self.deadline}")

    def backoff(self, failures: int, rng: random.Random | None = None) -> float:
        """The wait after the `failures`-th failed attempt: capped, full jitter.

        Args:
            failures: how many attempts have failed so far (1-based).
            rng: the random source; None uses the `random` module's.

        Returns:
            Seconds to wait, between 0 and `min(cap, base * 2 ** (failures - 1))`.
        """
        # The exponent is bounded: after thousands of failures 2**n would overflow a float.
        ceiling = min(self.cap, self.base * 2.0 ** min(max(failures - 1, 0), 64))
        return (rng or random).uniform(0, ceiling)

    def rate_limited_wait(
        self, asked: float, streak: int, rng: random.Random | None = None
    ) -> float:
        """The wait after the `streak`-th 429 in a row to one request.

        A limiter that counts the requests it refuses restarts its window at each one: a
        client that comes back after the same wait each time (one window of its own pace,
        or a `Retry-After` naming the window's oldest entry) is refused for ever. So each
        429 in a row doubles the wait, up to `cap` (never below what the server asked),
        less up to a quarter of jitter so that senders drift apart. The first 429 waits
        just what it asks.

        Args:
            asked: the wait the 429 asked for (its hint, else one window of the pace).
            streak: 429s in a row to this request, this one included (1-based).
            rng: the random source; None uses the `random` module's.

        Returns:
            Seconds to wait: `asked` for the first 429, then between three quarters of
            `min(cap, asked * 2 ** (streak - 1))` and that, and never less than `asked`.
        """
        if streak <= 1:
            return asked
        ceiling = min(self.cap, asked * 2.0 ** min(streak - 1, 64))
        return max(asked, (rng or random).uniform(0.75 * ceiling, ceiling))


@dataclass(frozen=True, slots=True)
class Deliver:
    """Hand the reply to the caller."""


@dataclass(frozen=True, slots=True)
class Refresh:
    """The credential was refused: get a new token, then send again."""


@dataclass(frozen=True, slots=True)
class Again:
    """Send again after `wait` seconds; `rate_limited` when the wait is the server's 429,
    `streak` the 429s in a row to this request (see `RetryPolicy.rate_limited_wait`)."""

    wait: float
    why: str
    rate_limited: bool = False
    streak: int = 0


@dataclass(frozen=True, slots=True)
class TooLong:
    """The server asked for a wait longer than the policy honours: stop the run cleanly."""

    wait: float
    why: str


Step = Deliver | Refresh | Again | TooLong


class RequestRetry:
    """The retry decisions for one request, fed each reply in turn. No I/O, no clock.

    Args:
        policy: the budgets.
        refreshable: whether a 401 can be cured by a new token (a login, not a PAT).
        rng: the source of backoff jitter (seeded in tests).
    """

    def __init__(
        self, policy: RetryPolicy, *, refreshable: bool, rng: random.Random | None = None
    ) -> None:
        self._policy = policy
        self._refreshable = refreshable
        self._rng = rng
        self.refreshes = 0
        self.failures = 0
        self.limited = 0
        #: 429s in a row: any other reply ends the streak.
        self.streak = 0

    def step(
        self,
        status: int | None,
        *,
        hint: float | None = None,
        outage: bool = False,
        outlived: bool = False,
    ) -> Step:
        """What to do after a reply.

        Args:
            status: the HTTP status, or None when the request never left (the connection
                could not be opened: refused, DNS, TLS), so it was certainly not processed.
                A reply that may have been processed is not passed here.
            hint: the seconds the server asked to wait (`Retry-After` and kin), if it said.
            outage: the endpoint fails for every sender: keep trying (the client stops the
                run when the outage lasts too long) without spending this request's budget.
            outlived: for a 401, the request may have reached the server after its token
                expired (it came back late in the token's life, or the token has been
                replaced since), so the 401 says nothing against the credentials.
        """
        policy = self._policy
        self.streak = self.streak + 1 if status == 429 else 0
        if status == 401 and self._refreshable and self._may_refresh(outlived):
            self.refreshes += 1
            return Refresh()
        if hint is not None and hint > policy.max_wait and status in NOT_PROCESSED:
            return TooLong(hint, f"HTTP {status}")
        if status == 429:
            self.limited += 1
            if self.limited > policy.rate_limited_attempts and not outage:
                return Deliver()
            return Again(hint or 0.0, "HTTP 429", rate_limited=True, streak=self.streak)
        if status is None or status == 503:
            self.failures += 1
            budget = policy.attempts * (1 if status == 503 else 3)
            if self.failures >= budget and not outage:
                return Deliver()
            wait = hint if hint is not None else policy.backoff(self.failures, self._rng)
            return Again(wait, "no connection" if status is None else "HTTP 503")
        return Deliver()

    def _may_refresh(self, outlived: bool) -> bool:
        """Whether a 401 is cured by a new token. The first always may be (the token may
        have expired sooner than assumed). A later one only if the request outlived its
        token: a resend held up past a short-lived token's end is refused for that, not for
        the credentials, and the run must not stop for it. A token just obtained and
        refused at once is refused credentials; and however late the answers, a request
        gets `MOST_REFRESHES` at most."""
        if self.refreshes == 0:
            return True
        return outlived and self.refreshes < MOST_REFRESHES


_SECONDS = re.compile(r"^\s*\d+(\.\d+)?\s*$")
# `reset=` of the first draft, `t=` of the structured one (where `r=` is the remaining count).
_RATELIMIT_RESET = re.compile(r"(?:^|[,;\s])(?:reset|t)\s*=\s*(\d+(?:\.\d+)?)")
#: A header value longer than this is not a wait, whatever it says.
_MAX_HEADER = 200


def retry_after(
    headers: Mapping[str, str], *, now: float | None = None, quota: bool = True
) -> float | None:
    """The seconds a rate-limited or unavailable server asked the client to wait, if it said.

    Reads `Retry-After` (delta-seconds or an HTTP-date), then (with `quota`) the IETF draft
    `RateLimit` header (`reset=`), then `X-RateLimit-Reset` (delta-seconds, or an epoch
    timestamp). Values that make no sense (huge headers, negative or not finite) are
    ignored.

    Args:
        headers: the answer's headers (a case-insensitive mapping, as aiohttp gives).
        now: the wall-clock time as a Unix timestamp, for dates; defaults to `time.time()`.
        quota: also read when the rate-limit window resets: what a 429 waits for. Not
            for other answers: a server that sends those headers on every answer says
            nothing by them of when a 503 will pass.
    """
    wall = time.time() if now is None else now
    value = _header(headers, "Retry-After")
    if value:
        if _SECONDS.match(value):
            return float(value)
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            when = None
        if when is not None and when.tzinfo is not None:
            return max(when.timestamp() - wall, 0.0)
    if not quota:
        return None
    draft = _header(headers, "RateLimit")
    if draft and (match := _RATELIMIT_RESET.search(draft.lower())):
        return _reset(float(match.group(1)), wall)
    reset = _header(headers, "X-RateLimit-Reset")
    if reset and _SECONDS.match(reset):
        return _reset(float(reset), wall)
    return None


def _reset(value: float, wall: float) -> float:
    """A reset as seconds from now. Some servers send a duration, others an epoch
    timestamp in seconds, others one in milliseconds: a duration is never a billion
    seconds long, nor a timestamp in seconds a hundred billion (the year 5138)."""
    if value > 1e11:
        return max(value / 1000 - wall, 0.0)
    if value > 1e9:
        return max(value - wall, 0.0)
    return value


def _header(headers: Mapping[str, str], name: str) -> str:
    """The header's value; "" when missing or too long to be a wait (not cut: cutting a
    run of digits would make another number of it)."""
    value = headers.get(name) or ""
    return "" if len(value) > _MAX_HEADER else value
