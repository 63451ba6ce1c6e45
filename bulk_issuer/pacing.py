"""Pacing: the rate spec and the one pacer every request goes through.

All durations are in seconds, measured on the running event loop's clock.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import re
import time
from collections import deque
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from .coordination.gcra import RING, Window

if TYPE_CHECKING:
    from .coordination import SharedSlots

__all__ = ["DEFAULT_MARGIN", "DEFAULT_RATE", "Pacer", "Rate", "ServerHints", "read_hints"]

_UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*([a-z]*)\s*$")

#: How much of a window the pacer gives up to network jitter before it has seen an answer
#: (and for good, if it is never told of answers): requests that leave evenly spaced arrive
#: up to a few tens of milliseconds apart from that spacing, and a server judges arrivals.
#: 75 ms per window covers 30-90 ms of one-way latency.
DEFAULT_MARGIN = 0.075

#: A send this much later than its slot is ordinary event-loop delay, not worth a push.
_SEND_TOLERANCE = 0.005
#: What every window keeps beyond the arrival bound, for clock granularity.
_SAFETY = 0.002
#: How much slower than the measured window bound the even grid runs, so that a late
#: answer delays one request rather than every request after it.
_GRID_SLACK = 0.002
#: The least spacing between two sends, as a share of the even spacing at the limit. A
#: request held back by a late answer may catch up only where the server is known to count
#: whole windows afresh (a fixed window, a token bucket); a sliding-window counter weighs
#: the previous window as if its requests had been even, and refuses any catching up.
_MIN_SPACING = 1.0
_CATCH_UP_SPACING = 0.5
#: Answers in a row whose count is exactly ours before a server counts as a moving window.
_AGREED = 30
#: ... or telling answers, with none in between that ours cannot explain, whose count lay
#: between what ours surely and possibly made it: at high rates the way in blurs which of
#: ours a window held, and only an answer with at most `_TELLING` of ours in doubt tells a
#: moving window from a sliding-window counter (which strays outside that range often).
_CONSISTENT = 20
_TELLING = 2
#: The floor of round trips lies this many expected gaps below the fastest seen, less the
#: window rule's `_SAFETY`, and at least the least many (see `_RoundTrips.floor`).
_FLOOR_SPREADS = 10.0
_FLOOR_SPREADS_LEAST = 3.0
#: How many of the latest answers the slowest round trip is taken over (and the least many):
#: about two windows of requests, so that a stall is remembered while it may recur but
#: not for the rest of the run.
_RECENT_TRIPS = 32
#: Answers needed before round trips are trusted at all.
_MIN_SAMPLES = 4
#: The assumed way in grows by this share of the fastest round trip ...
_PROBE_STEP = 0.25
#: ... after this many clean answers in a row.
_PROBE_EVERY = 4
#: After a 429 that no limit explains, every window gives up this share more of its period.
_WIDEN = 0.05
_MAX_SLOWDOWN = 4.0
#: One slot moves the margin's measure toward at most this many times its value so far.
_EXCESS_JUMP = 2.0
#: The loop's lateness is remembered as a maximum that fades by this factor per slot.
_LAG_DECAY = 0.9
# The server's remaining count is trusted to this many requests less than it says (one
# server may report it before counting the request, another round a weighted count up).
_ROOM_CUSHION = 1
# How many of the latest answers with a remaining count the room rule consults.
_ROOM_ANSWERS = 4
# The share of the limit (and the least number of places) the server's count must leave
# spare before the run's first window catches up at half the spacing: a count a few places
# too high is then not what lets a request through.
_WIDE_ROOM = 0.25
_WIDE_ROOM_LEAST = 4

#: A limit over a longer window than this (a daily quota) is not learned as a pace: spread
#: evenly over its window it would slow a whole run to the quota's average rate, when the
#: quota may well have room for all of it now. Its 429's Retry-After says when to come back
#: (past the retry policy's `max_wait`, the run stops and says when to rerun).
_LONGEST_PACE = 3600.0

_UNIT_SECONDS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}
# slowapi's 429 body, from the `limits` library: "Rate limit exceeded: 4 per 2 second".
# A count or a number of seconds of more digits than this is not one a server means (and
# Python refuses to read an integer of more than 4,300 digits); nor is a header, or a
# detail, longer than `_LONGEST_HINT` characters.
_DIGITS = 12
_LONGEST_HINT = 256
_WHOLE = rf"\d{{1,{_DIGITS}}}(?!\d)"
_NUMBER = rf"({_WHOLE}(?:\.\d+)?)"
_DETAIL_RE = re.compile(
    rf"(?<!\d)({_WHOLE})\s*(?:per|/)\s*({_WHOLE}(?:\.\d+)?)?\s*(second|minute|hour|day)s?\b"
)
_INT_RE = re.compile(rf"^\s*({_WHOLE})")


@dataclass(frozen=True, slots=True)
class Rate:
    """A request budget: at most `requests` in any window of `period` seconds.

    Args:
        requests: how many requests a window may hold, at least 1.
        period: the window, in seconds.

    Raises:
        ValueError: fewer than one request, or a period that is not a positive number.
    """

    requests: int
    period: float

    def __post_init__(self) -> None:
        if self.requests < 1 or not (self.period > 0 and math.isfinite(self.period)):
            raise ValueError(
                f"a rate needs at least one request per positive period, "
                f"got {self.requests} per {self.period}s"
            )

    @classmethod
    def parse(cls, text: str) -> Rate:
        """Read a rate such as `5/2s`, `50/1s`, `150/1m` or `10/500ms`.

        Args:
            text: the rate, as the command line's `--rate` takes it.

        Returns:
            The rate.

        Raises:
            ValueError: the text is not of that form.
        """
        match = _RATE_RE.match(text.lower())
        unit = match and _UNITS.get(match.group(3) or "s")
        if not match or unit is None:
            raise ValueError(
                f"cannot read the rate {text!r}: write REQUESTS/PERIOD with a unit, "
                "like 5/2s, 50/1s, 150/1m or 10/500ms"
            )
        amount = float(match.group(2)) if match.group(2) else 1.0
        return cls(int(match.group(1)), amount * unit)

    @property
    def per_second(self) -> float:
        """The long-run rate this budget allows."""
        return self.requests / self.period

    def __str__(self) -> str:
        period = f"{self.period:g}s" if self.period < 60 else f"{self.period / 60:g}m"
        return f"{self.requests}/{period}"


DEFAULT_RATE = Rate(5, 2.0)


@dataclass(frozen=True, slots=True)
class ServerHints:
    """What one answer says about the server's rate limit; None where it says nothing.

    Attributes:
        limit: requests the server allows per window.
        window: the window, in seconds.
        remaining: requests still allowed now.
        reset: seconds until the window (or the oldest request in it) is done.
    """

    limit: int | None = None
    window: float | None = None
    remaining: int | None = None
    reset: float | None = None


def read_hints(
    headers: Mapping[str, str], detail: str | None = None, *, now: float | None = None
) -> ServerHints:
    """Read the rate-limit headers of an answer, and a 429's detail text.

    Understands the IETF draft (`RateLimit: limit=5, remaining=0, reset=1` or
    `"default";r=0;t=1`, `RateLimit-Policy: 5;w=2` or `"default";q=5;w=2`, and the older
    `RateLimit-Limit/-Remaining/-Reset`), the `X-RateLimit-Limit/-Remaining/-Reset` that
    slowapi and most gateways send (reset as seconds or as an epoch timestamp), and
    slowapi's 429 text `Rate limit exceeded: 4 per 2 second`.

    Args:
        headers: the answer's headers (a case-insensitive mapping, as aiohttp gives).
        detail: the answer's detail text, if any.
        now: the wall-clock time as a Unix timestamp, for epoch resets; default now.
    """
    limit = window = remaining = reset = None

    def header(name: str) -> str | None:
        value = headers.get(name)
        return value if value is not None and len(value) <= _LONGEST_HINT else None

    policy = header("RateLimit-Policy")
    if policy:
        limit, window = _strictest_policy(policy)
    draft = (header("RateLimit") or "").lower()
    if draft:
        limit = limit if limit is not None else _int_field(draft, "limit", "q")
        remaining = _int_field(draft, "remaining", "r")
        reset = _float_field(draft, "reset", "t")
    old_limit = header("RateLimit-Limit")
    if old_limit and limit is None:
        limit, window = _strictest_policy(old_limit)
    remaining = remaining if remaining is not None else _int(header("RateLimit-Remaining"))
    reset = reset if reset is not None else _number(header("RateLimit-Reset"))
    limit = limit if limit is not None else _int(header("X-RateLimit-Limit"))
    remaining = remaining if remaining is not None else _int(header("X-RateLimit-Remaining"))
    if reset is None and (x_reset := _number(header("X-RateLimit-Reset"))) is not None:
        # A duration is never a billion seconds long; an epoch timestamp always is.
        wall = time.time() if now is None else now
        reset = max(x_reset - wall, 0.0) if x_reset > 1e9 else x_reset
    if detail and (match := _DETAIL_RE.search(detail[:_LONGEST_HINT].lower())):
        said = (int(match.group(1)), float(match.group(2) or 1) * _UNIT_SECONDS[match.group(3)])
        if limit is None or window is None:
            limit, window = said
    return ServerHints(limit, window, remaining, reset)


def _strictest_policy(text: str) -> tuple[int | None, float | None]:
    """The policy item allowing the fewest requests per second (limit, window), of those
    over a window short enough to pace by (`_LONGEST_PACE`)."""
    best: tuple[int | None, float | None] = (None, None)
    best_rate = math.inf
    for item in text.lower().split(","):
        quota = _int_field(item, "q") if "q=" in item else _int(item.split(";")[0])
        if quota is None or quota < 1:
            continue
        window = _float_field(item, "w")
        if window is not None and window > _LONGEST_PACE:
            continue
        rate = quota / window if window else math.inf
        if best[0] is None or rate < best_rate:
            best, best_rate = (quota, window), rate
    return best


def _field(text: str, *names: str) -> str | None:
    for name in names:
        match = re.search(rf"(?:^|[,;\s]){name}\s*=\s*{_NUMBER}", text)
        if match:
            return match.group(1)
    return None


def _int_field(text: str, *names: str) -> int | None:
    value = _field(text, *names)
    return None if value is None else int(float(value))


def _float_field(text: str, *names: str) -> float | None:
    value = _field(text, *names)
    return None if value is None else float(value)


def _int(value: str | None) -> int | None:
    match = _INT_RE.match(value or "")
    return int(match.group(1)) if match else None


def _number(value: str | None) -> float | None:
    match = re.match(rf"^\s*{_NUMBER}\s*$", value or "")
    return float(match.group(1)) if match else None


@dataclass(slots=True, eq=False)
class _Send:
    """One slot handed out: when its request left, and when its answer came back."""

    owner: Pacer
    slot: float
    at: float
    answered: float | None = None
    rejected: bool = False
    shared_id: str | None = None  # its slot's id in the account's shared store
    room: int | None = None  # the server's remaining count as its answer said, if trusted


# The slot the current task took last: its request's send and answer are noted on it.
# aiohttp's trace hook and the client's call to `observe` run in the task that acquired.
_CURRENT: ContextVar[_Send | None] = ContextVar("bulk_issuer_pacer_send", default=None)


class _RoundTrips:
    """The fastest round trip seen, the slowest of the recent ones, and how many in all.

    The slowest is kept over the last `recent` answers only: one answer held up for
    seconds (a pause of ours, a server that stalled) says how late a request may come
    while such stalls last, not for the rest of the run. Kept for good, it made every
    unanswered request count as that late (1.5 times), and took the whole way in off the
    floor, for the rest of the run.
    """

    __slots__ = ("_recent", "count", "low")

    def __init__(self, recent: int = _RECENT_TRIPS) -> None:
        self.count = 0
        self.low = math.inf
        self._recent: deque[float] = deque(maxlen=max(recent, _RECENT_TRIPS))

    @property
    def high(self) -> float:
        """The slowest of the recent round trips (0 before any)."""
        return max(self._recent, default=0.0)

    def add(self, seconds: float) -> None:
        self.count += 1
        self.low = min(self.low, seconds)
        self._recent.append(seconds)

    def floor(self) -> float:
        """A lower bound of every round trip: the fastest one seen, less a margin for luck.

        The least of n draws lies (high - low) / (n - 1) above the true floor on average
        (for a uniform spread), and k times that with a chance of about e^-k once n is
        large. The spread is the recent one (`high`): the fastest of all answers is
        as far above the floor as the spread of the recent ones makes likely, and an
        answer stalled a minute ago does not take the whole way in off it for good. The
        window rule keeps `_SAFETY` in hand besides, so ten times that, less `_SAFETY`, is
        taken off (and three times at least, once the spread is small). With three times,
        whatever the spread (4%), about one run in a hundred of 120 learners at 5/2s drew a
        429 from a moving window, when an answer faster than any before came just as the
        window rule held a request to the promised way in. With seven, a run whose first
        36 answers were all 42 ms or slower (30-90 ms of latency) still put a sixth request
        into a 2 s window 1 ms early (the test of 300 learners with 2-second tokens, about
        one run in 30 under load, at the same interleaving of draws); ten covers it, and
        costs a few milliseconds a window early in a run and a fraction of one later.
        """
        if self.count < _MIN_SAMPLES:
            return 0.0
        spread = (self.high - self.low) / (self.count - 1)
        luck = max(_FLOOR_SPREADS_LEAST * spread, _FLOOR_SPREADS * spread - _SAFETY)
        return max(0.0, self.low - luck)


class Pacer:
    """Spaces every request so that no window of the server's holds more than its limit.

    The server judges arrivals, and an arrival lies between the moment a request left and
    the moment its answer came back. So a request may leave only once the `requests`-th
    latest arrival among the earlier ones is surely a whole `period` behind the moment it
    itself can arrive at the earliest: the answers say when those arrived (at the latest),
    and the fastest round trip seen says how soon a request can be there. That bound
    follows the network as observed; nothing is a constant per window. How much of the
    fastest round trip counts as the way in is probed upward after clean answers and cut
    back on a 429 that no limit explains (one such 429 per run at most).

    Requests also leave on an even grid just slower than that bound (a late answer delays
    one request, not every later one), and never closer together than the even spacing at
    the limit, so that sliding-window counters, which assume even traffic, accept them too;
    where the headers' counts show a server that counts each window afresh (a fixed
    window, a token bucket) or counts exactly our arrivals (a moving window), a request
    held back may catch up at half that spacing, and the grid runs at the limit itself
    (the window rule alone keeps each request safe).

    Where the headers give the server's remaining count for the budget in force, that count
    is a second, independent rule: it held when its request arrived, and on every common
    limiter it only grows until the next request counts (a window ends, an old request
    leaves it, a bucket refills). A request may leave when the count, less every request of
    ours that may have arrived since and one place in hand, leaves room, even where the
    window rule would wait: a fixed window starts afresh, a bucket is nearly full. These
    requests go on the even grid at the limit, counted from the run's first request: in
    the run's first window, while the count leaves a quarter of the limit spare, a
    request held back by slow first answers (a look-up, a first request alone) catches up
    on that grid at half its spacing. One 429 that the counts did not foresee, and they
    are not relied on again.

    Until answers are observed (`observe`), every arrival is assumed up to `margin` late:
    the even spacing `(period + margin) / requests` of earlier versions.

    A stricter server is learned: from `RateLimit-Policy`/`RateLimit`/`X-RateLimit-Limit`
    headers on any answer, from a 429's detail (`Rate limit exceeded: 4 per 2 second`), or
    else from how many requests of ours the server can have counted when it refused one.
    Whatever is learned, the budget in force is never looser than the configured one.

    Waiters are released one per slot by a single timer, urgent ones (token refreshes)
    first.

    Args:
        rate: the server's budget; `None` sends as fast as the workers go.
        margin: seconds of arrival jitter each window must absorb until answers are seen.

    Raises:
        ValueError: a negative margin.
    """

    def __init__(self, rate: Rate | None, *, margin: float = DEFAULT_MARGIN) -> None:
        if margin < 0:
            raise ValueError(f"the pacing margin must not be negative, got {margin}")
        self.rate = rate
        self.sent = 0
        self.rate_limited = 0
        #: The account's slots shared with other processes and hosts (coordination):
        #: after this pacer's own slot, each request also takes the account's next one,
        #: this pacer's gap after the last; None for this process alone (no cost).
        self.shared: SharedSlots | None = None
        self._gap_before_429 = 0.0
        self._margin = margin
        self._learned: Rate | None = None
        self._told = False  # the learned limit was said by the server, not counted
        self._extra = 0.0  # seconds per window added after 429s that no limit explains
        self._trips = _RoundTrips(2 * (rate.requests if rate is not None else 1))
        self._share = 0.0  # of the fastest round trip, assumed to be the way in
        self._probing = True
        self._clean = 0
        self._excess: float | None = None
        self._changed_at = -math.inf
        self._saw_429 = False
        self._forgets = False  # the server was seen to count a window afresh
        self._agreed = 0  # answers in a row whose count was exactly ours (a moving window)
        self._consistent = 0  # telling answers in a row whose count ours can explain
        self._smooth = False  # the server counted more than ours: never catch up
        self._room_trusted = True  # until a 429 the server's counts did not foresee
        depth = 2 * (rate.requests if rate is not None else 1) + 8
        self._sends: deque[_Send] = deque(maxlen=depth)
        self._next_slot = -math.inf  # the even grid
        self._limit_slot = -math.inf  # the even grid at the limit itself (the room rule's)
        self._last_slot = -math.inf
        self._resume_at = -math.inf
        self._waiters: list[tuple[int, int, asyncio.Future[_Send | None]]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = -math.inf
        self._lag = 0.0  # how late the loop has lately run this pacer's timer
        self._told_ends = False  # told of an answer (or a request's end) at least once
        self._sharing = 0  # ordinary requests waiting for the account's slot (0 or 1)
        self._shared_ids = itertools.count()
        self._answers: list[tuple[str, float]] = []  # answered shared slots not yet told

    # -- what the pacer knows --------------------------------------------------------------

    @property
    def limit(self) -> Rate | None:
        """The budget in force: the configured one, or a stricter one learned from the server."""
        return self._learned or self.rate

    @property
    def margin(self) -> float:
        """Seconds per window given up to arrival jitter, as now measured."""
        if self._timed():
            excess = self._excess if self._excess is not None else self._early_excess()
            return max(excess, 0.0) + _GRID_SLACK + self._extra
        return self._margin + self._extra

    def _early_excess(self) -> float:
        """The margin's measure before a whole window of our own sends: how much later than
        the assumed way in our answers have come on average (a run sharing the account, or
        a short one, may not send a window's worth for a long while)."""
        trips = [s.answered - s.at for s in self._sends if s.answered is not None]
        if not trips:
            return self._margin
        return sum(trips) / len(trips) - self._lead() + _SAFETY + self._lag

    @property
    def paused(self) -> bool:
        """Whether a server's pause (a 429's, a `Retry-After`) holds every request now."""
        return self._resume_at > _now()

    @property
    def gap(self) -> float:
        """The current even spacing between two requests, in seconds."""
        budgets = self._budgets()
        if not budgets:
            return 0.0
        # Where the answers show how the server counts (`_catch_up`), the window rule holds
        # every request to the measured arrivals and the grid need not carry the margin.
        margin = _GRID_SLACK + self._extra if self._catch_up() else self.margin
        gap = max((b.period + margin) / b.requests for b in budgets)
        return min(gap, _MAX_SLOWDOWN * max(b.period / b.requests for b in budgets))

    def _shared_window(self, send: _Send) -> Window | None:
        """This slot's part in the account-wide window rule (see `coordination.gcra`).

        The widest budget's window, the least way in, and the latest this request can
        arrive; with the answers to our earlier slots since the last reservation.
        """
        assert self.shared is not None
        budget = max(self._budgets(), key=lambda b: b.period / b.requests)
        if budget.requests > RING:
            return None
        send.shared_id = f"{self.shared.owner}:{next(self._shared_ids)}"
        answers, self._answers = tuple(self._answers), []
        timed = self._timed()
        return Window(
            requests=budget.requests,
            reach=budget.period
            - self._lead()
            + (_SAFETY + self._lag if timed else 0.0)
            + self._extra,
            late=self._unanswered() if timed else self._margin,
            slot_id=send.shared_id,
            answers=answers,
        )

    def _shared_gap(self) -> float:
        """The spacing the account's shared grid keeps after a slot of this pacer's.

        Another process's next request is judged by none of our answers, only by this
        spacing: so its margin is the whole spread of the way in (the slowest recent round
        trip less the fastest way in), not the mean excess that the window rule leaves.
        """
        budgets = self._budgets()
        if not budgets or not self._timed():
            return self.gap
        recent = max(
            (s.answered - s.at for s in self._sends if s.answered is not None),
            default=self._trips.high,
        )
        spread = max(recent - self._lead(), 0.0) + _SAFETY + self._lag + _GRID_SLACK
        spread += self._extra
        widest = max((b.period + spread) / b.requests for b in budgets)
        cap = _MAX_SLOWDOWN * max(b.period / b.requests for b in budgets)
        return max(self.gap, min(widest, cap))

    def _budgets(self) -> list[Rate]:
        if self.rate is None:
            return []
        return [self.rate] if self._learned is None else [self.rate, self._learned]

    def _timed(self) -> bool:
        return self._trips.count >= _MIN_SAMPLES

    # -- the calls the client makes --------------------------------------------------------

    async def acquire(self, *, urgent: bool = False) -> None:
        """Wait for this request's slot. Call it right before each request is sent.

        Args:
            urgent: go before every ordinary waiter (a token refresh that all of them need).
        """
        if self.rate is None:
            # No pace to keep, but a server's pause (a 429's Retry-After) still holds; it
            # may grow while this sleeps, hence the loop rather than an Event.
            while (wait := self._resume_at - _now()) > 0:  # noqa: ASYNC110
                await asyncio.sleep(wait)
            self.sent += 1
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        previous = _CURRENT.get()
        if previous is not None and previous.owner is self and previous.answered is None:
            # A task sends one request at a time: its last one is done with by now, answered
            # or not, or its slot went unused (no token to send it with, a stop). Left open,
            # such a slot would count as possibly arriving for good (`_latest`), and a
            # window's worth of them would hold every request.
            previous.answered = now
        if not self._waiters and not self._sharing and now >= self._slot():
            mine = self._reserve(now, idle=True)
            _CURRENT.set(mine)
            if self.shared is not None:
                await self._take_shared(mine, urgent=urgent)
            return
        waiter: asyncio.Future[_Send | None] = loop.create_future()
        heapq.heappush(self._waiters, (0 if urgent else 1, next(self._order), waiter))
        self._arm(loop)
        try:
            send = await waiter
        except BaseException:
            # Cancelled while waiting: its place in the heap is skipped. Cancelled after
            # being released: that slot goes unused, which only errs on the slow side.
            waiter.cancel()
            raise
        _CURRENT.set(send)
        if self.shared is not None and send is not None:
            await self._take_shared(send, urgent=urgent)

    async def _take_shared(self, send: _Send, *, urgent: bool) -> None:
        """Take the account's slot after this pacer's own.

        No other ordinary request of this pacer gets its own slot meanwhile: a slot handed
        out while another waits for the account's would be judged on sends that have not
        left. A slot the account gives later than the pacer's becomes the request's slot,
        and the next one keeps a whole gap after it, as after any late send.
        """
        assert self.shared is not None
        # How long after this slot the window rule lets our next request go: another
        # process's next waits as long (it matters after a stretch alone on the account).
        fence = max(self._window_bound()[0] - send.slot, 0.0)
        window = self._shared_window(send)
        # With the window rule shared, the grid keeps this pacer's own even spacing, as
        # one run alone does; a window too long for the store's ring needs the wider one.
        interval = self.gap if window is not None else self._shared_gap()
        if urgent:
            await self.shared.acquire(interval, urgent=True, fence=fence, window=window)
            return
        alone = max(b.requests for b in self._budgets())
        self._sharing += 1
        try:
            await self.shared.acquire(interval, alone=alone, fence=fence, window=window)
        finally:
            self._sharing -= 1
            now = _now()
            if now - send.slot > _SEND_TOLERANCE and send.answered is None:
                send.slot = send.at = now
                self._last_slot = max(self._last_slot, now)
                self._next_slot = max(self._next_slot, now + self.gap - _SEND_TOLERANCE)
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._arm(asyncio.get_running_loop())

    def note_sent(self) -> None:
        """Note that a request's headers just went out on the wire.

        A request that left late for its slot (it had to open a connection first, or the
        loop was busy) pushes the next slot to a full gap after it: otherwise the next
        request, on a warm connection, would arrive closer behind it than the gap. Only
        the lateness beyond the least of the last few counts: a delay every request has
        (the client's own steps between slot and wire) shifts them all alike.
        """
        if self.rate is None:
            return
        now = _now()
        send = _CURRENT.get()
        leaves = now  # when the next request would leave, were its slot now
        if send is not None and send.owner is self and send.answered is None:
            send.at = max(send.at, now)
            usual = min((s.at - s.slot for s in self._sends if s is not send), default=0.0)
            if now - send.slot - usual <= _SEND_TOLERANCE:
                return  # on time for its slot (which may lie off the grid on purpose)
            leaves = now - usual
        floor = leaves + self.gap - _SEND_TOLERANCE
        if floor > self._next_slot:
            self._next_slot = floor

    def observe(
        self,
        status: int,
        headers: Mapping[str, str],
        detail: str | None = None,
        *,
        shared: bool = True,
    ) -> None:
        """Take in one answer (any endpoint, any status), before the client acts on it.

        Its arrival says when the request reached the server at the latest; its headers
        (or a 429's detail) may say the server's limit and how much room is left.

        Args:
            status: the HTTP status.
            headers: the answer's headers.
            detail: the answer's detail text, if any (what a 429 says).
            shared: the answer's endpoint is limited by the budget every request shares.
                False for one that may keep a limit of its own (the token endpoint): its
                arrival and round trip count as any other's, but its 429s and headers
                teach nothing of the pace (one login per 4 s, taken for the limit of every
                request, slowed a whole run to one issue call per 4 s). Were the limit
                truly shared, the other requests' own 429s and headers would say so.
        """
        if self.rate is None:
            return
        now = _now()
        send = _CURRENT.get()
        if send is not None and (send.owner is not self or send.answered is not None):
            send = None
        if send is not None:
            send.answered = now
            self._told_ends = True
            self._trips.add(now - send.at)
            if send.shared_id is not None and len(self._answers) < 4 * RING:
                self._answers.append((send.shared_id, now - send.slot))
        if not shared:
            if status == 429:
                # Its own limit or the shared one, there is no telling: nothing is learned
                # of the pace, but what only the shared budget's counts could allow (the
                # server's remaining count, a held-back request catching up) is given up.
                self._room_trusted = False
                self._stop_catching_up()
            self._rearm()
            return
        hints = read_hints(headers, detail)
        if status == 429:
            # What the account's other processes are told to widen from (rate_limited_for):
            # the gap before this 429 taught anything, so a lesson is not applied twice.
            self._gap_before_429 = self.gap
        changed = self._learn_limit(hints, now)
        if status == 429:
            self._saw_429 = True
            if send is not None:
                send.rejected = True
            if not changed:
                self._learn_from_429(send, hints, now)
        else:
            if send is not None:
                self._clean += 1
                if self._probing and self._clean >= _PROBE_EVERY and self._timed():
                    self._clean = 0
                    self._share = min(1.0, self._share + _PROBE_STEP)
            self._room_left(send, hints, now)
            self._judge_windows(send, hints)
            if send is not None and self._counts_ours(hints):
                send.room = hints.remaining
        self._rearm()

    def note_ended(self) -> None:
        """Note that the current request ended without an answer (no connection, a dropped
        one, a timeout, a cancelled send).

        It may have reached the server at any moment until now (or never), and no later:
        until told, the window rule counts it as possibly arriving now (`_latest`), and a
        whole window of such requests would hold every later one for good. It teaches
        nothing of round trips: how long a request waited for nothing says nothing of how
        soon one can arrive.
        """
        if self.rate is None:
            return
        send = _CURRENT.get()
        if send is None or send.owner is not self or send.answered is not None:
            return
        send.answered = _now()
        self._told_ends = True
        self._rearm()

    def pause(self, seconds: float) -> None:
        """Hold every request for a while (a server asked to come back later).

        Args:
            seconds: how long from now; at least one even spacing.
        """
        resume = _now() + max(seconds, self.gap)
        if resume > self._resume_at:
            self._resume_at = resume
            self._rearm()

    def rate_limited_for(self, retry_after: float | None) -> float:
        """Take a 429: pause every sender (and learn from it, if `observe` did not).

        Args:
            retry_after: the seconds the server asked for, if it said.

        Returns:
            The pause, in seconds.
        """
        self.rate_limited += 1
        now = _now()
        before = self._gap_before_429 if self._saw_429 else self.gap
        if not self._saw_429 and self.rate is not None:
            send = _CURRENT.get()
            mine = send if send is not None and send.owner is self else None
            self._learn_from_429(mine, ServerHints(), now)
        self._saw_429 = False
        pause = retry_after if retry_after is not None else self._default_pause()
        self.pause(pause)
        if self.shared is not None:
            # Every other process of the account pauses too, and widens its gap from what
            # it was before this 429 (a limit it taught this pacer is already in its gap).
            self.shared.rate_limited(max(self._resume_at - now, 0.0), before)
        return max(self._resume_at - now, 0.0)

    # -- learning ---------------------------------------------------------------------------

    def _learn_limit(self, hints: ServerHints, now: float) -> bool:
        """Adopt a limit the server stated, if stricter than the configured one; True if new."""
        assert self.rate is not None
        if hints.limit is None or hints.limit < 1:
            return False
        said = Rate(hints.limit, hints.window or self.rate.period)
        if said.period > _LONGEST_PACE:
            return False  # a quota, not a pace: its 429's Retry-After says when to come back
        if said.per_second >= self.rate.per_second and said.requests >= self.rate.requests:
            if self._learned is not None and self._told:
                self._learned = None  # the server now allows the configured limit again
            return False
        if said == self._learned and self._told:
            return False
        self._learned, self._told = said, True
        self._changed_at = now
        return True

    def _learn_from_429(self, send: _Send | None, hints: ServerHints, now: float) -> None:
        assert self.rate is not None
        if send is not None and send.at < self._changed_at:
            return  # sent before the last lesson: nothing new
        if send is None and now < self._resume_at:
            return  # one lesson per episode when the pacer cannot tell the requests apart
        limit = self.limit
        assert limit is not None
        if send is not None and send.at - limit.period < self._resume_at:
            # The window the server judged held a pause of ours (a 429's, the refused
            # request's own retry after it): our count there is not our pace, and a server
            # still refusing then says nothing of its limit (a lone retry taught 1 per
            # window, for the rest of the run).
            return
        self._changed_at = now
        counted = self._counted(send, now, limit.period, itself=False)
        if send is not None and 0 < counted < limit.requests and hints.limit is None:
            # The server refused with fewer of ours in its window than we allow ourselves:
            # its limit is at most that many (the spacing at which the 429s stop).
            self._learned, self._told = Rate(counted, limit.period), False
            return
        # Our own count fits the limit: the way in was shorter than assumed, or someone else
        # spends the budget, or the server is not what its counts made it look (a sliding-
        # window counter taken for a moving window). Stop probing, step back, and give every
        # window a little more; the server's remaining counts, which did not foresee it, are
        # no longer relied on, and no held-back request catches up again.
        self._probing = False
        self._room_trusted = False
        self._stop_catching_up()
        if self._share > 0:
            self._share = max(0.0, self._share - 2 * _PROBE_STEP)  # the probe went too far
        else:
            self._extra = min(self._extra + _WIDEN * limit.period, limit.period)

    def _room_left(self, send: _Send | None, hints: ServerHints, now: float) -> None:
        """When the server says it is full and our own requests do not explain it, wait.

        Someone else spends the budget: nobody sends before the reset, or one window at
        most (a longer quota is for 429s and the client's retry policy to report).
        """
        if hints.remaining != 0 or hints.reset is None:
            return
        limit = self.limit
        assert limit is not None
        # A sliding-window counter may say full a request early: only a clear excess counts.
        if self._counted(send, now, limit.period, itself=True) + 1 < (
            hints.limit or limit.requests
        ):
            self.pause(min(hints.reset, limit.period))

    def _judge_windows(self, send: _Send | None, hints: ServerHints) -> None:
        """Tell from the server's own count whether a held-back request may catch up.

        The count an answer reports (limit - remaining) is set against the requests of ours
        that surely, and that possibly, arrived in the period before this one. One request
        (this one) while half a window of ours surely arrived before: the server forgets
        whole windows (a fixed window, a token bucket). Exactly our count, again and again,
        or at high rates a count within the few of ours in doubt, again and again, and
        never one outside: a moving window. More than ours can explain: a sliding-window
        counter (it weighs the previous window as if even) or someone else; then never
        again (nor after a 429 that no limit explains).
        """
        if self._smooth or send is None or hints.remaining is None:
            return
        limit = self.limit
        assert limit is not None
        allowed = hints.limit or limit.requests
        period = hints.window or limit.period
        counted = allowed - hints.remaining
        lead = self._lead()
        unanswered = self._unanswered()
        now = _now()
        earliest = send.at + lead
        latest = self._latest(send, now, lead, unanswered)
        surely = possibly = 1
        for other in self._sends:
            if other is send:
                continue
            low = other.at + lead
            high = self._latest(other, now, lead, unanswered)
            if not other.rejected and low > latest - period and high <= earliest:
                surely += 1
            if high > earliest - period and low <= latest:
                possibly += 1
        if counted > possibly:
            self._stop_catching_up()
        elif counted == 1 and surely > max(3, allowed // 2 + 1):
            self._forgets = True
        elif surely <= counted <= possibly:
            self._consistent += possibly - surely <= _TELLING
            self._agreed += counted == surely == possibly
        else:
            self._agreed = self._consistent = 0

    def _stop_catching_up(self) -> None:
        """The server counts more than our arrivals explain (or refused what no limit
        explains): no held-back request catches up again, for the rest of the run."""
        self._smooth, self._forgets, self._agreed, self._consistent = True, False, 0, 0

    def _counted(self, send: _Send | None, now: float, period: float, *, itself: bool) -> int:
        """At most how many of our requests the server's window ending at `send` held."""
        lead = self._lead()
        earliest = (send.at if send is not None else now) + lead
        unanswered = self._unanswered()
        others = sum(
            1
            for other in self._sends
            if other is not send
            and other.at <= now
            and self._latest(other, now, lead, unanswered) > earliest - period
        )
        return others + (1 if itself and send is not None else 0)

    def _default_pause(self) -> float:
        # Without a hint, wait out one whole window of the budget in force.
        limit = self.limit
        return limit.period if limit is not None else 1.0

    # -- the schedule -----------------------------------------------------------------------

    def _lead(self) -> float:
        """How soon after leaving a request is assumed to reach the server, at the earliest."""
        return self._share * self._trips.floor()

    def _unanswered(self) -> float:
        """How late after leaving a request without an answer yet is assumed to arrive
        while it is no later than its peers (see `_latest`, which never lets that bound
        fall behind the present)."""
        if not self._timed():
            return self._margin
        return max(1.5 * self._trips.high, self._margin)

    def _latest(self, send: _Send, now: float, lead: float, unanswered: float) -> float:
        """The latest moment `send` can have reached the server, or may yet reach it.

        An answer (or the end of a request that got none: `note_ended`) bounds it. Until
        then a request may arrive at any moment, however long it has been on the way: a
        server that froze for seconds takes in everything queued meanwhile at once when it
        wakes. Assumed to have arrived 1.5 times the slowest recent round trip after it
        left, a request stuck longer stopped counting in the windows ahead, its place was
        taken as used up, and more were sent: seven in one 2 s window at 5/2s after a 3 s
        freeze, 34 in one second at 20/1s. So an unanswered request counts as arriving no
        earlier than the soonest a request sent now can (`now + lead`): with a whole window
        of them unanswered nothing more leaves until answers come back, and with the usual
        few in flight, well inside the latest window's count, nothing changes.

        A pacer never told of any answer (`acquire` alone, as a caller that does not
        report them uses it) keeps to the margin: every request assumed in by then.
        """
        if send.answered is not None:
            return send.answered
        left = send.at if self._timed() else send.slot
        if not self._told_ends:
            return left + unanswered
        return max(left + unanswered, now + lead)

    def _window_bound(self) -> tuple[float, float]:
        """The earliest the next request may leave for every budget's window, and its excess.

        Returns:
            (time, excess): the bound, and how far it lies beyond one period after the
            send it waits for (the margin this window needs, as measured).
        """
        lead = self._lead()
        unanswered = self._unanswered()
        timed = self._timed()
        now = _now()
        # Before any answer, each slot is assumed to arrive up to the margin after it: the
        # even grid of earlier versions, which pushes itself for sends late on the wire.
        # A busy loop answers late on both sides: what looked like the way in may partly
        # have been the way back, so the bound keeps the loop's recent lateness too.
        safety = _SAFETY + self._lag if timed else 0.0
        bound, excess, widest = -math.inf, 0.0, -1.0
        for budget in self._budgets():
            n = budget.requests
            if len(self._sends) < n:
                continue
            # An unanswered request may still arrive (`_latest`): while the n-th latest is
            # one, this bound moves on with the clock, and the timer follows it (`_release`).
            arrived = _nth_largest(n, [self._latest(s, now, lead, unanswered) for s in self._sends])
            left = _nth_largest(n, (s.at for s in self._sends))
            window = arrived + budget.period - lead + safety + self._extra
            bound = max(bound, window, left + budget.period + _SAFETY)
            gap = budget.period / n
            if gap > widest:
                widest, excess = gap, window - left - budget.period - self._extra
        return bound, excess

    def _slot(self) -> float:
        """The earliest the next request may leave."""
        even = self._even()
        share = _CATCH_UP_SPACING if self._catch_up() else _MIN_SPACING
        spaced = max(self._last_slot + share * even, self._resume_at)
        slot = max(self._next_slot, spaced, self._window_bound()[0])
        # The server's own count may let a request go sooner: on the grid at the limit, and
        # never more than the limit's count of our sends in any period (the configured
        # budget, as the user stated it, holds on our side whatever the server allows).
        hurried = max(self._last_slot + _CATCH_UP_SPACING * even, self._resume_at)
        if slot <= max(self._limit_slot, hurried):
            return slot
        spare = self._room()
        if spare < 1:
            return slot
        if self._starting() and spare >= self._wide_room():
            # The run's first window with room to spare (a count a few too high cannot be
            # what lets these through): what its first answers cost, a look-up and a first
            # request alone, is made up on the grid at the limit, at half its spacing.
            spaced = hurried
        return min(slot, max(self._limit_slot, spaced, self._sends_bound()))

    def _sends_bound(self) -> float:
        """The earliest a request may leave with no more than the limit's count of our
        sends in any period, by their send times alone."""
        bound = -math.inf
        for budget in self._budgets():
            if len(self._sends) >= budget.requests:
                left = _nth_largest(budget.requests, (s.at for s in self._sends))
                bound = max(bound, left + budget.period + _SAFETY)
        return bound

    def _counts_ours(self, hints: ServerHints) -> bool:
        """The answer's remaining count is for the budget in force (not another quota)."""
        limit = self.limit
        if not self._room_trusted or hints.remaining is None or limit is None:
            return False
        if hints.limit != limit.requests or hints.remaining > hints.limit:
            return False
        return hints.window is None or math.isclose(hints.window, limit.period, rel_tol=1e-3)

    def _room(self) -> int:
        """How many places the server's own count leaves for requests sent now (0: none).

        An answer's remaining count held at its arrival; on every common limiter it only
        grows with time until the next request counts (a window ends, old requests leave
        it, a bucket refills, a previous window weighs less). So a request may leave if
        that count, less every request of ours that may arrive after that answer's request
        (and a cushion), still leaves one place, whatever the window rule says. The most
        any of the latest answers leaves is taken.
        """
        if not self._room_trusted:
            return 0
        lead, unanswered, now = self._lead(), self._unanswered(), _now()
        consulted, spare = 0, 0
        for known in reversed(self._sends):
            if known.room is None:
                continue
            earliest = known.at + lead
            after = sum(
                1
                for other in self._sends
                if other is not known and self._latest(other, now, lead, unanswered) > earliest
            )
            spare = max(spare, known.room - after - _ROOM_CUSHION)
            consulted += 1
            if consulted >= _ROOM_ANSWERS:
                break
        return spare

    def _wide_room(self) -> int:
        """Places the server's count must leave before a request may catch up on them."""
        limit = self.limit
        assert limit is not None
        return max(_WIDE_ROOM_LEAST, math.ceil(_WIDE_ROOM * limit.requests))

    def _starting(self) -> bool:
        """Fewer requests sent than the budget's count: the run's first window."""
        limit = self.limit
        return limit is not None and self.sent < limit.requests

    def _catch_up(self) -> bool:
        """The server counts each window afresh, or exactly our arrivals: a request held
        back by the window rule may catch up, and the grid may run at the limit."""
        moving = self._agreed >= _AGREED or self._consistent >= _CONSISTENT
        return (self._forgets or moving) and not self._smooth and self._timed()

    def _even(self) -> float:
        """The even spacing at the limit in force (no margin)."""
        return min(b.period / b.requests for b in self._budgets())

    def _reserve(self, now: float, *, idle: bool) -> _Send:
        """Take the slot at `now`: the one place the schedule's state changes.

        Args:
            now: the loop time, at or after `_slot()`.
            idle: nobody was waiting when the slot came; the grid restarts from now.
        """
        gap = self.gap
        limit = self.limit
        assert limit is not None
        if self._timed() and len(self._sends) >= limit.requests:
            excess = self._window_bound()[1]
            weight = 1.0 / max(8, 2 * limit.requests)
            previous = excess if self._excess is None else self._excess
            # A stall is not jitter: answers held up for seconds (a pause of ours, a server
            # that stalled) hold the next window's requests that long, once, and the
            # window rule sees to that. Averaged in, they widened the grid by seconds per
            # window for two hundred slots after (a run at 20/1s went on at 13 a second
            # after a 2 s stall, at 7 after a 40 s pause). A slot counts at most
            # `_EXCESS_JUMP` times the measure so far: jitter that truly grew still
            # doubles it within a window or two.
            excess = min(excess, _EXCESS_JUMP * max(previous, 0.0) + _GRID_SLACK)
            self._excess = previous + weight * (excess - previous)
        if idle and now - self._next_slot >= gap:
            self._next_slot = now + gap  # the pacer sat idle: the grid restarts now
        else:
            # A slot held back by the window bound does not move the grid: the requests
            # after it catch up (no closer than `_MIN_SPACING`), at most a gap behind.
            self._next_slot = max(self._next_slot + gap, now - gap)
        even = self._even()
        # The grid at the limit starts with the run's first request and may fall a whole
        # window behind in the first window, one spacing behind after it.
        behind = limit.period if self._starting() else even
        if idle and now - self._limit_slot >= behind:
            self._limit_slot = now + even
        else:
            self._limit_slot = max(self._limit_slot + even, now - behind)
        self._last_slot = now
        send = _Send(self, now, now)
        self._sends.append(send)
        self.sent += 1
        return send

    def _held(self) -> bool:
        """An ordinary waiter is next while a slot of ours waits for the account's."""
        return bool(self._sharing) and bool(self._waiters) and self._waiters[0][0] != 0

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is None and self._waiters and not self._held():
            self._timer_at = max(self._slot(), loop.time())
            self._timer = loop.call_at(self._timer_at, self._release, loop)

    def _rearm(self) -> None:
        """The slot may have moved (an answer came, a pause began): set the timer anew."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._arm(asyncio.get_running_loop())

    def _release(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._lag = max(loop.time() - self._timer_at, self._lag * _LAG_DECAY)
        while self._waiters and self._waiters[0][2].done():
            heapq.heappop(self._waiters)
        # A timer may fire a hair early (the loop's clock resolution): a microsecond is
        # nothing next to the margin, and refusing it would spin.
        now = loop.time()
        if self._waiters and not self._held() and now + 1e-6 >= self._slot():
            _, _, waiter = heapq.heappop(self._waiters)
            waiter.set_result(self._reserve(max(now, self._slot()), idle=False))
        self._arm(loop)


def _nth_largest(n: int, values: Iterable[float]) -> float:
    return heapq.nlargest(n, values)[-1]


def _now() -> float:
    return anyio.current_time()
