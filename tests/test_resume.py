"""Crashes, stops and reruns: every learner ends with the badge exactly once."""

from __future__ import annotations

import contextlib
import csv
import os
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from bulk_issuer.cli import main
from bulk_issuer.sandbox import Sandbox, SandboxConfig
from tests.conftest import child_argv, good_rows, issue_args, sandbox_thread, write_cohort

RATE = "100/1s"


@pytest.fixture(autouse=True)
def _pat(monkeypatch: pytest.MonkeyPatch) -> None:
    """A PAT in the environment, nothing else."""
    for name in ("NAVIGATR_USER", "NAVIGATR_PASS", "NAVIGATR_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NAVIGATR_PAT", "sandbox-demo-pat")


def server() -> SandboxConfig:
    """A server with a limit the client is told about and some network latency."""
    return SandboxConfig(rate=(100, 1.0), rate_model="moving", latency=(0.01, 0.04))


def kill_midway(cohort: Path, sandbox: Sandbox, after: float) -> None:
    """Start the command in a child process; SIGKILL it `after` seconds into its sending."""
    argv = child_argv(cohort, sandbox.url, "-q", "--rate", RATE)

    def issue_calls() -> int:
        return sum(1 for r in list(sandbox.requests) if r.kind == "issue")

    seen = issue_calls()
    child = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy()
    )
    deadline = time.monotonic() + 20
    # The preflight (badge check, holders) comes first: count from the first issue call.
    while issue_calls() == seen and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(after)
    child.send_signal(signal.SIGKILL)
    child.wait(10)


def sending(journal: Path) -> set[str]:
    """Learners the journal shows as sent without an answer."""
    with contextlib.closing(sqlite3.connect(journal)) as db:
        return {row[0] for row in db.execute("SELECT key FROM learners WHERE state = 'sending'")}


@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_then_rerun_issues_everyone_exactly_once(tmp_path: Path, seed: int) -> None:
    """Killed at a random instant (twice), the same command finishes with no duplicate."""
    rng = random.Random(seed)
    cohort = write_cohort(tmp_path / "cohort.csv", good_rows(150))
    with sandbox_thread(server()) as sandbox:
        kill_midway(cohort, sandbox, rng.uniform(0.05, 0.6))
        kill_midway(cohort, sandbox, rng.uniform(0.05, 0.4))
        assert 0 < sandbox.issued_by_api < 150
        status = main(issue_args(cohort, sandbox.url, "-q", "--rate", RATE))
        assert status == 0
        assert sandbox.duplicates() == {}
        assert all(sandbox.issued_count(51, f"n{i}@example.org") == 1 for i in range(150))


def test_without_the_lookup_only_the_unanswered_can_be_sent_twice(tmp_path: Path) -> None:
    """Without the lookup, learners left `sending` by the crash are reported unconfirmed,
    not sent again (exit 1, no duplicate); `--resend-unconfirmed` sends them, and only
    they risk a second issue: they are flagged in the success file.
    """
    cohort = write_cohort(tmp_path / "cohort.csv", good_rows(150))
    successes = tmp_path / "issued.csv"
    config = server()
    config.lookup = "missing"
    with sandbox_thread(config) as sandbox:
        kill_midway(cohort, sandbox, 0.4)
        unanswered = sending(tmp_path / "cohort.csv.badge-51.journal.db")
        rerun = issue_args(cohort, sandbox.url, "-q", "--rate", RATE, "--successes", str(successes))
        assert main(rerun) == (1 if unanswered else 0)
        assert sandbox.duplicates() == {}
        assert sending(tmp_path / "cohort.csv.badge-51.journal.db") == unanswered
        assert main([*rerun, "--resend-unconfirmed"]) == 0
        twice = {email for (_, email), _ in sandbox.duplicates().items()}
        assert twice <= unanswered
        assert all(sandbox.issued_count(51, f"n{i}@example.org") >= 1 for i in range(150))
    with successes.open(encoding="utf-8", newline="") as handle:
        flagged = {
            row["email"]
            for row in csv.DictReader(handle)
            if "without the server being asked" in row["note"]
        }
    assert flagged == unanswered


def test_report_counts_and_writes_results_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`report` shows counts by state and writes the success and failures files."""
    cohort = write_cohort(tmp_path / "cohort.csv", [*good_rows(5), ("Bad", "Mail", "bad@")])
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        assert main(issue_args(cohort, sandbox.url, "-q", "--rate", "none")) == 1
    capsys.readouterr()
    successes, failures = tmp_path / "ok.csv", tmp_path / "bad.csv"
    status = main(
        [
            "report",
            str(cohort),
            "--badge",
            "51",
            "--successes",
            str(successes),
            "--failures",
            str(failures),
        ]
    )
    out = capsys.readouterr().out
    assert status == 1
    assert "issued" in out
    assert "5" in out
    assert len(successes.read_text(encoding="utf-8").splitlines()) == 6
    bad = failures.read_text(encoding="utf-8")
    assert "bad@" in bad
    assert "reason" in bad.splitlines()[0]


def test_a_second_run_on_the_same_journal_is_refused(tmp_path: Path) -> None:
    """While one run holds the journal, another is told so instead of sending in parallel."""
    from bulk_issuer import Journal

    path = tmp_path / "run.db"
    with Journal(path), pytest.raises(ValueError, match="in use by another run"):
        Journal(path)
    Journal(path).close()  # free again once the first is closed


def test_a_journal_kept_against_one_server_is_refused_against_another(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's rehearsal: issued on sandbox A, then the same command against a fresh
    server B with the same default journal. B must not be told "done earlier": the run
    (and its dry run) is refused before anything is sent, naming both servers and
    --journal; with another journal, B issues every learner."""
    cohort = write_cohort(tmp_path / "cohort.csv", good_rows(5))
    journal = tmp_path / "cohort.csv.badge-51.journal.db"
    with sandbox_thread(SandboxConfig(rate=None)) as a:
        assert main(issue_args(cohort, a.url, "-q", "--rate", "none")) == 0
        first = a.url
    capsys.readouterr()
    before = journal.read_bytes()
    with sandbox_thread(SandboxConfig(rate=None)) as b:
        assert b.url != first
        for extra in ([], ["--dry-run"]):
            status = main(issue_args(cohort, b.url, "--rate", "none", *extra))
            err = capsys.readouterr().err
            assert status == 2, err
            assert first.replace("http://", "") in err
            assert b.url.replace("http://", "") in err
            assert "--journal" in err
        assert list(b.requests) == []
        assert journal.read_bytes() == before
        other = str(tmp_path / "real.db")
        assert main(issue_args(cohort, b.url, "-q", "--rate", "none", "--journal", other)) == 0
        assert all(b.issued_count(51, f"n{i}@example.org") == 1 for i in range(5))


def test_the_same_server_spelled_otherwise_resumes(tmp_path: Path) -> None:
    """`http://127.0.0.1:PORT/v1/` is the server the journal was kept against: no refusal.
    A journal from before the server was recorded takes the one it is run with."""
    cohort = write_cohort(tmp_path / "cohort.csv", good_rows(3))
    journal = tmp_path / "cohort.csv.badge-51.journal.db"
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        assert main(issue_args(cohort, sandbox.url, "-q", "--rate", "none")) == 0
        with contextlib.closing(sqlite3.connect(journal)) as db, db:
            db.execute("DELETE FROM meta WHERE name = 'base_url'")  # as an older run left it
        assert main(issue_args(cohort, sandbox.url + "/v1/", "-q", "--rate", "none")) == 0
        assert sandbox.duplicates() == {}
    with sandbox_thread(SandboxConfig(rate=None)) as other:
        assert main(issue_args(cohort, other.url, "-q", "--rate", "none")) == 2
        assert list(other.requests) == []
