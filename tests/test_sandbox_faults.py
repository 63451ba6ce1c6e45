"""The sandbox's adversarial switches, through a plain aiohttp client on a real loopback socket."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import aiohttp
import pytest

from bulk_issuer.sandbox import DROPPED, SandboxConfig, ScriptedAnswer, run_sandbox
from bulk_issuer.sandbox.cli import add_arguments, config_from_args, describe
from tests.test_sandbox import LEARNER, PASSWORD, PAT_HEADERS, USER, issue, login, serve

LOGIN = {"username": USER, "password": PASSWORD}


async def statuses(http: aiohttp.ClientSession, n: int) -> list[int]:
    """The statuses of ``n`` issue calls made one after the other."""
    return [(await raw_issue(http))[0] for _ in range(n)]


async def raw_issue(
    http: aiohttp.ClientSession, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, str, str, dict[str, str]]:
    """PUT an issue call; return (status, content type, text, headers) whatever the body is."""
    async with http.put(
        "/v1/badge/51/issue",
        json=LEARNER if body is None else body,
        headers=PAT_HEADERS if headers is None else headers,
    ) as resp:
        return resp.status, resp.content_type, await resp.text(), dict(resp.headers)


# -- scripted answers ------------------------------------------------------------------------


@pytest.mark.looptime
async def test_scripted_token_outage_lasts_for_seconds_from_the_first_answer() -> None:
    """token:503 for 30 s answers every login with the proxy's page until 30 s after the first."""
    async with serve(scripted=[ScriptedAnswer("token", 503, for_seconds=30)]) as (sandbox, http):
        loop = asyncio.get_running_loop()
        await asyncio.sleep(100)  # the window starts at the first answer, not at start-up
        start = loop.time()
        for at in (0.0, 10.0, 29.9):
            await asyncio.sleep(start + at - loop.time())
            async with http.post("/v1/token", json=LOGIN) as resp:
                assert resp.status == 503
                assert resp.content_type == "text/html"
                assert "503 Service Temporarily Unavailable" in await resp.text()
        assert sandbox.tokens.issued() == []
        await asyncio.sleep(start + 30.0 - loop.time())
        await login(http)
        assert len(sandbox.tokens.issued()) == 1
        assert [r.status for r in sandbox.requests] == [503, 503, 503, 200]


async def test_scripted_answers_are_consulted_in_order_and_used_up() -> None:
    """times answers that many requests, then the next answer in the list, then the endpoint."""
    script = [
        ScriptedAnswer("issue", 503, times=2),
        ScriptedAnswer("issue", 429, headers={"Retry-After": "3600"}, times=1),
    ]
    async with serve(scripted=script) as (sandbox, http):
        first, second = await raw_issue(http), await raw_issue(http)
        assert [first[0], second[0]] == [503, 503]
        status, media, text, headers = await raw_issue(http)
        assert (status, headers["Retry-After"]) == (429, "3600")
        assert (media, json.loads(text)) == ("application/json", {"detail": "Too Many Requests"})
        assert await statuses(http, 2) == [200, 200]
        assert len(sandbox.assertions) == 2
        assert sandbox.rejected_429 == 0  # only the rate limit's own 429s are counted there


async def test_scripted_skip_lets_the_first_requests_through() -> None:
    """skip=2, times=1: two issue calls succeed, the third answers 500, the rest succeed."""
    async with serve(scripted=[ScriptedAnswer("issue", 500, skip=2, times=1)]) as (sandbox, http):
        assert await statuses(http, 5) == [200, 200, 500, 200, 200]
        assert len(sandbox.assertions) == 4


async def test_scripted_answer_comes_before_auth_and_after_the_rate_limit() -> None:
    """A scripted answer needs no credential, and a request the limit refused never reaches it."""
    script = [ScriptedAnswer("any", 503, headers={"Retry-After": "3600"})]
    async with serve(scripted=script, rate=(2, 60.0)) as (sandbox, http):
        status, _, _, headers = await raw_issue(http, headers={})
        assert (status, headers["Retry-After"]) == (503, "3600")
        async with http.get("/v1/badge/51") as resp:
            assert resp.status == 503
        async with http.get("/v1/badge/51") as resp:
            assert resp.status == 429
        assert sandbox.rejected_429 == 1
        assert [r.kind for r in sandbox.requests] == ["issue", "badge", "badge"]


async def test_scripted_any_covers_every_v1_path_and_no_other() -> None:
    """kind any answers logins, lookups and unknown /v1 paths; paths outside /v1 are left alone."""
    async with serve(scripted=[ScriptedAnswer("any", 502)]) as (_, http):
        for method, path in [
            ("POST", "/v1/token"),
            ("GET", "/v1/badge_assertion/"),
            ("GET", "/v1/user_detail/0"),
            ("GET", "/v1/nothing"),
        ]:
            async with http.request(method, path) as resp:
                assert resp.status == 502
        async with http.get("/elsewhere") as resp:
            assert resp.status == 404


PROBLEM = {"Content-Type": "application/problem+json"}


@pytest.mark.parametrize(
    ("answer", "media", "text"),
    [
        (ScriptedAnswer("issue", 409, body={"x": 1}), "application/json", '{"x": 1}'),
        (ScriptedAnswer("issue", 400, body=[1, 2]), "application/json", "[1, 2]"),
        (ScriptedAnswer("issue", 503, body="<h1>", content_type="text/html"), "text/html", "<h1>"),
        (ScriptedAnswer("issue", 500), "text/plain", "Internal Server Error"),
        (ScriptedAnswer("issue", 418, body="teapot"), "text/plain", "teapot"),
        (
            ScriptedAnswer("issue", 200, body="{}", headers=PROBLEM),
            "application/problem+json",
            "{}",
        ),
    ],
)
async def test_scripted_bodies_and_content_types(
    answer: ScriptedAnswer, media: str, text: str
) -> None:
    """dict and list bodies go as JSON, str as text, content_type or a header overrides."""
    async with serve(scripted=[answer]) as (sandbox, http):
        status, got_media, got_text, _ = await raw_issue(http)
        assert (status, got_media, got_text) == (answer.status, media, text)
        assert sandbox.assertions == []


async def test_scripted_commit_issues_then_answers_otherwise() -> None:
    """commit creates the assertion and then answers the scripted status; a bad call still fails."""
    script = [
        ScriptedAnswer("issue", 500, commit=True, times=1),
        ScriptedAnswer("issue", 409, body={"detail": "Conflict"}, commit=True, times=1),
        ScriptedAnswer("issue", 201, commit=True, times=1),
        ScriptedAnswer("issue", 503, commit=True, times=1),
    ]
    async with serve(scripted=script) as (sandbox, http):
        assert (await raw_issue(http))[:3] == (500, "text/plain", "Internal Server Error")
        assert await issue(http) == (409, {"detail": "Conflict"})
        status, assertion = await issue(http)
        assert (status, assertion["id"]) == (201, 3)
        assert sandbox.issued_count(51, LEARNER["recipient_email"]) == 3
        # The fourth fails validation on its own: its 422 goes out and nothing is created.
        status, body = await issue(http, {"recipient_email": "a@example.org"})
        assert (status, body["detail"][0]["type"]) == (422, "missing")
        assert len(sandbox.assertions) == 3
        assert (await issue(http))[0] == 200  # the 503 was used up by the failed call


async def test_scripted_can_be_flipped_mid_run() -> None:
    """Setting config.scripted while serving takes effect at once, and so does clearing it."""
    async with serve() as (sandbox, http):
        assert (await issue(http))[0] == 200
        sandbox.config.scripted = [ScriptedAnswer("issue", 429, headers={"Retry-After": "3600"})]
        assert await statuses(http, 2) == [429, 429]
        sandbox.config.scripted.append(ScriptedAnswer("lookup", 503))
        async with http.get("/v1/badge_assertion/", headers=PAT_HEADERS) as resp:
            assert resp.status == 503
        sandbox.config.scripted.clear()
        assert (await issue(http))[0] == 200
        assert len(sandbox.assertions) == 2


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "badges", "status": 503},
        {"kind": "issue", "status": 99},
        {"kind": "issue", "status": 503, "times": 0},
        {"kind": "issue", "status": 503, "skip": -1},
        {"kind": "issue", "status": 503, "for_seconds": 0},
        {"kind": "token", "status": 500, "commit": True},
        {"kind": "issue", "status": 500, "body": {1, 2}},
    ],
)
def test_scripted_answer_refuses_what_it_cannot_send(fields: dict[str, Any]) -> None:
    """ScriptedAnswer raises ValueError, saying why, for an answer it could not send."""
    with pytest.raises(ValueError, match="ScriptedAnswer"):
        ScriptedAnswer(**fields)


# -- refusals: archived badges, learners who already hold the badge ---------------------------


async def test_archived_badge_answers_409_and_issues_nothing() -> None:
    """Issuing an archived badge answers 409 Badge is archived; GET /v1/badge shows it Archived."""
    async with serve(archived_badges=frozenset({51, 77})) as (sandbox, http):
        assert await issue(http) == (409, {"detail": "Badge is archived"})
        assert await issue(http, badge=77) == (409, {"detail": "Badge is archived"})
        assert (await issue(http, badge=3425))[0] == 200
        assert [a["badge_id"] for a in sandbox.assertions] == [3425]
        async with http.get("/v1/badge/51", headers=PAT_HEADERS) as resp:
            assert (await resp.json())["status"] == "Archived"
        async with http.get("/v1/badge/3425", headers=PAT_HEADERS) as resp:
            assert (await resp.json())["status"] == "Published"


async def test_conflict_on_held_refuses_a_second_issue() -> None:
    """With conflict_on_held, a learner who holds the badge (any case) gets 409 and no duplicate."""
    async with serve(conflict_on_held=True) as (sandbox, http):
        assert (await issue(http))[0] == 200
        shouted = {**LEARNER, "recipient_email": "ZOE@Example.ORG"}
        assert await issue(http, shouted) == (409, {"detail": "Recipient already has this badge"})
        assert (await issue(http, badge=3425))[0] == 200  # another badge is another matter
        sandbox.preload(51, ["wang.fang@example.com"])
        held = {**LEARNER, "recipient_email": "wang.fang@example.com"}
        assert (await issue(http, held))[0] == 409
        assert sandbox.duplicates() == {}
        sandbox.assertions[0]["status"] = "Revoked"  # a revoked assertion is not held
        assert (await issue(http))[0] == 200
        assert sandbox.issued_count(51, LEARNER["recipient_email"]) == 2


# -- lookup shapes ---------------------------------------------------------------------------


async def lookup_with(shape: str, **query: str) -> tuple[int, str, Any]:
    """Preload 5 holders of badge 51 and one of 3425, then look up with ``shape``."""
    async with serve(lookup_shape=shape) as (sandbox, http):
        sandbox.preload(51, [f"learner{n}@example.org" for n in range(5)])
        sandbox.preload(3425, ["learner0@example.org"])
        async with http.get("/v1/badge_assertion/", params=query, headers=PAT_HEADERS) as resp:
            text = await resp.text()
            return resp.status, resp.content_type, text


PAGE = {"badge_id": "51", "size": "2", "page": "2"}


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ("items", {"items": [3, 4], "page": 2, "pages": 3, "size": 2, "total": 5}),
        ("data", {"data": [3, 4], "page": 2, "pages": 3, "size": 2, "total": 5}),
        ("results", {"results": [3, 4], "page": 2, "pages": 3, "size": 2, "total": 5}),
        ("no_pages", {"items": [3, 4], "page": 2, "size": 2, "total": 5}),
        ("pages_na", {"items": [3, 4], "page": 2, "pages": "n/a", "size": 2, "total": 5}),
    ],
)
async def test_lookup_shapes_with_keys(shape: str, expected: dict[str, Any]) -> None:
    """The page's items come under items, data or results; pages may be missing or not a number."""
    status, media, text = await lookup_with(shape, **PAGE)
    body = json.loads(text)
    key = next(iter(expected))
    assert (status, media) == (200, "application/json")
    assert {**body, key: [item["id"] for item in body[key]]} == expected


async def test_lookup_shape_bare_list_and_email_key() -> None:
    """bare_list answers a JSON list of the page; email_key names the address email."""
    _, _, text = await lookup_with("bare_list", **PAGE)
    assert [item["id"] for item in json.loads(text)] == [3, 4]
    _, _, text = await lookup_with(
        "email_key", badge_id="51", recipient_email="LEARNER1@example.org"
    )
    (item,) = json.loads(text)["items"]
    assert item["email"] == "learner1@example.org"
    assert "recipient_email" not in item


async def test_lookup_shape_html_is_a_200_maintenance_page() -> None:
    """html answers 200 text/html, not JSON."""
    status, media, text = await lookup_with("html", badge_id="51")
    assert (status, media) == (200, "text/html")
    assert text.startswith("<!DOCTYPE html>")


async def test_lookup_ignoring_the_email_filter_answers_every_holder() -> None:
    """ignore_email_filter answers every holder of the badge, paginated, whatever the email."""
    _, _, text = await lookup_with(
        "ignore_email_filter", badge_id="51", recipient_email="learner3@example.org", size="2"
    )
    body = json.loads(text)
    assert (body["total"], body["pages"]) == (5, 3)
    assert [item["recipient_email"] for item in body["items"]] == [
        "learner0@example.org",
        "learner1@example.org",
    ]


async def test_lookup_lagging_filter_counts_the_learner_but_lists_nothing() -> None:
    """lagging_filter: a lookup by address lists no items, though it counts the learner's."""
    _, _, text = await lookup_with(
        "lagging_filter", badge_id="51", recipient_email="learner3@example.org"
    )
    assert json.loads(text) == {"items": [], "page": 1, "pages": 1, "size": 50, "total": 1}
    _, _, text = await lookup_with("lagging_filter", badge_id="51", size="2")
    assert [item["id"] for item in json.loads(text)["items"]] == [1, 2]


async def test_lookup_unfiltered_no_counts_gives_items_and_page_only() -> None:
    """unfiltered_no_counts ignores the address and says nothing but the items and the page."""
    _, _, text = await lookup_with(
        "unfiltered_no_counts",
        badge_id="51",
        recipient_email="learner3@example.org",
        size="2",
        page="2",
    )
    body = json.loads(text)
    assert {**body, "items": [item["id"] for item in body["items"]]} == {
        "items": [3, 4],
        "page": 2,
    }


async def test_lookup_max_size_caps_the_page() -> None:
    """lookup_max_size answers fewer items than asked for, and says its real size and pages."""
    async with serve(lookup_max_size=2) as (sandbox, http):
        sandbox.preload(51, [f"learner{n}@example.org" for n in range(5)])
        query = {"badge_id": "51", "size": "50"}
        async with http.get("/v1/badge_assertion/", params=query, headers=PAT_HEADERS) as resp:
            body = await resp.json()
        assert (len(body["items"]), body["size"], body["pages"], body["total"]) == (2, 2, 3, 5)


# -- slow and missing answers ----------------------------------------------------------------


@pytest.mark.looptime
async def test_trickle_sends_headers_at_once_and_the_body_a_byte_at_a_time() -> None:
    """A trickled issue is committed and recorded before its body, which takes len * gap seconds."""
    async with serve(trickle={"issue": 0.5}) as (sandbox, http):
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with http.put("/v1/badge/51/issue", json=LEARNER, headers=PAT_HEADERS) as resp:
            assert loop.time() - start < 0.5
            assert resp.status == 200
            assert len(sandbox.assertions) == 1
            assert [r.status for r in sandbox.requests] == [200]
            first = await resp.content.read(1)
            assert loop.time() - start == pytest.approx(0.5, abs=0.01)
            rest = await resp.read()
        size = int(resp.headers["Content-Length"])
        assert len(first + rest) == size
        assert json.loads(first + rest)["id"] == 1
        assert loop.time() - start == pytest.approx(size * 0.5, abs=0.1)
        async with http.get("/v1/badge/51", headers=PAT_HEADERS) as resp:
            await resp.read()
        assert loop.time() - start == pytest.approx(size * 0.5, abs=0.1)  # other kinds are quick


@pytest.mark.looptime
async def test_trickle_never_ends_for_a_read_timeout_that_restarts() -> None:
    """A client's sock_read timeout never fires on a trickle; only a deadline for the whole does."""
    async with serve(trickle={"any": 1.0}) as (_, http):
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(60):  # a deadline for the whole exchange
                await raw_issue(http)  # the assertion's ~300 bytes would take ~300 s
        assert loop.time() - start == pytest.approx(60, abs=0.1)
        start = loop.time()
        slow = aiohttp.ClientTimeout(sock_read=5)
        async with http.get("/v1/badge/51", headers=PAT_HEADERS, timeout=slow) as resp:
            body = await resp.read()  # one byte a second never trips a 5 s read timeout
        assert json.loads(body)["id"] == 51
        assert loop.time() - start == pytest.approx(len(body), abs=0.1)


@pytest.mark.looptime
async def test_hang_commits_and_never_answers_until_the_client_gives_up() -> None:
    """A hung issue creates the assertion, is recorded DROPPED, and the client hears nothing."""
    async with serve(hang=frozenset({"issue"})) as (sandbox, http):
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(30):  # the client gives up
                await raw_issue(http)
        assert loop.time() - start == pytest.approx(30, abs=0.1)
        assert len(sandbox.assertions) == 1
        assert [(r.kind, r.status) for r in sandbox.requests] == [("issue", DROPPED)]
        async with http.get("/v1/badge/51", headers=PAT_HEADERS) as resp:
            assert resp.status == 200  # other kinds answer


@pytest.mark.looptime
@pytest.mark.parametrize("switch", [{"hang": frozenset({"any"})}, {"trickle": {"any": 10.0}}])
async def test_stopping_is_not_held_up_by_hung_or_trickling_answers(switch: dict[str, Any]) -> None:
    """Leaving run_sandbox closes hung and trickling connections at once, not after a timeout."""
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as http:
        async with run_sandbox(SandboxConfig(rate=None, **switch)) as sandbox:
            task = asyncio.create_task(raw_issue_at(http, sandbox.url))
            await asyncio.sleep(120)
            assert not task.done()
            assert len(sandbox.assertions) == 1
            stopping = loop.time()
        assert loop.time() - stopping < 0.1
        with pytest.raises(aiohttp.ClientError):
            await task


async def raw_issue_at(http: aiohttp.ClientSession, url: str) -> bytes:
    """PUT an issue call to the sandbox at ``url``; return the whole body."""
    async with http.put(f"{url}/v1/badge/51/issue", json=LEARNER, headers=PAT_HEADERS) as resp:
        return await resp.read()


# -- secrets echoed, the badge endpoint ------------------------------------------------------


@pytest.mark.looptime
async def test_echo_secrets_repeats_the_credential_and_the_login_body() -> None:
    """echo_secrets puts the token received in a 401's detail, and a failed login's body too."""
    async with serve(echo_secrets=True, token_ttl=60) as (_, http):
        wrong = {"X-Access-Token": "pat-that-is-wrong"}
        assert await issue(http, headers=wrong) == (
            401,
            {"detail": "Not authenticated: token pat-that-is-wrong is not valid"},
        )
        bearer = {"Authorization": "Bearer forged-bearer"}
        assert await issue(http, headers=bearer) == (
            401,
            {"detail": "Not authenticated: token forged-bearer is not valid"},
        )
        token = await login(http)
        await asyncio.sleep(60)
        expired = {"Authorization": f"Bearer {token}"}
        assert await issue(http, headers=expired) == (
            401,
            {"detail": f"Token expired: token {token} is not valid"},
        )
        async with http.post(
            "/v1/token", json={"username": USER, "password": "hunter2-secret"}
        ) as r:
            assert r.status == 401
            assert "hunter2-secret" in (await r.json())["detail"]
        form = {"username": USER, "password": "form-secret"}
        async with http.post("/v1/token", data=form) as r:
            assert "password=form-secret" in (await r.json())["detail"]
        async with http.get("/v1/user_detail/0") as r:
            assert await r.json() == {"detail": "Not authenticated"}  # nothing sent, nothing echoed


@pytest.mark.parametrize(
    ("endpoint", "status", "detail"),
    [
        ("missing", 404, "Not Found"),
        ("forbidden", 403, "You do not have permission to view badges"),
    ],
)
async def test_badge_endpoint_can_be_missing_or_forbidden(
    endpoint: str, status: int, detail: str
) -> None:
    """badge_endpoint makes GET /v1/badge/{id} answer 404 or 403 for any id; issuing still works."""
    async with serve(badge_endpoint=endpoint) as (sandbox, http):
        for badge in (51, 3425, 9999):
            async with http.get(f"/v1/badge/{badge}", headers=PAT_HEADERS) as resp:
                assert (resp.status, await resp.json()) == (status, {"detail": detail})
        assert (await issue(http))[0] == 200
        assert [r.kind for r in sandbox.requests] == ["badge", "badge", "badge", "issue"]


# -- configuration and command line ----------------------------------------------------------


@pytest.mark.parametrize(
    "switches",
    [
        {"lookup_shape": "xml"},
        {"lookup_max_size": 0},
        {"badge_endpoint": "gone"},
        {"trickle": {"issues": 1.0}},
        {"trickle": {"issue": 0}},
        {"hang": frozenset({"login"})},
        {"scripted": [("token", 503)]},
    ],
)
def test_config_refuses_impossible_fault_switches(switches: dict[str, Any]) -> None:
    """SandboxConfig raises ValueError for fault switches it could not honour."""
    with pytest.raises(ValueError, match="must"):
        SandboxConfig(**switches)


def parse(options: str) -> SandboxConfig:
    """The config the sandbox command line ``options`` describe."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(options.split()))


def test_fault_options_map_onto_the_config() -> None:
    """--archived-badge, --conflict-on-held, --lookup-*, --trickle, --hang, --echo-secrets and
    --badge-endpoint set their switches."""
    config = parse(
        "--archived-badge 51 --archived-badge 77 --conflict-on-held --lookup-shape data "
        "--lookup-max-size 10 --trickle issue:0.5 --trickle lookup:200ms --hang token --hang any "
        "--echo-secrets --badge-endpoint missing"
    )
    assert config.archived_badges == {51, 77}
    assert (config.conflict_on_held, config.echo_secrets) == (True, True)
    assert (config.lookup_shape, config.lookup_max_size) == ("data", 10)
    assert config.trickle == {"issue": 0.5, "lookup": 0.2}
    assert (config.hang, config.badge_endpoint) == (frozenset({"token", "any"}), "missing")
    assert "data" in describe(config)


def test_script_options_build_scripted_answers() -> None:
    """--script KIND:STATUS[:SECONDS], --script-header and --script-body build ScriptedAnswers."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    ns = parser.parse_args(
        [
            "--script", "token:503:30",
            "--script", "ISSUE:429",
            "--script-header", "Retry-After: 3600",
            "--script-header", "X-Trace:abc",
            "--script-body", '{"detail": "Slow down"}',
        ]
    )  # fmt: skip
    headers = {"Retry-After": "3600", "X-Trace": "abc"}
    body = {"detail": "Slow down"}
    assert config_from_args(ns).scripted == [
        ScriptedAnswer("token", 503, body=body, headers=headers, for_seconds=30.0),
        ScriptedAnswer("issue", 429, body=body, headers=headers),
    ]
    html = parse("--script any:503 --script-body <h1>down</h1>").scripted[0]
    assert (html.body, html.content_type) == ("<h1>down</h1>", "text/html; charset=utf-8")
    plain = parse("--script lookup:200 --script-body maintenance").scripted[0]
    assert (plain.body, plain.content_type, plain.headers) == ("maintenance", None, {})
    assert "token answers 503 for 30s" in describe(config_from_args(ns))


@pytest.mark.parametrize(
    "options",
    ["--script token", "--script login:503", "--script token:99", "--script token:503:soon",
     "--script-header Retry-After", "--trickle issue", "--hang everything"],
)  # fmt: skip
def test_malformed_fault_options_are_usage_errors(
    options: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A malformed fault option is an argparse error (exit 2) naming the expected form."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(options.split())
    assert exit_info.value.code == 2
    assert options.split()[0] in capsys.readouterr().err


def test_script_header_without_script_is_refused() -> None:
    """--script-header or --script-body alone would do nothing, so they are refused."""
    with pytest.raises(ValueError, match="--script"):
        parse("--script-header Retry-After:3600")


async def test_scripted_answers_from_the_command_line_are_served() -> None:
    """The answers --script builds are what a client gets: 429 with Retry-After: 3600, JSON body."""
    config = parse("--rate none --script issue:429 --script-header Retry-After:3600")
    async with run_sandbox(config) as sandbox, aiohttp.ClientSession(sandbox.url) as http:
        status, media, text, headers = await raw_issue(http)
    assert (status, media, headers["Retry-After"]) == (429, "application/json", "3600")
    assert json.loads(text) == {"detail": "Too Many Requests"}
