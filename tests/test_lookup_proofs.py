"""What a lookup answer must show before "not held" is concluded, proved against servers
that answer in ways that prove nothing.

A learner whose send went unanswered is looked up; only a list read to an end the server
itself states, with counts that agree with each other and with what was read, proves that
the learner does not hold the badge. Every test asserts the property itself: no learner
holds the badge twice on the server's record, and a lookup that proves nothing leaves its
learner unconfirmed (or the list is read in a way that does prove it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import bulk_issuer
from bulk_issuer import PasswordAuth, PersonalAccessToken, Status
from bulk_issuer.client import Answer
from bulk_issuer.events import Event, HoldersLoaded
from bulk_issuer.lookups import _read_page
from bulk_issuer.outcomes import Outcome, Summary
from bulk_issuer.sandbox import SandboxConfig, ScriptedAnswer, run_sandbox

AUTH = PersonalAccessToken("sandbox-demo-pat")

#: The first issue call is processed, then answered 500: its learner must be looked up.
DROPPED_REPLY = ScriptedAnswer("issue", 500, commit=True, times=1)


def cohort(n: int, start: int = 0) -> list[dict[str, str]]:
    """n valid learners as dict rows."""
    return [
        {"First Name": f"Learner{i}", "Email": f"learner{i}@example.org"}
        for i in range(start, start + n)
    ]


class Recorder:
    """Every event and outcome of a run."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, status: Status) -> list[Outcome]:
        """The outcomes with `status`."""
        return [e for e in self.events if isinstance(e, Outcome) and e.status is status]

    def verified(self) -> list[Outcome]:
        """The outcomes a lookup confirmed after an unanswered send."""
        return [e for e in self.events if isinstance(e, Outcome) and "verified" in e.flags]

    def holders(self) -> HoldersLoaded:
        """The one holders list loaded."""
        (loaded,) = [e for e in self.events if isinstance(e, HoldersLoaded)]
        return loaded


# -- the sandbox's shapes, end to end -------------------------------------------------------


@pytest.mark.looptime
async def test_a_filtered_answer_that_counts_the_learner_but_lists_nothing_is_cannot_tell() -> None:
    """`{"items": [], "total": 1, ...}` to the lookup by address proves nothing: the learner
    whose reply was lost is unconfirmed, not sent again."""
    config = SandboxConfig(lookup_shape="lagging_filter", scripted=[DROPPED_REPLY], rate=None)
    recorder = Recorder()
    async with run_sandbox(config) as sandbox:
        summary = await bulk_issuer.issue_badges(
            cohort(5), badge_id=51, auth=AUTH, base_url=sandbox.url, on_event=recorder
        )
    assert sandbox.duplicates() == {}
    assert (summary.issued, summary.unconfirmed) == (4, 1)
    (unconfirmed,) = recorder.of(Status.UNCONFIRMED)
    assert sandbox.issued_count(51, unconfirmed.email) == 1
    assert "says 1 assertions" in (unconfirmed.reason or "")


@pytest.mark.looptime
@pytest.mark.parametrize("cap", [50, None])
async def test_an_unfiltered_list_without_counts_is_paged_at_the_size_it_serves(
    cap: int | None,
) -> None:
    """The filter ignored, pages of 50 when 100 were asked (or of 100), no size, pages or
    total: a page of 50 is not taken for the end of the list. The holders are all found,
    and the learner whose reply was lost is found holding it, not sent again."""
    config = SandboxConfig(
        lookup_shape="unfiltered_no_counts",
        lookup_max_size=cap,
        scripted=[DROPPED_REPLY],
        rate=None,
    )
    learners = cohort(70)
    recorder = Recorder()
    async with run_sandbox(config) as sandbox:
        sandbox.preload(51, [f"other{i}@example.net" for i in range(60)])
        sandbox.preload(51, [row["Email"] for row in learners[:55]])
        summary = await bulk_issuer.issue_badges(
            learners, badge_id=51, auth=AUTH, base_url=sandbox.url, on_event=recorder
        )
    assert sandbox.duplicates() == {}
    assert (summary.issued, summary.already_held, summary.unconfirmed) == (15, 55, 0)
    assert len(recorder.verified()) == 1
    loaded = recorder.holders()
    assert (loaded.holders, loaded.complete) == (115, True)


# -- a stand-in server for the rest of the family -------------------------------------------


class StandIn:
    """A stand-in API whose assertions list answers as `mode` says. Its first issue call is
    answered 500, so that its learner is looked up.

    Args:
        mode: how the list answers (see `lookup`).
        others: how many other learners hold the badge before the run.
        holders: learners of the cohort who hold it before the run (after the others).
        revoked: learners of the cohort whose earlier assertion was revoked.
        commit_first: the first issue call is processed before its 500 (else not).
    """

    def __init__(
        self,
        mode: str,
        *,
        others: int = 0,
        holders: Sequence[str] = (),
        revoked: Sequence[str] = (),
        commit_first: bool = True,
    ) -> None:
        self.mode = mode
        self.commit_first = commit_first
        self.assertions: list[dict[str, Any]] = []
        for email in [f"other{i}@example.net" for i in range(others)] + list(holders):
            self._add(email, "Claimed")
        for email in revoked:
            self._add(email, "Revoked")
        self.issue_calls = 0

    def _add(self, email: str, status: str) -> None:
        self.assertions.append(
            {"id": len(self.assertions) + 1, "recipient_email": email, "status": status}
        )

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application()
        app.router.add_get("/v1/badge_assertion/", self.lookup)
        app.router.add_put("/v1/badge/51/issue", self.issue)
        return app

    async def lookup(self, request: web.Request) -> web.Response:
        """The page asked for, as `mode` answers it."""
        query = request.query
        number, size = int(query["page"]), int(query["size"])
        email = query.get("recipient_email")
        everyone = self.assertions
        mine = [a for a in everyone if email is None or a["recipient_email"] == email.lower()]
        if self.mode == "capped_by_asked_offsets":
            # Filter ignored; pages start where the asked size says, but hold 50 at most.
            start = (number - 1) * size
            return web.json_response({"items": everyone[start : start + 50], "page": number})
        if self.mode == "size_overstated":
            # Filter ignored; pages of 50, while the answer says the 100 asked for.
            chunk = everyone[(number - 1) * 50 : number * 50]
            return web.json_response({"items": chunk, "page": number, "size": size})
        chunk = mine[(number - 1) * size : number * size]
        body: dict[str, Any] = {
            "items": chunk,
            "page": number,
            "pages": -(-len(mine) // size),
            "size": size,
            "total": len(mine),
        }
        if email is not None and self.mode == "newest_missing":
            # The filtered index lags: it counts the newest assertion but does not list it.
            body["items"] = mine[:-1][(number - 1) * size : number * size]
        elif email is not None and self.mode == "empty_before_last_page":
            body = {"items": [], "page": number, "pages": 2, "size": size}
        elif self.mode == "more_than_its_size":
            # Filter ignored; every holder on one page that says it holds 10.
            body = {"items": everyone, "page": 1, "pages": 1, "size": 10}
        elif self.mode == "pages_disagree_with_total":
            # Filter ignored; pages counted down (total // size): the last page is not counted.
            body = {
                "items": everyone[(number - 1) * size : number * size],
                "page": number,
                "pages": len(everyone) // size,
                "size": size,
                "total": len(everyone),
            }
        return web.json_response(body)

    async def issue(self, request: web.Request) -> web.Response:
        """Issue; the first call is answered 500, after its commit or without one."""
        self.issue_calls += 1
        email = (await request.json())["recipient_email"].lower()
        if self.issue_calls > 1 or self.commit_first:
            self._add(email, "Pending")
        if self.issue_calls == 1:
            return web.Response(status=500, text="Internal Server Error")
        return web.json_response(self.assertions[-1])

    def duplicates(self) -> list[str]:
        """Addresses that hold the badge more than once."""
        held = [a["recipient_email"] for a in self.assertions if a["status"] != "Revoked"]
        return sorted({e for e in held if held.count(e) > 1})


async def run_against(
    server: StandIn, learners: Sequence[dict[str, str]]
) -> tuple[Summary, Recorder]:
    """Issue to `learners` through `server`, one worker, unpaced."""
    recorder = Recorder()
    async with TestServer(server.app(), host="127.0.0.1") as http:
        summary = await bulk_issuer.issue_badges(
            list(learners),
            badge_id=51,
            auth=AUTH,
            base_url=str(http.make_url("")),
            rate=None,
            workers=1,
            on_event=recorder,
        )
    return summary, recorder


@pytest.mark.looptime
async def test_a_cap_the_server_does_not_state_misses_no_holder_and_no_learner() -> None:
    """Pages of 50 when 100 were asked, starting where 100 a page would: the list is paged
    at the 50 it serves, so holders 50 to 54 are found (not sent again), and so is the
    learner whose reply was lost."""
    learners = cohort(12)
    server = StandIn(
        "capped_by_asked_offsets",
        others=45,
        holders=[row["Email"] for row in learners[:10]],
    )
    summary, recorder = await run_against(server, learners)
    assert server.duplicates() == []
    assert (summary.issued, summary.already_held, summary.unconfirmed) == (2, 10, 0)
    assert len(recorder.verified()) == 1
    loaded = recorder.holders()
    assert (loaded.holders, loaded.complete) == (55, True)


#: Whole lists whose counts disagree with what they hold: a size the server does not keep,
#: more items on a page than its size, pages that do not cover the total.
DISAGREEING = [
    ("size_overstated", 60, "after a short page"),
    ("more_than_its_size", 20, "more than its size"),
    ("pages_disagree_with_total", 120, "in 1 pages of 100"),
]


@pytest.mark.parametrize(("mode", "others", "note"), DISAGREEING)
@pytest.mark.looptime
async def test_a_whole_list_whose_counts_disagree_is_not_complete(
    mode: str, others: int, note: str
) -> None:
    """The filter ignored, and the list's counts disagree: the holders list is not called
    complete, though every holder it shows counts, and the learner whose reply was lost is
    found holding it (an item that shows it proves it), not sent again."""
    server = StandIn(mode, others=others)
    summary, recorder = await run_against(server, cohort(3))
    assert server.duplicates() == []
    assert (summary.issued, summary.unconfirmed) == (3, 0)
    assert len(recorder.verified()) == 1
    loaded = recorder.holders()
    assert (loaded.holders, loaded.complete) == (others, False)
    assert note in (loaded.note or "")


@pytest.mark.parametrize(("mode", "others", "note"), DISAGREEING)
@pytest.mark.looptime
async def test_a_whole_list_whose_counts_disagree_proves_no_learner_without_it(
    mode: str, others: int, note: str
) -> None:
    """The same lists, the first send not processed before its 500: the learner is not
    in the list, but a list whose counts disagree does not prove that either. It is
    unconfirmed, not sent again."""
    server = StandIn(mode, others=others, commit_first=False)
    summary, recorder = await run_against(server, cohort(3))
    assert server.issue_calls == 3
    assert (summary.issued, summary.unconfirmed) == (2, 1)
    (unconfirmed,) = recorder.of(Status.UNCONFIRMED)
    assert note in (unconfirmed.reason or "")


@pytest.mark.parametrize(
    ("mode", "note"),
    [
        ("newest_missing", "says 2 assertions but page 2 was empty after 1"),
        ("empty_before_last_page", "says 2 pages but page 1 was empty"),
    ],
)
@pytest.mark.looptime
async def test_a_filtered_answer_whose_counts_disagree_proves_nothing(mode: str, note: str) -> None:
    """The lookup by address lists only a revoked assertion of the learner while counting
    two, or lists nothing on a page its own `pages` says is not the last: the learner
    whose reply was lost is unconfirmed, not sent again."""
    learners = cohort(3)
    server = StandIn(mode, revoked=[learners[0]["Email"]])
    summary, recorder = await run_against(server, learners)
    assert server.duplicates() == []
    assert (summary.issued, summary.unconfirmed) == (2, 1)
    (unconfirmed,) = recorder.of(Status.UNCONFIRMED)
    assert unconfirmed.email == learners[0]["Email"]
    assert note in (unconfirmed.reason or "")


@pytest.mark.parametrize("commit_first", [True, False])
@pytest.mark.looptime
async def test_a_documented_list_still_settles_the_lost_reply(commit_first: bool) -> None:
    """The documented answer, filtered: the learner whose reply was lost is found holding
    it, or proved not to hold it and sent again; the holders list is complete, nobody holds
    the badge twice."""
    learners = cohort(4)
    server = StandIn(
        "documented", others=130, holders=[learners[1]["Email"]], commit_first=commit_first
    )
    summary, recorder = await run_against(server, learners)
    assert server.duplicates() == []
    assert (summary.issued, summary.already_held, summary.unconfirmed) == (3, 1, 0)
    assert len(recorder.verified()) == (1 if commit_first else 0)
    assert server.issue_calls == (3 if commit_first else 4)
    loaded = recorder.holders()
    assert (loaded.holders, loaded.complete, loaded.note) == (131, True, None)


@pytest.mark.looptime
@pytest.mark.parametrize("lost_reply", [False, True])
async def test_an_assertion_of_another_badge_is_not_this_badge_held(lost_reply: bool) -> None:
    """A server that ignores the `badge_id` filter lists the account's assertions of every
    badge. A learner holding only another badge (3425) is not "already held" for badge 51:
    every learner gets badge 51 once, and a lost reply is settled by what badge 51 shows."""
    config = SandboxConfig(
        lookup_shape="ignore_badge_filter",
        scripted=[DROPPED_REPLY] if lost_reply else [],
        rate=None,
    )
    learners = cohort(6)
    recorder = Recorder()
    async with run_sandbox(config) as sandbox:
        sandbox.preload(3425, [row["Email"] for row in learners])
        sandbox.preload(51, [learners[5]["Email"]])
        summary = await bulk_issuer.issue_badges(
            learners, badge_id=51, auth=AUTH, base_url=sandbox.url, on_event=recorder
        )
    assert sandbox.duplicates() == {}
    assert all(sandbox.issued_count(51, row["Email"]) == 1 for row in learners)
    assert (summary.issued, summary.already_held, summary.unconfirmed) == (5, 1, 0)
    assert len(recorder.verified()) == (1 if lost_reply else 0)
    loaded = recorder.holders()
    assert (loaded.holders, loaded.complete) == (1, True)


@pytest.mark.parametrize(
    ("badge", "holds"),
    [(51, True), ("51", True), (None, True), (3425, False), (" 3425 ", False)],
)
def test_an_item_holds_the_badge_only_if_it_names_this_badge_or_none(
    badge: object, holds: bool
) -> None:
    """The item's own `badge_id` decides, whether a number or a numeric string."""
    item: dict[str, Any] = {"id": 7, "recipient_email": "a@example.org", "status": "Claimed"}
    if badge is not None:
        item["badge_id"] = badge
    page = _read_page(Answer(200, {"items": [item], "total": 1, "pages": 1}, {}), 51)
    assert not isinstance(page, str)
    assert page.items == [("a@example.org", "7", holds)]


@pytest.mark.parametrize("badge", ["51; DROP", {"id": 51}, 51.5, True, "9" * 5000])
def test_an_item_naming_a_badge_unreadably_makes_its_page_prove_nothing(badge: object) -> None:
    """Neither ours nor another's can be told: the page is not read (nothing proved)."""
    item = {"id": 7, "recipient_email": "a@example.org", "badge_id": badge}
    page = _read_page(Answer(200, {"items": [item]}, {}), 51)
    assert isinstance(page, str)
    assert "badge_id that is not a number" in page
    assert len(page) < 200


@pytest.mark.looptime
@pytest.mark.parametrize("password", [False, True])
async def test_a_secret_that_is_a_word_of_the_answers_changes_no_decision(password: bool) -> None:
    """The credential is `example` and the learners are `@example.org`: masking is for
    what is written, not for what the run reads. The holder found by the list is not sent
    again, and the learner whose reply was lost is found holding it, not sent again."""
    secret = "example"
    auth: PasswordAuth | PersonalAccessToken = (
        PasswordAuth("demo@example.com", secret) if password else PersonalAccessToken(secret)
    )
    config = SandboxConfig(
        users={"demo@example.com": secret},
        pats=frozenset({secret}),
        scripted=[DROPPED_REPLY],
        rate=None,
    )
    learners = cohort(4)
    recorder = Recorder()
    async with run_sandbox(config) as sandbox:
        sandbox.preload(51, [learners[0]["Email"]])
        summary = await bulk_issuer.issue_badges(
            learners, badge_id=51, auth=auth, base_url=sandbox.url, on_event=recorder
        )
    assert sandbox.duplicates() == {}
    assert all(sandbox.issued_count(51, row["Email"]) == 1 for row in learners)
    assert (summary.issued, summary.already_held, summary.unconfirmed) == (3, 1, 0)
    assert len(recorder.verified()) == 1


@pytest.mark.looptime
async def test_a_filter_that_compares_exactly_is_asked_every_spelling_of_the_address() -> None:
    """The server keeps addresses in lower case and filters with `=`: the lookup by the
    address as typed (`Learner0@Example.ORG`) finds nothing, though the learner holds the
    badge. Its lower-case spelling finds it: the learner whose reply was lost is not sent
    again."""
    config = SandboxConfig(
        lookup_shape="lowercase_exact_filter", scripted=[DROPPED_REPLY], rate=None
    )
    learners = [{"First Name": "Learner0", "Email": "Learner0@Example.ORG"}, *cohort(3, 1)]
    recorder = Recorder()
    async with run_sandbox(config) as sandbox:
        summary = await bulk_issuer.issue_badges(
            learners, badge_id=51, auth=AUTH, base_url=sandbox.url, on_event=recorder
        )
    assert sandbox.duplicates() == {}
    assert all(sandbox.issued_count(51, row["Email"]) == 1 for row in learners)
    assert (summary.issued, summary.unconfirmed) == (4, 0)
    assert [o.email for o in recorder.verified()] == ["Learner0@Example.ORG"]


@pytest.mark.looptime
@pytest.mark.parametrize("lag", [0.5, 2.9])
async def test_a_list_behind_its_writes_is_asked_again_before_not_held_is_believed(
    lag: float,
) -> None:
    """Replies dropped after the server committed, and a list that shows an assertion
    only `lag` seconds after it was made: a lookup right after the lost reply finds
    nothing. "Not held" is believed only from a lookup made three seconds after the send:
    no learner holds the badge twice."""
    config = SandboxConfig(lookup_lag=lag, drop_after_rate=0.2, seed=7, rate=None)
    learners = cohort(40)
    recorder = Recorder()
    async with run_sandbox(config) as sandbox:
        summary = await bulk_issuer.issue_badges(
            learners, badge_id=51, auth=AUTH, base_url=sandbox.url, on_event=recorder
        )
    assert sandbox.duplicates() == {}
    assert all(sandbox.issued_count(51, row["Email"]) == 1 for row in learners)
    assert (summary.issued, summary.unconfirmed) == (40, 0)
    assert recorder.verified()  # the lost replies were found by asking, not sent again
