"""`bulk-issuer report` agrees with the run, and results paths never destroy what they name."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import pytest

from bulk_issuer.cli import main
from bulk_issuer.sandbox import Sandbox, SandboxConfig
from tests.conftest import good_rows, issue_args, sandbox_thread, write_cohort

PAT = "sandbox-demo-pat"
FAST = ["--rate", "none"]


@pytest.fixture(autouse=True)
def _pat(monkeypatch: pytest.MonkeyPatch) -> None:
    """A PAT in the environment, nothing else."""
    for name in ("NAVIGATR_USER", "NAVIGATR_PASS", "NAVIGATR_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NAVIGATR_PAT", PAT)


def issue_count(sandbox: Sandbox) -> int:
    """Issue calls the sandbox received."""
    return sum(1 for r in list(sandbox.requests) if r.kind == "issue")


def report(*argv: str) -> tuple[int, dict[str, object]]:
    """`bulk-issuer report ARGV --json`: exit status and what it printed."""
    with contextlib.redirect_stdout(buffer := io.StringIO()):
        status = main(["report", *argv, "--json"])
    return status, json.loads(buffer.getvalue().strip().splitlines()[-1])


# -- results paths ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "clash",
    [
        lambda c: ["--successes", str(c)],
        lambda c: ["--log", str(c)],
        lambda c: ["--failures", str(c)],
        # The same file under another name: a symlink, a hard link, a path through "..".
        lambda c: ["--successes", _symlink(c)],
        lambda c: ["--log", _hardlink(c)],
        lambda c: ["--successes", str(c.parent / ".." / c.parent.name / c.name)],
    ],
    ids=["successes", "log", "failures", "symlink", "hardlink", "dotdot"],
)
def test_a_results_path_naming_the_input_is_refused_before_anything_is_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], clash: object
) -> None:
    """`issue c.csv --successes c.csv` (or --log, --failures, another name of it): exit 2,
    naming the flag and the path; nothing sent, the input untouched."""
    cohort = write_cohort(tmp_path / "c.csv", good_rows(2))
    before = cohort.read_bytes()
    extra = clash(cohort)  # type: ignore[operator]
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        assert main(issue_args(cohort, sandbox.url, *FAST, *extra)) == 2
        assert issue_count(sandbox) == 0
    err = capsys.readouterr().err
    assert extra[0] in err
    assert "is the input file" in err
    assert cohort.read_bytes() == before


def _symlink(target: Path) -> str:
    link = target.with_name("link.csv")
    link.symlink_to(target)
    return str(link)


def _hardlink(target: Path) -> str:
    link = target.with_name("hard.csv")
    os.link(target, link)
    return str(link)


def test_results_paths_naming_each_other_or_the_journal_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--successes and --failures on one path (which ended up removed), or a results path
    on the journal or its -wal: refused before anything is sent."""
    cohort = write_cohort(tmp_path / "e.csv", good_rows(1))
    journal = tmp_path / "e.csv.badge-51.journal.db"
    out = str(tmp_path / "out.csv")
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        for extra in (
            ["--successes", out, "--failures", out],
            ["--log", out, "--successes", out],
            ["--successes", str(journal)],
            ["--log", f"{journal}-wal"],
        ):
            assert main(issue_args(cohort, sandbox.url, *FAST, *extra)) == 2, extra
            err = capsys.readouterr().err
            assert extra[-2] in err
            assert extra[-1] in err
        assert issue_count(sandbox) == 0
        assert not journal.exists()
        # A failures file fed back is still its own failures file (the README's loop).
        bad = write_cohort(tmp_path / "f.csv", [("Bad", "Mail", "bad@")])
        assert main(issue_args(bad, sandbox.url, *FAST)) == 1
        failures = tmp_path / "f.failures.csv"
        fixed = failures.read_text(encoding="utf-8").replace("bad@", "fixed@example.org")
        failures.write_text(fixed, encoding="utf-8")
        assert main(issue_args(failures, sandbox.url, *FAST, "--failures", str(failures))) == 0
        assert sandbox.issued_count(51, "fixed@example.org") == 1


def test_report_refuses_a_results_path_naming_the_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`report c2.csv --successes c2.csv` overwrote the input with the successes file."""
    cohort = write_cohort(tmp_path / "c2.csv", good_rows(1))
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        assert main(issue_args(cohort, sandbox.url, *FAST)) == 0
    before = cohort.read_bytes()
    assert main(["report", str(cohort), "--successes", str(cohort)]) == 2
    assert main(["report", str(cohort), "--failures", str(cohort)]) == 2
    journal = tmp_path / "c2.csv.badge-51.journal.db"
    assert main(["report", str(cohort), "--successes", str(journal)]) == 2
    err = capsys.readouterr().err
    assert f"--successes {cohort} is the input file" in err
    assert f"--failures {cohort} is the input file" in err
    assert "is the journal" in err
    assert cohort.read_bytes() == before
    assert report(str(cohort))[0] == 0
