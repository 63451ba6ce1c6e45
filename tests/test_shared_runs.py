"""Several runs of one account at once, through the command line in separate processes:
one machine (the local store, no set-up) and three "hosts" on one Redis.

Every run gets `--rate 20/1s` against a sandbox that allows exactly that (moving window,
5-20 ms of latency), so a run that paced itself alone would draw 429s as soon as a second
one ran. Each test takes a few seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulk_issuer.sandbox import Sandbox, SandboxConfig
from tests.conftest import child_argv, good_rows, sandbox_thread, write_cohort
from tests.redis_server import RedisServer, own_redis, redis_server, redis_url  # noqa: F401

RATE = "20/1s"
PAT = "sandbox-demo-pat"


def strict_server() -> SandboxConfig:
    """The limit the runs are told, enforced as a moving window, with some latency."""
    return SandboxConfig(rate=(20, 1.0), rate_model="moving", latency=(0.005, 0.02))


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A strict sandbox for this test."""
    with sandbox_thread(strict_server()) as running:
        yield running


def rows(start: int, n: int) -> list[tuple[str, str, str]]:
    """n learners numbered from `start`."""
    return [(f"Ana{i}", "Lima", f"a{i}@example.org") for i in range(start, start + n)]


def start(
    cohort: Path, sandbox: Sandbox, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`bulk-issuer issue` in a child process; what it prints goes to a file beside FILE."""
    child_env = {**os.environ, "NAVIGATR_PAT": PAT, **(env or {})}
    log = cohort.with_suffix(f".{time.monotonic_ns()}.out")
    with log.open("wb") as handle:
        child = subprocess.Popen(
            child_argv(cohort, sandbox.url, "-q", "--rate", RATE, *extra),
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=child_env,
        )
    _LOGS[child.pid] = log
    return child


_LOGS: dict[int, Path] = {}


def finish(children: list[subprocess.Popen[bytes]]) -> list[int]:
    """Wait for every child; their exit statuses."""
    statuses = []
    for child in children:
        try:
            child.wait(60)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        statuses.append(child.returncode)
    return statuses


def output(children: list[subprocess.Popen[bytes]]) -> str:
    """Everything the children printed."""
    return "\n---\n".join(_LOGS[child.pid].read_text(errors="replace") for child in children)


def issue_calls(sandbox: Sandbox) -> int:
    """Issue calls that reached the sandbox so far."""
    return sum(1 for r in list(sandbox.requests) if r.kind == "issue")


def host(tmp_path: Path, name: str) -> dict[str, str]:
    """The environment of a separate "host": its own home and data directories."""
    home = tmp_path / name
    (home / "data").mkdir(parents=True)
    return {"HOME": str(home), "XDG_DATA_HOME": str(home / "data")}


def cohorts(tmp_path: Path, n: int, *, copies: bool, size: int) -> list[Path]:
    """n cohort files: copies of one cohort under different names, or n different ones."""
    return [
        write_cohort(tmp_path / f"cohort-{i}.csv", rows(0 if copies else i * size, size))
        for i in range(n)
    ]


def assert_everyone_once(sandbox: Sandbox, emails: set[str]) -> None:
    """Every learner holds the badge, and nobody twice."""
    assert sandbox.duplicates() == {}
    assert all(sandbox.issued_count(51, email) == 1 for email in emails)


@pytest.mark.parametrize(
    ("runs", "copies"),
    [(2, False), (2, True), (4, False), (4, True)],
    ids=["2-cohorts", "2-copies", "4-cohorts", "4-copies"],
)
def test_concurrent_runs_on_one_machine_share_budget_and_claims(
    tmp_path: Path, sandbox: Sandbox, runs: int, copies: bool
) -> None:
    """Runs at once on one machine, with no set-up: 0 duplicates, at most one 429, each exit 0."""
    size = 40 if copies else 80 // runs
    files = cohorts(tmp_path, runs, copies=copies, size=size)
    children = [start(cohort, sandbox) for cohort in files]
    statuses = finish(children)
    assert statuses == [0] * runs, output(children)
    emails = {email for cohort in files for _, _, email in _read(cohort)}
    assert_everyone_once(sandbox, emails)
    assert sandbox.rejected_429 <= 1


def test_three_hosts_on_one_redis(tmp_path: Path, sandbox: Sandbox, redis_url: str) -> None:  # noqa: F811
    """Three "hosts" (own home and data directories) running copies of one cohort and one
    other cohort through one Redis: 0 duplicates, at most one 429."""
    files = [
        write_cohort(tmp_path / "a.csv", rows(0, 30)),
        write_cohort(tmp_path / "b.csv", rows(0, 30)),
        write_cohort(tmp_path / "c.csv", rows(30, 20)),
    ]
    # Two take the URL from the flag, one from the environment.
    children = [
        start(files[0], sandbox, "--coordinator", redis_url, env=host(tmp_path, "h0")),
        start(files[1], sandbox, "--coordinator", redis_url, env=host(tmp_path, "h1")),
        start(
            files[2],
            sandbox,
            env={**host(tmp_path, "h2"), "BULK_ISSUER_COORDINATOR": redis_url},
        ),
    ]
    assert finish(children) == [0, 0, 0], output(children)
    assert_everyone_once(sandbox, {f"a{i}@example.org" for i in range(50)})
    assert sandbox.rejected_429 <= 1


def test_kill_9_of_one_run_leaves_the_others_finishing(tmp_path: Path, sandbox: Sandbox) -> None:
    """Three runs of copies of one cohort; one is killed (SIGKILL) mid-way: the other two
    finish (its claims do not block them), and its rerun completes, with no duplicate."""
    files = cohorts(tmp_path, 3, copies=True, size=60)
    children = [start(cohort, sandbox) for cohort in files]
    deadline = time.monotonic() + 30
    while issue_calls(sandbox) < 15 and time.monotonic() < deadline:
        time.sleep(0.01)
    children[0].send_signal(signal.SIGKILL)
    children[0].wait()
    assert finish(children[1:]) == [0, 0], output(children[1:])
    rerun = start(files[0], sandbox)
    assert finish([rerun]) == [0], output([rerun])
    assert_everyone_once(sandbox, {f"a{i}@example.org" for i in range(60)})
    assert sandbox.rejected_429 <= 1


def test_redis_stopped_mid_run_loses_nothing(
    tmp_path: Path,
    sandbox: Sandbox,
    own_redis: RedisServer,  # noqa: F811
) -> None:
    """Redis stops mid-run: both runs stop taking learners and exit 4, nothing is sent
    twice; with Redis back (empty), the reruns complete."""
    files = cohorts(tmp_path, 2, copies=True, size=60)
    coordinator = ("--coordinator", own_redis.url)
    children = [
        start(cohort, sandbox, *coordinator, env=host(tmp_path, f"h{i}"))
        for i, cohort in enumerate(files)
    ]
    deadline = time.monotonic() + 30
    while issue_calls(sandbox) < 15 and time.monotonic() < deadline:
        time.sleep(0.01)
    own_redis.stop()
    statuses = finish(children)
    text = output(children)
    assert statuses == [4, 4], text
    assert "coordinator redis://127.0.0.1" in text
    assert sandbox.duplicates() == {}
    sent = issue_calls(sandbox)
    assert sent < 60
    own_redis.start()
    reruns = [
        start(cohort, sandbox, *coordinator, env={"XDG_DATA_HOME": str(tmp_path / f"h{i}")})
        for i, cohort in enumerate(files)
    ]
    assert finish(reruns) == [0, 0], output(reruns)
    assert_everyone_once(sandbox, {f"a{i}@example.org" for i in range(60)})


def test_redis_unreachable_at_start_sends_nothing(tmp_path: Path, sandbox: Sandbox) -> None:
    """An unreachable coordinator: a clear error naming it (never its password), exit 4,
    and not one request to the API."""
    cohort = write_cohort(tmp_path / "cohort.csv", good_rows(5))
    child = start(cohort, sandbox, "--coordinator", "redis://:s3cret@127.0.0.1:1/0")
    assert finish([child]) == [4]
    text = output([child])
    assert "coordinator redis://127.0.0.1:1/0" in text
    assert "s3cret" not in text
    assert list(sandbox.requests) == []


def _read(cohort: Path) -> list[tuple[str, str, str]]:
    import csv

    with cohort.open(encoding="utf-8", newline="") as handle:
        return [(r["First Name"], r["Last Name"], r["Email"]) for r in csv.DictReader(handle)]
