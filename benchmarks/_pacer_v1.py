"""Today's pacer, frozen as it was before issue 13 (commit a51146d), for the learning benchmark.

Even spacing `(period + 75 ms) / requests`, 15% wider for good after each 429 episode.
Only `Pacer` is used; `Rate` comes from the package so both pacers take the same budget.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math

import anyio

from bulk_issuer.pacing import Rate

__all__ = ["Pacer"]


#: How much of a window the pacer gives up to network jitter: requests that leave evenly
#: spaced arrive up to a few tens of milliseconds apart from that spacing, and a server
#: judges arrivals. 75 ms per window covers 30-90 ms of one-way latency.
DEFAULT_MARGIN = 0.075

#: When the server is stricter than configured, each rate-limit episode widens the gap
#: by this factor, up to `_MAX_SLOWDOWN` times the configured gap.
_SLOWDOWN = 1.15

#: A send this much later than its slot is ordinary event-loop delay, not worth a push.
_SEND_TOLERANCE = 0.005
_MAX_SLOWDOWN = 4.0


class Pacer:
    """Spaces every request evenly, just under the server's limit, and pauses on a 429.

    Even spacing is the one schedule that no common server limiter rejects: a burst of
    `requests` followed by a steady trickle (what `aiolimiter.AsyncLimiter(5, 2)` does) puts
    up to twice the budget into the first window, which fixed and moving windows refuse.
    The gap is `(period + margin) / requests`, so that no window of `period` seconds holds
    more than `requests` arrivals even when each arrives up to `margin` late.

    Waiters are released one per slot by a single timer, urgent ones (token refreshes)
    first. Slots sit on a fixed grid (`previous slot + gap`), so a timer that fires a
    millisecond late does not push every later request back: the long-run rate is exactly
    `1 / gap`. (aiolimiter's leaky bucket measures from each wake-up, and it spins under
    fake loop time with concurrent waiters; the benchmarks still run it as the baseline.)

    Args:
        rate: the server's budget; `None` sends as fast as the workers go.
        margin: seconds of arrival jitter each window must absorb.
    """

    def __init__(self, rate: Rate | None, *, margin: float = DEFAULT_MARGIN) -> None:
        if margin < 0:
            raise ValueError(f"the pacing margin must not be negative, got {margin}")
        self.rate = rate
        self.sent = 0
        self.rate_limited = 0
        self._base_gap = 0.0 if rate is None else (rate.period + margin) / rate.requests
        self._gap = self._base_gap
        self._next_slot = -math.inf
        self._resume_at = -math.inf
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def gap(self) -> float:
        """The current spacing between two requests, in seconds."""
        return self._gap

    async def acquire(self, *, urgent: bool = False) -> None:
        """Wait for this request's slot. Call it right before each request is sent.

        Args:
            urgent: go before every ordinary waiter (a token refresh that all of them need).
        """
        loop = asyncio.get_running_loop()
        if not self._waiters and loop.time() >= self._slot():
            self._take(loop.time())
            return
        waiter = loop.create_future()
        heapq.heappush(self._waiters, (0 if urgent else 1, next(self._order), waiter))
        self._arm(loop)
        try:
            await waiter
        except BaseException:
            # Cancelled while waiting: its place in the heap is skipped. Cancelled after
            # being released: that slot goes unused, which only errs on the slow side.
            waiter.cancel()
            raise

    def note_sent(self) -> None:
        """Note that a request's headers just went out on the wire.

        A request that left late for its slot (it had to open a connection first, or the
        loop was busy) pushes the next slot to a full gap after it: otherwise the next
        request, on a warm connection, would arrive closer behind it than the gap.
        """
        floor = _now() + self._gap - _SEND_TOLERANCE
        if floor > self._next_slot:
            self._next_slot = floor

    def pause(self, seconds: float) -> None:
        """Hold every request for `seconds` from now (a server asked to come back later)."""
        resume = _now() + max(seconds, self._gap)
        if resume > self._resume_at:
            self._resume_at = resume
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
                self._arm(asyncio.get_running_loop())

    def rate_limited_for(self, retry_after: float | None) -> float:
        """Take a 429: pause every sender, and slow down unless already paused for one.

        Args:
            retry_after: the seconds the server asked for, if it said.

        Returns:
            The pause, in seconds.
        """
        self.rate_limited += 1
        now = _now()
        if now >= self._resume_at and self.rate is not None:
            # The first 429 of an episode: the server is stricter than our spacing, so
            # widen it for good; answers to requests already on the wire do not count twice.
            self._gap = min(self._gap * _SLOWDOWN, self._base_gap * _MAX_SLOWDOWN)
        pause = retry_after if retry_after is not None else self._default_pause()
        self.pause(pause)
        return max(self._resume_at - now, 0.0)

    def _default_pause(self) -> float:
        # Without a hint, wait out one whole window of the configured budget.
        return self.rate.period if self.rate is not None else 1.0

    def _slot(self) -> float:
        return max(self._next_slot, self._resume_at)

    def _take(self, now: float) -> None:
        slot = self._slot()
        # Stay on the grid unless the pacer sat idle: then the grid restarts now.
        start = slot if now - slot < self._gap else now
        self._next_slot = start + self._gap
        self.sent += 1

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is None and self._waiters:
            self._timer = loop.call_at(max(self._slot(), loop.time()), self._release, loop)

    def _release(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        while self._waiters and self._waiters[0][2].done():
            heapq.heappop(self._waiters)
        # A timer may fire a hair early (the loop's clock resolution): a microsecond is
        # nothing next to the margin, and refusing it would spin.
        if self._waiters and loop.time() + 1e-6 >= self._slot():
            _, _, waiter = heapq.heappop(self._waiters)
            waiter.set_result(None)
            self._take(loop.time())
        self._arm(loop)


def _now() -> float:
    return anyio.current_time()
