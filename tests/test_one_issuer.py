"""One `BadgeIssuer` shared by calls at once, as a service shares it: runs and `issue`
calls for the same learners, one journal object handed to two issuers, cancellations from
outside at awkward moments. Each learner is issued once, every run's summary counts its
own rows, and nothing is left open or locked."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

import bulk_issuer
from bulk_issuer import BadgeIssuer, JournalError, Learner, PersonalAccessToken, Status
from bulk_issuer.executor import DONE_BY_ANOTHER_CALL
from bulk_issuer.journal import Journal
from bulk_issuer.sandbox import Sandbox, SandboxConfig, ScriptedAnswer, run_sandbox

PAT = PersonalAccessToken("sandbox-demo-pat")
FAST = SandboxConfig(rate=None, latency=(0.01, 0.02))


def learners(n: int, tag: str = "l") -> list[Learner]:
    return [Learner(first_name=f"L{i}", email=f"{tag}{i}@example.org") for i in range(n)]


def issued_twice(sandbox: Sandbox) -> dict[tuple[int, str], int]:
    return sandbox.duplicates()


def counted(summary: bulk_issuer.Summary) -> int:
    return (
        summary.issued
        + summary.already_held
        + summary.skipped
        + summary.failed
        + summary.invalid
        + summary.unconfirmed
        + summary.not_attempted
    )


@pytest.mark.parametrize("coordinator", ["memory", "local"])
async def test_a_run_and_an_issue_call_for_the_same_learner_send_it_once(
    tmp_path: Path, coordinator: str
) -> None:
    """A nightly run and a completion webhook for one of its learners, at once: the
    learner is issued once, and the run's summary counts its own five rows, not the
    webhook's outcome."""
    cohort = learners(5)
    async with (
        run_sandbox(FAST) as sandbox,
        BadgeIssuer(
            auth=PAT,
            base_url=sandbox.url,
            rate=None,
            journal=tmp_path / "j.db",
            coordinator=coordinator,
        ) as issuer,
    ):
        await issuer.preflight(51)
        summary, outcome = await asyncio.gather(
            issuer.run(cohort, badge_id=51), issuer.issue(cohort[3], badge_id=51)
        )
    assert issued_twice(sandbox) == {}
    assert len(sandbox.assertions) == 5
    assert counted(summary) == 5
    assert summary.issued + summary.skipped == 5
    assert outcome.status in (Status.ISSUED, Status.SKIPPED)


async def test_two_runs_of_one_cohort_on_one_issuer_send_each_learner_once() -> None:
    """Two runs at once over the same 20 learners, one issuer: nobody twice; each
    summary counts its own 20 rows (issued by it, or done by the other meanwhile)."""
    cohort = learners(20)
    async with (
        run_sandbox(FAST) as sandbox,
        BadgeIssuer(auth=PAT, base_url=sandbox.url, rate=None, coordinator="memory") as issuer,
    ):
        first, second = await asyncio.gather(
            issuer.run(cohort, badge_id=51), issuer.run(cohort, badge_id=51)
        )
    assert issued_twice(sandbox) == {}
    assert len(sandbox.assertions) == 20
    assert counted(first) == counted(second) == 20
    assert first.issued + second.issued == 20
    assert first.failed == second.failed == 0


async def test_runs_at_once_on_one_issuer_keep_their_own_summaries() -> None:
    """Three runs of different sizes at once, with an `issue` call among them: every
    summary counts exactly its own rows."""
    async with (
        run_sandbox(FAST) as sandbox,
        BadgeIssuer(auth=PAT, base_url=sandbox.url, rate=None, coordinator="memory") as issuer,
    ):
        a, b, c, one = await asyncio.gather(
            issuer.run(learners(30, "a"), badge_id=51),
            issuer.run(learners(10, "b"), badge_id=51),
            issuer.run(learners(20, "c"), badge_id=51),
            issuer.issue(Learner(first_name="D", email="d@example.org"), badge_id=51),
        )
    assert (a.issued, b.issued, c.issued) == (30, 10, 20)
    assert (counted(a), counted(b), counted(c)) == (30, 10, 20)
    assert one.status is Status.ISSUED
    assert len(sandbox.assertions) == 61


@pytest.mark.parametrize("coordinator", ["memory", "local"])
async def test_after_a_run_on_a_new_journal_issue_skips_what_it_issued(
    tmp_path: Path, coordinator: str
) -> None:
    """A run on a new journal issues a learner; `issue` for the same learner afterwards,
    on the same issuer, comes back skipped without a request (it used to go out again)."""
    ana = Learner(first_name="Ana", email="ana@example.org")
    async with (
        run_sandbox(FAST) as sandbox,
        BadgeIssuer(
            auth=PAT,
            base_url=sandbox.url,
            rate=None,
            journal=tmp_path / "j.db",
            coordinator=coordinator,
        ) as issuer,
    ):
        summary = await issuer.run([ana], badge_id=51)
        sent = len(sandbox.requests)
        again = await issuer.issue(ana, badge_id=51)
        dry = await issuer.dry_run([ana], badge_id=51, offline=True)
        after_dry = await issuer.issue(ana, badge_id=51)
    assert summary.issued == 1
    assert again.status is after_dry.status is Status.SKIPPED
    assert again.reason == "issued by an earlier run"
    assert dry.skipped == 1
    assert len(sandbox.requests) == sent
    assert sandbox.issued_count(51, "ana@example.org") == 1


async def test_a_learner_another_call_is_settling_is_waited_for_then_skipped() -> None:
    """`issue` for a learner a run is sending right now waits for it, then comes back
    skipped, done by that call, and nothing more is sent."""
    slow = SandboxConfig(rate=None, latency=(0.2, 0.2))
    ana = Learner(first_name="Ana", email="ana@example.org")
    async with (
        run_sandbox(slow) as sandbox,
        BadgeIssuer(auth=PAT, base_url=sandbox.url, rate=None, coordinator="memory") as issuer,
    ):
        await issuer.preflight(51)
        running = asyncio.ensure_future(issuer.run([ana], badge_id=51))
        while not issuer._context().busy:  # noqa: ASYNC110  # until the run holds Ana
            await asyncio.sleep(0)
        outcome = await issuer.issue(ana, badge_id=51)
        summary = await running
    assert summary.issued == 1
    assert outcome.status is Status.SKIPPED
    assert outcome.reason == DONE_BY_ANOTHER_CALL
    assert sandbox.issued_count(51, "ana@example.org") == 1


async def test_one_open_journal_is_refused_to_a_second_issuer_at_once(tmp_path: Path) -> None:
    """The same open `Journal` handed to two calls at once: the second is refused (as a
    second process is by the file's lock), before it sends anything; one after the other,
    it is fine."""
    cohort = learners(10)
    async with run_sandbox(FAST) as sandbox:
        with Journal(tmp_path / "j.db") as journal:
            results = await asyncio.gather(
                *(
                    bulk_issuer.issue_badges(
                        cohort,
                        badge_id=51,
                        auth=PAT,
                        base_url=sandbox.url,
                        rate=None,
                        journal=journal,
                        coordinator="memory",
                    )
                    for _ in range(2)
                ),
                return_exceptions=True,
            )
            refused = [r for r in results if isinstance(r, JournalError)]
            assert len(refused) == 1
            assert "in use by another issuer in this process" in str(refused[0])
            later = await bulk_issuer.issue_badges(
                cohort,
                badge_id=51,
                auth=PAT,
                base_url=sandbox.url,
                rate=None,
                journal=journal,
                coordinator="memory",
            )
    assert later.skipped == 10
    assert issued_twice(sandbox) == {}
    assert len(sandbox.assertions) == 10


def _renewals() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if "_renew" in t.get_coro().__qualname__]  # type: ignore[union-attr]


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_a_cancellation_while_the_issuer_closes_leaves_nothing_open(
    tmp_path: Path,
) -> None:
    """`Task.cancel()` (a caller's `wait_for` timing out) just as the issuer closes: the
    journal is closed and unlocked, the ledger's renewals end, no file stays open; a run
    right after on the same journal resumes."""
    journal = tmp_path / "j.db"
    async with run_sandbox(FAST) as sandbox:
        files = _open_files()
        issuer = BadgeIssuer(auth=PAT, base_url=sandbox.url, rate=None, journal=journal)

        async def job() -> None:
            async with issuer:
                await issuer.run(learners(20), badge_id=51)

        task = asyncio.ensure_future(job())
        while issuer.summary is None or issuer._claims is not None:  # noqa: ASYNC110
            await asyncio.sleep(0)  # until closing has begun
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert _renewals() == []
        assert _open_files() <= files
        again = await bulk_issuer.issue_badges(
            learners(20), badge_id=51, auth=PAT, base_url=sandbox.url, rate=None, journal=journal
        )
    assert again.skipped == 20
    assert issued_twice(sandbox) == {}


async def test_a_journal_refused_at_the_start_leaves_nothing_running(tmp_path: Path) -> None:
    """A journal in use by another run: the call is refused, and leaves no renewal task
    and no open file behind (a service retrying it would pile them up)."""
    journal = tmp_path / "busy.db"

    async def refused(url: str) -> None:
        with pytest.raises(JournalError, match="in use by another run"):
            await bulk_issuer.issue_badges(
                learners(2), badge_id=51, auth=PAT, base_url=url, journal=journal
            )

    async with run_sandbox(FAST) as sandbox:
        with Journal(journal):
            # SQLite keeps one descriptor of the file while this process holds its lock
            # (POSIX locks die with any descriptor's close): counted after the first.
            await refused(sandbox.url)
            files = _open_files()
            for _ in range(5):
                await refused(sandbox.url)
            await anyio.lowlevel.checkpoint()
            assert _renewals() == []
            assert _open_files() <= files
    assert sandbox.requests == []


async def test_a_call_cancelled_while_claiming_does_not_hold_up_the_next(tmp_path: Path) -> None:
    """A call cancelled while its claim in the local store was being written: the next
    run of the same process for that learner goes at once (it waited out a 30 s lease)."""
    ana = Learner(first_name="Ana", email="ana@example.org")
    async with run_sandbox(FAST) as sandbox:
        async with BadgeIssuer(auth=PAT, base_url=sandbox.url, rate=None) as issuer:
            await issuer.preflight(51)  # the holders are known: `issue` goes to the claim
            store = issuer._coordinator
            assert store is not None
            task = asyncio.ensure_future(issuer.issue(ana, badge_id=51))
            while not store._batch:  # type: ignore[attr-defined]  # noqa: ASYNC110
                await asyncio.sleep(0)  # until the claim is queued
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        with anyio.fail_after(10):
            summary = await bulk_issuer.issue_badges(
                [ana], badge_id=51, auth=PAT, base_url=sandbox.url, rate=None
            )
    assert summary.issued == 1
    assert sandbox.issued_count(51, "ana@example.org") == 1


async def test_a_404_after_the_badge_was_checked_fails_only_that_learner() -> None:
    """The preflight found the badge; the first learner's issue call then gets 404
    (an unknown provider_id): that learner fails with the server's reason, the others
    are issued (it stopped the run as 'badge 51 is not found')."""
    cohort: list[dict[str, object]] = [
        {"First Name": "Typo", "Email": "typo@example.org", "provider_id": 7}
    ] + [{"First Name": f"L{i}", "Email": f"l{i}@example.org"} for i in range(5)]
    async with (
        run_sandbox(FAST) as sandbox,
        BadgeIssuer(auth=PAT, base_url=sandbox.url, rate=None) as issuer,
    ):
        checked = await issuer.preflight(51)
        summary = await issuer.run(cohort, badge_id=51)
    assert checked.badge_checked
    assert (summary.issued, summary.failed, summary.not_attempted) == (5, 1, 0)
    assert len(sandbox.assertions) == 5


@pytest.mark.parametrize("rate", [None, "5/2s"])
async def test_a_call_cancelled_while_it_waits_out_a_429_stands_as_not_attempted(
    tmp_path: Path, rate: str | None
) -> None:
    """A caller's timeout fires while its learner waits out a 429's Retry-After: the
    refused send cannot have been processed, so the learner is not attempted and the
    journal keeps nothing of it (it was unconfirmed, and the next call asked first)."""
    ana = Learner(first_name="Ana", email="ana@example.org")
    quota = ScriptedAnswer("issue", 429, headers={"Retry-After": "100"}, times=1)
    outcomes: list[bulk_issuer.Outcome] = []
    async with run_sandbox(SandboxConfig(rate=None, scripted=[quota])) as sandbox:
        async with BadgeIssuer(
            auth=PAT,
            base_url=sandbox.url,
            rate=rate,
            journal=tmp_path / "j.db",
            coordinator="memory",
            policy=bulk_issuer.RetryPolicy(max_wait=300),
            on_outcome=outcomes.append,
        ) as issuer:
            await issuer.preflight(51)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(issuer.issue(ana, badge_id=51), 0.5)
        with Journal(tmp_path / "j.db") as journal:
            assert journal.get(51, "ana@example.org") is None
    assert [o.status for o in outcomes] == [Status.NOT_ATTEMPTED]
    assert sandbox.assertions == []


async def test_a_claim_cancelled_while_a_settlement_waits_is_not_ended_under_the_next_call(
    tmp_path: Path,
) -> None:
    """A webhook delivered twice: the first call is cancelled while its claim is being
    written and a journal write waits to be committed, the second goes on (its first send
    refused with a 503, it waits to send again). Another run of the account meanwhile must
    see the learner held, not free: the queued settlement of the cancelled claim is
    written before the second call's claim, never after it (Ana held the badge twice)."""
    ana = Learner(first_name="Ana", email="ana@example.org")
    config = SandboxConfig(rate=None)
    async with run_sandbox(config) as sandbox:
        with Journal(tmp_path / "one.db") as journal:
            async with (
                BadgeIssuer(auth=PAT, base_url=sandbox.url, rate=None, journal=journal) as one,
                BadgeIssuer(
                    auth=PAT, base_url=sandbox.url, rate=None, journal=tmp_path / "two.db"
                ) as two,
            ):
                await one.preflight(51)
                await two.preflight(51)
                await one.issue(Learner(first_name="Zoe", email="zoe@example.org"), badge_id=51)
                config.scripted = [
                    ScriptedAnswer("issue", 503, headers={"Retry-After": "2"}, times=1)
                ]
                store = one._coordinator
                cancelled = asyncio.ensure_future(one.issue(ana, badge_id=51))
                again = asyncio.ensure_future(one.issue(ana, badge_id=51))
                while not store._batch:  # type: ignore[union-attr]  # noqa: ASYNC110
                    await asyncio.sleep(0)  # until the first claim is queued
                journal.set_meta("busy", 1)  # another call's write, not yet committed
                cancelled.cancel()
                await asyncio.sleep(0.5)  # the second call's first send got its 503
                meanwhile = await two.issue(ana, badge_id=51)
                settled = await again
    assert sandbox.issued_count(51, "ana@example.org") == 1
    assert settled.status is Status.ISSUED
    assert meanwhile.status is Status.SKIPPED


async def test_a_stop_reaches_a_learner_waiting_for_another_call() -> None:
    """A run's learner waits while an `issue` call of the same issuer has it on the wire
    (an answer that never comes): `stop()` ends the run at once, that learner
    unconfirmed, instead of after the other call's 30 s of silence."""
    config = SandboxConfig(rate=None, latency=(0.01, 0.02))
    ana = Learner(first_name="Ana", email="ana@example.org")
    async with (
        run_sandbox(config) as sandbox,
        BadgeIssuer(auth=PAT, base_url=sandbox.url, rate=None, coordinator="memory") as issuer,
    ):
        await issuer.issue(Learner(first_name="Zoe", email="zoe@example.org"), badge_id=51)
        config.hang = frozenset({"issue"})
        single = asyncio.ensure_future(issuer.issue(ana, badge_id=51))
        while not issuer._context().busy:  # noqa: ASYNC110
            await asyncio.sleep(0)  # until Ana's call holds her
        await asyncio.sleep(0.2)
        config.hang = frozenset()
        run = asyncio.ensure_future(issuer.run([ana, *learners(3)], badge_id=51))
        await asyncio.sleep(0.5)
        started = anyio.current_time()
        issuer.stop()
        summary = await run
        took = anyio.current_time() - started
        single.cancel()
    assert took < 1.0
    assert (summary.issued, summary.unconfirmed) == (3, 1)
