"""Pacing: the engine next to two naive schedules, on each of the four server rate models.

Every (model, client) pair gets its own sandbox (5 requests per 2 s, 30-90 ms arrival
latency, 8-second login tokens) and all twelve run at once in one event loop: they
spend their time waiting for the limit, so running them side by side costs nothing and
puts every client under the same conditions. Everything is counted on the server side.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiolimiter import AsyncLimiter

from benchmarks._common import (
    DEMO_PASSWORD,
    DEMO_USER,
    Report,
    run_engine,
    server_counts,
)
from benchmarks._common import cohort as make_cohort
from benchmarks._naive import naive_async
from bulk_issuer import PasswordAuth
from bulk_issuer.sandbox import SandboxConfig, run_sandbox

__all__ = ["run"]

BUDGET = (5, 2.0)
MODELS = ("fixed", "moving", "sliding", "bucket")
ENGINE, BURST, EVEN = "bulk_issuer", "AsyncLimiter(5, 2)", "even 0.44 s"
CLIENTS = (ENGINE, BURST, EVEN)
LATENCY = (0.03, 0.09)
TOKEN_TTL = 8.0
#: The engine's promise on every model: this share of the limit, at most this many 429s.
TARGET_RATE, TARGET_429 = 0.95, 1


def _config(model: str, seed: int) -> SandboxConfig:
    return SandboxConfig(
        rate=BUDGET,
        rate_model=model,  # type: ignore[arg-type]  # one of MODELS, checked by SandboxConfig
        latency=LATENCY,
        token_ttl=TOKEN_TTL,
        seed=seed,
    )


async def _one(model: str, client: str, size: int, seed: int) -> dict[str, Any]:
    """Issue a fresh cohort with `client` through its own sandbox; the server's counts."""
    learners = make_cohort(size, f"{model}-{CLIENTS.index(client)}")
    async with run_sandbox(_config(model, seed)) as sandbox:
        started = time.perf_counter()
        client_view: dict[str, Any]
        if client == ENGINE:
            summary, fatal = await run_engine(
                learners, base_url=sandbox.url, auth=PasswordAuth(DEMO_USER, DEMO_PASSWORD)
            )
            client_view = {**summary.as_dict(), "fatal": fatal}
        else:
            # Burst: 5 at once, then one every 0.4 s. Even: one every 0.44 s, one task.
            burst = client == BURST
            tally = await naive_async(
                sandbox.url,
                learners,
                limiter=AsyncLimiter(5, 2) if burst else AsyncLimiter(1, 0.44),
                workers=5 if burst else 1,
                retry_429=True,
                refresh_401=True,
            )
            client_view = tally.as_dict()
        wall = time.perf_counter() - started
        counts = server_counts(sandbox, (row["email"] for row in learners), BUDGET)
    return {
        "model": model,
        "client": client,
        "learners": size,
        "wall": wall,
        "server": counts.as_dict(),
        "client_view": client_view,
    }


async def _all(size: int) -> list[dict[str, Any]]:
    # The same seed for the three clients of one model: the same latencies, a fair race.
    runs = [
        _one(model, client, size, seed=100 + i)
        for i, model in enumerate(MODELS)
        for client in CLIENTS
    ]
    return list(await asyncio.gather(*runs))


def _verdict(results: list[dict[str, Any]]) -> str:
    misses = [
        f"{r['model']} ({r['server']['rate_all']:.1%}, {r['server']['rejected_429']} x 429)"
        for r in results
        if r["client"] == ENGINE
        and (r["server"]["rate_all"] < TARGET_RATE or r["server"]["rejected_429"] > TARGET_429)
    ]
    if not misses:
        return (
            f"engine target (>= {TARGET_RATE:.0%} of the limit, <= {TARGET_429} x 429 on each "
            "model): met on all four models"
        )
    return f"engine target NOT met on: {', '.join(misses)}"


def run(quick: bool) -> Report:
    """Run the pacing benchmark; `quick` uses a 25-learner cohort instead of 50."""
    size = 25 if quick else 50
    results = asyncio.run(_all(size))
    rows = []
    for r in results:
        s = r["server"]
        rows.append(
            [
                r["model"],
                r["client"],
                f"{s['issued_once']}/{size}",
                str(s["duplicates"]),
                f"{s['rejected_429']} ({s['rejected_429'] / max(s['requests'], 1):.0%})",
                str(s["requests"]),
                f"{s['rate_all']:.1%}",
                f"{s['rate_accepted']:.1%}",
                str(s["most_in_window"]),
                f"{r['wall']:.1f} s",
            ]
        )
    limit, period = BUDGET
    notes = [
        f"Server: {limit} requests per {period:g} s, latency {LATENCY[0] * 1000:g}-"
        f"{LATENCY[1] * 1000:g} ms, {TOKEN_TTL:g} s login tokens; {size} learners per run; "
        "12 sandboxes at once in one event loop.",
        "requests = /v1 requests (logins, lookups, issue calls) that reached the server, "
        "429s included. "
        f"rate = (n - 1) / (last arrival - first arrival) / {limit / period:g} per s, over all "
        "arrivals and over those not answered 429. max/2 s = most arrivals in any 2 s window.",
        "429s = answered 429 (share of requests). AsyncLimiter(5, 2): 5 workers, every call "
        "(logins too) inside the limiter, 1 s sleep and resend on a 429, new token on a 401. "
        "even 0.44 s: the same script with AsyncLimiter(1, 0.44) and one worker.",
        _verdict(results),
    ]
    return Report(
        name="pacing",
        title="pacing against four server rate-limit models (5 per 2 s)",
        headers=[
            "model",
            "client",
            "issued once",
            "dupes",
            "429s",
            "requests",
            "rate (all)",
            "rate (accepted)",
            "max/2 s",
            "wall",
        ],
        rows=rows,
        notes=notes,
        data={"budget": list(BUDGET), "learners": size, "runs": results},
    )
