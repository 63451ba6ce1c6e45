"""What a run does with a coordinator: take shared slots, and claim, wait for and settle learners.

`SharedSlots` sits behind the pacer: once the pacer's own schedule lets a request go, it
reserves the account's next slot and sleeps until then (once the account's last window
of slots were all this pacer's, its own schedule alone decides: the grid spaces
processes, not one process's requests). One reservation per process is
pending at a time (an urgent one, a token refresh, does not queue behind it), so the
store's grid never runs ahead of the processes using it, a stopped process wastes at most
one slot, and a shared pause reaches every process within one slot.

`ClaimLedger` claims each learner before its first send, waits while another live run
holds it, renews this run's leases, and records how each learner was left. Settlements
are written by a background task, in batches, so that recording an outcome never waits
on the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import Awaitable, Callable

import anyio

from ..errors import UnavailableError
from .account import learner_hash
from .gcra import Window
from .protocol import Claim, Coordinator, Ending, Verdict
from .runs import ended, started

__all__ = ["DEFAULT_LEASE", "ClaimLedger", "SharedSlots"]

#: Seconds a claim outlives its run's last renewal ...
DEFAULT_LEASE = 30.0
#: ... renewed this often (a share of the lease).
_RENEW_SHARE = 1 / 6
#: Seconds between two looks at a claim that another live run holds.
_POLL = 0.25

_log = logging.getLogger("bulk_issuer.coordination")


class SharedSlots:
    """The account's shared slot schedule, as the pacer uses it.

    Args:
        coordinator: the store (already open).
    """

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator
        #: This pacer's id in the store: once the account's last window of slots were all
        #: its own, the pacer spaces its next one alone, as if nothing shared the account.
        self.owner = uuid.uuid4().hex
        self._gate: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: Set once the store failed; every later reservation raises it.
        self.lost: UnavailableError | None = None

    async def acquire(
        self,
        interval: float,
        *,
        urgent: bool = False,
        alone: int = 0,
        fence: float = 0.0,
        window: Window | None = None,
    ) -> None:
        """Wait for the account's next slot, `interval` (the pacer's gap) after the last.

        Args:
            interval: the pacer's gap.
            urgent: a token refresh, which does not queue behind this process's others.
            alone: after this many slots of this pacer's in a row on the account (a
                window's worth), the pacer spaces its requests itself; 0: never.
            fence: seconds after this slot before which the pacer's own window rule lets
                no next request go; another process's next slot waits for it too.
            window: the pacer's part in the account-wide window rule.

        Raises:
            UnavailableError: the store cannot be reached.
        """
        if self.lost is not None:
            raise self.lost
        if urgent:
            await self._wait(interval, urgent=True, alone=0, fence=fence, window=window)
            return
        if self._gate is None:
            self._gate = asyncio.Lock()
        async with self._gate:
            await self._wait(interval, urgent=False, alone=alone, fence=fence, window=window)

    async def _wait(
        self, interval: float, *, urgent: bool, alone: int, fence: float, window: Window | None
    ) -> None:
        try:
            wait = await self.coordinator.reserve(
                interval, urgent=urgent, owner=self.owner, alone=alone, fence=fence, window=window
            )
        except UnavailableError as exc:
            self.lost = self.lost or exc
            raise
        if wait > 0:
            await asyncio.sleep(wait)

    def rate_limited(self, pause: float, interval: float) -> None:
        """Tell every process of a 429 (in the background: the caller is pausing anyway)."""
        if self.lost is not None:
            return
        task = asyncio.get_running_loop().create_task(self._tell(pause, interval))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tell(self, pause: float, interval: float) -> None:
        try:
            await self.coordinator.rate_limited(pause, interval)
        except UnavailableError as exc:
            self.lost = self.lost or exc


class ClaimLedger:
    """One run's claims on learners, in the account's shared ledger.

    Args:
        coordinator: the store (already open).
        run_id: this run's id; default a fresh random one.
        lease: seconds a claim outlives this run's last renewal.
        poll: seconds between two looks at a learner another live run holds.
    """

    def __init__(
        self,
        coordinator: Coordinator,
        *,
        run_id: str | None = None,
        lease: float = DEFAULT_LEASE,
        poll: float = _POLL,
    ) -> None:
        if not (lease > 0 and math.isfinite(lease)):
            raise ValueError(f"a claim's lease is a positive number of seconds, got {lease}")
        self.coordinator = coordinator
        self.run_id = run_id or uuid.uuid4().hex
        self.lease = lease
        self.poll = poll
        #: Set once the store failed; every later claim raises it.
        self.lost: UnavailableError | None = None
        self._on_lost: Callable[[UnavailableError], None] = lambda _: None
        self._pending: list[tuple[int, str, Ending]] = []
        #: Settlements queued and not yet written, by (badge, learner hash).
        self._unwritten: dict[tuple[int, str], int] = {}
        self._after: Callable[[], Awaitable[None]] | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._renewing: asyncio.Task[None] | None = None
        #: When this run began, on the store's clock: learners settled before are not
        #: reported done by another run (the run's own holders lookup covers them).
        self.since = -math.inf

    async def start(self, on_lost: Callable[[UnavailableError], None]) -> None:
        """Start renewing leases; `on_lost` hears of a lost store.

        Raises:
            UnavailableError: the store cannot be reached.
        """
        # A second's allowance for the resolution of the clocks involved.
        self.since = await self.coordinator.clock() - 1.0
        self._on_lost = on_lost
        self._renewing = asyncio.get_running_loop().create_task(self._renew())
        started(self.run_id)

    async def stop(self, grace: float = 5.0) -> None:
        """Write the settlements still pending (for up to `grace` seconds), then stop."""
        renewing, self._renewing = self._renewing, None
        if renewing is None:
            return
        try:
            with anyio.move_on_after(grace, shield=True):
                while self._flushing is not None and self.lost is None:
                    await asyncio.shield(self._flushing)
        finally:
            ended(self.run_id)
            renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing

    def _written(self, badge_id: int, key: str) -> None:
        left = self._unwritten.pop((badge_id, key), 1) - 1
        if left:
            self._unwritten[badge_id, key] = left

    def _lose(self, exc: UnavailableError) -> None:
        if self.lost is None:
            self.lost = exc
            self._on_lost(exc)

    async def _renew(self) -> None:
        every = self.lease * _RENEW_SHARE
        while True:
            await asyncio.sleep(every)
            if self.lost is not None:
                continue
            try:
                await self.coordinator.renew(self.run_id, self.lease)
            except UnavailableError as exc:
                self._lose(exc)
            except Exception:  # a bug must not stop the renewals
                _log.exception("coordination.failed")

    async def _flush(self) -> None:
        # Everything settled since the last flush goes in one pass: one task per batch,
        # not per learner.
        try:
            while self._pending and self.lost is None:
                if self._after is not None:
                    await self._after()
                batch, self._pending = self._pending, []
                for badge_id, key, ending in batch:
                    await self.coordinator.settle(badge_id, key, self.run_id, ending)
                    self._written(badge_id, key)
        except UnavailableError as exc:
            self._lose(exc)
        except Exception:
            _log.exception("coordination.failed")
        finally:
            self._flushing = None

    async def take(self, badge_id: int, learner_key: str, stopping: anyio.Event) -> Claim | None:
        """Claim a learner; while another live run holds it, wait for its outcome.

        Returns:
            GRANTED (maybe with `verify`) or DONE by another run; None when `stopping` was
            set while waiting.

        Raises:
            UnavailableError: the store cannot be reached.
        """
        key = learner_hash(learner_key)
        # A settlement of this run's for the learner still queued (an earlier call of the
        # same run that ended, or was cancelled mid-claim) is written first: written after
        # this claim, it would end the claim while this call still settles the learner.
        while (badge_id, key) in self._unwritten and self._flushing is not None:
            await asyncio.shield(self._flushing)
        while True:
            if self.lost is not None:
                raise self.lost
            try:
                claim = await self.coordinator.claim(
                    badge_id, key, self.run_id, self.lease, since=self.since
                )
            except UnavailableError as exc:
                self._lose(exc)
                raise
            except BaseException:
                # Cancelled while the claim was being written: it may have been. Left so
                # that the next claimant takes it at once and asks the server first (a
                # claim it replaced may have been a dead run's unanswered send; this
                # run's own next claim of it asks first too).
                self._queue(badge_id, key, Ending.UNCONFIRMED)
                raise
            if claim.verdict is not Verdict.HELD:
                return claim
            with anyio.move_on_after(self.poll):
                await stopping.wait()
            if stopping.is_set():
                return None

    async def sending(self, badge_id: int, learner_key: str) -> bool:
        """Note, before its first send leaves, that a claimed learner may be processed.

        Returns:
            Whether this run still holds the claim (False: the send must not leave).

        Raises:
            UnavailableError: the store cannot be reached (the send must not leave).
        """
        return await self._ask(self.coordinator.sending, badge_id, learner_key)

    async def confirm(self, badge_id: int, learner_key: str) -> bool:
        """Whether this run still holds its claim on a learner (its lease then extended):
        asked before a send that may come after the lease lapsed. False once another run
        took it over (this one was held up past its lease: suspended, its store emptied).

        Raises:
            UnavailableError: the store cannot be reached (the send must not leave).
        """

        async def confirm(badge_id: int, key: str, run_id: str) -> bool:
            return await self.coordinator.confirm(badge_id, key, run_id, self.lease)

        return await self._ask(confirm, badge_id, learner_key)

    async def _ask(
        self, question: Callable[[int, str, str], Awaitable[bool]], badge_id: int, key: str
    ) -> bool:
        if self.lost is not None:
            raise self.lost
        try:
            return await question(badge_id, learner_hash(key), self.run_id)
        except UnavailableError as exc:
            self._lose(exc)
            raise

    def settle(
        self,
        badge_id: int,
        learner_key: str,
        ending: Ending,
        *,
        after: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Record how this run left a learner it claimed (written in the background).

        Args:
            badge_id: the badge.
            learner_key: the learner's key.
            ending: how the run left it.
            after: awaited before the ledger is written (the run's journal commit), so
                that the ledger never says more than the run's own journal.
        """
        if after is not None:
            self._after = after
        self._queue(badge_id, learner_hash(learner_key), ending)

    def _queue(self, badge_id: int, key: str, ending: Ending) -> None:
        if self._renewing is None or self.lost is not None:
            return
        self._pending.append((badge_id, key, ending))
        self._unwritten[badge_id, key] = self._unwritten.get((badge_id, key), 0) + 1
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush())
