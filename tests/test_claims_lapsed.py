"""A run held up past its claims' lease (suspended: Ctrl-Z, SIGSTOP, a paused VM) while
another run of the account takes its learners over: the held-up run, once it goes on,
sends none of them. The server's record decides: each learner holds the badge once.

Two issuers on one store, each on its own event loop in its own thread; the first one's
loop is frozen (a blocking sleep inside its first wait for a slot), as a suspended process
is frozen whole, its lease renewals included. The lease is shortened to keep it quick.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

import bulk_issuer
from bulk_issuer import PersonalAccessToken, Status
from bulk_issuer.coordination import ClaimLedger
from bulk_issuer.executor import CLAIM_LOST
from bulk_issuer.sandbox import Sandbox, SandboxConfig
from tests.conftest import sandbox_thread
from tests.redis_server import RedisServer, redis_server, redis_url  # noqa: F401

LEASE = 0.3
FROZEN = 1.5


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with sandbox_thread(SandboxConfig(rate=None)) as running:
        yield running


def learners(n: int) -> list[dict[str, str]]:
    return [{"First Name": f"L{i}", "Email": f"l{i}@example.org"} for i in range(n)]


def _run(sandbox: Sandbox, coordinator: str | None, outcomes: list[Any], **kw: Any) -> None:
    async def main() -> None:
        await bulk_issuer.issue_badges(
            learners(4),
            badge_id=51,
            auth=PersonalAccessToken("sandbox-demo-pat"),
            base_url=sandbox.url,
            rate=None,
            workers=1,
            journal=None,
            coordinator=coordinator,
            on_outcome=outcomes.append,
            **kw,
        )

    anyio.run(main)


@pytest.mark.parametrize("store", ["local", "redis"])
def test_a_run_suspended_past_its_lease_sends_none_of_the_learners_taken_over(
    store: str, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    coordinator = request.getfixturevalue("redis_url") if store == "redis" else None
    monkeypatch.setattr(
        bulk_issuer.engine, "ClaimLedger", functools.partial(ClaimLedger, lease=LEASE, poll=0.05)
    )
    frozen = threading.Event()
    still_claimed = bulk_issuer.executor._still_claimed

    async def claimed_then_frozen(*args: Any, **kw: Any) -> bool:
        # The first learner claimed and noted sending, about to wait for its slot.
        ours = await still_claimed(*args, **kw)
        if threading.current_thread().name == "held-up" and not frozen.is_set():
            frozen.set()
            time.sleep(FROZEN)  # noqa: ASYNC251 - the whole run frozen, its renewals too
        return ours

    monkeypatch.setattr(bulk_issuer.executor, "_still_claimed", claimed_then_frozen)
    first: list[Any] = []
    second: list[Any] = []
    held_up = threading.Thread(
        target=_run, args=(sandbox, coordinator, first), name="held-up", daemon=True
    )
    held_up.start()
    assert frozen.wait(10)
    _run(sandbox, coordinator, second)  # takes over l0 once its lease lapsed; issues all
    held_up.join(30)
    assert not held_up.is_alive()
    assert all(sandbox.issued_count(51, f"l{i}@example.org") == 1 for i in range(4))
    assert sandbox.duplicates() == {}
    (lost,) = [o for o in first if o.email == "l0@example.org"]
    assert (lost.status, lost.reason) == (Status.NOT_ATTEMPTED, CLAIM_LOST)
    assert sum(o.status is Status.ISSUED for o in second) == 4
