"""Issue 9, point by point: the engine against an adversarial server on a real loopback socket.

Each test names the point of issue 9 it proves. Library runs are on fake loop time
(looptime), so an hour-long Retry-After or a 30 s outage costs no real time; the few
command-line runs use an unlimited sandbox in a thread and finish in well under a second.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import bulk_issuer
from bulk_issuer import (
    BadgeIssuer,
    CredentialsRejected,
    FatalError,
    InputError,
    PasswordAuth,
    PersonalAccessToken,
    Status,
    UnavailableError,
)
from bulk_issuer.cli import main
from bulk_issuer.console import Console
from bulk_issuer.errors import StoppedError, exit_status
from bulk_issuer.events import ApiTrouble, Event, HoldersLoaded, Waiting
from bulk_issuer.journal import Journal, State
from bulk_issuer.outcomes import Outcome, Summary
from bulk_issuer.retry import RetryPolicy
from bulk_issuer.sandbox import DROPPED, Sandbox, SandboxConfig, ScriptedAnswer, run_sandbox
from tests.conftest import (
    child_argv,
    good_rows,
    issue_args,
    most_in_window,
    sandbox_thread,
    write_cohort,
)

PAT = "sandbox-demo-pat"
USER, PASSWORD = "demo@example.com", "demo-password"
AUTH = PersonalAccessToken(PAT)

#: Lookup shapes that prove nothing: the engine must not take them for "not held".
UNREADABLE = ["bare_list", "data", "results", "email_key", "html"]
#: Shapes it can read, though not the documented one (or not filtered by address).
READABLE = ["items", "no_pages", "pages_na", "ignore_email_filter"]


def cohort(n: int, start: int = 0) -> list[dict[str, str]]:
    """n valid learners as dict rows."""
    return [
        {"First Name": f"Learner{i}", "Last Name": "Zoë", "Email": f"learner{i}@example.org"}
        for i in range(start, start + n)
    ]


def emails(rows: Sequence[dict[str, str]]) -> list[str]:
    """The rows' addresses."""
    return [row["Email"] for row in rows]


def issue_calls(sandbox: Sandbox) -> list[float]:
    """Arrival times of the issue calls the sandbox saw."""
    return [r.arrived_at for r in sandbox.requests if r.kind == "issue"]


class Recorder:
    """Every event and outcome of a run."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    @property
    def outcomes(self) -> list[Outcome]:
        """The learners' outcomes."""
        return [e for e in self.events if isinstance(e, Outcome)]

    def of(self, status: Status) -> list[Outcome]:
        """The outcomes with `status`."""
        return [o for o in self.outcomes if o.status is status]


async def issue(
    sandbox: Sandbox,
    learners: Sequence[dict[str, str]],
    recorder: Recorder | None = None,
    **kw: Any,
) -> Summary:
    """The library call against the sandbox, with a PAT unless `auth` is given."""
    kw.setdefault("auth", PersonalAccessToken(PAT))
    return await bulk_issuer.issue_badges(
        list(learners),
        badge_id=51,
        base_url=sandbox.url,
        on_event=recorder,
        **kw,
    )


async def issue_file(sandbox: Sandbox, path: Path) -> Summary:
    """The library call on a file, unpaced."""
    return await bulk_issuer.issue_badges(
        str(path), badge_id=51, auth=PersonalAccessToken(PAT), base_url=sandbox.url, rate=None
    )


def journal_states(path: Path) -> dict[str, State]:
    """Each learner's state in a journal file."""
    with Journal(path) as journal:
        return {entry.email or "": entry.state for entry in journal.entries(*State)}


@pytest.fixture
def pat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials as a user sets them: a PAT in the environment."""
    for name in ("NAVIGATR_USER", "NAVIGATR_PASS", "NAVIGATR_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NAVIGATR_PAT", PAT)


def cli(argv: list[str]) -> int:
    """The exit status of `bulk-issuer ARGV`."""
    try:
        return main(argv)
    except SystemExit as exc:  # pragma: no cover - argparse errors
        return int(exc.code or 0)


#: The first issue call is processed, then answered 500: its learner must be looked up.
DROPPED_REPLY = ScriptedAnswer("issue", 500, commit=True, times=1)


# -- 1. a lookup answer that proves nothing is never "not held" -----------------------------


@pytest.mark.looptime
@pytest.mark.parametrize("shape", UNREADABLE)
async def test_1_unreadable_lookup_after_a_dropped_reply_is_unconfirmed(shape: str) -> None:
    """Point 1: an unreadable lookup after a dropped reply: not resent, reported unconfirmed."""
    config = SandboxConfig(lookup_shape=shape, scripted=[DROPPED_REPLY])  # type: ignore[arg-type]
    learners = cohort(6)
    recorder = Recorder()
    async with run_sandbox(config) as sandbox:
        summary = await issue(sandbox, learners, recorder)
    assert sandbox.duplicates() == {}
    assert (summary.issued, summary.unconfirmed, summary.failed) == (5, 1, 0)
    assert summary.total == 6
    assert not summary.ok
    (unconfirmed,) = recorder.of(Status.UNCONFIRMED)
    assert sandbox.issued_count(51, unconfirmed.email) == 1
    assert "not sent again" in (unconfirmed.reason or "")
    assert all(sandbox.issued_count(51, e) == 1 for e in emails(learners))


@pytest.mark.looptime
@pytest.mark.parametrize("shape", READABLE)
async def test_1_readable_lookup_after_a_dropped_reply_verifies(shape: str) -> None:
    """Point 1: a readable lookup (any paging, filter ignored) settles the dropped reply."""
    config = SandboxConfig(lookup_shape=shape, scripted=[DROPPED_REPLY])  # type: ignore[arg-type]
    learners = cohort(6)
    recorder = Recorder()
    async with run_sandbox(config) as sandbox:
        summary = await issue(sandbox, learners, recorder)
    assert sandbox.duplicates() == {}
    assert summary.issued == 6
    assert summary.ok
    verified = [o for o in recorder.outcomes if "verified" in o.flags]
    assert len(verified) == 1


@pytest.mark.looptime
@pytest.mark.parametrize("shape", [*UNREADABLE, "forbidden", "missing"])
async def test_1_resend_unconfirmed_resends_and_flags(shape: str) -> None:
    """Point 1: with resend_unconfirmed the learner is sent again, and flagged for it."""
    lookup = shape if shape in ("forbidden", "missing") else "ok"
    lookup_shape = "items" if shape in ("forbidden", "missing") else shape
    config = SandboxConfig(
        lookup=lookup,  # type: ignore[arg-type]
        lookup_shape=lookup_shape,  # type: ignore[arg-type]
        scripted=[DROPPED_REPLY],
    )
    recorder = Recorder()
    async with run_sandbox(config) as sandbox:
        summary = await issue(
            sandbox, cohort(4), recorder, policy=RetryPolicy(resend_unconfirmed=True)
        )
    assert summary.issued == 4
    flagged = [o for o in recorder.outcomes if "resent_unverified" in o.flags]
    assert [o.flags for o in flagged] == [("resent_unverified",)]
    # The resend made the duplicate the switch accepts: one learner, twice, and said so.
    assert sandbox.duplicates() == {(51, flagged[0].email.lower()): 2}


@pytest.mark.looptime
@pytest.mark.parametrize("shape", UNREADABLE + READABLE)
async def test_1_random_dropped_replies_never_make_a_duplicate(shape: str) -> None:
    """Point 1 as observed: 30 learners, 20% of replies dropped after the commit: no
    duplicate in any lookup shape; each dropped learner is verified or reported unconfirmed."""
    config = SandboxConfig(lookup_shape=shape, drop_after_rate=0.2, seed=5)  # type: ignore[arg-type]
    learners = cohort(30)
    async with run_sandbox(config) as sandbox:
        summary = await issue(sandbox, learners)
    dropped = sum(1 for r in sandbox.requests if r.kind == "issue" and r.status == DROPPED)
    assert dropped > 0
    assert sandbox.duplicates() == {}
    assert summary.issued + summary.unconfirmed == 30
    assert summary.failed == 0
    assert all(sandbox.issued_count(51, e) == 1 for e in emails(learners))
    if shape in UNREADABLE:
        assert summary.unconfirmed == dropped
    else:
        assert summary.unconfirmed == 0


@pytest.mark.looptime
async def test_1_one_learner_at_a_time_is_never_resent_unconfirmed(tmp_path: Path) -> None:
    """Point 1 through BadgeIssuer.issue: a dropped reply with an unreadable lookup is
    unconfirmed; asking again (same journal) checks again and still does not resend."""
    config = SandboxConfig(lookup_shape="bare_list", scripted=[DROPPED_REPLY])
    learner = bulk_issuer.Learner(first_name="Aoife", email="aoife@example.org")
    async with run_sandbox(config) as sandbox:
        for _ in range(2):
            async with BadgeIssuer(
                auth=AUTH, base_url=sandbox.url, journal=tmp_path / "run.db"
            ) as issuer:
                outcome = await issuer.issue(learner, badge_id=51)
            assert outcome.status is Status.UNCONFIRMED
    assert sandbox.issued_count(51, "aoife@example.org") == 1
    assert len(issue_calls(sandbox)) == 1


@pytest.mark.looptime
@pytest.mark.parametrize("lookup", ["forbidden", "missing"])
async def test_1_refused_lookup_endpoint_is_unconfirmed_not_resent(lookup: str) -> None:
    """Point 1: the lookup refused (403/404): the dropped reply's learner is not resent."""
    config = SandboxConfig(lookup=lookup, scripted=[DROPPED_REPLY])  # type: ignore[arg-type]
    async with run_sandbox(config) as sandbox:
        summary = await issue(sandbox, cohort(5))
    assert sandbox.duplicates() == {}
    assert (summary.issued, summary.unconfirmed) == (4, 1)


@pytest.mark.looptime
async def test_1_lookup_that_stays_down_is_unconfirmed_not_resent() -> None:
    """Point 1: the lookup endpoint down (503) for good: not resent, the run stops (exit 4)."""
    config = SandboxConfig(
        scripted=[DROPPED_REPLY, ScriptedAnswer("lookup", 503, skip=1)],
    )
    recorder = Recorder()
    async with run_sandbox(config) as sandbox:
        with pytest.raises(UnavailableError, match="assertions list") as caught:
            await issue(sandbox, cohort(5), recorder, policy=RetryPolicy(outage=30))
    assert sandbox.duplicates() == {}
    assert exit_status(caught.value) == 4
    summary = caught.value.summary
    assert summary is not None
    assert summary.total == 5
    assert summary.failed == 0
    assert summary.unconfirmed == 1


@pytest.mark.looptime
async def test_1_server_ignoring_the_email_filter_with_many_holders() -> None:
    """Point 1: the filter ignored and 150 other holders: the whole list is read, no duplicate."""
    others = [f"other{i}@example.org" for i in range(150)]
    config = SandboxConfig(lookup_shape="ignore_email_filter", scripted=[DROPPED_REPLY])
    learners = cohort(5)
    recorder = Recorder()
    async with run_sandbox(config) as sandbox:
        sandbox.preload(51, others)
        summary = await issue(sandbox, learners, recorder)
    assert sandbox.duplicates() == {}
    assert summary.issued == 5
    assert [o.flags for o in recorder.outcomes if o.flags] == [("verified",)]


@pytest.mark.usefixtures("pat_env")
@pytest.mark.parametrize("shape", ["bare_list", "html", "forbidden"])
def test_1_cli_exits_1_for_an_unconfirmed_learner_and_resends_on_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], shape: str
) -> None:
    """Point 1 through the CLI: exit 1 naming the unconfirmed learner; --resend-unconfirmed
    on the rerun sends it again (flagged) and exits 0."""
    rows = good_rows(4)
    path = write_cohort(tmp_path / "cohort.csv", rows)
    if shape == "forbidden":
        config = SandboxConfig(rate=None, lookup="forbidden", scripted=[DROPPED_REPLY])
    else:
        config = SandboxConfig(rate=None, lookup_shape=shape, scripted=[DROPPED_REPLY])  # type: ignore[arg-type]
    with sandbox_thread(config) as sandbox:
        args = issue_args(path, sandbox.url, "--rate", "none")
        assert cli(args) == 1
        out, err = capsys.readouterr()
        assert sandbox.duplicates() == {}
        assert "unconfirmed" in out + err
        assert cli([*args, "--resend-unconfirmed"]) == 0
        _, err = capsys.readouterr()
        assert len(sandbox.duplicates()) == 1
        assert all(sandbox.issued_count(51, row[2]) >= 1 for row in rows)


# -- 2. paging without `pages` ----------------------------------------------------------------


@pytest.mark.looptime
@pytest.mark.parametrize("shape", ["no_pages", "pages_na"])
async def test_2_paging_without_pages_reads_every_holder(shape: str) -> None:
    """Point 2: 160 learners, 150 holders, no usable `pages`: 0 duplicates, no crash."""
    learners = cohort(160)
    async with run_sandbox(SandboxConfig(lookup_shape=shape, rate=None)) as sandbox:  # type: ignore[arg-type]
        sandbox.preload(51, emails(learners)[:150])
        summary = await issue(sandbox, learners, rate=None)
    assert sandbox.duplicates() == {}
    assert (summary.issued, summary.already_held) == (10, 150)


@pytest.mark.looptime
@pytest.mark.parametrize("shape", ["no_pages", "pages_na", "items"])
async def test_2_paging_small_pages(shape: str) -> None:
    """Point 2: a server that pages by 7 whatever is asked: every holder is still found."""
    learners = cohort(40)
    config = SandboxConfig(lookup_shape=shape, lookup_max_size=7, rate=None)  # type: ignore[arg-type]
    async with run_sandbox(config) as sandbox:
        sandbox.preload(51, emails(learners)[:33])
        summary = await issue(sandbox, learners, rate=None)
    assert sandbox.duplicates() == {}
    assert (summary.issued, summary.already_held) == (7, 33)


class PagelessServer:
    """A stand-in API whose assertions list ignores `page` and `recipient_email`: every page
    is the first. Its first issue call is processed and then answered 500."""

    def __init__(self, others: int, *, with_total: bool) -> None:
        self.holders = [f"other{i}@example.org" for i in range(others)]
        self.with_total = with_total
        self.issue_calls = 0
        self.lookups = 0

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application()
        app.router.add_get("/v1/badge_assertion/", self.lookup)
        app.router.add_put("/v1/badge/51/issue", self.issue)
        return app

    async def lookup(self, request: web.Request) -> web.Response:
        """Page 1, whatever was asked."""
        self.lookups += 1
        items = [
            {"id": str(i), "recipient_email": email, "status": "accepted"}
            for i, email in enumerate(self.holders[:100])
        ]
        body: dict[str, object] = {"items": items, "page": 1, "size": 100}
        if self.with_total:
            body["total"] = len(self.holders)
        return web.json_response(body)

    async def issue(self, request: web.Request) -> web.Response:
        """Issue; the first call's answer is lost to a 500."""
        self.issue_calls += 1
        email = (await request.json())["recipient_email"]
        self.holders.append(email)
        if self.issue_calls == 1:
            return web.Response(status=500, text="Internal Server Error")
        return web.json_response({"id": str(len(self.holders))})

    def duplicates(self) -> list[str]:
        """Addresses issued more than once."""
        return sorted({e for e in self.holders if self.holders.count(e) > 1})


@pytest.mark.looptime
@pytest.mark.parametrize("with_total", [True, False])
async def test_2_a_list_that_ignores_paging_is_not_complete(with_total: bool) -> None:
    """Point 2: a list that answers page 1 for every page: its repeats do not "cover" the
    total (the dropped learner would be taken as not held and resent), and without a total
    it is not paged 20,000 times: the learner is unconfirmed, the note says why."""
    server = PagelessServer(150, with_total=with_total)
    recorder = Recorder()
    async with TestServer(server.app(), host="127.0.0.1") as http:
        summary = await bulk_issuer.issue_badges(
            cohort(3),
            badge_id=51,
            auth=AUTH,
            base_url=str(http.make_url("")),
            rate=None,
            workers=1,
            on_event=recorder,
        )
    assert server.duplicates() == []
    assert (summary.issued, summary.unconfirmed) == (2, 1)
    (unconfirmed,) = recorder.of(Status.UNCONFIRMED)
    assert "ignores paging" in (unconfirmed.reason or "")
    assert server.lookups <= 6


class ListServer:
    """A stand-in API whose assertions list pages properly but may leave out `pages` or
    `total`, or claim a total it does not have."""

    def __init__(self, holders: int, *, pages: bool, total: bool, claim: int | None = None) -> None:
        self.holders = [f"holder{i}@example.org" for i in range(holders)]
        self.pages, self.total, self.claim = pages, total, claim
        self.lookups = 0

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application()
        app.router.add_get("/v1/badge_assertion/", self.lookup)
        app.router.add_put("/v1/badge/51/issue", self.issue)
        return app

    async def lookup(self, request: web.Request) -> web.Response:
        """The page asked for."""
        self.lookups += 1
        number, size = int(request.query["page"]), int(request.query["size"])
        chunk = self.holders[(number - 1) * size : number * size]
        body: dict[str, object] = {
            "items": [{"id": email, "recipient_email": email} for email in chunk],
            "page": number,
            "size": size,
        }
        total = self.claim if self.claim is not None else len(self.holders)
        if self.total:
            body["total"] = total
        if self.pages:
            body["pages"] = -(-total // size)
        return web.json_response(body)

    async def issue(self, request: web.Request) -> web.Response:
        """Issue."""
        email = (await request.json())["recipient_email"]
        self.holders.append(email)
        return web.json_response({"id": email})


@pytest.mark.looptime
@pytest.mark.parametrize(
    ("holders", "pages", "total", "claim", "complete", "note"),
    [
        (150, True, True, None, True, None),
        (150, False, True, None, True, None),
        (150, True, False, None, True, None),
        (150, False, False, None, True, "read until a short page"),
        (200, False, False, None, True, None),
        (0, False, False, None, True, None),
        (150, False, True, 300, False, "says 300 assertions but page 3 was empty"),
        (150, True, True, 300, False, "says 300 assertions but page 3 was empty"),
    ],
    ids=[
        "documented",
        "no-pages",
        "no-total",
        "neither-short-page",
        "neither-empty-page",
        "empty-list",
        "total-overclaimed",
        "pages-and-total-overclaimed",
    ],
)
async def test_2_paging_by_whatever_the_answer_allows(
    holders: int,
    pages: bool,
    total: bool,
    claim: int | None,
    complete: bool,
    note: str | None,
) -> None:
    """Point 2: the holders list is paged by `pages`, `total` or a short/empty page, whichever
    the answer gives; when it cannot tell (a total it never reaches) it says so."""
    server = ListServer(holders, pages=pages, total=total, claim=claim)
    recorder = Recorder()
    learners = [
        {"First Name": "H", "Email": f"holder{i}@example.org"} for i in range(holders - 5, holders)
    ]
    async with TestServer(server.app(), host="127.0.0.1") as http:
        await bulk_issuer.issue_badges(
            [*learners, *cohort(2)],
            badge_id=51,
            auth=AUTH,
            base_url=str(http.make_url("")),
            rate=None,
            on_event=recorder,
        )
    (loaded,) = [e for e in recorder.events if isinstance(e, HoldersLoaded)]
    assert loaded.complete is complete
    assert loaded.holders == holders
    if note is None:
        assert loaded.note is None
    else:
        assert note in (loaded.note or "")
    # Whatever the paging, a holder who was read is not sent again.
    assert len(server.holders) == len(set(server.holders))


# -- 3. a deadline for every request ----------------------------------------------------------


@pytest.mark.looptime
@pytest.mark.parametrize("fault", ["trickle", "hang"])
async def test_3_a_trickling_or_hung_issue_reply_meets_its_deadline(fault: str) -> None:
    """Point 3: an issue reply that trickles (1 byte / 5 s) or never comes: the deadline
    fires, the lookup finds the badge, each learner issued exactly once."""
    config = SandboxConfig(
        trickle={"issue": 5.0} if fault == "trickle" else {},
        hang=frozenset({"issue"}) if fault == "hang" else frozenset(),
    )
    learners = cohort(3)
    recorder = Recorder()
    async with run_sandbox(config) as sandbox:
        loop_start = anyio.current_time()
        summary = await issue(sandbox, learners, recorder, policy=RetryPolicy(deadline=10))
        took = anyio.current_time() - loop_start
    assert summary.issued == 3
    assert all(o.flags == ("verified",) for o in recorder.outcomes)
    assert all(sandbox.issued_count(51, e) == 1 for e in emails(learners))
    assert sandbox.duplicates() == {}
    assert len(issue_calls(sandbox)) == 3
    assert took < 60


@pytest.mark.looptime
async def test_3_a_slow_but_steady_reply_is_read_whole() -> None:
    """Point 3: a lookup page arriving in many small pieces (within the deadline) is read
    whole, not cut at the first packet: its holders are found and skipped."""
    learners = cohort(6)
    async with run_sandbox(SandboxConfig(trickle={"lookup": 0.005})) as sandbox:
        sandbox.preload(51, emails(learners)[:4])
        summary = await issue(sandbox, learners, policy=RetryPolicy(deadline=60))
    assert (summary.issued, summary.already_held) == (2, 4)
    assert sandbox.duplicates() == {}


# -- 4. bounded retries on one request path; outages ridden out -------------------------------


@pytest.mark.looptime
async def test_4_token_endpoint_429_forever_is_bounded() -> None:
    """Point 4: a token endpoint answering 429 for ever: the run stops (exit 4), having
    asked once per window at most (each 429 pauses every worker for a window)."""
    config = SandboxConfig(scripted=[ScriptedAnswer("token", 429)])
    async with run_sandbox(config) as sandbox:
        start = anyio.current_time()
        with pytest.raises(UnavailableError, match="token endpoint") as caught:
            await issue(sandbox, cohort(5), auth=PasswordAuth(USER, PASSWORD))
        took = anyio.current_time() - start
    assert exit_status(caught.value) == 4
    logins = [r.arrived_at for r in sandbox.requests if r.kind == "token"]
    assert most_in_window(logins, 2.0) <= 2  # a window's pause, and a hair of latency
    assert len(logins) <= RetryPolicy().outage / 2.0 + 2
    assert issue_calls(sandbox) == []
    assert took <= RetryPolicy().outage + 30


@pytest.mark.looptime
async def test_4_token_endpoint_down_30s_is_ridden_out() -> None:
    """Point 4: the token endpoint answering 503 for 30 s: ridden out, everyone issued."""
    config = SandboxConfig(scripted=[ScriptedAnswer("token", 503, for_seconds=30)])
    learners = cohort(5)
    async with run_sandbox(config) as sandbox:
        summary = await issue(sandbox, learners, auth=PasswordAuth(USER, PASSWORD))
    assert summary.issued == 5
    assert summary.ok
    assert sandbox.duplicates() == {}
    assert any(r.kind == "token" and r.status == 503 for r in sandbox.requests)


@pytest.mark.looptime
async def test_4_refused_login_is_exit_3() -> None:
    """Point 4: a refused login stays a refused login (exit 3), after few token calls."""
    async with run_sandbox(SandboxConfig()) as sandbox:
        with pytest.raises(CredentialsRejected) as caught:
            await issue(sandbox, cohort(5), auth=PasswordAuth(USER, "wrong"))
    assert exit_status(caught.value) == 3
    assert sandbox.token_calls <= 3
    assert issue_calls(sandbox) == []


@pytest.mark.looptime
@pytest.mark.parametrize("seconds", [30, 90])
@pytest.mark.parametrize("kind", ["lookup", "issue", "any"])
@pytest.mark.parametrize("status", [503, 502])
async def test_4_an_endpoint_down_30s_is_ridden_out(kind: str, status: int, seconds: int) -> None:
    """Point 4: the lookups, the issue calls or everything down for 30 s (or 90 s, within the
    default 120 s outage limit): ridden out, each learner issued exactly once; 502s during
    the outage do not use up a learner's attempts."""
    config = SandboxConfig(scripted=[ScriptedAnswer(kind, status, for_seconds=seconds)])  # type: ignore[arg-type]
    learners = cohort(8)
    async with run_sandbox(config) as sandbox:
        summary = await issue(sandbox, learners, auth=PasswordAuth(USER, PASSWORD))
    assert summary.issued == 8
    assert summary.ok
    assert sandbox.duplicates() == {}
    assert all(sandbox.issued_count(51, e) == 1 for e in emails(learners))


@pytest.mark.looptime
@pytest.mark.parametrize("kind", ["lookup", "issue"])
async def test_4_an_endpoint_that_stays_down_ends_the_run_with_exit_4(kind: str) -> None:
    """Point 4: an endpoint that stays down ends the run with its own message and exit 4,
    with every row accounted for and nothing marked failed."""
    config = SandboxConfig(scripted=[ScriptedAnswer(kind, 503)])  # type: ignore[arg-type]
    async with run_sandbox(config) as sandbox:
        start = anyio.current_time()
        with pytest.raises(UnavailableError) as caught:
            await issue(sandbox, cohort(8))
        took = anyio.current_time() - start
    assert exit_status(caught.value) == 4
    assert "unavailable" in str(caught.value)
    assert took <= RetryPolicy().outage + 40
    summary = caught.value.summary
    assert summary is not None
    assert summary.total == 8
    assert summary.failed == 0
    assert sandbox.duplicates() == {}


@pytest.mark.looptime
@pytest.mark.parametrize("status", [429, 503])
async def test_4_issue_endpoint_refusing_for_ever_stops_with_nobody_failed(status: int) -> None:
    """Point 4: every issue call answered 429 (or 503), no Retry-After: the run stops after
    the outage limit (exit 4) with nobody marked failed: such answers prove nothing was
    issued, so the learners are not attempted, to be sent by the rerun."""
    config = SandboxConfig(scripted=[ScriptedAnswer("issue", status)])
    async with run_sandbox(config) as sandbox:
        start = anyio.current_time()
        with pytest.raises(UnavailableError, match="issue endpoint") as caught:
            await issue(sandbox, cohort(10))
        took = anyio.current_time() - start
    assert took <= RetryPolicy().outage + 40
    summary = caught.value.summary
    assert summary is not None
    assert (summary.failed, summary.not_attempted) == (0, 10)
    assert sandbox.issued_by_api == 0


@pytest.mark.looptime
async def test_4_a_401_mid_run_refreshes_the_token_once_and_goes_on() -> None:
    """Point 4: a 401 to an issue call with a login: one new token, the same call resent
    (a 401 proves it was not processed), everyone issued once."""
    config = SandboxConfig(scripted=[ScriptedAnswer("issue", 401, skip=2, times=1)])
    learners = cohort(5)
    async with run_sandbox(config) as sandbox:
        summary = await issue(sandbox, learners, auth=PasswordAuth(USER, PASSWORD))
    assert summary.issued == 5
    assert sandbox.token_calls == 2
    assert sandbox.duplicates() == {}
    assert all(sandbox.issued_count(51, e) == 1 for e in emails(learners))


# -- 5. an API that cannot be reached ---------------------------------------------------------


@pytest.mark.looptime
@pytest.mark.parametrize(("failures", "said"), [(1, 0), (2, 0), (6, 2)])
async def test_5_trouble_is_said_when_it_is_an_outage_not_for_each_fault(
    failures: int, said: int
) -> None:
    """One or two issue calls answered 503 between good answers are those learners' own,
    retried: nothing is said (each printed "waiting it out", then "answers again"). Six in
    a row is an outage: said once when it starts and once when it ends."""
    unavailable = ScriptedAnswer("issue", 503, times=failures)
    recorder = Recorder()
    async with run_sandbox(SandboxConfig(scripted=[unavailable], rate=None)) as sandbox:
        summary = await issue(sandbox, cohort(6), recorder)
    assert summary.issued == 6
    troubles = [e for e in recorder.events if isinstance(e, ApiTrouble)]
    assert len(troubles) == said
    assert [t.recovered for t in troubles] == [False, True][:said]


@pytest.mark.looptime
async def test_5_nothing_listening_stops_within_30s_naming_host_and_error(tmp_path: Path) -> None:
    """Point 5: nothing listens at the address: the run stops within about 30 s of loop time,
    names the host and "refused", marks nobody failed, and a rerun resumes."""
    journal = tmp_path / "run.db"
    learners = cohort(20)
    recorder = Recorder()
    start = anyio.current_time()
    with pytest.raises(UnavailableError) as caught:
        await bulk_issuer.issue_badges(
            learners,
            badge_id=51,
            auth=PersonalAccessToken(PAT),
            base_url="http://127.0.0.1:1",
            journal=journal,
            on_event=recorder,
        )
    took = anyio.current_time() - start
    # One warning for the trouble, not one per attempt.
    assert sum(isinstance(e, ApiTrouble) for e in recorder.events) == 1
    assert took <= 30
    message = str(caught.value)
    assert "127.0.0.1" in message
    assert "refused" in message
    assert exit_status(caught.value) == 4
    summary = caught.value.summary
    assert summary is not None
    assert summary.failed == 0
    assert summary.total == 20
    assert State.FAILED not in journal_states(journal).values()
    async with run_sandbox(SandboxConfig()) as sandbox:
        again = await issue(sandbox, learners, journal=journal)
    assert again.issued == 20
    assert sandbox.duplicates() == {}


@pytest.mark.looptime
async def test_5_an_unresolvable_host_stops_naming_the_dns_error() -> None:
    """Point 5: a name that cannot resolve (.invalid, answered by the resolver at once)."""
    start = anyio.current_time()
    with pytest.raises(UnavailableError) as caught:
        await bulk_issuer.issue_badges(
            cohort(3),
            badge_id=51,
            auth=PersonalAccessToken(PAT),
            base_url="https://navigatr-sandbox.invalid",
        )
    assert anyio.current_time() - start <= 30
    message = str(caught.value)
    assert "navigatr-sandbox.invalid" in message
    assert "DNS" in message or "resolve" in message
    assert exit_status(caught.value) == 4


@pytest.mark.usefixtures("pat_env")
def test_5_cli_unreachable_exits_4_and_says_what_to_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Point 5 through the CLI (real time, kept short by a policy of 1 s): exit 4 naming the
    host and the error, the summary printed, nothing marked failed."""
    short = functools.partial(RetryPolicy, unreachable=1.0, base=0.05, cap=0.2)
    monkeypatch.setattr("bulk_issuer.cli.RetryPolicy", short)
    path = write_cohort(tmp_path / "cohort.csv", good_rows(3))
    journal = tmp_path / "run.db"
    args = issue_args(path, "http://127.0.0.1:1", "--journal", str(journal))
    status = cli(args)
    _, err = capsys.readouterr()
    assert status == 4
    assert "127.0.0.1" in err
    assert "refused" in err
    if journal.exists():
        assert State.FAILED not in journal_states(journal).values()


@pytest.mark.looptime
@pytest.mark.parametrize("kind", ["lookup", "token"])
async def test_5_a_host_that_answers_nothing_is_not_called_unreachable(kind: str) -> None:
    """Points 3 and 5: a server that accepts requests and never answers them has been reached:
    the run stops as an outage of that endpoint (exit 4), not "check the address"."""
    config = SandboxConfig(hang=frozenset({kind}))
    policy = RetryPolicy(deadline=10, outage=60)
    # The hanging endpoint is the first one asked (a PAT needs no login).
    auth = AUTH if kind == "lookup" else PasswordAuth(USER, PASSWORD)
    async with run_sandbox(config) as sandbox:
        with pytest.raises(UnavailableError) as caught:
            await issue(sandbox, cohort(3), auth=auth, policy=policy)
    message = str(caught.value)
    assert "Check the address" not in message
    assert "unavailable" in message
    assert "within 10s" in message
    assert exit_status(caught.value) == 4
    assert sandbox.issued_by_api == 0


@pytest.mark.looptime
async def test_5_a_silent_server_is_given_up_on_after_30s_and_the_message_says_so() -> None:
    """Points 3 and 5: a request that hears nothing back is given up after 30 s of silence,
    before the 60 s deadline for the whole exchange: the message says which of the two."""
    async with run_sandbox(SandboxConfig(hang=frozenset({"lookup"}))) as sandbox:
        with pytest.raises(UnavailableError) as caught:
            await issue(sandbox, cohort(2), policy=RetryPolicy(deadline=60, outage=60))
    message = str(caught.value)
    assert "the server sent nothing for 30s" in message
    assert "no whole answer within" not in message  # the deadline did not end it


@pytest.mark.looptime
async def test_5_the_api_going_away_mid_run_stops_with_nobody_failed(tmp_path: Path) -> None:
    """Point 5 after a good start: the server goes away at 4 s; the run stops after the
    outage limit (exit 4), its issued count is the server's, nobody failed or `sending`."""
    journal = tmp_path / "run.db"
    box: dict[str, Sandbox] = {}
    ready = anyio.Event()

    async def serve_for_a_while() -> None:
        async with run_sandbox(SandboxConfig(latency=(0.05, 0.1))) as sandbox:
            box["sandbox"] = sandbox
            ready.set()
            await anyio.sleep(4)

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve_for_a_while)
        await ready.wait()
        start = anyio.current_time()
        with pytest.raises(UnavailableError, match="refused") as caught:
            await issue(box["sandbox"], cohort(30), journal=journal)
        took = anyio.current_time() - start
    assert took <= RetryPolicy().outage + 30
    assert exit_status(caught.value) == 4
    summary = caught.value.summary
    assert summary is not None
    assert summary.total == 30
    assert summary.failed == 0
    assert 0 < summary.issued == box["sandbox"].issued_by_api
    assert set(journal_states(journal).values()) <= {State.ISSUED}


# -- 6. Retry-After: capped, shown, and a clean stop past the cap -----------------------------


@pytest.mark.looptime
@pytest.mark.parametrize("status", [429, 503])
async def test_6_an_hour_long_retry_after_stops_cleanly(status: int) -> None:
    """Point 6: Retry-After 3600 on a 429 or a 503: no hour-long wait; the run stops (exit 4)
    saying when to rerun, every row accounted for, nothing failed."""
    hour = ScriptedAnswer("issue", status, headers={"Retry-After": "3600"}, skip=2)
    async with run_sandbox(SandboxConfig(scripted=[hour])) as sandbox:
        start = anyio.current_time()
        with pytest.raises(UnavailableError) as caught:
            await issue(sandbox, cohort(10))
        took = anyio.current_time() - start
    assert took < 30
    assert exit_status(caught.value) == 4
    assert caught.value.retry_after == 3600
    assert "1.0 h" in str(caught.value)
    assert "rerun the same command after" in str(caught.value)
    summary = caught.value.summary
    assert summary is not None
    assert summary.total == 10
    assert summary.issued == 2
    assert summary.failed == 0
    assert sandbox.duplicates() == {}


@pytest.mark.looptime
@pytest.mark.parametrize("kind", ["lookup", "token", "any"])
@pytest.mark.parametrize("status", [429, 503])
async def test_6_an_hour_long_retry_after_elsewhere_stops_cleanly(kind: str, status: int) -> None:
    """Point 6 on the login or the holders list (before any issue call): the same clean stop,
    exit 4, every row accounted for as not attempted."""
    hour = ScriptedAnswer(kind, status, headers={"Retry-After": "3600"})  # type: ignore[arg-type]
    async with run_sandbox(SandboxConfig(scripted=[hour])) as sandbox:
        start = anyio.current_time()
        with pytest.raises(UnavailableError, match="rerun the same command after") as caught:
            await issue(sandbox, cohort(5), auth=PasswordAuth(USER, PASSWORD))
        took = anyio.current_time() - start
    assert took < 30
    assert exit_status(caught.value) == 4
    summary = caught.value.summary
    assert summary is not None
    assert (summary.not_attempted, summary.total) == (5, 5)
    assert sandbox.issued_by_api == 0


@pytest.mark.looptime
@pytest.mark.parametrize("status", [429, 503])
async def test_6_a_30s_retry_after_is_shown_and_honoured(status: int) -> None:
    """Point 6: Retry-After 30: a Waiting event says so, and no issue call comes sooner."""
    wait = ScriptedAnswer("issue", status, headers={"Retry-After": "30"}, skip=1, times=1)
    recorder = Recorder()
    async with run_sandbox(SandboxConfig(scripted=[wait])) as sandbox:
        summary = await issue(sandbox, cohort(4), recorder)
    assert summary.issued == 4
    waits = [e for e in recorder.events if isinstance(e, Waiting)]
    assert waits
    assert waits[0].seconds == pytest.approx(30, abs=1)
    refused = next(r for r in sandbox.requests if r.status == status)
    later = [r.arrived_at for r in sandbox.requests if r.arrived_at > refused.arrived_at]
    assert later
    assert min(later) >= refused.arrived_at + 30 - 0.5
    assert sandbox.duplicates() == {}


@pytest.mark.usefixtures("pat_env")
def test_6_cli_hour_long_retry_after_exits_4_with_when_to_rerun(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Point 6 through the CLI: exit 4 at once, the message says how long and to rerun."""
    path = write_cohort(tmp_path / "cohort.csv", good_rows(3))
    hour = ScriptedAnswer("issue", 429, headers={"Retry-After": "3600"})
    with sandbox_thread(SandboxConfig(rate=None, scripted=[hour])) as sandbox:
        assert cli(issue_args(path, sandbox.url, "--rate", "none")) == 4
    _, err = capsys.readouterr()
    assert "1.0 h" in err
    assert "rerun" in err


@pytest.mark.looptime
@pytest.mark.parametrize(
    ("value", "said"), [("99999999999", "more than a year"), ("1209600", "14 days")]
)
async def test_6_an_absurd_retry_after_stops_with_a_readable_message(value: str, said: str) -> None:
    """Point 6: a Retry-After of 3000 years (or two weeks) stops the run at once, in words."""
    absurd = ScriptedAnswer("issue", 503, headers={"Retry-After": value})
    async with run_sandbox(SandboxConfig(scripted=[absurd])) as sandbox:
        with pytest.raises(UnavailableError) as caught:
            await issue(sandbox, cohort(2))
    message = str(caught.value)
    assert said in message
    assert len(message) < 300


@pytest.mark.looptime
@pytest.mark.parametrize("status", [429, 503])
async def test_6_a_retry_after_just_past_the_cap_is_not_rounded_to_it(status: int) -> None:
    """Point 6: a Retry-After of 120.5 s, past the 2 min the run waits: the message says
    120.5 s, not a rounded 120 s or 2 min that read as within the cap."""
    past = ScriptedAnswer("issue", status, headers={"Retry-After": "120.5"})
    async with run_sandbox(SandboxConfig(scripted=[past])) as sandbox:
        with pytest.raises(UnavailableError) as caught:
            await issue(sandbox, cohort(2))
    message = str(caught.value)
    assert f"asked to wait 120.5s (HTTP {status}), longer than the 2 min this run waits" in message
    assert caught.value.retry_after == 120.5


def test_6_a_long_wait_is_shown_at_the_default_verbosity(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Point 6: the command line shows a Waiting event without -v (and not with -q)."""
    Console(quiet=False, verbose=0, mask=str)(Waiting(30.0, "HTTP 429"))
    assert "waiting 30s: HTTP 429" in capsys.readouterr().err
    Console(quiet=True, verbose=0, mask=str)(Waiting(30.0, "HTTP 429"))
    assert capsys.readouterr().err == ""


# -- 7. a fatal stop keeps the answers already on the wire ------------------------------------


@pytest.mark.looptime
@pytest.mark.parametrize(
    ("answer", "error", "status"),
    [
        (ScriptedAnswer("issue", 403, skip=6), FatalError, 3),
        (ScriptedAnswer("issue", 403, skip=6, times=1), FatalError, 3),
        (ScriptedAnswer("issue", 401, skip=6, times=1), CredentialsRejected, 3),
        (
            ScriptedAnswer("issue", 429, headers={"Retry-After": "3600"}, skip=6, times=1),
            UnavailableError,
            4,
        ),
    ],
    ids=["403-for-good", "one-403", "one-401", "one-429-for-an-hour"],
)
async def test_7_a_fatal_stop_mid_run_records_the_answers_on_the_wire(
    tmp_path: Path, answer: ScriptedAnswer, error: type[StoppedError], status: int
) -> None:
    """Point 7: a fatal answer (or a clean stop) while other issue calls are on the wire:
    their answers are recorded, the summary's issued equals the server's count, nobody is
    left `sending` unexplained."""
    journal = tmp_path / "run.db"
    config = SandboxConfig(rate=None, latency=(0.2, 0.6), seed=7, scripted=[answer])
    recorder = Recorder()
    async with run_sandbox(config) as sandbox:
        with pytest.raises(error) as caught:
            await issue(sandbox, cohort(40), recorder, rate=None, workers=8, journal=journal)
    assert exit_status(caught.value) == status
    summary = caught.value.summary
    assert summary is not None
    assert summary.issued == sandbox.issued_by_api
    assert summary.issued >= 6
    assert summary.total == 40
    assert sandbox.duplicates() == {}
    states = journal_states(journal)
    sending = sorted(e for e, s in states.items() if s is State.SENDING)
    unconfirmed = sorted(o.email for o in recorder.of(Status.UNCONFIRMED))
    assert sending == unconfirmed
    assert all(o.reason for o in recorder.of(Status.UNCONFIRMED))
    issued = {o.email for o in recorder.of(Status.ISSUED)}
    assert issued == {e for e, s in states.items() if s is State.ISSUED}


@pytest.mark.usefixtures("pat_env")
def test_7_cli_403_mid_run_exits_3_with_the_issued_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Point 7 through the CLI: a 403 after two issue calls: exit 3, the two counted."""
    path = write_cohort(tmp_path / "cohort.csv", good_rows(6))
    config = SandboxConfig(rate=None, scripted=[ScriptedAnswer("issue", 403, skip=2)])
    with sandbox_thread(config) as sandbox:
        status = cli(issue_args(path, sandbox.url, "--rate", "none", "--workers", "1"))
    _out, err = capsys.readouterr()
    assert status == 3
    assert sandbox.issued_by_api == 2
    assert "not permitted" in err


@pytest.mark.looptime
async def test_7_past_the_grace_requests_on_the_wire_are_unconfirmed_and_the_rerun_settles_them(
    tmp_path: Path,
) -> None:
    """Point 7: answers slower than the stop's grace: those learners are unconfirmed (journal
    `sending`), not lost and not failed; the rerun asks the server and issues each once."""
    journal = tmp_path / "run.db"
    config = SandboxConfig(
        rate=None,
        latency=(1.0, 12.0),
        seed=3,
        scripted=[ScriptedAnswer("issue", 403, skip=1, times=1)],
    )
    learners = cohort(12)
    recorder = Recorder()
    async with run_sandbox(config) as sandbox:
        with pytest.raises(FatalError) as caught:
            await issue(sandbox, learners, recorder, rate=None, workers=8, journal=journal)
        summary = caught.value.summary
        assert summary is not None
        assert summary.total == 12
        assert summary.failed == 0
        assert summary.unconfirmed > 0
        sending = {e for e, s in journal_states(journal).items() if s is State.SENDING}
        assert sending == {o.email for o in recorder.of(Status.UNCONFIRMED)}
        config.scripted = []
        again = await issue(sandbox, learners, journal=journal, rate=None)
    assert again.issued + again.skipped == 12
    assert sandbox.duplicates() == {}
    assert all(sandbox.issued_count(51, e) == 1 for e in emails(learners))


# -- 8. after a stop, nothing that has not left leaves ----------------------------------------


@pytest.mark.looptime
async def test_8_stop_while_waiting_for_pace_slots_sends_nothing_more() -> None:
    """Point 8: stop() while learners wait for pace slots: no issue call arrives after it."""
    stopped_at: list[float] = []
    recorder = Recorder()
    async with (
        run_sandbox(SandboxConfig()) as sandbox,
        BadgeIssuer(
            auth=PersonalAccessToken(PAT), base_url=sandbox.url, on_event=recorder
        ) as issuer,
        anyio.create_task_group() as tg,
    ):

        async def stop_later() -> None:
            await anyio.sleep(3.05)
            stopped_at.append(anyio.current_time())
            issuer.stop()

        tg.start_soon(stop_later)
        summary = await issuer.run(cohort(60), badge_id=51)
    assert summary.interrupted
    assert summary.total == 60
    assert 0 < summary.issued < 20
    assert summary.issued == sandbox.issued_by_api
    late = [t for t in issue_calls(sandbox) if t > stopped_at[0]]
    assert late == []


@pytest.mark.looptime
async def test_8_stop_during_a_retry_wait_sends_nothing_more() -> None:
    """Point 8: stop() while learners sit out a 503 backoff: none of them is sent again."""
    stopped_at: list[float] = []
    config = SandboxConfig(scripted=[ScriptedAnswer("issue", 503, skip=2, for_seconds=40)])
    async with (
        run_sandbox(config) as sandbox,
        BadgeIssuer(auth=PersonalAccessToken(PAT), base_url=sandbox.url) as issuer,
        anyio.create_task_group() as tg,
    ):

        async def stop_later() -> None:
            await anyio.sleep(8)
            stopped_at.append(anyio.current_time())
            issuer.stop()

        tg.start_soon(stop_later)
        summary = await issuer.run(cohort(20), badge_id=51)
    assert summary.interrupted
    assert summary.total == 20
    assert [t for t in issue_calls(sandbox) if t > stopped_at[0]] == []


@pytest.mark.looptime
@pytest.mark.parametrize("rate", [None, "5/2s"])
async def test_8_stop_during_a_retry_after_is_not_attempted_at_once(
    rate: str | None, tmp_path: Path
) -> None:
    """Point 8: stop() while a learner waits out a 429's long Retry-After (no pace, or a
    pace): the stop does not wait for it, nothing more is sent, and that learner is not
    attempted in its outcome as in the journal, which keeps nothing of it."""
    limited = ScriptedAnswer("issue", 429, headers={"Retry-After": "100"})
    stopped_at: list[float] = []
    recorder = Recorder()
    journal = tmp_path / "run.db"
    async with (
        run_sandbox(SandboxConfig(rate=None, scripted=[limited])) as sandbox,
        BadgeIssuer(
            auth=AUTH, base_url=sandbox.url, rate=rate, on_event=recorder, journal=journal
        ) as issuer,
        anyio.create_task_group() as tg,
    ):

        async def stop_later() -> None:
            await anyio.sleep(2)
            stopped_at.append(anyio.current_time())
            issuer.stop()

        tg.start_soon(stop_later)
        summary = await issuer.run(cohort(3), badge_id=51)
        ended = anyio.current_time()
    assert issue_calls(sandbox)  # the 429 was drawn
    assert [t for t in issue_calls(sandbox) if t > stopped_at[0]] == []
    assert ended - stopped_at[0] < 0.5  # not the stop's 4 s grace, let alone the 100 s
    assert (summary.interrupted, summary.not_attempted, summary.unconfirmed) == (True, 3, 0)
    assert {o.reason for o in recorder.outcomes} == {"the run stopped before it was sent"}
    assert journal_states(journal) == {}


@pytest.mark.looptime
async def test_8_stop_between_the_slot_and_the_send_sends_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Point 8: a stop that lands after a learner took its slot and marked itself `sending`,
    while the journal commits: that request does not leave, and the learner is not left
    `sending`."""
    issuers: list[BadgeIssuer] = []
    commit = Journal.committed

    async def committed_then_stopped(self: Journal) -> None:
        await commit(self)
        if issuers:
            issuers[0].stop()

    monkeypatch.setattr(Journal, "committed", committed_then_stopped)
    recorder = Recorder()
    async with (
        run_sandbox(SandboxConfig()) as sandbox,
        BadgeIssuer(
            auth=AUTH, base_url=sandbox.url, on_event=recorder, journal=tmp_path / "run.db"
        ) as issuer,
    ):
        issuers.append(issuer)
        summary = await issuer.run(cohort(5), badge_id=51)
    states = journal_states(tmp_path / "run.db")
    assert summary.interrupted
    assert summary.total == 5
    assert issue_calls(sandbox) == []
    assert summary.not_attempted == 5
    assert State.SENDING not in states.values()


@pytest.mark.usefixtures("pat_env")
def test_8_cli_ctrl_c_while_pacing_sends_nothing_more(tmp_path: Path) -> None:
    """Point 8 with a real Ctrl-C to a real process (the only way to test the signal path;
    about 3 s of real time): after SIGINT no issue call that had not left arrives, exit 130."""
    path = write_cohort(tmp_path / "cohort.csv", good_rows(60))
    with sandbox_thread(SandboxConfig()) as sandbox:
        process = subprocess.Popen(
            child_argv(path, sandbox.url, "-q"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=os.environ.copy(),
        )
        deadline = time.monotonic() + 15
        while len(issue_calls(sandbox)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        # The sandbox's loop clock is time.monotonic(): arrivals compare with it directly.
        signalled = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=15)
        arrivals = issue_calls(sandbox)
    assert process.returncode == 130, err
    # One request may have been on the wire when the signal came (one leaves every 0.4 s).
    late = [t for t in arrivals if t > signalled]
    assert len(late) <= 1, late
    assert sandbox.duplicates() == {}


@pytest.mark.looptime
async def test_8_stop_with_single_learner_calls_waiting_sends_nothing_more() -> None:
    """Point 8 for BadgeIssuer.issue: many callers waiting for pace slots when stop() comes:
    nothing more leaves; each waiting caller gets `not_attempted`."""
    outcomes: list[Outcome] = []
    stopped_at: list[float] = []
    async with (
        run_sandbox(SandboxConfig()) as sandbox,
        BadgeIssuer(auth=AUTH, base_url=sandbox.url) as issuer,
    ):

        async def one(i: int) -> None:
            learner = bulk_issuer.Learner(first_name="Ana", email=f"ana{i}@example.org")
            outcomes.append(await issuer.issue(learner, badge_id=51))

        async def stop_later() -> None:
            await anyio.sleep(2.1)
            stopped_at.append(anyio.current_time())
            issuer.stop()

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(one, i)
            tg.start_soon(stop_later)
    assert len(outcomes) == 20
    statuses = {o.status for o in outcomes}
    assert statuses <= {Status.ISSUED, Status.NOT_ATTEMPTED}
    issued = sum(o.status is Status.ISSUED for o in outcomes)
    assert 0 < issued < 20
    assert issued == sandbox.issued_by_api
    assert [t for t in issue_calls(sandbox) if t > stopped_at[0]] == []


# -- 9. an error inside the task groups shows its cause --------------------------------------


def disk_full(*_: object, **__: object) -> None:
    """What SQLite says when the disk is full."""
    raise sqlite3.OperationalError("database or disk is full")


@pytest.mark.looptime
async def test_9_disk_full_surfaces_as_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point 9: the journal's disk full mid-run raises sqlite3's error, not an ExceptionGroup,
    and nothing is sent without its journal row."""
    monkeypatch.setattr(Journal, "mark_sending", disk_full)
    async with run_sandbox(SandboxConfig()) as sandbox:
        with pytest.raises(sqlite3.OperationalError, match="disk is full"):
            await issue(sandbox, cohort(5))
    assert issue_calls(sandbox) == []


@pytest.mark.looptime
async def test_9_a_broken_row_mid_file_surfaces_as_itself(tmp_path: Path) -> None:
    """Point 9: an unclosed quote mid-file, read by the library: an InputError naming the
    row, not an ExceptionGroup."""
    lines = ["First Name,Last Name,Email"] + [f"A{i},B,a{i}@example.org" for i in range(600)]
    lines[300] = 'X,"unclosed,x@example.org'
    path = tmp_path / "cohort.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    async with run_sandbox(SandboxConfig(rate=None)) as sandbox:
        with pytest.raises(InputError, match="row 301") as caught:
            await issue_file(sandbox, path)
    assert not isinstance(caught.value, BaseExceptionGroup)
    assert sandbox.duplicates() == {}


@pytest.mark.looptime
async def test_9_a_record_that_is_no_learner_is_invalid_not_an_error() -> None:
    """Point 9: 42 or None in an iterable of learners is reported invalid; the rest issued."""
    learners: list[Any] = [*cohort(2), 42, None, *cohort(2, 2)]
    async with run_sandbox(SandboxConfig(rate=None)) as sandbox:
        summary = await bulk_issuer.issue_badges(
            learners, badge_id=51, auth=PersonalAccessToken(PAT), base_url=sandbox.url, rate=None
        )
    assert (summary.issued, summary.invalid) == (4, 2)


@pytest.mark.usefixtures("pat_env")
def test_9_cli_disk_full_exits_70_with_the_cause_and_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Point 9 through the CLI: exit 70, the cause in the message naming the journal (a
    full disk is not said to be a bug), a summary all the same."""
    path = write_cohort(tmp_path / "cohort.csv", good_rows(3))
    monkeypatch.setattr(Journal, "mark_sending", disk_full)
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        status = cli(issue_args(path, sandbox.url, "--rate", "none"))
    out, err = capsys.readouterr()
    assert status == 70
    journal = tmp_path / "cohort.csv.badge-51.journal.db"
    assert f"the journal {journal} could not be written: database or disk is full" in err
    assert "bug" not in err
    assert "ExceptionGroup" not in out + err
    assert "not attempted" in out + err or "not_attempted" in out + err


@pytest.mark.usefixtures("pat_env")
def test_9_a_journal_failing_mid_run_leaves_a_summary_that_agrees_with_the_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills after three learners: the run stops, and the summary shown is where
    every row of the file stands (10 rows: 3 holding, 7 not), as the failures file says,
    not the run's tally cut short ("rows 3")."""
    path = write_cohort(tmp_path / "cohort.csv", good_rows(10))
    real = Journal.mark_sending
    calls = {"n": 0}

    def fills_up(self: Journal, *args: Any, **kw: Any) -> None:
        calls["n"] += 1
        if calls["n"] > 3:
            disk_full()
        real(self, *args, **kw)

    monkeypatch.setattr(Journal, "mark_sending", fills_up)
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        status = cli(issue_args(path, sandbox.url, "--rate", "none", "--workers", "1"))
        held = sum(sandbox.issued_count(51, row[2]) for row in good_rows(10))
    out, _ = capsys.readouterr()
    assert status == 70
    assert held == 3
    counts = {
        line.split()[0]: int(line.split()[-1])
        for line in out.splitlines()
        if line.startswith("  ") and line.split() and line.split()[-1].isdigit()
    }
    assert counts["rows"] == 10
    assert counts["issued"] == 3
    failures = (tmp_path / "cohort.failures.csv").read_text(encoding="utf-8").splitlines()
    assert len(failures) - 1 == 7


# -- 10. only a 409 that says so is "already held" --------------------------------------------


@pytest.mark.looptime
async def test_10_archived_badge_409_fails_with_the_detail() -> None:
    """Point 10: 409 "Badge is archived": every learner failed with that detail, none held."""
    recorder = Recorder()
    async with run_sandbox(SandboxConfig(archived_badges=frozenset({51}))) as sandbox:
        summary = await issue(sandbox, cohort(3), recorder)
    assert (summary.failed, summary.already_held, summary.issued) == (3, 0, 0)
    assert {o.reason for o in recorder.of(Status.FAILED)} == {"Badge is archived"}
    assert {o.http_status for o in recorder.of(Status.FAILED)} == {409}


@pytest.mark.looptime
async def test_10_conflict_on_held_409_is_already_held() -> None:
    """Point 10: a 409 saying the recipient already has it is "already held", no duplicate."""
    learners = cohort(5)
    async with run_sandbox(SandboxConfig(conflict_on_held=True)) as sandbox:
        sandbox.preload(51, emails(learners)[:2])
        summary = await issue(sandbox, learners, allow_duplicates=True)
    assert (summary.issued, summary.already_held) == (3, 2)
    assert summary.ok
    assert sandbox.duplicates() == {}


@pytest.mark.looptime
@pytest.mark.parametrize(
    ("detail", "reason"),
    [
        ("This badge has already been archived", "This badge has already been archived"),
        ("duplicate provider_id in request", "duplicate provider_id in request"),
        (
            "Recipient already has this badge",
            "Recipient already has this badge (but the badge's assertions list shows it not held)",
        ),
    ],
)
async def test_10_a_409_the_list_shows_not_held_fails_its_learner(detail: str, reason: str) -> None:
    """Point 10: a 409 whose words look like "already held" ("already been archived",
    "duplicate"), or even say it, for learners the badge's list shows not holding it:
    each fails with the server's detail, none is counted as holding the badge."""
    body = json.dumps({"detail": detail})
    conflict = ScriptedAnswer("issue", 409, body=body, content_type="application/json")
    recorder = Recorder()
    async with run_sandbox(SandboxConfig(scripted=[conflict], rate=None)) as sandbox:
        summary = await issue(sandbox, cohort(3), recorder)
    assert (summary.failed, summary.already_held, summary.issued) == (3, 0, 0)
    assert {o.reason for o in recorder.of(Status.FAILED)} == {reason}


@pytest.mark.looptime
@pytest.mark.parametrize("commit", [True, False])
@pytest.mark.parametrize(
    ("named", "shown"),
    [
        ({"badge_id": 99}, "badge 99"),
        ({"recipient_email": "mallory@evil.example"}, "another recipient (mallory@evil.example)"),
    ],
)
async def test_a_2xx_naming_another_recipient_or_badge_is_not_this_learners_badge(
    named: dict[str, object], shown: str, commit: bool
) -> None:
    """Every issue call answered 200 with an assertion for another badge or address (a
    server mixing its answers up): never counted as issued. The list settles it: found
    holding it (the call did go through) is issued, verified; not found is unconfirmed,
    with what the answer named, and not sent again (a second send could issue the other
    learner, or the other badge, again)."""
    body = {"id": 7, "badge_id": 51, "recipient_email": "x@example.org", **named}
    if "recipient_email" not in named:
        del body["recipient_email"]
    other = ScriptedAnswer("issue", 200, body=body, commit=commit)
    recorder = Recorder()
    async with run_sandbox(SandboxConfig(scripted=[other], rate=None)) as sandbox:
        summary = await issue(sandbox, cohort(3), recorder)
        calls = len([r for r in sandbox.requests if r.kind == "issue"])
    assert calls == 3  # one each: none sent again
    if commit:
        assert (summary.issued, summary.unconfirmed) == (3, 0)
        assert all("verified" in o.flags for o in recorder.of(Status.ISSUED))
    else:
        assert (summary.issued, summary.unconfirmed) == (0, 3)
        reasons = {o.reason or "" for o in recorder.of(Status.UNCONFIRMED)}
        assert all(shown in reason and "not sent again" in reason for reason in reasons)


@pytest.mark.usefixtures("pat_env")
def test_10_cli_archived_badge_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Point 10 through the CLI: an archived badge is not "held": exit 1 with the detail."""
    path = write_cohort(tmp_path / "cohort.csv", good_rows(2))
    with sandbox_thread(SandboxConfig(rate=None, archived_badges=frozenset({51}))) as sandbox:
        assert cli(issue_args(path, sandbox.url, "--rate", "none")) == 1
    out, err = capsys.readouterr()
    assert "archived" in (out + err).lower()


# -- the dry run and the run agree ---------------------------------------------------------


@pytest.mark.looptime
async def test_dry_run_and_run_report_a_holder_the_same_way() -> None:
    """The one "already done?" rule: a dry run and the run both count holders as already held."""
    learners = cohort(6)
    async with run_sandbox(SandboxConfig()) as sandbox:
        sandbox.preload(51, emails(learners)[:2])
        async with BadgeIssuer(auth=AUTH, base_url=sandbox.url) as issuer:
            planned = await issuer.dry_run(learners, badge_id=51)
            summary = await issuer.run(learners, badge_id=51)
    assert (planned.already_held, planned.not_attempted) == (2, 4)
    assert (summary.already_held, summary.issued) == (2, 4)
    assert sandbox.duplicates() == {}


# -- rate-limit headers no server means ------------------------------------------------------

#: Rate-limit headers of absurd size: more digits than Python reads as an integer, more
#: than a float holds, a policy longer than any real one.
ABSURD = {
    "X-RateLimit-Limit": "9" * 5000,
    "X-RateLimit-Remaining": "9" * 5000,
    "X-RateLimit-Reset": "9" * 400,
    "RateLimit": "limit=" + "9" * 400 + ", remaining=" + "9" * 400 + ", reset=1",
    "RateLimit-Policy": "5;w=" + "9" * 400 + ", " + "9" * 400 + ";w=2",
}


@pytest.mark.looptime
async def test_absurd_rate_limit_headers_are_ignored_and_every_learner_is_issued() -> None:
    """Every issue answer, and a 429 whose detail is as absurd, carry such headers: the
    run reads nothing from them, and issues each learner exactly once."""
    learners = cohort(8)
    script = [
        ScriptedAnswer(
            "issue",
            429,
            body={"detail": "Rate limit exceeded: " + "9" * 5000 + " per 2 second"},
            headers={**ABSURD, "Retry-After": "1"},
            times=1,
        ),
        ScriptedAnswer("issue", 200, headers=ABSURD, commit=True),
    ]
    async with run_sandbox(SandboxConfig(scripted=script)) as sandbox:
        summary = await issue(sandbox, learners)
    assert (summary.issued, summary.rate_limited) == (8, 1)
    assert summary.ok
    assert all(sandbox.issued_count(51, email) == 1 for email in emails(learners))


# -- a 2xx that is not the assertion -------------------------------------------------------

#: What a proxy or a login portal in front of the API might answer with a 200.
PORTAL = "<html><head><title>Sign in to continue</title></head><body>...</body></html>"


@pytest.mark.looptime
@pytest.mark.parametrize(
    ("body", "content_type", "went_through"),
    [
        (PORTAL, "text/html", False),
        (PORTAL, "text/html", True),
        ("[" * 100_000, "application/json", False),  # JSON nested past Python's stack
        # JSON, but not the assertion: a gateway's error with a 200, nothing, a list.
        ('{"detail": "Service temporarily unavailable"}', "application/json", False),
        ('{"detail": "Service temporarily unavailable"}', "application/json", True),
        ("{}", "application/json", True),
        ("[]", "application/json", False),
        ('[{"id": 1}]', "application/json", True),
        ('{"id": null, "status": true}', "application/json", False),
        # A gateway that queued the request and echoes it, or a placeholder id.
        ('{"detail": "queued", "recipient_email": "x@example.org"}', "application/json", False),
        ('{"id": 0, "detail": "queued"}', "application/json", True),
        # 202: accepted, not done, whatever the body.
        ('{"id": 7, "detail": "accepted"}', "application/json", False),
    ],
)
async def test_a_2xx_page_is_not_taken_for_an_issued_badge(
    body: str, content_type: str, went_through: bool
) -> None:
    """Two issue calls answered 2xx with a page that is not the assertion: whether or not
    the call went through, the server is asked, and every learner ends up holding the
    badge once."""
    learners = cohort(5)
    status = 202 if "accepted" in body else 200
    page = ScriptedAnswer(
        "issue", status, body=body, content_type=content_type, times=2, commit=went_through
    )
    async with run_sandbox(SandboxConfig(scripted=[page])) as sandbox:
        summary = await issue(sandbox, learners)
    assert summary.issued == 5
    assert summary.ok
    assert all(sandbox.issued_count(51, email) == 1 for email in emails(learners))
    lookups = [r for r in sandbox.requests if r.kind == "lookup"]
    assert len(lookups) >= 3  # the holders list, then one question per page answered


@pytest.mark.looptime
async def test_a_page_for_every_issue_call_is_an_outage_that_stops_the_run() -> None:
    """A proxy's page for every issue call: the run stops once the outage limit is past
    (exit 4 on the command line), naming the page; no learner is failed for it, and those
    sent are unconfirmed (the next run asks the server first)."""
    page = ScriptedAnswer("issue", 200, body=PORTAL, content_type="text/html")
    async with run_sandbox(SandboxConfig(scripted=[page])) as sandbox:
        started = anyio.current_time()
        with pytest.raises(UnavailableError) as caught:
            await issue(sandbox, cohort(30))
        took = anyio.current_time() - started
    assert "without the assertion: Sign in to continue" in str(caught.value)
    assert took < RetryPolicy().outage + 10  # not six rounds of page and lookup a learner
    summary = caught.value.summary
    assert summary is not None
    assert (summary.failed, summary.issued) == (0, 0)
    assert summary.unconfirmed >= 1
    assert summary.unconfirmed + summary.not_attempted == 30
    assert sandbox.assertions == []


@pytest.mark.looptime
@pytest.mark.parametrize("token", ["tok-SECRET\r\nX-Injected: 1", "tok-\x00SECRET"])
async def test_a_login_token_no_header_can_carry_stops_the_run_without_showing_it(
    token: str,
) -> None:
    """A token endpoint that answers a token with a line break or a NUL in it: exit 4
    (unavailable), saying why, before any issue call, and never showing the token."""
    login = ScriptedAnswer("token", 200, body={"access_token": token, "token_type": "bearer"})
    async with run_sandbox(SandboxConfig(scripted=[login])) as sandbox:
        with pytest.raises(UnavailableError, match="no header can carry") as caught:
            await issue(sandbox, cohort(2), auth=PasswordAuth(USER, PASSWORD))
    assert "SECRET" not in str(caught.value)
    assert [r.kind for r in sandbox.requests] == ["token"]
