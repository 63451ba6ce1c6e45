"""The command line as a person uses it, against the sandbox on a real socket."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bulk_issuer.cli import main
from bulk_issuer.sandbox import Sandbox, SandboxConfig
from tests.conftest import child_argv, good_rows, issue_args, sandbox_thread, write_cohort

PAT = "sandbox-demo-pat"
USER, PASSWORD = "demo@example.com", "demo-password"
FAST = ["--rate", "none"]


@pytest.fixture
def pat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials as a user sets them: a PAT in the environment."""
    for name in ("NAVIGATR_USER", "NAVIGATR_PASS", "NAVIGATR_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NAVIGATR_PAT", PAT)


def exit_status(argv: list[str]) -> int:
    """The status `bulk-issuer ARGV` exits with (argparse exits by itself on bad arguments)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def unlimited() -> SandboxConfig:
    """A sandbox without a rate limit, so that CLI tests take milliseconds."""
    return SandboxConfig(rate=None)


def issue_count(sandbox: Sandbox) -> int:
    """Issue calls the sandbox received."""
    return sum(1 for r in sandbox.requests if r.kind == "issue")


@pytest.mark.usefixtures("pat_env")
def test_issue_then_rerun_resumes_without_resending(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 0 with a summary; the same command again skips everyone and sends nothing."""
    cohort = write_cohort(tmp_path / "cohort.csv", good_rows(8))
    with sandbox_thread(unlimited()) as sandbox:
        args = issue_args(cohort, sandbox.url, *FAST)
        assert main(args) == 0
        out = capsys.readouterr().out
        assert "issued" in out
        assert "8" in out
        calls = issue_count(sandbox)
        assert main(args) == 0
        assert issue_count(sandbox) == calls == 8
    assert re.search(r"done earlier\s+8", capsys.readouterr().out)
    assert (tmp_path / "cohort.csv.badge-51.journal.db").exists()


@pytest.mark.usefixtures("pat_env")
def test_bad_rows_are_named_by_row_and_the_rest_issued(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Invalid and duplicate rows: named by row number, in the failures file, exit 1."""
    rows = [
        *good_rows(3),
        ("", "NoFirst", "x@example.org"),
        ("Bad", "Mail", "bad@"),
        ("Dup", "E", "N0@example.org"),
    ]
    cohort = write_cohort(tmp_path / "cohort.csv", rows)
    failures = tmp_path / "failures.csv"
    with sandbox_thread(unlimited()) as sandbox:
        status = main(issue_args(cohort, sandbox.url, "--failures", str(failures), *FAST))
        assert issue_count(sandbox) == 3
    captured = capsys.readouterr()
    assert status == 1
    for row in ("row 5", "row 6", "row 7"):
        assert row in captured.err
    assert "duplicate of row 2" in captured.err
    assert "Traceback" not in captured.err + captured.out
    with failures.open(encoding="utf-8", newline="") as handle:
        written = list(csv.DictReader(handle))
    assert [r["row"] for r in written] == ["5", "6", "7"]
    assert all(r["reason"] for r in written)


@pytest.mark.usefixtures("pat_env")
def test_dry_run_sends_no_issue_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--dry-run validates and reports, and the server sees no issue call."""
    cohort = write_cohort(tmp_path / "cohort.csv", [*good_rows(3), ("Bad", "Mail", "bad@")])
    with sandbox_thread(unlimited()) as sandbox:
        status = main(
            ["issue", str(cohort), "--badge", "51", "--base-url", sandbox.url, "--dry-run"]
        )
        assert [r for r in sandbox.requests if r.kind == "issue"] == []
    captured = capsys.readouterr()
    assert status == 1
    assert "row 5" in captured.err
    assert "would issue" in captured.out


@pytest.mark.usefixtures("pat_env")
def test_unknown_badge_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A badge the server does not know stops the job with exit 3 after one issue call."""
    cohort = write_cohort(tmp_path / "cohort.csv", good_rows(20))
    with sandbox_thread(unlimited()) as sandbox:
        status = main(["issue", str(cohort), "--badge", "9999", "--base-url", sandbox.url, "--yes"])
        assert issue_count(sandbox) <= 1
    captured = capsys.readouterr()
    assert status == 3
    assert "9999" in captured.err
    assert "not found" in captured.err
    assert "Traceback" not in captured.err


def test_wrong_password_exits_3_quickly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused login stops in seconds after at most 3 token calls, exit 3, no traceback."""
    monkeypatch.delenv("NAVIGATR_PAT", raising=False)
    monkeypatch.setenv("NAVIGATR_USER", USER)
    monkeypatch.setenv("NAVIGATR_PASS", "not-the-password")
    cohort = write_cohort(tmp_path / "cohort.csv", good_rows(5))
    with sandbox_thread(unlimited()) as sandbox:
        started = time.monotonic()
        status = main(["issue", str(cohort), "--badge", "51", "--base-url", sandbox.url, "--yes"])
        assert time.monotonic() - started < 5
        assert sandbox.token_calls <= 3
        assert issue_count(sandbox) == 0
    captured = capsys.readouterr()
    assert status == 3
    assert "NAVIGATR_PASS" in captured.err
    assert "not-the-password" not in captured.err + captured.out


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--badge", "51"], {}, "NAVIGATR_PAT"),
        (
            ["--badge", "51", "--base-url", "http://api.example.org"],
            {"NAVIGATR_PAT": "x"},
            "http://",
        ),
        (["--badge", "51", "--rate", "fast"], {"NAVIGATR_PAT": "x"}, "5/2s"),
        (["--badge", "abc"], {"NAVIGATR_PAT": "x"}, "badge"),
        (["--badge", "9223372036854775808"], {"NAVIGATR_PAT": "x"}, "at most 15 digits"),
        (
            ["--badge", "1000000000000000", "--base-url", "http://127.0.0.1:9"],
            {"NAVIGATR_PAT": "x"},
            "at most 15 digits",
        ),
        (["--badge", "51", "--workers", "100000"], {"NAVIGATR_PAT": "x"}, "at most 1000"),
        (["--badge", "51"], {"NAVIGATR_PAT": "pat\x01pat"}, "control character"),
    ],
)
def test_usage_errors_exit_2_without_sending(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    """Missing credentials, plain http to a remote host, a bad rate, badge (or one of more
    than 15 digits, as a badge_id column) or number of workers, a PAT no header can carry:
    exit 2."""
    for name in ("NAVIGATR_PAT", "NAVIGATR_USER", "NAVIGATR_PASS", "NAVIGATR_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cohort = write_cohort(tmp_path / "cohort.csv", good_rows(2))
    assert exit_status(["issue", str(cohort), *argv, "--yes"]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.usefixtures("pat_env")
def test_unreadable_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing file or a file without the required columns: exit 2, clear message."""
    assert main(["issue", str(tmp_path / "nope.csv"), "--badge", "51", "--yes"]) == 2
    assert "nope.csv" in capsys.readouterr().err
    odd = tmp_path / "odd.csv"
    odd.write_text("Name,Mail\nAnn,ann@example.org\n", encoding="utf-8")
    assert main(["issue", str(odd), "--badge", "51", "--yes"]) == 2
    err = capsys.readouterr().err
    assert "first name" in err.lower()
    assert "--map" in err
    assert "Traceback" not in err


def test_no_secret_reaches_any_output_or_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Password and tokens appear in no output, log, journal or results file, at -vv."""
    monkeypatch.delenv("NAVIGATR_PAT", raising=False)
    monkeypatch.setenv("NAVIGATR_USER", USER)
    monkeypatch.setenv("NAVIGATR_PASS", PASSWORD)
    rows = [*good_rows(10), ("Bad", "Mail", "bad@")]
    cohort = write_cohort(tmp_path / "cohort.csv", rows)
    config = SandboxConfig(token_ttl=2.0, fault_rate=0.1, token_fault_rate=0.3, seed=4, rate=None)
    with sandbox_thread(config) as sandbox:
        main(
            issue_args(
                cohort,
                sandbox.url,
                "-vv",
                "--log",
                str(tmp_path / "log.jsonl"),
                "--failures",
                str(tmp_path / "f.csv"),
                "--successes",
                str(tmp_path / "s.csv"),
                *FAST,
            )
        )
        tokens = sandbox.tokens.issued()
    captured = capsys.readouterr()
    texts = [captured.out, captured.err]
    texts += [p.read_bytes().decode("utf-8", "replace") for p in tmp_path.iterdir() if p.is_file()]
    assert tokens
    for secret in [PASSWORD, *tokens]:
        assert not any(secret in text for text in texts)


@pytest.mark.usefixtures("pat_env")
def test_sigint_stops_cleanly_and_the_rerun_finishes(tmp_path: Path) -> None:
    """Ctrl-C: exit 130 within seconds, journal consistent; the rerun issues the rest once."""
    cohort = write_cohort(tmp_path / "cohort.csv", good_rows(40))
    with sandbox_thread(SandboxConfig(rate=(20, 1.0))) as sandbox:
        argv = child_argv(cohort, sandbox.url, "--rate", "10/1s", "-q")
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy()
        )
        time.sleep(0.8)
        process.send_signal(signal.SIGINT)
        started = time.monotonic()
        _, err = process.communicate(timeout=10)
        assert time.monotonic() - started < 5
        assert process.returncode == 130, err
        assert 0 < issue_count(sandbox) < 40
        assert main(issue_args(cohort, sandbox.url, "-q", *FAST)) == 0
        assert sandbox.duplicates() == {}
        assert all(sandbox.issued_count(51, f"n{i}@example.org") == 1 for i in range(40))


@pytest.mark.parametrize("device", ["/dev/null", "folder"])
def test_a_journal_that_is_not_a_regular_file_is_refused_leaving_nothing(
    device: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--journal /dev/null (or a folder): refused before anything is read or sent (exit 2),
    and SQLite leaves no `/dev/null-journal` beside it."""
    cohort = write_cohort(tmp_path / "c.csv", good_rows(1))
    journal = device if device.startswith("/") else str(tmp_path)
    before = set(os.listdir(os.path.dirname(journal) or "."))
    argv = ["issue", str(cohort), "--badge", "51", "--journal", journal, "--yes"]
    argv += ["--base-url", "http://127.0.0.1:9", "--rate", "none"]
    assert main(argv) == 2
    assert "not a regular file" in capsys.readouterr().err
    assert set(os.listdir(os.path.dirname(journal) or ".")) == before
