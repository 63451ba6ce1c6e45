"""What every coordinator offers: shared slots for the pacer and a shared claim ledger."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .gcra import Window

__all__ = ["Claim", "Coordinator", "Ending", "Verdict"]


class Verdict(enum.StrEnum):
    """What a claim on one learner-and-badge found."""

    #: This run may send it.
    GRANTED = "granted"
    #: Another live run holds it: wait for its outcome.
    HELD = "held"
    #: Another run issued it, or found the learner holding it.
    DONE = "done"


class Ending(enum.StrEnum):
    """How a run leaves a learner it claimed."""

    #: Issued by this run.
    ISSUED = "issued"
    #: Found holding the badge.
    HELD = "held"
    #: A send may have been processed without an answer: the next claimant asks first.
    UNCONFIRMED = "unconfirmed"
    #: Nothing of this run can have been processed (failed, not attempted): free again.
    RELEASED = "released"


@dataclass(frozen=True, slots=True)
class Claim:
    """The answer to a claim.

    Attributes:
        verdict: granted, held by another live run, or done by another run.
        run_id: the other run, when held or done.
        verify: granted, but an earlier claim may have sent it (its run died, its send
            went unanswered, or this run's own claim was cut short by a cancellation):
            ask the server before sending.
    """

    verdict: Verdict
    run_id: str | None = None
    verify: bool = False


@runtime_checkable
class Coordinator(Protocol):
    """One account's shared pacing budget and claim ledger.

    All durations are in seconds. Every method may raise `UnavailableError` when the store
    cannot be reached; nothing is sent then.
    """

    #: A name for messages: the store's kind and place, never a password.
    name: str

    async def open(self) -> None:
        """Connect (or create the store); raise `UnavailableError` if it cannot be had."""
        ...

    async def close(self) -> None:
        """Let go of the store's connection."""
        ...

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
        """Reserve the account's next slot, `interval` after the one before.

        Args:
            interval: the reserving pacer's gap (the GCRA emission interval).
            urgent: a token refresh that every request waits for.
            owner: the reserving pacer's id.
            alone: after this many slots of `owner`'s in a row, its pacer spaces its next
                one by itself (see `gcra.reserve`); 0: never.
            fence: seconds after this slot before which the pacer's own window rule lets
                no next request go; another process's next slot waits for it too.
            window: the reserver's part in the account-wide window rule (`gcra.Window`).

        Returns:
            Seconds from now until the slot.
        """
        ...

    async def rate_limited(self, pause: float, interval: float) -> None:
        """A 429: hold every process for `pause` and widen every process's gap."""
        ...

    async def clock(self) -> float:
        """The store's clock, in seconds (what `claim`'s `since` is measured on)."""
        ...

    async def claim(
        self,
        badge_id: int,
        learner_key: str,
        run_id: str,
        lease_seconds: float,
        *,
        since: float = -math.inf,
    ) -> Claim:
        """Claim one learner-and-badge for `run_id`, for `lease_seconds` unless renewed.

        Args:
            badge_id: the badge.
            learner_key: the learner (a hash of the normalised email).
            run_id: the claiming run.
            lease_seconds: how long the claim lasts unless renewed.
            since: only a learner settled at or after this time (on `clock`) counts as
                done: what was settled before a run began is in that run's own lookup
                of the badge's holders, and a server that forgot it (a sandbox
                restarted, a badge revoked) must not be second-guessed.
        """
        ...

    async def sending(self, badge_id: int, learner_key: str, run_id: str) -> bool:
        """Note that `run_id` is about to send a learner it claimed: from now on, should the
        run die, the next claimant asks the server first.

        Returns:
            Whether `run_id` still holds the claim: False once another run took it over
            (this run was held up past its lease: suspended, a store emptied), when the
            send must not leave.
        """
        ...

    async def confirm(
        self, badge_id: int, learner_key: str, run_id: str, lease_seconds: float
    ) -> bool:
        """Whether `run_id` still holds its claim on a learner (not settled, not taken over
        by another run); if it does, its lease is extended. Asked before a send that may
        come after the lease lapsed (a long wait for a slot, the process suspended)."""
        ...

    async def renew(self, run_id: str, lease_seconds: float) -> None:
        """Extend every claim `run_id` holds (the run is alive)."""
        ...

    async def settle(self, badge_id: int, learner_key: str, run_id: str, ending: Ending) -> None:
        """Record how `run_id` left a learner it claimed."""
        ...
