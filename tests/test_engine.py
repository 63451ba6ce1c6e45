"""The engine end to end, against the sandbox on a real loopback socket, on fake loop time."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import anyio
import pytest
import structlog
from structlog.testing import capture_logs

import bulk_issuer
from bulk_issuer import FatalError, Learner, PasswordAuth, PersonalAccessToken, Summary
from bulk_issuer.errors import exit_status
from bulk_issuer.executor import EARLIER_SEND_WENT_THROUGH
from bulk_issuer.journal import Journal
from bulk_issuer.sandbox import Sandbox, SandboxConfig, ScriptedAnswer, run_sandbox
from bulk_issuer.sandbox.state import DROPPED
from tests.conftest import most_in_server_windows, most_in_window

pytestmark = pytest.mark.looptime

PASSWORD = "demo-password"
USER = "demo@example.com"
PAT = "sandbox-demo-pat"


def cohort(n: int, domain: str = "example.org") -> list[dict[str, str]]:
    """n valid learners as dict rows."""
    return [
        {"First Name": f"Learner{i}", "Last Name": "Zoë", "Email": f"learner{i}@{domain}"}
        for i in range(n)
    ]


def issue_calls(sandbox: Sandbox) -> list[float]:
    """Arrival times of issue calls the sandbox saw."""
    return [r.arrived_at for r in sandbox.requests if r.kind == "issue"]


def assert_each_issued_once(sandbox: Sandbox, emails: Sequence[str], badge: int = 51) -> None:
    """Every email holds the badge exactly once and nobody has it twice."""
    assert sandbox.duplicates() == {}
    missing = [e for e in emails if sandbox.issued_count(badge, e) != 1]
    assert missing == []


async def test_pat_issues_a_list_without_any_token_call() -> None:
    """The library call issues an in-memory list; a PAT makes no token call."""
    async with run_sandbox(SandboxConfig(latency=(0.03, 0.09))) as sandbox:
        learners = cohort(20)
        summary = await bulk_issuer.issue_badges(
            learners, badge_id=51, auth=PersonalAccessToken(PAT), base_url=sandbox.url
        )
    assert (summary.issued, summary.failed, summary.invalid) == (20, 0, 0)
    assert sandbox.token_calls == 0
    assert sandbox.rejected_429 == 0
    assert_each_issued_once(sandbox, [row["Email"] for row in learners])


async def test_learner_objects_and_async_iterables() -> None:
    """Learner instances and async iterables are accepted too."""

    async def stream() -> AsyncIterator[Learner]:
        for i in range(5):
            yield Learner(first_name=f"Siobhán{i}", email=f"s{i}@example.org")

    async with run_sandbox(SandboxConfig()) as sandbox:
        summary = await bulk_issuer.issue_badges(
            stream(), badge_id=51, auth=PersonalAccessToken(PAT), base_url=sandbox.url
        )
    assert summary.issued == 5
    names = sorted(a["recipient_firstname"] for a in sandbox.assertions)
    assert names == [f"Siobhán{i}" for i in range(5)]


@pytest.mark.parametrize("model", ["fixed", "moving", "sliding", "bucket"])
async def test_default_rate_draws_no_429_from_a_strict_server(model: str) -> None:
    """At the default 5/2s, no window of the server's sees more than 5 requests, no 429."""
    config = SandboxConfig(rate_model=model, latency=(0.03, 0.09), seed=1)  # type: ignore[arg-type]
    async with run_sandbox(config) as sandbox:
        summary = await bulk_issuer.issue_badges(
            cohort(40), badge_id=51, auth=PasswordAuth(USER, PASSWORD), base_url=sandbox.url
        )
    assert summary.issued == 40
    assert sandbox.rejected_429 == 0
    arrivals = [r.arrived_at for r in sandbox.requests]
    assert most_in_window(arrivals, 2.0) <= 5


@pytest.mark.parametrize("model", ["fixed", "moving", "sliding", "bucket"])
async def test_headers_that_overstate_the_room_cost_one_429_at_most(model: str) -> None:
    """A server whose remaining count claims three places too many, with 3 s tokens and
    replies dropped after the commit: each learner exactly once, one 429 at most, and no
    window of the server's overfilled by what it accepted."""
    config = SandboxConfig(
        rate_model=model,  # type: ignore[arg-type]
        latency=(0.03, 0.09),
        ratelimit_headers="all",
        ratelimit_overstate=3,
        token_ttl=3.0,
        drop_after_rate=0.03,
        seed=8,
    )
    learners = cohort(60)
    async with run_sandbox(config) as sandbox:
        summary = await bulk_issuer.issue_badges(
            learners, badge_id=51, auth=PasswordAuth(USER, PASSWORD), base_url=sandbox.url
        )
    assert summary.issued == 60
    assert_each_issued_once(sandbox, [row["Email"] for row in learners])
    assert sandbox.rejected_429 <= 1
    accepted = [r.arrived_at for r in sandbox.requests if r.status != 429]
    assert most_in_server_windows(accepted, model, 5, 2.0) <= 5


async def test_survives_faults_drops_token_errors_and_two_second_tokens() -> None:
    """300 learners through 5xx, drops, token-endpoint errors and 2 s tokens: each exactly once."""
    config = SandboxConfig(
        token_ttl=2.0,
        fault_rate=0.05,
        drop_before_rate=0.03,
        drop_after_rate=0.03,
        token_fault_rate=0.1,
        latency=(0.03, 0.09),
        seed=3,
    )
    learners = cohort(300)
    async with run_sandbox(config) as sandbox:
        summary = await bulk_issuer.issue_badges(
            learners, badge_id=51, auth=PasswordAuth(USER, PASSWORD), base_url=sandbox.url
        )
    assert (summary.issued, summary.failed, summary.invalid) == (300, 0, 0)
    assert_each_issued_once(sandbox, [row["Email"] for row in learners])
    assert most_in_window([r.arrived_at for r in sandbox.requests], 2.0) <= 5
    assert summary.token_calls > 50  # 2 s tokens were refreshed all along


async def test_engine_owns_every_attempt() -> None:
    """aiohttp never re-sends a PUT on its own: the server sees exactly the attempts journaled."""
    config = SandboxConfig(drop_before_rate=0.3, seed=5)
    async with run_sandbox(config) as sandbox:
        outcomes: list[bulk_issuer.Outcome] = []
        summary = await bulk_issuer.issue_badges(
            cohort(30),
            badge_id=51,
            auth=PersonalAccessToken(PAT),
            base_url=sandbox.url,
            on_outcome=outcomes.append,
        )
    assert summary.issued == 30
    dropped = [r for r in sandbox.requests if r.kind == "issue" and r.status == DROPPED]
    assert dropped
    assert len(issue_calls(sandbox)) == sum(o.attempts for o in outcomes)


@pytest.mark.parametrize(
    ("badge", "message"), [(999, "badge 999 is not found"), (403, "badge 403 is not permitted")]
)
async def test_unknown_or_forbidden_badge_stops_after_one_issue_call(
    badge: int, message: str
) -> None:
    """A 404 or 403 for the badge stops the run at once instead of failing every learner."""
    async with run_sandbox(SandboxConfig()) as sandbox:
        with pytest.raises(FatalError, match=message) as caught:
            await bulk_issuer.issue_badges(
                cohort(50), badge_id=badge, auth=PersonalAccessToken(PAT), base_url=sandbox.url
            )
    assert len(issue_calls(sandbox)) == 1
    assert isinstance(caught.value.summary, Summary)
    summary = caught.value.summary
    assert (summary.not_attempted, summary.failed, summary.total) == (50, 0, 50)


async def test_wrong_password_stops_after_few_token_calls() -> None:
    """A refused login is fatal after at most 3 token calls, with no issue call."""
    async with run_sandbox(SandboxConfig()) as sandbox:
        with pytest.raises(FatalError, match="refused the login"):
            await bulk_issuer.issue_badges(
                cohort(10), badge_id=51, auth=PasswordAuth(USER, "wrong"), base_url=sandbox.url
            )
    assert sandbox.token_calls <= 3
    assert issue_calls(sandbox) == []


async def test_wrong_pat_is_fatal() -> None:
    """A refused PAT stops the run with a message about the credentials."""
    async with run_sandbox(SandboxConfig()) as sandbox:
        with pytest.raises(FatalError, match="credentials"):
            await bulk_issuer.issue_badges(
                cohort(10), badge_id=51, auth=PersonalAccessToken("nope"), base_url=sandbox.url
            )
    assert len(sandbox.requests) <= 3


@pytest.mark.parametrize("mode", ["form", "json"])
async def test_token_endpoint_json_or_form_only(mode: str) -> None:
    """A token endpoint that takes only the OAuth2 form (or only JSON) works."""
    async with run_sandbox(SandboxConfig(token_mode=mode)) as sandbox:  # type: ignore[arg-type]
        summary = await bulk_issuer.issue_badges(
            cohort(5), badge_id=51, auth=PasswordAuth(USER, PASSWORD), base_url=sandbox.url
        )
    assert summary.issued == 5
    assert sandbox.token_calls <= 2


async def test_bearer_pat_header() -> None:
    """A PAT can travel as Authorization: Bearer for servers that want the old header."""
    async with run_sandbox(SandboxConfig(pat_header="bearer")) as sandbox:
        summary = await bulk_issuer.issue_badges(
            cohort(3),
            badge_id=51,
            auth=PersonalAccessToken(PAT, header="bearer"),
            base_url=sandbox.url,
        )
    assert summary.issued == 3


async def test_rejected_learner_fails_alone_with_the_servers_detail() -> None:
    """A 422 fails that learner with the server's detail; the others are issued."""
    learners = cohort(4)
    # Valid syntax, so it passes our check; the server finds the domain takes no mail.
    learners.append({"First Name": "Odd", "Email": "odd@no-mail.example.com"})
    outcomes: list[bulk_issuer.Outcome] = []
    async with run_sandbox(SandboxConfig()) as sandbox:
        summary = await bulk_issuer.issue_badges(
            learners,
            badge_id=51,
            auth=PersonalAccessToken(PAT),
            base_url=sandbox.url,
            on_outcome=outcomes.append,
        )
    assert (summary.issued, summary.failed) == (4, 1)
    failed = [o for o in outcomes if o.status is bulk_issuer.Status.FAILED]
    assert failed[0].http_status == 422
    assert failed[0].attempts == 1
    assert failed[0].reason == (
        "recipient_email: value is not a valid email address: "
        "no-mail.example.com does not accept email"
    )


async def test_invalid_rows_are_reported_by_row_and_not_sent() -> None:
    """Rows without a first name or with a bad email are reported with their row number."""
    learners = [
        *cohort(3),
        {"First Name": "", "Email": "nofirst@example.org"},
        {"First Name": "Bad", "Email": "not-an-email"},
        {"First Name": "Dup", "Email": "LEARNER0@example.org"},
    ]
    outcomes: list[bulk_issuer.Outcome] = []
    async with run_sandbox(SandboxConfig()) as sandbox:
        summary = await bulk_issuer.issue_badges(
            learners,
            badge_id=51,
            auth=PersonalAccessToken(PAT),
            base_url=sandbox.url,
            on_outcome=outcomes.append,
        )
    assert (summary.issued, summary.invalid) == (3, 3)
    invalid = sorted(o.row for o in outcomes if o.status is bulk_issuer.Status.INVALID)
    assert invalid == [4, 5, 6]
    assert len(issue_calls(sandbox)) == 3


async def test_rerun_with_a_journal_sends_nothing_twice(tmp_path: Path) -> None:
    """The same run again skips everyone already issued, without a request."""
    journal = tmp_path / "run.db"
    learners = cohort(15)
    async with run_sandbox(SandboxConfig()) as sandbox:
        first = await bulk_issuer.issue_badges(
            learners,
            badge_id=51,
            auth=PersonalAccessToken(PAT),
            base_url=sandbox.url,
            journal=journal,
        )
        calls = len(issue_calls(sandbox))
        second = await bulk_issuer.issue_badges(
            learners,
            badge_id=51,
            auth=PersonalAccessToken(PAT),
            base_url=sandbox.url,
            journal=journal,
        )
    assert first.issued == 15
    assert (second.issued, second.skipped) == (0, 15)
    assert len(issue_calls(sandbox)) == calls
    assert second.ok


async def test_learners_who_already_hold_the_badge_are_not_issued_again() -> None:
    """Holders from the web UI are found once at start and not sent."""
    learners = cohort(10)
    async with run_sandbox(SandboxConfig()) as sandbox:
        sandbox.preload(51, [learners[0]["Email"], learners[1]["Email"].upper()])
        summary = await bulk_issuer.issue_badges(
            learners, badge_id=51, auth=PersonalAccessToken(PAT), base_url=sandbox.url
        )
    assert (summary.issued, summary.already_held) == (8, 2)
    assert sandbox.duplicates() == {}
    assert summary.ok


async def test_commit_then_drop_makes_no_duplicate() -> None:
    """A server that issues and then drops the reply: the lookup prevents every duplicate."""
    learners = cohort(200)
    async with run_sandbox(SandboxConfig(drop_after_rate=0.08, seed=11)) as sandbox:
        summary = await bulk_issuer.issue_badges(
            learners, badge_id=51, auth=PersonalAccessToken(PAT), base_url=sandbox.url
        )
    assert summary.issued == 200
    assert_each_issued_once(sandbox, [row["Email"] for row in learners])


async def test_no_secret_in_any_event() -> None:
    """Neither the password nor any token appears in any log event, at any level."""
    config = SandboxConfig(token_ttl=2.0, fault_rate=0.1, token_fault_rate=0.2, seed=2)
    async with run_sandbox(config) as sandbox:
        with capture_logs() as events:
            await bulk_issuer.issue_badges(
                cohort(20), badge_id=51, auth=PasswordAuth(USER, PASSWORD), base_url=sandbox.url
            )
        tokens = list(sandbox_tokens(sandbox))
    text = repr(events)
    assert PASSWORD not in text
    assert tokens
    assert not any(token in text for token in tokens)


@pytest.mark.parametrize("cut", [12, 30])
async def test_a_credential_echoed_cut_short_is_masked_too(cut: int) -> None:
    """A server that quotes only the start of the credential (as aiohttp's own "Got more
    than 8190 bytes when reading: b'...'" does): no part of it from its first 12
    characters on reaches an outcome or a log event."""
    secret = "pat-that-must-never-show-in-any-output-0123456789"
    echo = {"detail": f"invalid X-Access-Token: b'{secret[:cut]}...'"}
    refuse = ScriptedAnswer("issue", 400, body=echo, times=1)
    seen: list[bulk_issuer.Outcome] = []
    config = SandboxConfig(scripted=[refuse], pats=frozenset({secret}))
    async with run_sandbox(config) as sandbox:
        with capture_logs() as events:
            await bulk_issuer.issue_badges(
                cohort(2),
                badge_id=51,
                auth=PersonalAccessToken(secret),
                base_url=sandbox.url,
                on_outcome=seen.append,
            )
    text = repr(events) + repr(seen)
    assert "invalid X-Access-Token" in text  # the echo did reach the outputs, masked
    assert secret[:12] not in text


def sandbox_tokens(sandbox: Sandbox) -> list[str]:
    """Every bearer token the sandbox handed out."""
    return sandbox.tokens.issued()


async def test_cancelled_run_closes_cleanly_and_resumes(tmp_path: Path) -> None:
    """Cancelling a run mid-way leaves nothing open; the rerun issues the rest once."""

    journal = tmp_path / "run.db"
    learners = cohort(60)
    async with run_sandbox(SandboxConfig(latency=(0.03, 0.09))) as sandbox:
        with anyio.move_on_after(5):
            await bulk_issuer.issue_badges(
                learners,
                badge_id=51,
                auth=PersonalAccessToken(PAT),
                base_url=sandbox.url,
                journal=journal,
            )
        assert 0 < sandbox.issued_by_api < 60
        summary = await bulk_issuer.issue_badges(
            learners,
            badge_id=51,
            auth=PersonalAccessToken(PAT),
            base_url=sandbox.url,
            journal=journal,
        )
    assert summary.issued + summary.skipped == 60
    assert_each_issued_once(sandbox, [row["Email"] for row in learners])


async def test_stop_lets_requests_in_flight_finish() -> None:
    """BadgeIssuer.stop(): no new learner starts, the summary says interrupted."""

    async with (
        run_sandbox(SandboxConfig(latency=(0.03, 0.09))) as sandbox,
        bulk_issuer.BadgeIssuer(auth=PersonalAccessToken(PAT), base_url=sandbox.url) as issuer,
        anyio.create_task_group() as tg,
    ):

        async def stop_later() -> None:
            await anyio.sleep(3)
            issuer.stop()

        tg.start_soon(stop_later)
        summary = await issuer.run(cohort(60), badge_id=51)
    assert summary.interrupted
    assert not summary.ok
    assert 0 < summary.issued < 60
    assert summary.issued == sandbox.issued_by_api


@pytest.mark.parametrize("retry_after", ["seconds", "date", "none"])
async def test_stricter_server_than_configured_slows_down_until_429s_stop(retry_after: str) -> None:
    """Told 5/2s by a 5/4s server: a few 429s, every learner once, then no more 429s."""
    config = SandboxConfig(rate=(5, 4.0), retry_after=retry_after, latency=(0.03, 0.09), seed=9)  # type: ignore[arg-type]
    learners = cohort(60)
    async with run_sandbox(config) as sandbox:
        summary = await bulk_issuer.issue_badges(
            learners, badge_id=51, auth=PersonalAccessToken(PAT), base_url=sandbox.url
        )
        late = [r for r in sandbox.requests if r.status == 429][-1].arrived_at
        end = sandbox.requests[-1].arrived_at
    assert summary.issued == 60
    assert_each_issued_once(sandbox, [row["Email"] for row in learners])
    assert sandbox.rejected_429 <= 12
    # Slowed down for good: the last third of the run drew none.
    assert late < end * 2 / 3


async def test_a_404_for_one_learner_after_the_badge_is_confirmed_fails_only_that_learner() -> None:
    """An unknown provider_id (404) fails its learner; the run goes on and is not fatal."""
    learners: list[dict[str, object]] = [dict(row) for row in cohort(6)]
    learners.insert(3, {"First Name": "Pat", "Email": "pat@example.org", "provider_id": 999})
    outcomes: list[bulk_issuer.Outcome] = []
    async with run_sandbox(SandboxConfig()) as sandbox:
        summary = await bulk_issuer.issue_badges(
            learners,
            badge_id=51,
            auth=PersonalAccessToken(PAT),
            base_url=sandbox.url,
            on_outcome=outcomes.append,
            workers=1,
        )
    assert (summary.issued, summary.failed) == (6, 1)
    failed = [o for o in outcomes if o.status is bulk_issuer.Status.FAILED]
    assert failed[0].email == "pat@example.org"
    assert failed[0].reason == "Provider not found"


@pytest.mark.parametrize("resend", [False, True])
async def test_without_the_lookup_endpoint_the_run_says_so_once_and_goes_on(resend: bool) -> None:
    """A 403 from the assertions list: one lookup.unavailable event; learners whose reply
    was lost are reported unconfirmed (never resent silently), or resent and flagged when
    asked for."""
    config = SandboxConfig(lookup="forbidden", drop_after_rate=0.1, seed=4)
    async with run_sandbox(config) as sandbox:
        with capture_logs() as events:
            summary = await bulk_issuer.issue_badges(
                cohort(30),
                badge_id=51,
                auth=PersonalAccessToken(PAT),
                base_url=sandbox.url,
                policy=bulk_issuer.RetryPolicy(resend_unconfirmed=resend),
                logger=structlog.get_logger(),
            )
    if resend:
        assert summary.issued == 30
    else:
        assert summary.unconfirmed > 0
        assert summary.issued + summary.unconfirmed == 30
        assert sandbox.duplicates() == {}
    assert [e["event"] for e in events].count("lookup.unavailable") == 1
    resent = [e for e in events if "resent_unverified" in e.get("flags", [])]
    assert all(e["event"] == "badge.issued" for e in resent)


async def test_a_rerun_counts_an_earlier_unanswered_send_that_went_through_as_issued(
    tmp_path: Path,
) -> None:
    """Sends whose replies were lost, left unconfirmed while the look-up was refused: on
    the rerun the holders list shows them, and they count as issued by this tool
    (confirmed, flagged verified), not as held before; nothing is sent twice."""
    journal = tmp_path / "cohort.journal.db"
    learners = cohort(20)
    run = {
        "badge_id": 51,
        "auth": PersonalAccessToken(PAT),
        "journal": journal,
        "coordinator": "memory",
    }
    async with run_sandbox(SandboxConfig(lookup="forbidden", drop_after_rate=0.3, seed=4)) as sb:
        first = await bulk_issuer.issue_badges(learners, base_url=sb.url, **run)  # type: ignore[arg-type]
        assert first.unconfirmed > 0
        sb.config = dataclasses.replace(sb.config, lookup="ok", drop_after_rate=0.0)
        outcomes: list[bulk_issuer.Outcome] = []
        again = await bulk_issuer.issue_badges(
            learners,
            base_url=sb.url,
            on_outcome=outcomes.append,
            **run,  # type: ignore[arg-type]
        )
    assert again.already_held == 0
    assert first.issued + again.issued == 20
    confirmed = [o for o in outcomes if o.reason == EARLIER_SEND_WENT_THROUGH]
    assert len(confirmed) == first.unconfirmed
    assert all(o.status is bulk_issuer.Status.ISSUED and "verified" in o.flags for o in confirmed)
    assert_each_issued_once(sb, [row["Email"] for row in learners])
    with Journal(journal) as kept:
        assert kept.counts().get("sending", 0) == 0


@pytest.mark.parametrize("workers", [0, 1001])
def test_workers_out_of_range_are_refused(workers: int) -> None:
    """No worker would issue nothing; more than 1,000 only cost memory."""
    with pytest.raises(ValueError, match="workers must be 1 to 1000"):
        bulk_issuer.BadgeIssuer(auth=PersonalAccessToken(PAT), workers=workers)


async def issued_without_stopping(sandbox: Sandbox, learners: list[dict[str, str]]) -> Summary:
    """The run with a login; a stop fails the test with the exit status the CLI would give."""
    try:
        return await bulk_issuer.issue_badges(
            learners, badge_id=51, auth=PasswordAuth(USER, PASSWORD), base_url=sandbox.url
        )
    except bulk_issuer.StoppedError as stopped:
        pytest.fail(f"the run stopped (exit {exit_status(stopped)}): {stopped}")


@pytest.mark.parametrize("kind", ["token", "issue"])
async def test_a_limiter_that_counts_refusals_is_escaped_by_waiting_longer(kind: str) -> None:
    """A server that refuses (429, no Retry-After) for as long as it is knocked on less than
    10 s apart, each refusal restarting its window: a wait that stays one window (2 s)
    never gets through and the run stops with exit 4 after two minutes; waits that grow
    with each 429 in a row get through, and every learner is issued once."""
    refusing = ScriptedAnswer(kind, 429, until_quiet=10.0)  # type: ignore[arg-type]
    learners = cohort(10)
    async with run_sandbox(SandboxConfig(scripted=[refusing], seed=4)) as sandbox:
        summary = await issued_without_stopping(sandbox, learners)
    assert summary.ok
    assert summary.issued == 10
    assert_each_issued_once(sandbox, [row["Email"] for row in learners])


async def test_tokens_that_expire_while_requests_stall_never_stop_the_run() -> None:
    """2 s tokens (opaque: the client learns their life from 401s), requests held up to
    1.5 s on the way in: a resend with a fresh token can itself outlive that token and
    draw a second 401. The login works, so that is expiry, not refused credentials: the
    run refreshes again and finishes, every learner issued once (it used to stop with
    exit 3)."""
    config = SandboxConfig(token_ttl=2.0, jwt_tokens=False, latency=(0.02, 1.5), seed=3)
    learners = cohort(40)
    async with run_sandbox(config) as sandbox:
        summary = await issued_without_stopping(sandbox, learners)
        refused = [r for r in sandbox.requests if r.status == 401]
    assert summary.ok
    assert summary.issued == 40
    assert_each_issued_once(sandbox, [row["Email"] for row in learners])
    assert refused  # tokens did expire under the requests
