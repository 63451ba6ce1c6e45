"""Concurrent runs of one account: 1, 2 and 4 command-line runs at once, each its own
process, against one sandbox that enforces the limit they are told.

Three ways to run them: today's uncoordinated runs (`--coordinator memory`, each run
paces itself to the whole limit), the local store (the default: every run on this
machine shares one budget and one claim ledger), and Redis (`--coordinator redis://...`,
each run a separate "host" with its own home and data directories). The server counts
everything: the combined share of the limit its accepted requests used, the 429s, and
learners issued twice (two copies of one cohort under different file names).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import BADGE, DEMO_PAT, Report, server_counts
from bulk_issuer.sandbox import SandboxConfig, run_sandbox
from tests.redis_server import RedisServer, find_redis_server

__all__ = ["run"]

BUDGET = (20, 1.0)
LATENCY = (0.005, 0.02)
MODES = ("uncoordinated", "local store", "Redis")


def _write_cohort(path: Path, emails: list[str]) -> Path:
    lines = ["First Name,Last Name,Email", *(f"Ada,Lovelace,{e}" for e in emails)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def _scenario(
    mode: str, runs: int, copies: bool, total: int, folder: Path, redis_url: str | None
) -> dict[str, Any]:
    """One scenario on a fresh sandbox: `runs` CLI processes at once."""
    size = total if copies else total // runs
    cohorts = []
    for i in range(runs):
        first = 0 if copies else i * size
        emails = [f"c{j}@example.com" for j in range(first, first + size)]
        cohorts.append(_write_cohort(folder / f"cohort-{i}.csv", emails))
    everyone = {f"c{j}@example.com" for j in range(size if copies else size * runs)}
    config = SandboxConfig(rate=BUDGET, rate_model="moving", latency=LATENCY, seed=3)
    async with run_sandbox(config) as sandbox:
        children = []
        started = time.perf_counter()
        for i, cohort in enumerate(cohorts):
            env = {**os.environ, "NAVIGATR_PAT": DEMO_PAT}
            # Uncoordinated and Redis runs are separate "hosts"; local ones share a machine.
            data = folder / ("machine" if mode == "local store" else f"host-{i}")
            env["XDG_DATA_HOME"] = str(data)
            extra = {"uncoordinated": ["--coordinator", "memory"], "local store": []}.get(
                mode, ["--coordinator", redis_url or ""]
            )
            argv = [
                sys.executable,
                *("-m", "bulk_issuer", "issue", str(cohort), "--badge", str(BADGE)),
                *("--base-url", sandbox.url, "--yes", "-q", "--rate", f"{BUDGET[0]}/1s"),
                *extra,
            ]
            children.append(
                await asyncio.create_subprocess_exec(
                    *argv,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                    env=env,
                )
            )
        statuses = [await child.wait() for child in children]
        wall = time.perf_counter() - started
        counts = server_counts(sandbox, everyone, BUDGET)
    return {
        "mode": mode,
        "runs": runs,
        "copies": copies,
        "learners": len(everyone),
        "exit": statuses,
        "wall": wall,
        "server": counts.as_dict(),
    }


async def _all(total: int, with_redis: str | None) -> list[dict[str, Any]]:
    results = []
    for copies in (False, True):
        for runs in (1, 2, 4) if not copies else (2,):
            for mode in MODES:
                if mode == "Redis" and with_redis is None:
                    continue
                with tempfile.TemporaryDirectory(prefix="bulk-issuer-bench-") as folder:
                    results.append(
                        await _scenario(mode, runs, copies, total, Path(folder), with_redis)
                    )
    return results


def run(quick: bool) -> Report:
    """Run every scenario; `quick` halves the cohorts."""
    total = 60 if quick else 120
    binary = find_redis_server()
    server = RedisServer(binary) if binary else None
    if server is not None:
        server.start()
    try:
        results = asyncio.run(_all(total, server.url if server else None))
    finally:
        if server is not None:
            server.close()
    rows = []
    for r in results:
        s = r["server"]
        what = f"{r['runs']} copies of one cohort" if r["copies"] else f"{r['runs']} cohorts"
        rows.append(
            [
                what,
                r["mode"],
                f"{s['issued_once']}/{r['learners']}",
                str(s["duplicates"]),
                str(s["rejected_429"]),
                f"{s['rate_accepted'] * 100:.1f}%",
                str(s["most_in_window"]),
                f"{r['wall']:.1f} s",
                ",".join(str(code) for code in r["exit"]),
            ]
        )
    limit, period = BUDGET
    notes = [
        f"One sandbox per scenario: moving window of {limit} per {period:g} s, "
        f"{LATENCY[0] * 1000:g}-{LATENCY[1] * 1000:g} ms latency; every run is a "
        f"`bulk-issuer issue --rate {limit}/1s` process; {total} learners split across the "
        "runs (or the same cohort copied under different file names).",
        "share = accepted requests (every /v1 request: the badge check, lookups, issue "
        "calls) per second, first to last, over the limit; most = the most arrivals in any "
        "window of the period; issued = learners holding the badge exactly once; duplicates "
        "= assertions beyond the first.",
        "uncoordinated = `--coordinator memory` with separate data directories (today's "
        "behaviour); local store = the default, one machine; Redis = `--coordinator "
        "redis://...`, each run with its own home and data directories.",
    ]
    if server is None:
        notes.append("No redis-server was found: the Redis rows are left out.")
    return Report(
        name="coordination",
        title="Concurrent runs of one account: combined share of the limit, 429s, duplicates",
        headers=["runs", "coordination", "issued", "dups", "429s", "share", "most", "time", "exit"],
        rows=rows,
        notes=notes,
        data={"budget": list(BUDGET), "results": results},
    )
