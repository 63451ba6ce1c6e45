"""Ceilings: the best share of a server's limit a client can hold with no 429, simulated.

A client that knew every earlier arrival exactly (no answer late, no clock error) may send
a request once the `requests`-th latest arrival so far plus the period lies before the
earliest the request itself can arrive (its send plus the least latency): anything sooner
is refused whenever the request happens to take the fastest way in. This simulates that
client on the pacer's even grid at the limit, catching up at half its spacing when held back,
with each request's latency drawn as the sandbox draws it, and checks every arrival
against the sandbox's own moving window. No sockets, no loop: it bounds from above what
the measured clients can reach on the same runs.

A sliding-window counter weighs the previous fixed window as if its requests had been
even; `sliding_counter_risk` sends perfectly even requests at a share of the limit through
the same latency into the sandbox's counter and counts the runs it refuses at least once.
"""

from __future__ import annotations

import heapq
import random
import statistics
from dataclasses import dataclass

from bulk_issuer.sandbox.limits import MovingWindow, SlidingWindowCounter

__all__ = ["Ceiling", "moving_window_ceiling", "sliding_counter_risk"]

#: A request held back is followed by the next ones at half the even spacing, as the
#: pacer catches up on a server that counts exactly our arrivals.
_CATCH_UP = 0.5


@dataclass(frozen=True, slots=True)
class Ceiling:
    """The simulated client's share of the limit over `runs` runs, and its 429s (none)."""

    mean: float
    worst: float
    best: float
    runs: int
    rejected: int


def _one(
    count: int, requests: int, period: float, latency: tuple[float, float], seed: int
) -> tuple[float, int]:
    draw = random.Random(seed)
    low, high = latency
    even = period / requests
    server = MovingWindow(requests, period)
    arrivals: list[float] = []
    grid, last = 0.0, -even
    for _ in range(count):
        send = max(grid, last + _CATCH_UP * even)
        if len(arrivals) >= requests:
            send = max(send, heapq.nlargest(requests, arrivals)[-1] + period - low + 1e-6)
        grid = max(grid + even, send - even)  # held back: the next ones catch up
        last = send
        arrivals.append(send + draw.uniform(low, high))
    arrivals.sort()
    rejected = sum(not server.hit(t) for t in arrivals)
    return (count - 1) / (arrivals[-1] - arrivals[0]) / (requests / period), rejected


def moving_window_ceiling(
    count: int,
    requests: int,
    period: float,
    latency: tuple[float, float],
    runs: int = 40,
) -> Ceiling:
    """Simulate `runs` runs of `count` requests against `requests` per `period` seconds."""
    shares, rejected = [], 0
    for seed in range(runs):
        share, refused = _one(count, requests, period, latency, seed)
        shares.append(share)
        rejected += refused
    return Ceiling(statistics.mean(shares), min(shares), max(shares), runs, rejected)


def sliding_counter_risk(
    share: float,
    count: int,
    requests: int,
    period: float,
    latency: tuple[float, float],
    runs: int = 200,
) -> float:
    """The share of `runs` runs of `count` even requests, at `share` of the limit, that a
    sliding-window counter refuses at least once (each run at a random window phase)."""
    refused = 0
    for seed in range(runs):
        draw = random.Random(seed)
        gap = period / requests / share
        phase = draw.uniform(0.0, period)
        arrivals = sorted(phase + i * gap + draw.uniform(*latency) for i in range(count))
        server = SlidingWindowCounter(requests, period)
        refused += any([not server.hit(t) for t in arrivals])
    return refused / runs
