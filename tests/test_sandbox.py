"""The sandbox, through a plain aiohttp client on a real loopback socket."""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.utils import parsedate_to_datetime
from importlib.resources import files
from typing import Any

import aiohttp
import pytest

from bulk_issuer.sandbox import DROPPED, Sandbox, SandboxConfig, run_sandbox
from bulk_issuer.sandbox.cli import (
    add_arguments,
    config_from_args,
    parse_latency,
    parse_rate,
    serve_forever,
)
from bulk_issuer.sandbox.validation import check_email

USER, PASSWORD, PAT = "demo@example.com", "demo-password", "sandbox-demo-pat"
LEARNER = {
    "recipient_firstname": "Zoë",
    "recipient_lastname": "Müller",
    "recipient_email": "zoe@example.org",
}
PAT_HEADERS = {"X-Access-Token": PAT}


@asynccontextmanager
async def serve(**switches: Any) -> AsyncIterator[tuple[Sandbox, aiohttp.ClientSession]]:
    """A sandbox with ``switches`` (unlimited rate unless given) and a session aimed at it."""
    switches.setdefault("rate", None)
    async with (
        run_sandbox(SandboxConfig(**switches)) as sandbox,
        aiohttp.ClientSession(sandbox.url) as http,
    ):
        yield sandbox, http


async def login(http: aiohttp.ClientSession) -> str:
    """Log in with the demo user and return the bearer token."""
    async with http.post("/v1/token", json={"username": USER, "password": PASSWORD}) as resp:
        assert resp.status == 200
        body = await resp.json()
    return str(body["access_token"])


async def issue(
    http: aiohttp.ClientSession,
    body: Any = None,
    *,
    badge: int | str = 51,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """PUT an issue call; return (status, JSON body)."""
    async with http.put(
        f"/v1/badge/{badge}/issue",
        json=LEARNER if body is None else body,
        headers=PAT_HEADERS if headers is None else headers,
    ) as resp:
        return resp.status, await resp.json()


def claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified."""
    payload = token.split(".")[1]
    padded = payload + "=" * (-len(payload) % 4)
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
    return decoded


# -- logging in ------------------------------------------------------------------------------


async def test_token_json_login_answers_only_access_token() -> None:
    """A JSON login gets {"access_token"} and nothing else; the JWT carries exp = now + ttl."""
    async with serve(token_ttl=300) as (sandbox, http):
        async with http.post("/v1/token", json={"username": USER, "password": PASSWORD}) as resp:
            assert resp.status == 200
            body = await resp.json()
        assert set(body) == {"access_token"}
        exp = claims(body["access_token"])["exp"]
        assert time.time() + 295 < exp <= time.time() + 300
        assert sandbox.token_calls == 1


async def test_token_form_login_and_opaque_tokens() -> None:
    """An OAuth2 password form logs in too; opaque tokens are not JWTs but work the same."""
    async with serve(jwt_tokens=False) as (_, http):
        form = {"grant_type": "password", "username": USER, "password": PASSWORD}
        async with http.post("/v1/token", data=form) as resp:
            assert resp.status == 200
            token = (await resp.json())["access_token"]
        assert token.count(".") != 2
        status, _ = await issue(http, headers={"Authorization": f"Bearer {token}"})
        assert status == 200


async def test_token_mode_is_strict_about_body_format() -> None:
    """Form-only refuses JSON with 422, JSON-only refuses a form with 422, text gets 415."""
    login_json = {"username": USER, "password": PASSWORD}
    async with serve(token_mode="form") as (_, http):
        async with http.post("/v1/token", json=login_json) as resp:
            assert resp.status == 422
            locs = [e["loc"] for e in (await resp.json())["detail"]]
        assert locs == [["body", "username"], ["body", "password"]]
    async with serve(token_mode="json") as (_, http):
        async with http.post("/v1/token", data=login_json) as resp:
            assert resp.status == 422
            assert (await resp.json())["detail"][0]["type"] == "model_attributes_type"
        async with http.post(
            "/v1/token", data="hello", headers={"Content-Type": "text/plain"}
        ) as r:
            assert r.status == 415


async def test_token_wrong_password_and_malformed_login() -> None:
    """Bad credentials answer 401 in FastAPI's shape; a missing field answers 422."""
    async with serve() as (_, http):
        async with http.post("/v1/token", json={"username": USER, "password": "nope"}) as resp:
            assert resp.status == 401
            assert await resp.json() == {"detail": "Incorrect username or password"}
        async with http.post("/v1/token", json={"username": USER}) as resp:
            assert resp.status == 422
            assert (await resp.json())["detail"] == [
                {"loc": ["body", "password"], "msg": "Field required", "type": "missing"}
            ]


@pytest.mark.looptime
async def test_token_expires_after_ttl() -> None:
    """A bearer token works until token_ttl has passed on the loop clock, then answers 401."""
    async with serve(token_ttl=60) as (_, http):
        token = await login(http)
        bearer = {"Authorization": f"Bearer {token}"}
        await asyncio.sleep(59.9)
        assert (await issue(http, headers=bearer))[0] == 200
        await asyncio.sleep(0.1)
        assert await issue(http, headers=bearer) == (401, {"detail": "Token expired"})


@pytest.mark.looptime
async def test_token_fault_rate_answers_503() -> None:
    """With token_fault_rate=1 every login answers 503 and mints nothing."""
    async with serve(token_fault_rate=1.0) as (sandbox, http):
        async with http.post("/v1/token", json={"username": USER, "password": PASSWORD}) as resp:
            assert resp.status == 503
        assert sandbox.token_calls == 1


# -- authentication --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pat_header", "x_access_token", "bearer"),
    [("both", 200, 200), ("x-access-token", 200, 401), ("bearer", 401, 200)],
)
async def test_pat_is_accepted_only_in_configured_header(
    pat_header: str, x_access_token: int, bearer: int
) -> None:
    """A PAT works in X-Access-Token, Authorization: Bearer, or both, per pat_header."""
    async with serve(pat_header=pat_header) as (_, http):
        async with http.get("/v1/user_detail/0", headers={"X-Access-Token": PAT}) as resp:
            assert resp.status == x_access_token
        async with http.get("/v1/user_detail/0", headers={"Authorization": f"Bearer {PAT}"}) as r:
            assert r.status == bearer
            if bearer == 200:
                assert (await r.json())["username"] == USER


async def test_missing_or_forged_credentials_answer_401() -> None:
    """No credential, or a made-up one, answers 401 Not authenticated with a Bearer challenge."""
    async with serve() as (sandbox, http):
        for headers in ({}, {"Authorization": "Bearer forged"}, {"X-Access-Token": "forged"}):
            async with http.get("/v1/user_detail/0", headers=headers) as resp:
                assert resp.status == 401
                assert resp.headers["WWW-Authenticate"] == "Bearer"
                assert await resp.json() == {"detail": "Not authenticated"}
        assert sandbox.assertions == []


# -- issuing ---------------------------------------------------------------------------------


async def test_issue_returns_assertion_and_echoes_extra_fields() -> None:
    """A good issue call answers the assertion, ids increasing, unknown fields passed through."""
    async with serve() as (sandbox, http):
        status, first = await issue(http, {**LEARNER, "evidence_url": "https://e.example/1"})
        assert status == 200
        assert first["id"] == 1
        assert first["badge_id"] == 51
        assert first["status"] == "Pending"
        assert first["recipient_firstname"] == "Zoë"
        assert first["evidence_url"] == "https://e.example/1"
        assert len(first["issue_date"]) == 10
        assert first["url"].startswith(sandbox.url)
        _, second = await issue(http, {**LEARNER, "recipient_email": "wang.fang@example.com"})
        assert second["id"] == 2
        assert sandbox.issued_count(51, "ZOE@example.org") == 1


async def test_issue_errors_have_fastapi_shapes() -> None:
    """Unknown badge 404, forbidden badge 403, bad body 422 with a list of field errors."""
    async with serve() as (_, http):
        assert await issue(http, badge=9999) == (404, {"detail": "Badge not found"})
        assert await issue(http, badge=403) == (
            403,
            {"detail": "You do not have permission to issue this badge"},
        )
        status, body = await issue(http, {"recipient_email": "zoe@example.org"})
        assert (status, body) == (
            422,
            {
                "detail": [
                    {
                        "loc": ["body", "recipient_firstname"],
                        "msg": "Field required",
                        "type": "missing",
                    }
                ]
            },
        )
        status, body = await issue(http, {**LEARNER, "recipient_email": "zoe@@example"})
        assert status == 422
        assert body["detail"][0]["loc"] == ["body", "recipient_email"]
        assert (await issue(http, {**LEARNER, "recipient_firstname": "  "}))[0] == 422
        assert (await issue(http, {**LEARNER, "score": "high"}))[0] == 422
        assert (await issue(http, badge="abc"))[0] == 422
        async with http.put("/v1/badge/51/issue", data=b"{not json", headers=PAT_HEADERS) as resp:
            assert resp.status == 422


async def test_issue_by_recipient_id_needs_no_email() -> None:
    """recipient_id stands in for recipient_email."""
    async with serve() as (_, http):
        status, body = await issue(http, {"recipient_firstname": "Minh", "recipient_id": 42})
        assert status == 200
        assert body["recipient_email"] is None


async def test_duplicates_sees_a_double_issue() -> None:
    """The API has no idempotency: issuing twice makes two assertions, and duplicates() says so."""
    async with serve() as (sandbox, http):
        await issue(http)
        await issue(http, {**LEARNER, "recipient_email": "Zoe@Example.org"})
        sandbox.preload(3425, ["seun.adebayo@example.com"])
        await issue(http, {**LEARNER, "recipient_email": "seun.adebayo@example.com"}, badge=3425)
        assert sandbox.duplicates() == {
            (51, "zoe@example.org"): 2,
            (3425, "seun.adebayo@example.com"): 2,
        }
        assert sandbox.issued_by_api == 3


async def test_unknown_paths_answer_json_404_and_405() -> None:
    """Anything else under /v1 is 404 {"detail": "Not Found"}; a wrong method is 405."""
    async with serve() as (sandbox, http):
        async with http.get("/v1/nothing/here", headers=PAT_HEADERS) as resp:
            assert (resp.status, await resp.json()) == (404, {"detail": "Not Found"})
        async with http.post("/v1/badge/51/issue", json=LEARNER, headers=PAT_HEADERS) as resp:
            assert (resp.status, await resp.json()) == (405, {"detail": "Method Not Allowed"})
        assert [r.kind for r in sandbox.requests] == ["other", "other"]


# -- faults ----------------------------------------------------------------------------------


async def test_drop_after_creates_the_assertion() -> None:
    """drop_after issues the badge, then drops the connection: the client never hears."""
    async with serve(drop_after_rate=1.0) as (sandbox, http):
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await issue(http)
        dropped = [r for r in sandbox.requests if r.kind == "issue"]
        # aiohttp may silently resend an idempotent PUT once; each attempt issued a badge.
        assert dropped
        assert all(r.status == DROPPED for r in dropped)
        assert sandbox.issued_count(51, LEARNER["recipient_email"]) == len(dropped)


async def test_drop_before_and_faults_commit_nothing() -> None:
    """drop_before and 5xx faults leave no assertion; 5xx bodies are not JSON."""
    async with serve(drop_before_rate=1.0) as (sandbox, http):
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await issue(http)
        assert sandbox.assertions == []
    async with serve(fault_rate=1.0, seed=7) as (sandbox, http):
        statuses = set()
        for _ in range(12):
            async with http.put("/v1/badge/51/issue", json=LEARNER, headers=PAT_HEADERS) as r:
                statuses.add(r.status)
                assert r.content_type != "application/json"
        assert statuses <= {500, 502, 503, 504}
        assert len(statuses) > 1
        assert sandbox.assertions == []


# -- rate limit ------------------------------------------------------------------------------


@pytest.mark.looptime
async def test_rate_limit_429_with_retry_after_seconds() -> None:
    """The 6th request in a 2 s window answers 429 with Retry-After in whole seconds."""
    async with serve(rate=(5, 2.0)) as (sandbox, http):
        await asyncio.sleep(2.0 - asyncio.get_running_loop().time() % 2.0)  # a window's start
        for _ in range(5):
            assert (await issue(http))[0] == 200
        async with http.put("/v1/badge/51/issue", json=LEARNER, headers=PAT_HEADERS) as resp:
            assert resp.status == 429
            assert await resp.json() == {"detail": "Rate limit exceeded: 5 per 2 second"}
            wait = int(resp.headers["Retry-After"])
        assert wait == 2
        assert sandbox.rejected_429 == 1
        await asyncio.sleep(wait)
        assert (await issue(http))[0] == 200
        assert len(sandbox.assertions) == 6


@pytest.mark.looptime
async def test_rate_limit_retry_after_date_and_ratelimit_headers() -> None:
    """Retry-After can be an HTTP-date, with the IETF draft RateLimit headers beside it."""
    async with serve(
        rate=(5, 2.0), rate_model="moving", retry_after="date", ratelimit_headers=True
    ) as (_, http):
        for _ in range(5):
            await issue(http)
        async with http.put("/v1/badge/51/issue", json=LEARNER, headers=PAT_HEADERS) as resp:
            assert resp.status == 429
            when = parsedate_to_datetime(resp.headers["Retry-After"]).timestamp()
            assert time.time() < when <= time.time() + 3
            assert resp.headers["RateLimit-Policy"] == "5;w=2"
            assert resp.headers["RateLimit"] == "limit=5, remaining=0, reset=2"
            assert abs(int(resp.headers["X-RateLimit-Reset"]) - when) <= 1


@pytest.mark.looptime
async def test_every_v1_request_counts_and_retry_after_can_be_absent() -> None:
    """Logins, errors and unknown /v1 paths all count; paths outside /v1 do not."""
    async with serve(rate=(3, 1.0), retry_after="none") as (sandbox, http):
        await asyncio.sleep(1.0 - asyncio.get_running_loop().time() % 1.0)
        await login(http)
        await issue(http, badge=9999)
        async with http.get("/elsewhere") as resp:
            assert resp.status == 404
        async with http.get("/v1/nothing") as resp:
            assert resp.status == 404
        async with http.get("/v1/user_detail/0", headers=PAT_HEADERS) as resp:
            assert resp.status == 429
            assert "Retry-After" not in resp.headers
        assert [r.status for r in sandbox.requests] == [200, 404, 404, 404, 429]


@pytest.mark.looptime
async def test_rate_switch_can_be_flipped_mid_run() -> None:
    """Setting config.rate to None mid-run lifts the limit at once."""
    async with serve(rate=(1, 10.0)) as (sandbox, http):
        await issue(http)
        assert (await issue(http))[0] == 429
        sandbox.config.rate = None
        assert (await issue(http))[0] == 200


@pytest.mark.looptime
async def test_latency_delays_arrival() -> None:
    """Latency is slept before a request is counted: arrival times carry the delay."""
    async with serve(latency=(0.25, 0.75), seed=3) as (sandbox, http):
        loop = asyncio.get_running_loop()
        sent = loop.time()
        await issue(http)
        (record,) = sandbox.requests
        assert 0.25 <= record.arrived_at - sent <= 0.75
        assert loop.time() - sent >= record.arrived_at - sent


# -- lookups ---------------------------------------------------------------------------------


async def test_lookup_paginates_and_filters() -> None:
    """Lookups page from 1 with size 1..100, filter by badge, email (any case) and status."""
    async with serve() as (sandbox, http):
        sandbox.preload(51, [f"learner{n}@example.org" for n in range(7)])
        await issue(http)

        async def lookup(**query: str | int) -> tuple[int, Any]:
            params = {k: str(v) for k, v in query.items()}
            async with http.get("/v1/badge_assertion/", params=params, headers=PAT_HEADERS) as r:
                return r.status, await r.json()

        status, page3 = await lookup(badge_id=51, size=3, page=3)
        assert status == 200
        paging = {k: page3[k] for k in ("page", "pages", "size", "total")}
        assert paging == {"page": 3, "pages": 3, "size": 3, "total": 8}
        assert [item["id"] for item in page3["items"]] == [7, 8]
        _, found = await lookup(badge_id=51, recipient_email="ZOE@EXAMPLE.ORG")
        assert [item["status"] for item in found["items"]] == ["Pending"]
        assert (await lookup(status="Claimed"))[1]["total"] == 7
        empty = {"items": [], "page": 1, "pages": 0, "size": 50, "total": 0}
        assert (await lookup(badge_id=3425))[1] == empty
        for size in (0, 101):
            status, body = await lookup(size=size)
            assert status == 422
            assert body["detail"][0]["loc"] == ["query", "size"]
        async with http.get("/v1/badge_assertion", allow_redirects=False) as resp:
            assert resp.status == 307
            assert resp.headers["Location"].endswith("/v1/badge_assertion/")


@pytest.mark.parametrize(("lookup", "status"), [("forbidden", 403), ("missing", 404)])
async def test_lookup_switch(lookup: str, status: int) -> None:
    """The lookup switch makes GET /v1/badge_assertion/ answer 403 or 404."""
    async with (
        serve(lookup=lookup) as (_, http),
        http.get("/v1/badge_assertion/", headers=PAT_HEADERS) as resp,
    ):
        assert resp.status == status
        assert "detail" in await resp.json()


async def test_badge_endpoint() -> None:
    """GET /v1/badge/{id} answers the badge, 404 for an unknown one."""
    async with serve() as (_, http):
        async with http.get("/v1/badge/3425", headers=PAT_HEADERS) as resp:
            assert (await resp.json())["name"] == "Digital badge basics"
        async with http.get("/v1/badge/1", headers=PAT_HEADERS) as resp:
            assert resp.status == 404


# -- configuration, command line, sample cohort ----------------------------------------------


@pytest.mark.parametrize(
    "switches",
    [
        {"rate": (0, 2.0)},
        {"rate_model": "leaky"},
        {"fault_rate": 1.5},
        {"latency": (0.5, 0.1)},
        {"token_ttl": 0},
    ],
)
def test_config_refuses_impossible_values(switches: dict[str, Any]) -> None:
    """SandboxConfig raises ValueError for values it could not honour."""
    with pytest.raises(ValueError, match=r"must|probability"):
        SandboxConfig(**switches)


@pytest.mark.parametrize(
    ("text", "rate"),
    [("5/2s", (5, 2.0)), ("150/1m", (150, 60.0)), ("10/500ms", (10, 0.5)), ("none", None)],
)
def test_parse_rate(text: str, rate: tuple[int, float] | None) -> None:
    """--rate takes N/P with s, m or ms, or none."""
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["5", "five/2s", "0/1s", "5/0s", "5/2 parsecs"])
def test_parse_rate_refuses_nonsense(text: str) -> None:
    """A malformed --rate is an argparse error with an example."""
    with pytest.raises(argparse.ArgumentTypeError, match="5/2s"):
        parse_rate(text)


@pytest.mark.parametrize(
    ("text", "latency"),
    [("0.03-0.09", (0.03, 0.09)), ("30-90ms", (0.03, 0.09)), ("50ms", (0.05, 0.05))],
)
def test_parse_latency(text: str, latency: tuple[float, float]) -> None:
    """--latency takes LOW-HIGH in seconds, or with ms once at the end."""
    assert parse_latency(text) == pytest.approx(latency)


def test_config_from_args() -> None:
    """The sandbox options map onto SandboxConfig."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    options = (
        "--rate 50/1s --model bucket --latency 30-90ms --opaque-tokens --token-mode form "
        "--pat-header bearer --drop-after-rate 0.1 --retry-after date --badge 77=Welding --seed 4"
    )
    ns = parser.parse_args(options.split())
    config = config_from_args(ns)
    assert (config.rate, config.rate_model, config.jwt_tokens) == ((50, 1.0), "bucket", False)
    assert config.latency == pytest.approx((0.03, 0.09))
    assert (config.token_mode, config.pat_header, config.retry_after) == ("form", "bearer", "date")
    assert (config.drop_after_rate, config.seed, config.badges[77]) == (0.1, 4, "Welding")
    assert (ns.host, ns.port) == ("127.0.0.1", 8765)
    assert config_from_args(parser.parse_args([])) == SandboxConfig()
    assert config_from_args(parser.parse_args(["--freeze", "6:500ms"])).freeze == (6.0, 0.5)
    for wrong in ("6", "6:0", "-1:3", "x:3"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--freeze", wrong])
    with pytest.raises(ValueError, match="freeze"):
        SandboxConfig(freeze=(1.0, 0.0))


async def test_serve_forever_announces_and_tallies(capsys: pytest.CaptureFixture[str]) -> None:
    """serve_forever says where it listens and, when cancelled, what happened."""
    started: asyncio.Future[Sandbox] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve_forever(SandboxConfig(), "127.0.0.1", 0, started.set_result))
    sandbox = await started
    async with aiohttp.ClientSession(sandbox.url) as http:
        await issue(http)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"sandbox listening on {sandbox.url} (rate 5/2s fixed, token ttl 600s)"
    assert lines[-1] == "sandbox stopped: 1 issued, 0 duplicates, 0 answered 429, 0 token calls"
    assert PASSWORD not in "\n".join(lines)


def test_sample_cohort_is_twenty_valid_learners() -> None:
    """The shipped sample cohort has the web template's headers and 20 valid, distinct learners."""
    text = files("bulk_issuer.sandbox").joinpath("sample_cohort.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(text.splitlines()))
    assert list(rows[0]) == ["First Name", "Last Name", "Email", "Organisation"]
    assert len(rows) == 20
    assert len({row["Email"].casefold() for row in rows}) == 20
    assert all(row["First Name"].strip() for row in rows)
    assert all(check_email(row["Email"])[1] is None for row in rows)
    names = " ".join(f"{row['First Name']} {row['Last Name']}" for row in rows)
    for name in ("Zoë", "Siobhán", "王", "Nguyễn", "O'Brien"):
        assert name in names
