"""One account, many runs: a shared pacing budget and a shared claim ledger.

```
Coordinator (protocol.py): reserve a slot, pause on a 429, claim/renew/settle a learner
  InProcessCoordinator (memory.py)     one process, nothing shared (coordinator="memory")
  LocalCoordinator (local.py)          every run on this machine: SQLite under the user's
                                       data directory (the default)
  RedisCoordinator (redis_store.py)    every host: --coordinator redis://HOST:PORT/DB
SharedSlots, ClaimLedger (shared.py)   what the pacer and the executor use
gcra.py                                the slot arithmetic, without I/O
```
"""

from __future__ import annotations

from pathlib import Path

from .account import account_key, learner_hash
from .gcra import PaceState
from .local import LocalCoordinator, default_folder
from .memory import InProcessCoordinator
from .protocol import Claim, Coordinator, Ending, Verdict
from .redis_store import RedisCoordinator, redacted
from .shared import DEFAULT_LEASE, ClaimLedger, SharedSlots

__all__ = [
    "DEFAULT_LEASE",
    "IN_PROCESS",
    "LOCAL",
    "Claim",
    "ClaimLedger",
    "Coordinator",
    "Ending",
    "InProcessCoordinator",
    "LocalCoordinator",
    "PaceState",
    "RedisCoordinator",
    "SharedSlots",
    "Verdict",
    "account_key",
    "choose",
    "default_folder",
    "learner_hash",
    "redacted",
]

#: `coordinator=` values: the local shared store (the default) ...
LOCAL = "local"
#: ... or this process only, as before coordination existed.
IN_PROCESS = "memory"


def choose(
    spec: str | Coordinator | None,
    *,
    base_url: str,
    identity: str,
    folder: Path | None = None,
) -> Coordinator:
    """The coordinator a run uses.

    Args:
        spec: None or `"local"` for the local shared store; `"memory"` for this process
            only; `redis://HOST:PORT/DB` or `rediss://...` for Redis; or a `Coordinator`.
        base_url: the API root (part of the account's key).
        identity: the user name or the personal access token (hashed, never stored).
        folder: where local stores live; default `default_folder()`.

    Raises:
        ValueError: a spec that is none of those.
    """
    if spec is not None and not isinstance(spec, str):
        return spec
    text = (spec or LOCAL).strip()
    if text == LOCAL:
        return LocalCoordinator(account_key(base_url, identity), folder)
    if text in (IN_PROCESS, "in-process", "none"):
        return InProcessCoordinator()
    if text.startswith(("redis://", "rediss://", "unix://")):
        return RedisCoordinator(text, account_key(base_url, identity))
    raise ValueError(
        f"cannot use the coordinator {redacted(text)!r}: give redis://HOST:PORT/DB, "
        "rediss://..., 'local' (this machine, the default) or 'memory' (this process only)"
    )
