"""Overhead: the engine with no rate limit next to a bare aiohttp loop, against the same server.

The sandbox runs in a process of its own (`python -m bulk_issuer sandbox --rate none`),
so this process holds only the client being measured; each measurement gets a fresh
sandbox, so none of them finds the assertions of another. The runs are CPU-bound and go
one after another, never beside anything else. Besides issues per second, the client's
own CPU time per issue is reported: it is the engine's cost even when the server, not the
client, is what limits the rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks._common import BADGE, DEMO_PAT, Report, payload, run_engine
from benchmarks._common import cohort as make_cohort
from bulk_issuer import PersonalAccessToken

__all__ = ["run"]

WORKERS = 32
#: How long the sandbox process may take to start, and to stop after SIGTERM.
_START_TIMEOUT = 20.0
_STOP_TIMEOUT = 10.0
_LISTENING = re.compile(r"sandbox listening on (http://127\.0\.0\.1:\d+)")
_TALLY = re.compile(r"sandbox stopped: (\d+) issued, (\d+) duplicate")

#: A client under test: issue to every learner through the URL, return the 200 answers.
_Client = Callable[[str, list[dict[str, str]]], Awaitable[int]]

BARE, ENGINE_OFF, ENGINE_ON = "bare aiohttp loop", "engine, journal off", "engine, journal on"
ENGINE_SHARED = "engine, journal on, local store"


@dataclass(slots=True)
class _Server:
    url: str
    issued: int | None = None
    duplicates: int | None = None


@contextlib.asynccontextmanager
async def _sandbox_process() -> AsyncIterator[_Server]:
    """A sandbox without rate limit or latency in its own process, on a free loopback port."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bulk_issuer",
        "sandbox",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--rate",
        "none",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        # It says where it listens once the socket is bound: the port accepts from then on.
        line = await asyncio.wait_for(process.stderr.readline(), _START_TIMEOUT)
        found = _LISTENING.search(line.decode(errors="replace"))
        if found is None:
            raise RuntimeError(f"the sandbox did not start: {line.decode(errors='replace')}")
        server = _Server(found.group(1))
        yield server
    finally:
        if process.returncode is None:
            process.terminate()
        try:
            _, rest = await asyncio.wait_for(process.communicate(), _STOP_TIMEOUT)
        except TimeoutError:
            process.kill()
            rest = b""
    tally = _TALLY.search(rest.decode(errors="replace"))
    if tally is not None:
        server.issued, server.duplicates = int(tally.group(1)), int(tally.group(2))


async def _bare(url: str, learners: list[dict[str, str]], *, workers: int) -> int:
    """`workers` tasks pull from one iterator and PUT each learner's body; the 200s."""
    bodies = iter([payload(row) for row in learners])
    headers = {"X-Access-Token": DEMO_PAT}
    target = f"{url}/v1/badge/{BADGE}/issue"
    ok = 0

    async def work() -> None:
        nonlocal ok
        for body in bodies:
            async with session.put(target, json=body, headers=headers) as response:
                await response.read()
                ok += response.status == 200

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(work() for _ in range(workers)))
    return ok


async def _engine(
    url: str,
    learners: list[dict[str, str]],
    *,
    workers: int,
    journal: Path | None,
    coordinator: str = "memory",
) -> int:
    summary, fatal = await run_engine(
        learners,
        base_url=url,
        auth=PersonalAccessToken(DEMO_PAT),
        rate=None,
        workers=workers,
        journal=journal,
        coordinator=coordinator,
    )
    if fatal is not None:
        raise RuntimeError(f"the engine stopped: {fatal}")
    return summary.issued


async def _measure(label: str, size: int, client: _Client) -> dict[str, Any]:
    """One run of `client` against a fresh sandbox process: wall and client CPU time."""
    learners = make_cohort(size, label.replace(" ", "").replace(",", "-"))
    async with _sandbox_process() as server:
        cpu, wall = time.process_time(), time.perf_counter()
        issued = await client(server.url, learners)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "client": label,
        "issued": issued,
        "server_issued": server.issued,
        "server_duplicates": server.duplicates,
        "wall": wall,
        "cpu": cpu,
        "per_second": issued / wall if wall > 0 else 0.0,
        "cpu_us_per_issue": cpu / max(issued, 1) * 1e6,
    }


async def _rounds(size: int, rounds: int, workers: int, work: Path) -> list[dict[str, Any]]:
    results = []
    for n in range(rounds):
        clients: dict[str, _Client] = {
            BARE: functools.partial(_bare, workers=workers),
            ENGINE_OFF: functools.partial(_engine, workers=workers, journal=None),
            ENGINE_ON: functools.partial(_engine, workers=workers, journal=work / f"{n}.db"),
            ENGINE_SHARED: functools.partial(
                _engine, workers=workers, journal=work / f"{n}-shared.db", coordinator="local"
            ),
        }
        # Rotate the order each round, so that no client always runs on a cold or warm process.
        names = list(clients)
        names = names[n % len(names) :] + names[: n % len(names)]
        for name in names:
            result = await _measure(name, size, clients[name])
            results.append({"round": n, **result})
    return results


def run(quick: bool) -> Report:
    """Run the overhead benchmark: 3,000 learners, 3 rounds (`quick`: 500, 1 round)."""
    size, rounds = (500, 1) if quick else (3000, 3)
    with tempfile.TemporaryDirectory(prefix="bulk-issuer-bench-") as work:
        results = asyncio.run(_rounds(size, rounds, WORKERS, Path(work)))
    median: dict[str, dict[str, float]] = {}
    for name in (BARE, ENGINE_OFF, ENGINE_ON, ENGINE_SHARED):
        mine = [r for r in results if r["client"] == name]
        median[name] = {
            "per_second": statistics.median(r["per_second"] for r in mine),
            "cpu_us_per_issue": statistics.median(r["cpu_us_per_issue"] for r in mine),
            "issued": min(r["issued"] for r in mine),
            "server_issued": min((r["server_issued"] or 0) for r in mine),
            "server_duplicates": max((r["server_duplicates"] or 0) for r in mine),
        }
    bare = median[BARE]
    rows = [
        [
            name,
            f"{m['per_second']:,.0f}",
            f"{m['per_second'] / bare['per_second']:.2f}x",
            f"{m['cpu_us_per_issue']:,.0f}",
            f"{m['issued']:.0f}/{size}",
            f"{m['server_issued']:.0f}",
        ]
        for name, m in median.items()
    ]
    ratio = median[ENGINE_ON]["per_second"] / bare["per_second"]
    shared = median[ENGINE_SHARED]["per_second"] / bare["per_second"]
    notes = [
        f"{size} learners, {WORKERS} concurrent workers on each side, PAT auth, no rate limit, "
        f"no latency; median of {rounds} round(s), the order rotated each round.",
        "The sandbox runs in its own process (python -m bulk_issuer sandbox --rate none), "
        "a fresh one per measurement, so this process holds only the client; both share the "
        "2 cores with it. Engine times include its one 'list holders' lookup at the start.",
        "journal off = journal=None (the engine then keeps its state in an in-memory SQLite). "
        "issues/s = 200 answers / client wall time; CPU = this process's CPU time per issue "
        "(the engine validates each learner and, with the journal, commits two SQLite "
        "writes per learner); server issued = the sandbox's own count, read when it stops.",
        "The first two engine rows run this process alone (coordinator='memory', today's "
        "behaviour before issue 12); 'local store' is the default since issue 12: every "
        "learner is also claimed and settled in the account's shared SQLite ledger, so "
        "that other runs on this machine neither send it nor exceed the budget.",
        f"target (issue 6): engine with journal on >= 0.50x the bare loop: {ratio:.2f}x, "
        + ("met" if ratio >= 0.5 else "NOT met")
        + f"; with the local store (the default): {shared:.2f}x",
    ]
    return Report(
        name="overhead",
        title="engine overhead without a rate limit, against a bare aiohttp loop",
        headers=["client", "issues/s", "vs bare", "client CPU us/issue", "issued", "server issued"],
        rows=rows,
        notes=notes,
        data={
            "learners": size,
            "workers": WORKERS,
            "rounds": rounds,
            "median": median,
            "runs": results,
        },
    )
