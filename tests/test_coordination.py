"""The coordination package: GCRA decisions on fake time, and each store's slots and claims
(in-process, the local SQLite store, a real Redis)."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from bulk_issuer.coordination import (
    ClaimLedger,
    Coordinator,
    Ending,
    InProcessCoordinator,
    LocalCoordinator,
    PaceState,
    RedisCoordinator,
    SharedSlots,
    Verdict,
    account_key,
    choose,
    runs,
)
from bulk_issuer.coordination.gcra import HOLD_WIDER, WIDEN, Window, rate_limited, reserve
from bulk_issuer.errors import UnavailableError
from tests.redis_server import RedisServer, own_redis, redis_server, redis_url  # noqa: F401

ACCOUNT = account_key("http://127.0.0.1:1", "sandbox-demo-pat")

# -- GCRA on fake time: tables of (now, interval) -> slot ---------------------------------


@pytest.mark.parametrize(
    ("calls", "slots"),
    [
        # back to back at t=0: one interval apart, no burst
        ([(0.0, 0.4)] * 4, [0.0, 0.4, 0.8, 1.2]),
        # idle: the grid restarts at now, nothing is saved up
        ([(0.0, 0.4), (5.0, 0.4), (5.1, 0.4)], [0.0, 5.0, 5.4]),
        # a wider gap from one process spaces the next request further
        ([(0.0, 1.0), (0.1, 0.4), (0.1, 0.4)], [0.0, 1.0, 1.4]),
        # a request exactly on its slot goes at once
        ([(0.0, 0.5), (0.5, 0.5), (1.0, 0.5)], [0.0, 0.5, 1.0]),
    ],
)
def test_gcra_reservations(calls: list[tuple[float, float]], slots: list[float]) -> None:
    """Reservations leave one emission interval apart, with no burst allowance."""
    state = PaceState()
    got = []
    for now, interval in calls:
        at, state = reserve(state, now, interval)
        got.append(at)
    assert got == pytest.approx(slots)


def test_gcra_pause_and_widen() -> None:
    """A 429 pauses every reservation and widens every gap, once per episode, for a while."""
    state = PaceState()
    _, state = reserve(state, 0.0, 0.4)
    state = rate_limited(state, 0.1, pause=2.0, interval=0.4)
    assert state.resume_at == pytest.approx(2.1)
    # A second 429 of the same episode (an answer already on the wire) widens no further.
    again = rate_limited(state, 0.2, pause=2.0, interval=0.4)
    assert again.floor == pytest.approx(state.floor) == pytest.approx(0.4 * WIDEN)
    at1, state = reserve(again, 0.3, 0.4)
    at2, state = reserve(state, 0.3, 0.4)
    assert at1 == pytest.approx(2.2)
    assert at2 - at1 == pytest.approx(0.4 * WIDEN)
    # The wider gap lapses after HOLD_WIDER.
    late = 0.2 + HOLD_WIDER + 1
    at3, state = reserve(state, late, 0.4)
    at4, _ = reserve(state, late, 0.4)
    assert at4 - at3 == pytest.approx(0.4)


def test_gcra_never_closer_than_interval_property() -> None:
    """Any interleaving of reservations keeps every two slots at least the smaller gap apart."""
    import random

    rng = random.Random(7)
    for _ in range(200):
        state = PaceState()
        now, slots = 0.0, []
        for _ in range(30):
            now += rng.choice([0.0, 0.0, 0.05, 0.3, 2.0])
            at, state = reserve(state, now, 0.25)
            assert at >= now
            slots.append(at)
        gaps = [b - a for a, b in itertools.pairwise(slots)]
        assert min(gaps) >= 0.25 - 1e-9


def test_gcra_a_pacer_alone_spaces_itself_property() -> None:
    """Once the last `alone` slots were one owner's, its next comes when asked (its pacer
    spaced it); any other slot keeps the previous one's gap; a 429's pause holds for
    everyone, its wider gap only between processes (a run alone paces as with no store)."""
    import random

    rng = random.Random(11)
    for _ in range(200):
        state = PaceState()
        now, previous, streak = 0.0, None, 0
        for _ in range(60):
            now += rng.choice([0.0, 0.01, 0.05, 0.3])
            owner = rng.choice(["a", "a", "a", "b", "c"])
            if rng.random() < 0.05:
                state = rate_limited(state, now, pause=0.5, interval=0.25)
            before = state
            at, state = reserve(state, now, 0.25, owner, alone=3)
            assert at >= max(now, before.resume_at)
            if previous is not None and (previous[0] != owner or streak < 3):
                assert at >= previous[1] + 0.25 - 1e-9
            elif previous is not None:
                assert at == pytest.approx(max(now, before.resume_at, previous[1]))
            streak = streak + 1 if previous is not None and previous[0] == owner else 1
            previous = (owner, at)


def test_gcra_another_owner_waits_for_the_fence() -> None:
    """A run that spaced itself alone leaves a fence (its own window rule): the next run's
    first slot comes no earlier, however far behind the grid's `tat` is."""
    state = PaceState()
    for now in (0.0, 0.01, 0.02, 0.03):
        last, state = reserve(state, now, 0.05, "a", alone=2, fence=0.9)
    at, state = reserve(state, 0.04, 0.05, "b", alone=2)
    assert at == pytest.approx(last + 0.9)
    at2, _ = reserve(state, 0.05, 0.05, "a", alone=2)
    assert at2 == pytest.approx(at + 0.05)


def test_gcra_window_rule_spans_every_process() -> None:
    """The N-th latest arrival of the account, whoever sent it, holds the next slot a window
    back; an answer, told with its process's next reservation, brings its arrival forward."""
    state = PaceState()
    slots = []
    for i in range(4):
        owner = "ab"[i % 2]
        window = Window(3, reach=1.0, late=0.5, slot_id=f"{owner}{i}")
        at, state = reserve(state, 0.0, 0.001, owner, window=window)
        slots.append(at)
    # Three slots fill the window; the fourth waits for the third latest (slot 0, reached
    # by 0.5 at the latest) plus the reach.
    assert slots == pytest.approx([0.0, 0.001, 0.002, 1.5])
    told = Window(3, reach=1.0, late=0.5, slot_id="a4", answers=(("a0", 0.01), ("a2", 0.02)))
    at, state = reserve(state, 0.0, 0.001, "a", window=told)
    # Reached by: a0 0.01, b1 0.501, a2 0.022, b3 2.0: the third latest is 0.022.
    assert at == pytest.approx(max(1.5 + 0.001, 0.022 + 1.0))
    assert [entry[0] for entry in state.ring] == ["a0", "b1", "a2", "b3", "a4"]


def test_gcra_an_account_quiet_for_a_window_is_spaced_by_its_next_pacer_alone() -> None:
    """A fresh account, or one whose every remembered slot reached the server a window ago,
    is its next owner's alone from the first slot: the grid adds nothing to its pacer. A
    slot of another owner still within a window brings the grid back."""
    state = PaceState()

    def window(slot_id: str) -> Window:
        return Window(3, reach=1.0, late=0.1, slot_id=slot_id)

    slots = []
    for i in range(3):
        at, state = reserve(state, 0.0, 0.5, "a", alone=3, window=window(f"a{i}"))
        slots.append(at)
    assert slots == [0.0, 0.0, 0.0]  # its pacer spaces them; the grid (0.5 s) does not
    # Another owner now: a's slots are within a window of it, so the grid and the window
    # rule hold it (the third latest arrival, 0.1, plus the reach).
    b, state = reserve(state, 0.05, 0.5, "b", alone=3, window=window("b0"))
    assert b == pytest.approx(1.1)
    # Once every remembered slot is a window behind, the next owner is alone again.
    c1, state = reserve(state, 3.0, 0.5, "c", alone=3, window=window("c0"))
    c2, state = reserve(state, 3.0, 0.5, "c", alone=3, window=window("c1"))
    assert (c1, c2) == (3.0, 3.0)
    # Without a part in the window rule (or with alone=0) nothing changes: the grid.
    d, state = reserve(PaceState(), 0.0, 0.5, "d", alone=3)
    d2, state = reserve(state, 0.0, 0.5, "d", alone=3)
    assert (d, d2) == (0.0, 0.5)
    # A process whose budget is too wide for the ring leaves no entry in it; its slot a
    # moment ago still keeps the next owner on the grid.
    e, _ = reserve(state, 0.6, 0.5, "e", alone=3, window=window("e0"))
    assert e == pytest.approx(1.0)


# -- every store: two instances are two processes of one account ----------------------------

Factory = Callable[[], Coordinator]


@pytest.fixture(params=["memory", "local", "redis"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    """Makes coordinators that share one store, as separate processes would."""
    if request.param == "memory":
        shared = InProcessCoordinator()
        return lambda: shared
    if request.param == "local":
        return lambda: LocalCoordinator(ACCOUNT, tmp_path)
    url = request.getfixturevalue("redis_url")
    return lambda: RedisCoordinator(url, ACCOUNT)


@asynccontextmanager
async def opened(stores: Factory) -> AsyncIterator[tuple[Coordinator, Coordinator]]:
    """Two coordinators of one account, opened, as two processes would hold them."""
    first, second = stores(), stores()
    await first.open()
    await second.open()
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


async def test_reservations_across_processes(stores: Factory) -> None:
    """Two coordinators of one account reserve on one grid: slots one interval apart."""
    async with opened(stores) as (first, second):
        started = time.monotonic()
        slots = []
        for i in range(10):
            store = first if i % 2 else second
            wait = await store.reserve(0.05)
            slots.append(time.monotonic() - started + wait)
        gaps = [b - a for a, b in itertools.pairwise(slots)]
        # Each slot is one interval after the previous (less the time the call took).
        assert min(gaps) >= 0.05 - 0.005
        assert max(gaps) <= 0.05 + 0.02


async def test_a_process_alone_is_not_held_by_the_grid(stores: Factory) -> None:
    """After `alone` slots of one owner in a row, its next come when asked; another owner's
    slot still waits the last one's gap."""
    async with opened(stores) as (first, second):
        started = time.monotonic()

        async def slot(store: Coordinator, owner: str) -> float:
            wait = await store.reserve(0.2, owner=owner, alone=2)
            return time.monotonic() - started + wait

        a1, a2, a3, a4 = [await slot(first, "a") for _ in range(4)]
        b1 = await slot(second, "b")
        assert a1 <= 0.02
        assert a2 - a1 == pytest.approx(0.2, abs=0.02)  # one slot of its own: the grid
        # Two in a row: its pacer decides.
        assert a3 - a2 <= 0.02
        assert a4 - a3 <= 0.02
        assert b1 - a4 == pytest.approx(0.2, abs=0.02)


async def test_a_quiet_account_is_its_next_process_alone(stores: Factory) -> None:
    """Every store: on an account whose remembered slots all reached the server a window
    ago, a process's slots come when asked from its first; another process joining within
    the window waits for the grid; after a quiet window the next one is alone again."""
    async with opened(stores) as (first, second):
        started = time.monotonic()

        async def slot(store: Coordinator, owner: str, i: int) -> float:
            part = Window(2, reach=0.15, late=0.02, slot_id=f"{owner}{i}")
            wait = await store.reserve(0.2, owner=owner, alone=2, window=part)
            return time.monotonic() - started + wait

        a1, a2 = await slot(first, "a", 1), await slot(first, "a", 2)
        assert a2 - a1 <= 0.02  # alone from its first slot: not the grid's 0.2 s
        b1 = await slot(second, "b", 1)
        assert b1 - a2 >= 0.15  # the grid and the window rule hold a newcomer
        await anyio.sleep(max(0.0, b1 + 0.2 - (time.monotonic() - started)))
        c1, c2 = await slot(first, "c", 1), await slot(first, "c", 2)
        assert c2 - c1 <= 0.02
        # A slot with no part in the ring (a budget too wide for it) is still a slot.
        await anyio.sleep(max(0.0, c2 + 0.2 - (time.monotonic() - started)))
        d1 = time.monotonic() - started + await second.reserve(0.2, owner="d", alone=2)
        e1 = await slot(first, "e", 1)
        assert e1 - d1 >= 0.15


async def test_window_rule_across_processes(stores: Factory) -> None:
    """Every store keeps the account's window rule, with answers told on the next slot."""
    async with opened(stores) as (first, second):
        started = time.monotonic()

        async def slot(store: Coordinator, owner: str, window: Window) -> float:
            wait = await store.reserve(0.001, owner=owner, window=window)
            return time.monotonic() - started + wait

        s0 = await slot(first, "a", Window(2, reach=0.3, late=0.2, slot_id="a0"))
        s1 = await slot(second, "b", Window(2, reach=0.3, late=0.2, slot_id="b1"))
        # a0 answered 10 ms after its slot: the window holds a2 until a0's arrival + 0.3,
        # not until the 0.2 s it could have taken.
        told = Window(2, reach=0.3, late=0.2, slot_id="a2", answers=(("a0", 0.01),))
        s2 = await slot(first, "a", told)
        assert s1 - s0 <= 0.02
        assert s2 - s0 == pytest.approx(0.31, abs=0.02)


async def test_shared_pause_reaches_the_other_process(stores: Factory) -> None:
    """A 429 told by one process holds the other's next reservation, and widens its gap."""
    async with opened(stores) as (first, second):
        await first.rate_limited(0.3, 0.05)
        wait1 = await second.reserve(0.05)
        wait2 = await second.reserve(0.05)
        assert 0.25 <= wait1 <= 0.35
        assert wait2 - wait1 == pytest.approx(0.05 * WIDEN, abs=0.01)


async def test_claims(stores: Factory) -> None:
    """Granted once; held while the holder lives; done once issued; free after a release;
    granted with a lookup first after an unanswered send; done only if settled since."""
    a, b = stores(), stores()
    await a.open()
    await b.open()
    for run in ("run-a", "run-b", "run-c"):
        runs.started(run)  # live runs of this process, as their ledgers make them
    try:
        assert (await a.claim(51, "x", "run-a", 30)).verdict is Verdict.GRANTED
        assert (await a.claim(51, "x", "run-a", 30)).verdict is Verdict.GRANTED  # its own
        held = await b.claim(51, "x", "run-b", 30)
        assert (held.verdict, held.run_id) == (Verdict.HELD, "run-a")
        await a.settle(51, "x", "run-a", Ending.ISSUED)
        done = await b.claim(51, "x", "run-b", 30)
        assert (done.verdict, done.run_id) == (Verdict.DONE, "run-a")
        # Another badge, another learner: independent.
        assert (await b.claim(52, "x", "run-b", 30)).verdict is Verdict.GRANTED
        assert (await b.claim(51, "y", "run-b", 30)).verdict is Verdict.GRANTED
        await b.settle(51, "y", "run-b", Ending.RELEASED)
        free = await a.claim(51, "y", "run-a", 30)
        assert (free.verdict, free.verify) == (Verdict.GRANTED, False)
        await a.settle(51, "y", "run-a", Ending.UNCONFIRMED)
        again = await b.claim(51, "y", "run-b", 30)
        assert (again.verdict, again.verify) == (Verdict.GRANTED, True)
        # Settled before a run began: that run's own holders lookup decides, not the ledger
        # (a restarted sandbox, a revoked badge).
        later = await b.clock() + 5
        fresh = await b.claim(51, "x", "run-c", 30, since=later)
        assert (fresh.verdict, fresh.verify) == (Verdict.GRANTED, False)
    finally:
        for run in ("run-a", "run-b", "run-c"):
            runs.ended(run)
        await a.close()
        await b.close()


async def test_a_claim_left_by_an_ended_run_of_this_process_is_taken_at_once(
    tmp_path: Path,
) -> None:
    """A call cancelled while its claim was written, or closed before its settlements
    were, leaves a claim behind: a later run of the same process takes it at once (asking
    the server first if it had begun sending), instead of waiting out its 30 s lease."""
    a, b = LocalCoordinator(ACCOUNT, tmp_path), LocalCoordinator(ACCOUNT, tmp_path)
    await a.open()
    await b.open()
    runs.started("run-a")
    runs.started("run-b")
    try:
        await a.claim(51, "claimed", "run-a", 30)
        await a.claim(51, "sending", "run-a", 30)
        await a.sending(51, "sending", "run-a")
        assert (await b.claim(51, "claimed", "run-b", 30)).verdict is Verdict.HELD
        runs.ended("run-a")
        taken = await b.claim(51, "claimed", "run-b", 30)
        assert (taken.verdict, taken.verify) == (Verdict.GRANTED, False)
        taken = await b.claim(51, "sending", "run-b", 30)
        assert (taken.verdict, taken.verify) == (Verdict.GRANTED, True)
    finally:
        runs.ended("run-b")
        await a.close()
        await b.close()


async def test_redis_lease_expires_and_renewal_keeps_it(redis_url: str) -> None:  # noqa: F811
    """A dead run's claim lapses with its lease (taken over with a lookup first if it had
    begun sending); a live run's renewals keep its claim past the lease."""
    a, b = RedisCoordinator(redis_url, ACCOUNT), RedisCoordinator(redis_url, ACCOUNT)
    await a.open()
    await b.open()
    try:
        await a.claim(51, "dead", "run-a", 0.2)
        await a.sending(51, "dead", "run-a")
        await a.claim(51, "never-sent", "run-a", 0.2)
        await a.claim(51, "alive", "run-a", 0.2)
        for _ in range(4):
            await anyio.sleep(0.1)
            await a.renew("run-a", 0.2)
        assert (await b.claim(51, "alive", "run-b", 30)).verdict is Verdict.HELD
        await a.settle(51, "alive", "run-a", Ending.RELEASED)
        # "dead" was renewed too (a renews every claim it holds): drop it from a's list and
        # let the lease run out, as after kill -9.
        a._mine.clear()
        await anyio.sleep(0.3)
        taken = await b.claim(51, "dead", "run-b", 30)
        assert (taken.verdict, taken.verify) == (Verdict.GRANTED, True)
        # Claimed, but it died before its first send: nothing to ask.
        quiet = await b.claim(51, "never-sent", "run-b", 30)
        assert (quiet.verdict, quiet.verify) == (Verdict.GRANTED, False)
    finally:
        await a.close()
        await b.close()


async def test_local_store_forgets_an_unreadable_ring(tmp_path: Path) -> None:
    """A ring that cannot be read (a hand-edited file) is started afresh, not a crash."""
    store = LocalCoordinator(ACCOUNT, tmp_path)
    await store.open()
    try:
        window = Window(2, reach=0.3, late=0.1, slot_id="a0")
        assert await store.reserve(0.001, owner="a", window=window) <= 0.01
        store._connection().execute("UPDATE schedule SET ring = 'not json'")
        again = Window(2, reach=0.3, late=0.1, slot_id="a1")
        assert await store.reserve(0.001, owner="b", window=again) <= 0.02
    finally:
        await store.close()


async def test_local_claim_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    """The local store takes over a claim whose process is gone at once (with a lookup first
    if it had begun sending); a live process's claim is held."""
    store = LocalCoordinator(ACCOUNT, tmp_path)
    await store.open()
    try:
        gone = subprocess.run(  # noqa: ASYNC221 - a 20 ms helper process
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        )
        gone_pid = int(gone.stdout)
        db = store._connection()
        for learner, ending in (("k", "sending"), ("q", None)):
            db.execute(
                "INSERT INTO claims VALUES (51, ?, 'dead-run', ?, ?, ?, ?, ?)",
                (learner, ending, store._host, gone_pid, time.time() + 30, time.time()),
            )
        taken = await store.claim(51, "k", "run-b", 30)
        assert (taken.verdict, taken.verify) == (Verdict.GRANTED, True)
        # It died before sending that one: taken over with nothing to ask.
        quiet = await store.claim(51, "q", "run-b", 30)
        assert (quiet.verdict, quiet.verify) == (Verdict.GRANTED, False)
        live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # noqa: ASYNC220
        try:
            db.execute(
                "INSERT INTO claims VALUES (51, 'm', 'live-run', 'sending', ?, ?, ?, ?)",
                (store._host, live.pid, time.time() + 30, time.time()),
            )
            assert (await store.claim(51, "m", "run-b", 30)).verdict is Verdict.HELD
        finally:
            live.kill()
            live.wait()
        assert (await store.claim(51, "m", "run-b", 30)).verify
    finally:
        await store.close()


async def test_ledger_waits_for_the_holder_then_reports_done(tmp_path: Path) -> None:
    """A learner held by another live run is waited for, then reported done by that run."""
    a = ClaimLedger(LocalCoordinator(ACCOUNT, tmp_path), lease=2.0, poll=0.02)
    b = ClaimLedger(LocalCoordinator(ACCOUNT, tmp_path), lease=2.0, poll=0.02)
    for ledger in (a, b):
        await ledger.coordinator.open()
        await ledger.start(lambda exc: None)
    try:
        stopping = anyio.Event()
        first = await a.take(51, "ana@example.org", stopping)
        assert first is not None
        assert first.verdict is Verdict.GRANTED
        waited = asyncio.create_task(b.take(51, "ana@example.org", stopping))
        await anyio.sleep(0.1)
        assert not waited.done()
        a.settle(51, "ana@example.org", Ending.ISSUED)
        claim = await asyncio.wait_for(waited, 2)
        assert claim is not None
        assert (claim.verdict, claim.run_id) == (Verdict.DONE, a.run_id)
        # A stop while waiting ends the wait.
        await a.take(51, "bo@example.org", stopping)
        waiting = asyncio.create_task(b.take(51, "bo@example.org", stopping))
        await anyio.sleep(0.05)
        stopping.set()
        assert await asyncio.wait_for(waiting, 1) is None
    finally:
        for ledger in (a, b):
            await ledger.stop()
            await ledger.coordinator.close()


async def test_ledger_renews_while_alive(redis_url: str) -> None:  # noqa: F811
    """The ledger's background task renews its leases: a claim outlives its lease many times."""
    a = ClaimLedger(RedisCoordinator(redis_url, ACCOUNT), lease=0.3)
    other = RedisCoordinator(redis_url, ACCOUNT)
    await a.coordinator.open()
    await other.open()
    await a.start(lambda exc: None)
    try:
        await a.take(51, "ana@example.org", anyio.Event())
        await anyio.sleep(1.0)
        from bulk_issuer.coordination import learner_hash

        held = await other.claim(51, learner_hash("ana@example.org"), "other", 30)
        assert held.verdict is Verdict.HELD
    finally:
        await a.stop()
        await a.coordinator.close()
        await other.close()


async def test_shared_slots_space_two_processes(stores: Factory) -> None:
    """Two processes' pacers, three requests waiting in each, leave one gap apart together."""
    gates = [SharedSlots(stores()), SharedSlots(stores())]
    for gate in gates:
        await gate.coordinator.open()
    times: list[float] = []

    async def send(gate: SharedSlots) -> None:
        await gate.acquire(0.04)
        times.append(time.monotonic())

    try:
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                for gate in gates:
                    tg.start_soon(send, gate)
        times.sort()
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(times) == 6
        assert min(gaps) >= 0.04 - 0.008
    finally:
        for gate in gates:
            await gate.coordinator.close()


async def test_redis_unreachable_is_a_clear_error_without_the_password() -> None:
    """Redis that does not answer: UnavailableError naming the host, never the password."""
    coordinator = RedisCoordinator("redis://:hunter2@127.0.0.1:1/0", ACCOUNT, timeout=0.5)
    with pytest.raises(UnavailableError) as caught:
        await coordinator.open()
    text = str(caught.value)
    assert "redis://127.0.0.1:1/0" in text
    assert "hunter2" not in text
    assert caught.value.exit_status == 4


@pytest.mark.parametrize(
    ("error", "said"),
    [
        ("AuthenticationError", "refused the run"),
        ("OutOfMemoryError", "refused the run"),
        ("ConnectionError", "could not be reached"),
        ("TimeoutError", "could not be reached"),
    ],
)
def test_a_redis_that_answers_and_refuses_is_not_said_unreachable(error: str, said: str) -> None:
    """A wrong password or a full memory: Redis was reached and refused; a network
    trouble is "could not be reached". Named without the password either way."""
    import redis.exceptions

    coordinator = RedisCoordinator("redis://:wrong-secret@127.0.0.1:6390/0", ACCOUNT)
    kind = getattr(redis.exceptions, error)
    text = str(coordinator._lost(kind("the store's own words")))
    assert said in text
    assert "wrong-secret" not in text
    assert "redis://127.0.0.1:6390/0" in text


async def test_redis_lost_mid_run_raises_unavailable(own_redis: RedisServer) -> None:  # noqa: F811
    """A Redis that stops answering makes the next reservation or claim UnavailableError."""
    coordinator = RedisCoordinator(own_redis.url, ACCOUNT, timeout=0.5)
    await coordinator.open()
    try:
        await coordinator.reserve(0.01)
        own_redis.stop()
        with pytest.raises(UnavailableError):
            await coordinator.reserve(0.01)
        with pytest.raises(UnavailableError):
            await coordinator.claim(51, "x", "run", 30)
    finally:
        await coordinator.close()


async def test_a_redis_emptied_under_a_run_stops_its_claims(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    """FLUSHALL (or a restart without persistence, or eviction) drops the records of the
    learners issued: a claim granted then could send one again. Every run's next claim
    says the store lost its records (UnavailableError, exit 4); one that never lost them
    goes on, and a run opened afterwards works."""
    redis_server.flush()
    a, b = RedisCoordinator(redis_server.url, ACCOUNT), RedisCoordinator(redis_server.url, ACCOUNT)
    await a.open()
    await b.open()
    try:
        await a.claim(51, "ann", "run-a", 30)
        await a.settle(51, "ann", "run-a", Ending.ISSUED)
        assert (await b.claim(51, "ann", "run-b", 30)).verdict is Verdict.DONE
        redis_server.flush()
        for coordinator, run in ((a, "run-a"), (b, "run-b")):
            with pytest.raises(UnavailableError, match="lost its records") as caught:
                await coordinator.claim(51, "ann", run, 30)
            assert caught.value.exit_status == 4
        later = RedisCoordinator(redis_server.url, ACCOUNT)
        await later.open()
        try:
            assert (await later.claim(51, "bob", "run-c", 30)).verdict is Verdict.GRANTED
        finally:
            await later.close()
    finally:
        await a.close()
        await b.close()


def test_choose_and_account_keys(tmp_path: Path) -> None:
    """The spec picks the store; the account key hashes the credential and never holds it."""
    key = account_key("https://api.navigatr.app", "my-secret-pat")
    assert "my-secret-pat" not in key
    assert len(key) == 24
    assert key != account_key("https://api.navigatr.app", "another-pat")
    assert key != account_key("https://sandbox.example", "my-secret-pat")
    local = choose(None, base_url="https://a", identity="pat", folder=tmp_path)
    assert isinstance(local, LocalCoordinator)
    assert "pat" not in local.path.name
    assert isinstance(choose("memory", base_url="x", identity="y"), InProcessCoordinator)
    redis = choose("redis://:pw@127.0.0.1:6379/2", base_url="x", identity="y")
    assert isinstance(redis, RedisCoordinator)
    assert "pw" not in redis.name
    with pytest.raises(ValueError, match="redis://"):
        choose("http://nope", base_url="x", identity="y")


async def test_local_store_that_cannot_be_opened_says_how_to_go_on(tmp_path: Path) -> None:
    """A data directory that cannot hold the store: UnavailableError (exit 4) naming the file
    and the ways around it."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    store = LocalCoordinator(ACCOUNT, blocker / "bulk-issuer")
    with pytest.raises(UnavailableError, match="--coordinator memory") as caught:
        await store.open()
    assert caught.value.exit_status == 4


async def test_urgent_reservation_goes_before_queued_ones(tmp_path: Path) -> None:
    """A token refresh does not queue behind the process's other waiters: it takes the
    account's next slot, ahead of every request still waiting in its process."""
    gate = SharedSlots(LocalCoordinator(ACCOUNT, tmp_path))
    await gate.coordinator.open()
    order: list[str] = []

    async def take(name: str, urgent: bool) -> None:
        await gate.acquire(0.05, urgent=urgent)
        order.append(name)

    try:
        async with anyio.create_task_group() as tg:
            for name in "abcd":
                tg.start_soon(take, name, False)
            await anyio.sleep(0.01)
            tg.start_soon(take, "token", True)
        assert order.index("token") <= 2
        assert order[-1] == "d"
    finally:
        await gate.coordinator.close()


async def test_a_429_in_one_pacer_pauses_and_widens_another(tmp_path: Path) -> None:
    """Two pacers of one account (two processes) on the local store: a 429 taken by one
    holds the other's next request for the pause, and spaces its later ones wider."""
    from bulk_issuer.pacing import Pacer, Rate

    pacers = [Pacer(Rate(20, 1.0)) for _ in range(2)]
    for pacer in pacers:
        pacer.shared = SharedSlots(LocalCoordinator(ACCOUNT, tmp_path))
        await pacer.shared.coordinator.open()
    try:
        first, second = pacers
        await first.acquire()
        first.rate_limited_for(0.4)
        await anyio.sleep(0.05)  # the news reaches the store in the background
        started = time.monotonic()
        await second.acquire()
        waited = time.monotonic() - started
        assert 0.3 <= waited <= 0.5
        begun = time.monotonic()
        for _ in range(3):
            await second.acquire()
        spacing = (time.monotonic() - begun) / 3
        assert spacing >= second.gap * 1.1
    finally:
        for pacer in pacers:
            assert pacer.shared is not None
            await pacer.shared.coordinator.close()


_OPEN_AT_ONCE = """
import asyncio, sys, time
from pathlib import Path
from bulk_issuer.coordination import LocalCoordinator

async def main() -> None:
    while time.time() < float(sys.argv[2]):
        pass
    store = LocalCoordinator("acct", Path(sys.argv[1]))
    await store.open()
    await store.reserve(0.01)
    await store.close()

asyncio.run(main())
"""


def test_runs_starting_at_the_same_instant_all_open_the_store(tmp_path: Path) -> None:
    """Six processes creating the same new store at once all open it (the first run of an
    account on a machine races the others to create the file and switch it to WAL)."""
    at = time.time() + 1.0
    children = [
        subprocess.Popen([sys.executable, "-c", _OPEN_AT_ONCE, str(tmp_path / "s"), str(at)])
        for _ in range(6)
    ]
    assert [child.wait(30) for child in children] == [0] * 6


@pytest.mark.parametrize(("limit", "each"), [(20, 40), (100, 160)], ids=["20-per-s", "100-per-s"])
async def test_two_issuers_on_one_store_stay_under_the_limit_through_wide_jitter(
    limit: int, each: int
) -> None:
    """Two issuers of one account (one store) against a strict moving window with 30-90 ms
    of arrival latency stay under it: through the shared window rule (20 a second), and
    through a spacing that covers the whole spread of the way in where the window holds
    more requests than the store's ring (100). A spacing built from the mean excess alone
    drew a 429 in 3 runs of 4."""
    from bulk_issuer import PersonalAccessToken, issue_badges
    from bulk_issuer.sandbox import SandboxConfig, run_sandbox
    from bulk_issuer.sandbox.limits import max_in_window

    shared = InProcessCoordinator()
    config = SandboxConfig(rate=(limit, 1.0), rate_model="moving", latency=(0.03, 0.09), seed=4)

    def rows(tag: str) -> list[dict[str, str]]:
        return [
            {"First Name": "Ana", "Last Name": "Lima", "Email": f"{tag}{i}@example.org"}
            for i in range(each)
        ]

    async with run_sandbox(config) as sandbox:
        summaries = await asyncio.gather(
            *(
                issue_badges(
                    rows(tag),
                    badge_id=51,
                    auth=PersonalAccessToken("sandbox-demo-pat"),
                    base_url=sandbox.url,
                    rate=f"{limit}/1s",
                    workers=24,
                    coordinator=shared,
                )
                for tag in ("a", "b")
            )
        )
        arrivals = [r.arrived_at for r in sandbox.requests if r.kind != "badge"]
        rejected = sandbox.rejected_429
    assert [s.issued for s in summaries] == [each, each]
    assert rejected == 0
    assert max_in_window(arrivals, 1.0) <= limit
