"""Server-side rate limit models for the sandbox: N requests per P seconds.

Each model answers these questions at a moment ``now`` (seconds on the event loop clock):
``hit(now)`` records a request and says whether it is accepted, ``retry_after(now)``
says how long until a request would be accepted, ``remaining(now)`` how many more would be
accepted right now, and ``reset(now)`` how long until the window (or its oldest request)
is done: what the rate-limit headers report. The models are the ones a FastAPI
service is likely to run (the ``limits`` library behind slowapi, or a token bucket), so a
client rehearsing against the sandbox can be checked against each of them.

Time never goes backwards in these models' callers (the loop clock is monotonic).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from typing import Literal, Protocol

__all__ = [
    "MODELS",
    "FixedWindow",
    "MovingWindow",
    "RateLimitModel",
    "RateModelName",
    "SlidingWindowCounter",
    "TokenBucket",
    "make_limiter",
    "max_in_window",
]

RateModelName = Literal["fixed", "moving", "sliding", "bucket"]

# Clock values are floats: 100.4 - 100.0 is 0.40000000000000568. A request that arrives
# exactly when a model says it may (after sleeping retry_after) must be accepted, so
# boundaries are compared with this much slack in the client's favour.
_EPS = 1e-9
# Where a model accepts only strictly after some instant, retry_after adds this much so that
# a client sleeping exactly that long is accepted (looptime's clock ticks in microseconds).
_MARGIN = 1e-6


class RateLimitModel(Protocol):
    """What the sandbox needs from a rate limit model."""

    limit: int
    period: float

    def hit(self, now: float) -> bool:
        """Record a request at ``now``; True if it is accepted."""
        ...

    def retry_after(self, now: float) -> float:
        """Seconds from ``now`` until a request would be accepted (0.0 if it would be now)."""
        ...

    def remaining(self, now: float) -> int:
        """How many more requests would be accepted at ``now``, sent back to back."""
        ...

    def reset(self, now: float) -> float:
        """Seconds from ``now`` until the window, or the oldest request in it, is done."""
        ...


def _check(limit: int, period: float) -> None:
    if limit < 1:
        raise ValueError(f"a rate limit needs at least 1 request per window, got {limit}")
    if not period > 0:
        raise ValueError(f"a rate limit window must be longer than 0 seconds, got {period}")


class FixedWindow:
    """Fixed windows aligned at multiples of the period, like ``limits``' FixedWindowRateLimiter.

    Every hit increments the window's counter, rejected ones too (the library increments and
    then compares), so a client that keeps knocking during a full window stays rejected until
    the window ends; it never earns anything by hammering.
    """

    __slots__ = ("_count", "_window", "limit", "period")

    def __init__(self, limit: int, period: float) -> None:
        """Allow ``limit`` requests per window of ``period`` seconds."""
        _check(limit, period)
        self.limit = limit
        self.period = period
        self._window = -1
        self._count = 0

    def _roll(self, now: float) -> int:
        window = math.floor((now + _EPS) / self.period)
        if window != self._window:
            self._window = window
            self._count = 0
        return window

    def hit(self, now: float) -> bool:
        """Count the request; accept it if the window holds at most ``limit`` hits."""
        self._roll(now)
        self._count += 1
        return self._count <= self.limit

    def retry_after(self, now: float) -> float:
        """Seconds until the current window ends, if it is full."""
        window = self._roll(now)
        if self._count < self.limit:
            return 0.0
        return max(0.0, (window + 1) * self.period - now)

    def remaining(self, now: float) -> int:
        """Hits left in the current window."""
        self._roll(now)
        return max(0, self.limit - self._count)

    def reset(self, now: float) -> float:
        """Seconds until the current window ends."""
        window = self._roll(now)
        return max(0.0, (window + 1) * self.period - now)


class MovingWindow:
    """A log of accepted hits: accept while fewer than ``limit`` fall in (now - period, now].

    The strictest model: no instant ever sees more than ``limit`` accepted requests in any
    window of ``period`` seconds. Rejected hits are not logged.
    """

    __slots__ = ("_log", "limit", "period")

    def __init__(self, limit: int, period: float) -> None:
        """Allow ``limit`` requests in any window of ``period`` seconds."""
        _check(limit, period)
        self.limit = limit
        self.period = period
        self._log: deque[float] = deque()

    def _expire(self, now: float) -> None:
        # A hit at h leaves the window at h + period exactly.
        while self._log and self._log[0] <= now - self.period + _EPS:
            self._log.popleft()

    def hit(self, now: float) -> bool:
        """Accept and log the request if the window has room."""
        self._expire(now)
        if len(self._log) >= self.limit:
            return False
        self._log.append(now)
        return True

    def retry_after(self, now: float) -> float:
        """Seconds until the oldest hit that keeps the window full leaves it."""
        self._expire(now)
        if len(self._log) < self.limit:
            return 0.0
        return max(0.0, self._log[-self.limit] + self.period - now)

    def remaining(self, now: float) -> int:
        """Free places in the window ending at ``now``."""
        self._expire(now)
        return max(0, self.limit - len(self._log))

    def reset(self, now: float) -> float:
        """Seconds until the oldest logged hit leaves the window (``limits``' reset time)."""
        self._expire(now)
        return max(0.0, self._log[0] + self.period - now) if self._log else 0.0


class SlidingWindowCounter:
    """The ``limits`` library's sliding window counter (``acquire_sliding_window_entry``).

    Two fixed windows, the current one and the previous one; the previous count is weighted
    by the share of it that still overlaps a window ending now:
    ``weighted = previous * (period - elapsed_in_current) / period + current``.
    A hit is accepted if ``floor(weighted) + 1 <= limit``; only accepted hits are counted.
    """

    __slots__ = ("_counts", "limit", "period")

    def __init__(self, limit: int, period: float) -> None:
        """Allow about ``limit`` requests per sliding window of ``period`` seconds."""
        _check(limit, period)
        self.limit = limit
        self.period = period
        # window index -> accepted hits; only the current and the previous one matter.
        self._counts: dict[int, int] = {}

    def _state(self, now: float) -> tuple[int, float, int, int]:
        window = math.floor((now + _EPS) / self.period)
        elapsed = max(0.0, now - window * self.period)
        for old in [w for w in self._counts if w < window - 1]:
            del self._counts[old]
        return window, elapsed, self._counts.get(window - 1, 0), self._counts.get(window, 0)

    def _weighted(self, previous: int, elapsed: float, current: int) -> float:
        return previous * (self.period - elapsed) / self.period + current

    def hit(self, now: float) -> bool:
        """Accept and count the request if the weighted count leaves room for it."""
        window, elapsed, previous, current = self._state(now)
        # The slack keeps float noise (4.999999999) from flooring one short of the truth.
        if math.floor(self._weighted(previous, elapsed, current) + _EPS) + 1 > self.limit:
            return False
        self._counts[window] = current + 1
        return True

    def retry_after(self, now: float) -> float:
        """Seconds until the weighted count drops low enough for one more hit."""
        window, elapsed, previous, current = self._state(now)
        if math.floor(self._weighted(previous, elapsed, current) + _EPS) + 1 <= self.limit:
            return 0.0
        if current < self.limit:
            # Still in this window: the previous window's weight decays linearly until
            # previous * (period - e) / period < limit - current.
            needed = self.period * (1 - (self.limit - current) / previous)
            return max(0.0, needed - elapsed) + _MARGIN
        # This window is full: wait for the next one, where this window's count is the
        # decaying "previous" one and nothing is "current" yet.
        to_next = (window + 1) * self.period - now
        return to_next + max(0.0, self.period * (1 - self.limit / current)) + _MARGIN

    def remaining(self, now: float) -> int:
        """Hits the weighted count leaves room for."""
        _, elapsed, previous, current = self._state(now)
        weighted = self._weighted(previous, elapsed, current)
        return max(0, self.limit - math.floor(weighted + _EPS))

    def reset(self, now: float) -> float:
        """Seconds until a hit is accepted when full, else until the current window ends."""
        wait = self.retry_after(now)
        if wait > 0:
            return wait
        window = math.floor((now + _EPS) / self.period)
        return max(0.0, (window + 1) * self.period - now)


class TokenBucket:
    """A token bucket of ``limit`` tokens refilled at ``limit / period`` per second, full at start.

    The most lenient model: a burst of ``limit`` and then one request every
    ``period / limit`` seconds is accepted, which windows would reject.
    """

    __slots__ = ("_at", "_tokens", "limit", "period")

    def __init__(self, limit: int, period: float) -> None:
        """Hold ``limit`` tokens, refilled continuously over ``period`` seconds."""
        _check(limit, period)
        self.limit = limit
        self.period = period
        self._tokens = float(limit)
        self._at: float | None = None

    def _refill(self, now: float) -> None:
        if self._at is not None and now > self._at:
            self._tokens = min(
                float(self.limit), self._tokens + (now - self._at) * self.limit / self.period
            )
        if self._at is None or now > self._at:
            self._at = now

    def hit(self, now: float) -> bool:
        """Take a token if there is one."""
        self._refill(now)
        if self._tokens + _EPS < 1.0:
            return False
        self._tokens = max(0.0, self._tokens - 1.0)
        return True

    def retry_after(self, now: float) -> float:
        """Seconds until a whole token has been refilled."""
        self._refill(now)
        if self._tokens + _EPS >= 1.0:
            return 0.0
        return (1.0 - self._tokens) * self.period / self.limit

    def remaining(self, now: float) -> int:
        """Whole tokens in the bucket."""
        self._refill(now)
        return max(0, math.floor(self._tokens + _EPS))

    def reset(self, now: float) -> float:
        """Seconds until the bucket is full again."""
        self._refill(now)
        return max(0.0, (self.limit - self._tokens) * self.period / self.limit)


MODELS: dict[str, type[FixedWindow | MovingWindow | SlidingWindowCounter | TokenBucket]] = {
    "fixed": FixedWindow,
    "moving": MovingWindow,
    "sliding": SlidingWindowCounter,
    "bucket": TokenBucket,
}


def make_limiter(model: str, limit: int, period: float) -> RateLimitModel:
    """Build the named rate limit model.

    Args:
        model: one of ``fixed``, ``moving``, ``sliding``, ``bucket``.
        limit: requests allowed per window.
        period: window length in seconds.
    """
    try:
        cls = MODELS[model]
    except KeyError:
        known = ", ".join(MODELS)
        raise ValueError(f"unknown rate limit model {model!r}; choose one of {known}") from None
    return cls(limit, period)


def max_in_window(times: list[float], period: float) -> int:
    """The most of ``times`` (sorted, seconds) that fall in any half-open window of ``period``.

    A helper for tests and benchmarks that check a client never exceeded a rate.
    """
    best = 0
    for i, start in enumerate(times):
        # Window [start, start + period): hits at start + period belong to the next one.
        end = bisect_right(times, start + period - _EPS, lo=i)
        best = max(best, end - i)
    return best
