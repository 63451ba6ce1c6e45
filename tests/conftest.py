"""Shared fixtures and helpers: structlog reset, window counting, a sandbox in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import inspect
import math
import sys
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog

from bulk_issuer.sandbox import Sandbox, SandboxConfig, run_sandbox


@pytest.fixture(autouse=True)
def _own_data_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test's runs share budgets and claims in a folder of their own, not in the user's
    data directory (where `platformdirs` puts the local coordination store), nor with the
    test before: a sandbox started on the port an earlier one had is the same account, and
    that test's learners, settled a moment ago, would read as done by another run."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))


@pytest.fixture(autouse=True)
def _in_process_under_fake_time(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fake loop time cannot move the clock other processes share: a test on it keeps its
    budget and claims in the process (`BadgeIssuer`'s default when told so by the env)."""
    if request.node.get_closest_marker("looptime") is not None:
        monkeypatch.setenv("BULK_ISSUER_COORDINATOR", "memory")


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """Each test starts with structlog's default configuration."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _own_event_loop_for_sync_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    """Give a sync test a loop we close, so the one looptime's plugin asks for is not leaked.

    (looptime calls `get_event_loop()` for every test, which creates an orphan loop for a
    sync test on Python 3.11; a CLI test's `anyio.run` then drops it unclosed.)
    """
    if inspect.iscoroutinefunction(request.function):
        yield
        return
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield
    finally:
        loop.close()
        asyncio.set_event_loop(None)


def most_in_window(times: Sequence[float], period: float) -> int:
    """The most events that fall in any closed window of `period` seconds."""
    ordered = sorted(times)
    most, start = 0, 0
    for end, t in enumerate(ordered):
        while t - ordered[start] > period:
            start += 1
        most = max(most, end - start + 1)
    return most


def most_in_server_windows(
    times: Sequence[float], model: str, requests: int, period: float
) -> float:
    """The most requests the server's own windows held, counted from its arrival log.

    Fixed windows (aligned at multiples of the period, as the sandbox's) count what fell
    in each; a token bucket, what any stretch drew beyond what it refilled meanwhile; a
    sliding-window counter, its weighted count with each request in it; a moving window,
    any window of `period` seconds. At most `requests`, whatever the model, if no window
    was overfilled.
    """
    ordered = sorted(times)
    if model == "fixed":
        windows = Counter(math.floor(t / period + 1e-9) for t in ordered)
        return max(windows.values(), default=0)
    if model == "bucket":
        refill = requests / period
        return max(
            (
                (j - i + 1) - (ordered[j] - ordered[i]) * refill
                for i in range(len(ordered))
                for j in range(i, len(ordered))
            ),
            default=0.0,
        )
    if model == "sliding":
        # The previous window weighs as much as it still overlaps the one ending now.
        counts: Counter[int] = Counter()
        most = 0
        for t in ordered:
            window = math.floor(t / period + 1e-9)
            weight = (period - (t - window * period)) / period
            weighted = counts[window - 1] * weight + counts[window]
            most = max(most, math.floor(weighted + 1e-9) + 1)
            counts[window] += 1
        return most
    return most_in_window(ordered, period)


#: The sandbox's PAT.
SANDBOX_PAT = "sandbox-demo-pat"


def only_pat(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sandbox's PAT in the environment, and no other credential or base URL (for a
    command-line test's autouse fixture)."""
    for name in ("NAVIGATR_USER", "NAVIGATR_PASS", "NAVIGATR_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NAVIGATR_PAT", SANDBOX_PAT)


def issue_count(sandbox: Sandbox) -> int:
    """Issue calls the sandbox received."""
    return sum(1 for r in list(sandbox.requests) if r.kind == "issue")


def write_cohort(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    """A Navigatr-template CSV."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["First Name", "Last Name", "Email"])
        writer.writerows(rows)
    return path


def good_rows(n: int) -> list[tuple[str, str, str]]:
    """n valid learners."""
    return [(f"Nguyễn{i}", "Văn", f"n{i}@example.org") for i in range(n)]


def issue_args(cohort: Path, url: str, *extra: str) -> list[str]:
    """`bulk-issuer issue` arguments for badge 51 against `url`, without asking."""
    return ["issue", str(cohort), "--badge", "51", "--base-url", url, "--yes", *extra]


def child_argv(cohort: Path, url: str, *extra: str) -> list[str]:
    """The same, as a command line for a child process."""
    return [sys.executable, "-m", "bulk_issuer", *issue_args(cohort, url, *extra)]


@contextlib.contextmanager
def sandbox_thread(config: SandboxConfig | None = None) -> Iterator[Sandbox]:
    """A sandbox on a loopback socket, served from a thread, for tests that run the CLI."""
    ready = threading.Event()
    box: dict[str, Any] = {}
    loop = asyncio.new_event_loop()

    async def serve() -> None:
        box["stop"] = asyncio.Event()
        async with run_sandbox(config or SandboxConfig()) as sandbox:
            box["sandbox"] = sandbox
            ready.set()
            await box["stop"].wait()

    def run() -> None:
        try:
            loop.run_until_complete(serve())
        finally:
            loop.close()
            ready.set()

    thread = threading.Thread(target=run, name="sandbox", daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield box["sandbox"]
    finally:
        loop.call_soon_threadsafe(box["stop"].set)
        thread.join(10)
