"""The shared slot schedule as pure decisions: GCRA with no burst, a pause, a wider gap.

GCRA (the generic cell rate algorithm) keeps one number per account, the theoretical
arrival time `tat`: the earliest the next request may leave. A reservation at `now` with
emission interval `T` is granted at `max(now, tat)` and moves `tat` to that time plus `T`.
With no burst allowance, that is exactly the pacer's even grid, shared: every process of
the account reserves on the same line, so together they leave `T` apart. The same
arithmetic runs in Python (local store, in-process) and in the Redis Lua script.

The grid spaces one process's request from another's. Once the last `alone` slots of
the account (a window's worth of the limit) were all one process's (its `owner`), its own
pacer has seen every request a server's window can hold: it spaces the next one itself
(it knows their answers, and may let a request held back catch up) and the grid adds
nothing, so that a run alone on the account paces exactly as it would with no store. An
account whose every remembered slot reached the server a whole window ago (or a fresh one)
is its next owner's alone from that owner's first slot: no window can hold another
process's request with it, and a run starting on a quiet account is not held to the grid
for its first window.
Every reservation also leaves a `fence`: the earliest its pacer's own window rule lets the
next request go. Another process's slot comes no earlier, so that a run that has had the
account to itself hands it over without overfilling the window it spaced alone.

The window rule itself is shared too (`Window`): the store keeps the account's last
`RING` slots with the latest each can have reached the server (its slot plus the longest
way in, until its answer says sooner; answers ride on their process's next reservation).
A slot comes no sooner than the `requests`-th latest of those arrivals plus the window,
less the shortest way in: exactly one pacer's rule, over every process's requests. So the
grid can run at the pacer's own even spacing, as one run alone does.

All times are seconds on the store's clock; nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

__all__ = ["HOLD_WIDER", "RING", "WIDEN", "PaceState", "Window", "rate_limited", "reserve"]

#: After the first 429 of an episode every process's gap becomes this much wider ...
WIDEN = 1.15
#: ... at most this many times the reporter's own gap ...
MAX_WIDEN = 4.0
#: ... for this many seconds after the last 429 (then each pacer's own gap rules again):
#: two clean minutes, and a 429 that another client of the account caused no longer slows
#: the account's runs.
HOLD_WIDER = 120.0
#: How many of the account's latest slots the store remembers for the window rule: a
#: window of more requests than this is kept by the grid's spacing alone.
RING = 64


@dataclass(frozen=True, slots=True)
class Window:
    """A reservation's part in the account-wide window rule.

    Attributes:
        requests: how many requests the window holds (N).
        reach: seconds after the N-th latest arrival before a request may leave (the
            window, less the shortest way in, plus a little for clocks).
        late: seconds after its slot by which this request surely reached the server.
        slot_id: this slot's id (unique for the account).
        answers: (slot id, seconds from that slot to its answer) for slots of this
            reserver answered since its last reservation.
    """

    requests: int
    reach: float
    late: float
    slot_id: str
    answers: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class PaceState:
    """The account's shared schedule.

    Attributes:
        tat: the earliest the next request may leave.
        resume_at: nothing leaves before this (a 429's pause, shared by every process).
        floor: the least gap any process uses while `now < floor_until` (after a 429).
        floor_until: when the wider gap lapses.
        owner: who reserved the last slot ("" for nobody known).
        last: when the last slot was.
        streak: how many slots in a row, up to the last, `owner` reserved.
        fence: the earliest another process's slot may be (the last owner's window rule).
        ring: the account's latest slots, oldest first: (slot id, slot, reached by).
    """

    tat: float = -math.inf
    resume_at: float = -math.inf
    floor: float = 0.0
    floor_until: float = -math.inf
    owner: str = ""
    last: float = -math.inf
    streak: int = 0
    fence: float = -math.inf
    ring: tuple[tuple[str, float, float], ...] = ()


def reserve(
    state: PaceState,
    now: float,
    interval: float,
    owner: str = "",
    alone: int = 0,
    fence: float = 0.0,
    window: Window | None = None,
) -> tuple[float, PaceState]:
    """Reserve the next slot.

    Args:
        state: the schedule before.
        now: the store's clock.
        interval: the reserving pacer's gap, in seconds (the emission interval).
        owner: the reserving pacer's id; "" for one that never spaces itself.
        alone: after this many slots of its own in a row, the pacer spaces itself; 0 never.
        fence: seconds after this slot before which its pacer's window rule lets no next
            request go; another process's next slot waits for it too.
        window: the reserver's part in the account-wide window rule; None: no part.

    Returns:
        (the slot's time, the schedule after). The caller sleeps `slot - now`.
    """
    widened = now < state.floor_until
    mine = bool(owner) and owner == state.owner
    ring = _answered(state.ring, window.answers) if window is not None else state.ring
    streak = state.streak + 1 if mine else 1
    if _idle(state, ring, now, owner, alone, window):
        # Every slot the account remembers reached the server a window before this one
        # can: no window of the server's holds another process's request with it, so
        # this pacer spaces it alone (a run alone on an account starts as with no store).
        streak, mine = max(streak, alone + 1), True
    if mine and alone > 0 and streak > alone:
        # Its pacer has seen every request of the last window: it spaced this one. A
        # 429's pause, which its pacer may not know of, still holds; the wider gap does
        # not: it holds processes back from each other, and this one is alone (its own
        # 429s its pacer learns from, as with no store).
        at = max(now, state.resume_at, state.last)
    else:
        # Another process's fence holds it; this pacer's own fence its pacer applied.
        at = max(now, state.tat, state.resume_at, -math.inf if mine else state.fence)
        if window is not None and 0 < window.requests <= len(ring):
            reached = sorted((entry[2] for entry in ring), reverse=True)
            at = max(at, reached[window.requests - 1] + window.reach)
    if window is not None:
        ring = (*ring, (window.slot_id, at, at + max(window.late, 0.0)))[-RING:]
    gap = max(interval, state.floor) if widened else interval
    return at, replace(
        state,
        tat=at + gap,
        owner=owner,
        last=at,
        streak=streak,
        fence=at + max(fence, 0.0),
        ring=ring,
    )


def _idle(
    state: PaceState,
    ring: tuple[tuple[str, float, float], ...],
    now: float,
    owner: str,
    alone: int,
    window: Window | None,
) -> bool:
    """Whether every remembered slot reached the server a whole window before `now`.

    The account's last slot counts too, reached at this reserver's latest way in: a
    process whose budget is too wide for the ring reserves without adding to it.
    """
    if alone <= 0 or not owner or window is None or not 0 < window.requests <= RING:
        return False
    if state.last + max(window.late, 0.0) + window.reach > now:
        return False
    return all(reached + window.reach <= now for _, _, reached in ring)


def _answered(
    ring: tuple[tuple[str, float, float], ...], answers: tuple[tuple[str, float], ...]
) -> tuple[tuple[str, float, float], ...]:
    """The ring with what answers say: each answered slot reached the server by then."""
    if not answers:
        return ring
    trips = dict(answers)
    return tuple(
        (key, at, min(reached, at + max(trips[key], 0.0)) if key in trips else reached)
        for key, at, reached in ring
    )


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
    return replace(
        state, tat=max(state.tat, resume), resume_at=resume, floor=floor, floor_until=until
    )
