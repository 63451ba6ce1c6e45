"""The library as integrators use it: sync and async, one learner at a time, quiet, typed."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

import bulk_issuer
from bulk_issuer import (
    BadgeIssuer,
    CredentialsRejected,
    Error,
    FatalError,
    InputError,
    JournalError,
    Learner,
    Outcome,
    PersonalAccessToken,
    Status,
    StoppedError,
    Summary,
    UnavailableError,
)
from bulk_issuer.events import Event, RunFinished, RunStarted, has_handlers
from bulk_issuer.sandbox import SandboxConfig, ScriptedAnswer, run_sandbox
from bulk_issuer.sandbox.state import DROPPED
from tests.conftest import sandbox_thread

PAT = "sandbox-demo-pat"
AUTH = PersonalAccessToken(PAT)


def learners(n: int, prefix: str = "learner") -> list[Learner]:
    """n valid learners."""
    return [
        Learner(first_name=f"Zoë{i}", last_name="Müller", email=f"{prefix}{i}@example.org")
        for i in range(n)
    ]


# -- sync and async ------------------------------------------------------------------------


SCRIPT = """
import os
import bulk_issuer

summary = bulk_issuer.issue_badges_sync(
    # Four learners and an invalid row: a warning event nobody asked to see.
    [{"First Name": f"Learner{i}", "Email": f"l{i}@example.org"} for i in range(4)]
    + [{"First Name": "", "Email": "nameless@example.org"}],
    badge_id=51,
    auth=bulk_issuer.PersonalAccessToken(os.environ["NAVIGATR_PAT"]),
    base_url=os.environ["NAVIGATR_BASE_URL"],
    rate=None,
)
print("issued", summary.issued, "invalid", summary.invalid)
"""


def test_sync_from_a_plain_script_prints_only_what_the_script_prints(tmp_path: Path) -> None:
    """issue_badges_sync in a real process with no loop of its own: issues, and is silent."""
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        env = {**os.environ, "NAVIGATR_BASE_URL": sandbox.url, "NAVIGATR_PAT": PAT}
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        held = sorted(a["recipient_email"] for a in sandbox.assertions)
    assert (done.returncode, done.stdout, done.stderr) == (0, "issued 4 invalid 1\n", "")
    assert held == [f"l{i}@example.org" for i in range(4)]


async def test_sync_from_inside_a_running_loop_does_not_deadlock() -> None:
    """Called from a coroutine (a notebook cell, an async framework), it runs in a thread."""
    assert asyncio.get_running_loop().is_running()
    seen: list[Outcome] = []
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        summary = bulk_issuer.issue_badges_sync(
            learners(5),
            badge_id=51,
            auth=AUTH,
            base_url=sandbox.url,
            rate=None,
            on_outcome=seen.append,
        )
        assert sandbox.duplicates() == {}
    assert summary.issued == 5
    assert sorted(o.email for o in seen) == sorted(x.email for x in learners(5))


async def test_sync_from_inside_a_running_loop_raises_the_runs_own_error() -> None:
    """An error of the run is raised in the caller's thread, as it is, with its summary."""
    with (
        sandbox_thread(SandboxConfig(rate=None)) as sandbox,
        pytest.raises(FatalError, match="badge 999") as caught,
    ):
        bulk_issuer.issue_badges_sync(
            learners(3), badge_id=999, auth=AUTH, base_url=sandbox.url, rate=None
        )
    assert isinstance(caught.value.summary, Summary)


def test_sync_and_async_take_the_same_keyword_arguments() -> None:
    """issue_badges_sync spells out exactly issue_badges's arguments, with the same types."""
    sync = inspect.signature(bulk_issuer.issue_badges_sync).parameters
    async_ = inspect.signature(bulk_issuer.issue_badges).parameters
    assert list(sync.values()) == list(async_.values())
    assert all(p.kind is p.KEYWORD_ONLY for name, p in sync.items() if name != "learners")


# -- one learner at a time, for services ----------------------------------------------------


@pytest.mark.looptime
async def test_a_hundred_concurrent_issue_calls_issue_each_learner_exactly_once() -> None:
    """100 calls at once (some for the same learner) through dropped replies: one each."""
    # Replies dropped after the commit (the server issued: the lookup must say so) and
    # before it (nothing issued: the learner is sent again).
    config = SandboxConfig(drop_after_rate=0.1, drop_before_rate=0.1, seed=7)
    cohort = learners(80)
    calls = cohort + cohort[:20]  # 20 learners asked for twice at once
    async with (
        run_sandbox(config) as sandbox,
        BadgeIssuer(auth=AUTH, base_url=sandbox.url) as issuer,
    ):
        outcomes = await asyncio.gather(*(issuer.issue(x, badge_id=51) for x in calls))
        issue_requests = [r for r in sandbox.requests if r.kind == "issue"]
    assert Counter(o.status for o in outcomes) == {Status.ISSUED: 100}
    assert sandbox.duplicates() == {}
    assert all(sandbox.issued_count(51, x.email) == 1 for x in cohort)
    # Both kinds of drop happened, and each was settled without a second assertion.
    assert any("verified" in o.flags for o in outcomes)  # dropped after the commit
    assert any(o.attempts > 1 and "verified" not in o.flags for o in outcomes)  # resent
    assert sum(1 for r in issue_requests if r.status == DROPPED) >= 2
    # Two calls for the same learner at once share one result (and one request path).
    by_email: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        by_email.setdefault(outcome.email, []).append(outcome)
    assert all(o is group[0] for group in by_email.values() for o in group)
    assert len(issue_requests) == sum(by_email[x.email][0].attempts for x in cohort)


@pytest.mark.looptime
async def test_a_refused_badge_stops_every_concurrent_and_later_call() -> None:
    """20 calls at once for an unknown badge: all raise FatalError, so do later ones."""
    async with (
        run_sandbox(SandboxConfig()) as sandbox,
        BadgeIssuer(auth=AUTH, base_url=sandbox.url) as issuer,
    ):
        results = await asyncio.gather(
            *(issuer.issue(x, badge_id=999) for x in learners(20)), return_exceptions=True
        )
        with pytest.raises(FatalError):
            await issuer.issue(learners(1, "late")[0], badge_id=999)
        issue_calls = [r for r in sandbox.requests if r.kind == "issue"]
    assert all(isinstance(r, FatalError) for r in results), results
    assert len(issue_calls) == 1  # the badge is refused once; nobody else is sent
    assert sandbox.assertions == []


@pytest.mark.looptime
async def test_refused_credentials_stop_the_issuer_after_one_request() -> None:
    """A refused PAT: the first call and every later one raise CredentialsRejected."""
    async with (
        run_sandbox(SandboxConfig()) as sandbox,
        BadgeIssuer(auth=PersonalAccessToken("nope"), base_url=sandbox.url) as issuer,
    ):
        for learner in learners(3):
            with pytest.raises(CredentialsRejected):
                await issuer.issue(learner, badge_id=51)
    assert len(sandbox.requests) == 1


@pytest.mark.looptime
async def test_after_stop_issue_raises_a_stopped_error_without_a_request() -> None:
    """`stop()` ends the issuer: a later call raises StoppedError (an Error), sends nothing."""
    async with (
        run_sandbox(SandboxConfig()) as sandbox,
        BadgeIssuer(auth=AUTH, base_url=sandbox.url) as issuer,
    ):
        issuer.stop()
        with pytest.raises(StoppedError, match="stopped"):
            await issuer.issue(learners(1)[0], badge_id=51)
    assert sandbox.requests == []


@pytest.mark.looptime
async def test_a_cancelled_call_does_not_cancel_another_waiting_for_the_same_learner() -> None:
    """The task that sent first is cancelled (its consumer shut down): the other still ends."""
    learner = learners(1)[0]
    async with (
        run_sandbox(SandboxConfig(latency=(0.5, 0.5))) as sandbox,
        BadgeIssuer(auth=AUTH, base_url=sandbox.url) as issuer,
    ):
        await issuer.issue(learners(1, "warm")[0], badge_id=51)  # token, holders, badge known
        first = asyncio.create_task(issuer.issue(learner, badge_id=51))
        await asyncio.sleep(0.1)
        second = asyncio.create_task(issuer.issue(learner, badge_id=51))
        await asyncio.sleep(0.1)
        first.cancel()
        outcome = await second
        with pytest.raises(asyncio.CancelledError):
            await first
    assert outcome.status is Status.ISSUED
    assert sandbox.issued_count(51, learner.email) == 1


@pytest.mark.looptime
async def test_a_resent_completion_is_skipped_without_a_request() -> None:
    """A learner issued by an earlier call comes back `skipped`; the server sees nothing."""
    async with (
        run_sandbox(SandboxConfig()) as sandbox,
        BadgeIssuer(auth=AUTH, base_url=sandbox.url) as issuer,
    ):
        first = await issuer.issue(learners(1)[0], badge_id=51)
        before = len(sandbox.requests)
        again = await issuer.issue(learners(1)[0], badge_id=51)
        after = len(sandbox.requests)
    assert first.status is Status.ISSUED
    assert (again.status, again.assertion_id) == (Status.SKIPPED, first.assertion_id)
    assert after == before


@pytest.mark.looptime
async def test_a_learner_issued_by_an_earlier_run_is_skipped_without_a_request(
    tmp_path: Path,
) -> None:
    """With the journal of an earlier cohort run, a service's `issue` sends nothing for it."""
    journal = tmp_path / "lms.db"
    cohort = learners(3)
    async with run_sandbox(SandboxConfig()) as sandbox:
        summary = await bulk_issuer.issue_badges(
            cohort, badge_id=51, auth=AUTH, base_url=sandbox.url, journal=journal
        )
        assert summary.issued == 3
        before = len(sandbox.requests)
        async with BadgeIssuer(auth=AUTH, base_url=sandbox.url, journal=journal) as issuer:
            outcome = await issuer.issue(cohort[1], badge_id=51)
        after = len(sandbox.requests)
    assert outcome.status is Status.SKIPPED
    assert outcome.reason == "issued by an earlier run"
    assert after == before
    assert sandbox.duplicates() == {}


@pytest.mark.looptime
async def test_issue_refuses_an_invalid_learner_or_no_badge_without_a_request() -> None:
    """A learner that would fail validation, or no badge at all, raises InputError."""
    async with (
        run_sandbox(SandboxConfig()) as sandbox,
        BadgeIssuer(auth=AUTH, base_url=sandbox.url) as issuer,
    ):
        with pytest.raises(InputError, match="email"):
            await issuer.issue(Learner(first_name="Ada", email="not-an-address"), badge_id=51)
        with pytest.raises(InputError, match="first"):
            await issuer.issue(Learner(first_name="", email="ada@example.org"), badge_id=51)
        with pytest.raises(InputError, match="which badge"):
            await issuer.issue(Learner(first_name="Ada", email="ada@example.org"))
    assert sandbox.requests == []


# -- quiet by default ---------------------------------------------------------------------


def run_with_warnings(**options: object) -> Summary:
    """A run that emits info and warning events: issued learners, one invalid, one 422."""
    rows = [*learners(3), Learner(first_name="Odd", email="odd@no-mail.example.com")]
    rows.append(Learner(first_name="", email="nobody@example.org"))

    async def go() -> Summary:
        async with run_sandbox(SandboxConfig(rate=None)) as sandbox:
            return await bulk_issuer.issue_badges(
                rows,
                badge_id=51,
                auth=AUTH,
                base_url=sandbox.url,
                rate=None,
                **options,  # type: ignore[arg-type]
            )

    return asyncio.run(go())


def test_quiet_without_structlog_or_logging_configured(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """structlog unconfigured and no logging handler (pytest's taken away): nothing printed."""
    monkeypatch.setattr(logging.root, "handlers", [])
    assert not structlog.is_configured()
    assert not has_handlers(logging.getLogger("bulk_issuer"))
    summary = run_with_warnings()
    assert (summary.issued, summary.failed, summary.invalid) == (3, 1, 1)
    assert capfd.readouterr() == ("", "")


def test_standard_logging_configured_gets_the_events(caplog: pytest.LogCaptureFixture) -> None:
    """With a logging handler in place, the events go to the `bulk_issuer` logger."""
    caplog.set_level(logging.INFO, logger="bulk_issuer")
    run_with_warnings()
    messages = [r.getMessage() for r in caplog.records if r.name == "bulk_issuer"]
    assert sum(m.startswith("badge.issued ") for m in messages) == 3
    failed = [r for r in caplog.records if r.getMessage().startswith("badge.failed")]
    assert [r.levelno for r in failed] == [logging.WARNING]
    assert failed[0].__dict__["bulk_issuer"]["email"] == "odd@no-mail.example.com"


def test_structlog_configured_gets_the_events() -> None:
    """With structlog configured, the events go to structlog with flat fields."""
    with capture_logs() as events:
        run_with_warnings()
    names = Counter(e["event"] for e in events)
    assert names["badge.issued"] == 3
    assert names["learner.invalid"] == 1
    assert names["run.finished"] == 1
    issued = next(e for e in events if e["event"] == "badge.issued")
    assert {"row", "email", "badge_id", "attempts", "log_level"} <= issued.keys()


def test_a_logger_passed_gets_the_events(capfd: pytest.CaptureFixture[str]) -> None:
    """`logger=` receives `<level>(name, **fields)` even when nothing else is configured."""
    logger = structlog.testing.CapturingLogger()
    run_with_warnings(logger=logger)
    calls = [(call.method_name, call.args[0]) for call in logger.calls]
    assert calls.count(("info", "badge.issued")) == 3
    assert ("warning", "badge.failed") in calls
    assert calls[0] == ("info", "run.started")
    assert calls[-1] == ("info", "run.finished")
    assert capfd.readouterr() == ("", "")


def test_a_stdlib_logger_passed_gets_the_events(caplog: pytest.LogCaptureFixture) -> None:
    """`logger=logging.getLogger(...)` works too: the events become log records."""
    caplog.set_level(logging.INFO, logger="my_lms")
    run_with_warnings(logger=logging.getLogger("my_lms"))
    messages = [r.getMessage() for r in caplog.records if r.name == "my_lms"]
    assert sum(m.startswith("badge.issued ") for m in messages) == 3


def test_on_event_receives_typed_frozen_events() -> None:
    """`on_event=` gets the engine's typed events in order: start, outcomes, finish."""
    events: list[Event] = []
    summary = run_with_warnings(on_event=events.append)
    assert isinstance(events[0], RunStarted)
    assert isinstance(events[-1], RunFinished)
    assert events[-1].summary is summary
    outcomes = [e for e in events if isinstance(e, Outcome)]
    assert Counter(o.status for o in outcomes) == {
        Status.ISSUED: 3,
        Status.FAILED: 1,
        Status.INVALID: 1,
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        outcomes[0].status = Status.FAILED  # type: ignore[misc]


class _AsyncSink:
    async def __call__(self, event: Event) -> None:
        """An async callable object."""


async def _async_sink(event: Event) -> None:
    """An async function."""


def test_an_async_callback_is_refused_before_anything_is_sent() -> None:
    """An async on_event or on_outcome would never be awaited, its events lost: refused,
    with what to do instead; a plain function that calls one is refused at the first
    event, before any request, with no "never awaited" warning left behind."""
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        for options in (
            {"on_event": _async_sink},
            {"on_outcome": _async_sink},
            {"on_event": _AsyncSink()},
            {"on_event": lambda event: _async_sink(event)},
        ):
            with pytest.raises(TypeError, match=r"plain function.*asyncio\.Queue"):
                bulk_issuer.issue_badges_sync(
                    learners(2),
                    badge_id=51,
                    auth=AUTH,
                    base_url=sandbox.url,
                    rate=None,
                    **options,
                )
        assert sandbox.requests == []


def test_a_json_lines_row_with_a_lone_surrogate_is_invalid_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    """A file that JSON-escapes half a UTF-16 pair: that row is invalid, the others are
    issued and journaled (it stopped the whole run with an internal UnicodeEncodeError)."""
    path = tmp_path / "cohort.jsonl"
    path.write_text(
        '{"first_name": "Ada\\ud800", "email": "ada@example.org"}\n'
        '{"first_name": "Bo", "email": "bo@example.org"}\n',
        encoding="utf-8",
    )
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        summary = bulk_issuer.issue_badges_sync(
            str(path),
            badge_id=51,
            auth=AUTH,
            base_url=sandbox.url,
            rate=None,
            journal=tmp_path / "cohort.db",
        )
        assert sandbox.issued_count(51, "bo@example.org") == 1
    assert (summary.issued, summary.invalid) == (1, 1)


def test_a_callback_that_raises_stops_the_run_and_a_rerun_finishes_it(tmp_path: Path) -> None:
    """An integrator's bug in on_outcome stops the run with its own exception; the journal
    holds what was on the wire, and the rerun issues the rest, nobody twice."""
    seen: list[Outcome] = []

    def buggy(outcome: Outcome) -> None:
        seen.append(outcome)
        if len(seen) == 2:
            raise LookupError("the integrator's database is down")

    cohort = learners(6)
    journal = tmp_path / "lms.db"
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        options = {
            "badge_id": 51,
            "auth": AUTH,
            "base_url": sandbox.url,
            "journal": journal,
            "rate": None,
        }
        with pytest.raises(LookupError, match="database is down"):
            bulk_issuer.issue_badges_sync(cohort, on_outcome=buggy, workers=2, **options)  # type: ignore[arg-type]
        summary = bulk_issuer.issue_badges_sync(cohort, **options)  # type: ignore[arg-type]
        held = [sandbox.issued_count(51, learner.email) for learner in cohort]
    assert held == [1] * 6
    # Done by the first run, or issued by the second; one whose issue call was on the wire
    # when the first stopped is found holding it.
    assert summary.issued + summary.skipped + summary.already_held == 6
    assert summary.ok


# -- one family of errors ------------------------------------------------------------------


def test_the_error_family() -> None:
    """Every error the library raises on purpose derives from Error, as the docs draw it."""
    assert issubclass(InputError, Error)
    assert issubclass(InputError, ValueError)
    assert issubclass(JournalError, Error)
    assert issubclass(StoppedError, Error)
    assert issubclass(FatalError, StoppedError)
    assert issubclass(CredentialsRejected, FatalError)
    assert issubclass(UnavailableError, StoppedError)
    for name in bulk_issuer.__all__:
        value = getattr(bulk_issuer, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, Error), name


@pytest.mark.looptime
async def test_fatal_error_carries_the_summary_so_far() -> None:
    """An unknown badge: FatalError with `.summary` (every learner not attempted)."""
    async with run_sandbox(SandboxConfig()) as sandbox:
        with pytest.raises(Error) as caught:
            await bulk_issuer.issue_badges(
                learners(5), badge_id=999, auth=AUTH, base_url=sandbox.url
            )
    assert type(caught.value) is FatalError
    assert isinstance(caught.value.summary, Summary)
    assert caught.value.summary.not_attempted == 5
    assert len([r for r in sandbox.requests if r.kind == "issue"]) == 1  # the one refused


@pytest.mark.looptime
async def test_refused_credentials_are_a_fatal_error() -> None:
    """A refused PAT raises CredentialsRejected, a FatalError, with the summary."""
    async with run_sandbox(SandboxConfig()) as sandbox:
        with pytest.raises(CredentialsRejected) as caught:
            await bulk_issuer.issue_badges(
                learners(3), badge_id=51, auth=PersonalAccessToken("nope"), base_url=sandbox.url
            )
    assert isinstance(caught.value, FatalError)
    assert caught.value.summary is not None
    assert "nope" not in str(caught.value)


@pytest.mark.looptime
async def test_input_error_names_the_row_and_the_path(tmp_path: Path) -> None:
    """A file with a quote never closed: InputError with `.row` and `.path`; none sent."""
    path = tmp_path / "cohort.csv"
    path.write_text(
        'First Name,Email\nAda,ada@example.org\n"Bob,bob@example.org\nCy,cy@example.org\n',
        encoding="utf-8",
    )
    async with run_sandbox(SandboxConfig()) as sandbox:
        with pytest.raises(Error) as caught:
            await bulk_issuer.issue_badges(path, badge_id=51, auth=AUTH, base_url=sandbox.url)
        missing = tmp_path / "nope.csv"
        with pytest.raises(InputError) as no_file:
            await bulk_issuer.issue_badges(missing, badge_id=51, auth=AUTH, base_url=sandbox.url)
    assert isinstance(caught.value, InputError)
    assert caught.value.row == 3
    assert caught.value.path is not None
    assert caught.value.path.endswith("cohort.csv")
    assert no_file.value.path is not None
    assert no_file.value.path.endswith("nope.csv")
    assert [r for r in sandbox.requests if r.kind == "issue"] == []


async def test_journal_error_names_the_path(tmp_path: Path) -> None:
    """A journal that is not a journal: JournalError with `.path`, before any request."""
    path = tmp_path / "not-a-journal.db"
    path.write_bytes(b"this is a text file, not SQLite" * 100)
    with pytest.raises(Error) as caught:
        await bulk_issuer.issue_badges(
            learners(1), badge_id=51, auth=AUTH, base_url="http://127.0.0.1:9", journal=path
        )
    assert isinstance(caught.value, JournalError)
    assert caught.value.path == str(path)


@pytest.mark.looptime
async def test_unavailable_error_names_the_host() -> None:
    """An API that never answers: UnavailableError with `.host` and the summary."""
    async with run_sandbox(SandboxConfig()) as sandbox:
        url = sandbox.url
    # The sandbox is gone: its port refuses connections now.
    with pytest.raises(Error) as caught:
        await bulk_issuer.issue_badges(learners(2), badge_id=51, auth=AUTH, base_url=url)
    assert isinstance(caught.value, UnavailableError)
    assert caught.value.host is not None
    assert caught.value.host in url
    assert caught.value.retry_after is None
    assert isinstance(caught.value.summary, Summary)


@pytest.mark.looptime
async def test_unavailable_error_carries_retry_after() -> None:
    """A server asking to come back in an hour: UnavailableError with `.retry_after`."""
    config = SandboxConfig(scripted=[ScriptedAnswer("issue", 429, headers={"Retry-After": "3600"})])
    async with run_sandbox(config) as sandbox:
        with pytest.raises(UnavailableError) as caught:
            await bulk_issuer.issue_badges(
                learners(2), badge_id=51, auth=AUTH, base_url=sandbox.url
            )
    assert caught.value.retry_after == pytest.approx(3600, abs=5)
    assert caught.value.host is not None
    assert caught.value.summary is not None
    assert caught.value.summary.issued == 0


async def test_extra_fields_of_any_python_type_are_sent_or_the_row_is_refused() -> None:
    """An LMS's dicts carry dates, Decimals and the odd object in their extra fields: a
    date goes as YYYY-MM-DD and a Decimal as a number; a value JSON cannot carry makes its
    row invalid, naming the field. Nothing crashes, no learner is left `sending`."""
    import datetime
    import decimal

    rows: list[dict[str, object]] = [
        {
            "first_name": "Ada",
            "email": "ada@example.org",
            "recipient_graduation": datetime.date(2026, 6, 30),
            "recipient_grade": decimal.Decimal("7.50"),
            "recipient_when": datetime.datetime(2026, 6, 30, 9, 15),
        },
        {"first_name": "Bob", "email": "bob@example.org", "recipient_blob": object()},
        {"first_name": "Cy", "email": "cy@example.org", "recipient_big": 10**400},
        {"first_name": "Di", "email": "di@example.org", "recipient_inf": float("inf")},
    ]
    outcomes: list[bulk_issuer.Outcome] = []
    async with run_sandbox(SandboxConfig(rate=None)) as sandbox:
        summary = await bulk_issuer.issue_badges(
            rows,
            badge_id=51,
            auth=PersonalAccessToken("sandbox-demo-pat"),
            base_url=sandbox.url,
            on_outcome=outcomes.append,
        )
        (sent,) = sandbox.assertions
    assert (summary.issued, summary.invalid, summary.unconfirmed) == (1, 3, 0)
    assert sent["recipient_graduation"] == "2026-06-30"
    assert sent["recipient_grade"] == 7.5
    assert sent["recipient_when"] == "2026-06-30T09:15:00"
    reasons = {o.email: o.reason or "" for o in outcomes if o.status is Status.INVALID}
    assert "recipient_blob" in reasons["bob@example.org"]
    assert "type object" in reasons["bob@example.org"]
    assert "300 digits" in reasons["cy@example.org"]
    assert "inf" in reasons["di@example.org"]


@pytest.mark.looptime
async def test_a_run_cancelled_by_wait_for_raises_timeout_error() -> None:
    """`asyncio.wait_for` cancels the run mid-way: the caller gets its TimeoutError, not
    the producer's BrokenResourceError (the workers' stream closed under it)."""
    async with run_sandbox(SandboxConfig(rate=None, latency=(0.02, 0.08), seed=4)) as sandbox:
        for attempt in range(12):
            rows = [{"First Name": "C", "Email": f"c{attempt}-{i}@example.org"} for i in range(40)]
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(
                    bulk_issuer.issue_badges(
                        rows,
                        badge_id=51,
                        auth=PersonalAccessToken("sandbox-demo-pat"),
                        base_url=sandbox.url,
                        rate=None,
                        workers=4,
                    ),
                    0.05 + 0.03 * attempt,
                )
        assert sandbox.duplicates() == {}


async def test_issue_takes_a_dict_as_a_cohorts_rows_are_and_refuses_junk() -> None:
    """`issuer.issue({"First Name": ..., "Email": ...})` works as a cohort's dict row does;
    anything that is not a learner is an InputError naming what it got, not an
    AttributeError from inside."""
    async with run_sandbox(SandboxConfig(rate=None)) as sandbox:
        async with bulk_issuer.BadgeIssuer(
            auth=PersonalAccessToken("sandbox-demo-pat"), base_url=sandbox.url, rate=None
        ) as issuer:
            outcome = await issuer.issue(
                {"First Name": "Ann", "Email": "ann@example.org"}, badge_id=51
            )
            with pytest.raises(bulk_issuer.InputError, match="a list is not a learner"):
                await issuer.issue(["Ann", "ann@example.org"], badge_id=51)  # type: ignore[arg-type]
        assert sandbox.issued_count(51, "ann@example.org") == 1
    assert outcome.status is Status.ISSUED


_FAILING_STORE = """
import asyncio, sqlite3
from bulk_issuer.coordination.memory import InProcessCoordinator
from bulk_issuer.coordination.shared import ClaimLedger

class Full(InProcessCoordinator):
    async def settle(self, *args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

async def main():
    ledger = ClaimLedger(Full())
    ledger._pending = [(51, "key", None)]
    await ledger._flush()
    print("flushed")

asyncio.run(main())
"""


def test_a_failing_store_write_prints_no_traceback() -> None:
    """A settlement the store failed to write is logged on the `bulk_issuer.coordination`
    logger; with no logging configured nothing is printed (Python's last-resort handler
    printed its traceback to stderr), and the host's root logger keeps no handler."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", _FAILING_STORE], capture_output=True, text=True, env=env, check=True
    )
    assert (done.stdout, done.stderr) == ("flushed\n", "")


def test_the_cli_says_a_failing_store_write_on_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The command line tells the store's trouble as one warning line, with no traceback."""
    import sqlite3

    from bulk_issuer.cli import _store_trouble_said
    from bulk_issuer.console import Console

    with _store_trouble_said(Console(quiet=False, verbose=0)):
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError:
            logging.getLogger("bulk_issuer.coordination").exception("coordination.failed")
    err = capsys.readouterr().err
    assert err.strip() == (
        "warning: coordination.failed: OperationalError: database or disk is full"
    )
    assert not logging.getLogger("bulk_issuer.coordination").handlers


async def test_a_long_lived_issuer_reads_the_badges_holders_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A service's issuer lives for days; a learner another tool issued since it read the
    badge's holders (the web UI, a run whose ledger records have lapsed) is in neither
    its list nor the shared ledger. The list is read again once it is older than
    `HOLDERS_FRESH` (six hours; shortened here): the learner is found holding it, not
    sent again."""
    monkeypatch.setattr(bulk_issuer.executor, "HOLDERS_FRESH", 0.2)
    async with run_sandbox(SandboxConfig(rate=None)) as sandbox:
        async with bulk_issuer.BadgeIssuer(
            auth=PersonalAccessToken("sandbox-demo-pat"), base_url=sandbox.url, rate=None
        ) as issuer:
            first = await issuer.issue(
                {"First Name": "Ann", "Email": "ann@example.org"}, badge_id=51
            )
            sandbox.preload(51, ["bob@example.org"])  # issued elsewhere, after the list was read
            await asyncio.sleep(0.3)
            later = await issuer.issue(
                {"First Name": "Bob", "Email": "bob@example.org"}, badge_id=51
            )
        assert sandbox.issued_count(51, "bob@example.org") == 1
    assert (first.status, later.status) == (Status.ISSUED, Status.HELD)
