"""The shared slot schedule as pure decisions: GCRA with no burst, a pause, a wider gap.

GCRA (the generic cell rate algorithm) keeps one number per account, the theoretical
arrival time `tat`: the earliest the next request may leave. A reservation at `now` with
emission interval `T` is granted at `max(now, tat)` and moves `tat` to that time plus `T`.
With no burst allowance, that is exactly the pacer's even grid, shared: every process of
the account reserves on the same line, so together they leave `T` apart. The same
arithmetic runs in Python (local store, in-process) and in the Redis Lua script.

All times are seconds on the store's clock; nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

__all__ = ["HOLD_WIDER", "WIDEN", "PaceState", "rate_limited", "reserve"]

#: After the first 429 of an episode every process's gap becomes this much wider ...
WIDEN = 1.15
#: ... at most this many times the reporter's own gap ...
MAX_WIDEN = 4.0
#: ... for this many seconds after the last 429 (then each pacer's own gap rules again).
HOLD_WIDER = 600.0


@dataclass(frozen=True, slots=True)
class PaceState:
    """The account's shared schedule.

    Attributes:
        tat: the earliest the next request may leave.
        resume_at: nothing leaves before this (a 429's pause, shared by every process).
        floor: the least gap any process uses while `now < floor_until` (after a 429).
        floor_until: when the wider gap lapses.
    """

    tat: float = -math.inf
    resume_at: float = -math.inf
    floor: float = 0.0
    floor_until: float = -math.inf


def reserve(state: PaceState, now: float, interval: float) -> tuple[float, PaceState]:
    """Reserve the next slot.

    Args:
        state: the schedule before.
        now: the store's clock.
        interval: the reserving pacer's gap, in seconds (the emission interval).

    Returns:
        (the slot's time, the schedule after). The caller sleeps `slot - now`.
    """
    gap = max(interval, state.floor) if now < state.floor_until else interval
    at = max(now, state.tat, state.resume_at)
    return at, replace(state, tat=at + gap)


def rate_limited(state: PaceState, now: float, pause: float, interval: float) -> PaceState:
    """A 429 seen by one process: pause every process, and widen everyone's gap.

    Only the first 429 of an episode (one that arrives when no pause is running) widens:
    answers to requests already on the wire do not count twice.

    Args:
        state: the schedule before.
        now: the store's clock.
        pause: seconds to hold every request from now.
        interval: the reporter's gap, in seconds.
    """
    floor, until = state.floor, state.floor_until
    if now >= state.resume_at:
        base = max(interval, floor) if now < until else interval
        floor, until = min(base * WIDEN, interval * MAX_WIDEN), now + HOLD_WIDER
    resume = max(state.resume_at, now + pause)
    return PaceState(max(state.tat, resume), resume, floor, until)
