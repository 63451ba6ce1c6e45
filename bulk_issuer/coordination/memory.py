"""The in-process coordinator: today's behaviour, for one process with nothing else."""

from __future__ import annotations

import math
import time

from .gcra import PaceState, Window, rate_limited, reserve
from .protocol import Claim, Ending, Verdict

__all__ = ["InProcessCoordinator"]


class InProcessCoordinator:
    """Slots and claims kept in this process only: no cost, nothing shared.

    Several `BadgeIssuer`s in one process that are given the same instance share it.
    """

    name = "in-process"

    def __init__(self) -> None:
        self._pace = PaceState()
        # (badge, learner) -> (run, ending or None while claimed, when)
        self._claims: dict[tuple[int, str], tuple[str, Ending | None, float]] = {}
        self._sending: set[tuple[int, str]] = set()

    async def open(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    async def reserve(
        self,
        interval: float,
        *,
        urgent: bool = False,
        owner: str = "",
        alone: int = 0,
        fence: float = 0.0,
        window: Window | None = None,
    ) -> float:
        """Reserve the next slot; see `Coordinator.reserve`."""
        now = time.monotonic()
        at, self._pace = reserve(self._pace, now, interval, owner, alone, fence, window)
        return at - now

    async def rate_limited(self, pause: float, interval: float) -> None:
        """Pause and widen; see `Coordinator.rate_limited`."""
        self._pace = rate_limited(self._pace, time.monotonic(), pause, interval)

    async def clock(self) -> float:
        """This process's monotonic clock."""
        return time.monotonic()

    async def claim(
        self,
        badge_id: int,
        learner_key: str,
        run_id: str,
        lease_seconds: float,
        *,
        since: float = -math.inf,
    ) -> Claim:
        """Claim a learner; see `Coordinator.claim` (a run in this process never dies alone)."""
        key = (badge_id, learner_key)
        found = self._claims.get(key)
        now = time.monotonic()
        if found is None or (found[0] == run_id and found[1] is None):
            self._claims[key] = (run_id, None, now)
            return Claim(Verdict.GRANTED)
        holder, ending, at = found
        if ending in (Ending.ISSUED, Ending.HELD) and at >= since:
            return Claim(Verdict.DONE, holder)
        if ending is None:
            return Claim(Verdict.HELD, holder)
        self._claims[key] = (run_id, None, now)
        self._sending.discard(key)
        return Claim(Verdict.GRANTED, verify=ending is Ending.UNCONFIRMED)

    async def sending(self, badge_id: int, learner_key: str, run_id: str) -> bool:
        """Note a send; see `Coordinator.sending` (kept for symmetry: no run dies alone here)."""
        if not self._holds(badge_id, learner_key, run_id):
            return False
        self._sending.add((badge_id, learner_key))
        return True

    async def confirm(
        self, badge_id: int, learner_key: str, run_id: str, lease_seconds: float
    ) -> bool:
        """Whether the claim is still the run's (nothing expires in one process)."""
        return self._holds(badge_id, learner_key, run_id)

    def _holds(self, badge_id: int, learner_key: str, run_id: str) -> bool:
        found = self._claims.get((badge_id, learner_key))
        return found is not None and found[0] == run_id and found[1] is None

    async def renew(self, run_id: str, lease_seconds: float) -> None:
        """Nothing expires in one process."""

    async def settle(self, badge_id: int, learner_key: str, run_id: str, ending: Ending) -> None:
        """Record how a run left a learner; see `Coordinator.settle`."""
        key = (badge_id, learner_key)
        found = self._claims.get(key)
        if found is not None and found[0] != run_id:
            return
        self._sending.discard(key)
        if ending is Ending.RELEASED:
            self._claims.pop(key, None)
        else:
            self._claims[key] = (run_id, ending, time.monotonic())
