"""Per-row badges (a `badge_id` column): every badge the file names is checked before the
prompt, as the run's badge is. A row's badge that the API does not know (404) or forbids
(403) fails that badge's rows, naming the badge and the rows, and the run goes on with the
others; a rerun does not stop on it either. The plan counts the holders of every badge.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from bulk_issuer.cli import main
from bulk_issuer.sandbox import SandboxConfig
from tests.conftest import issue_args, issue_count, only_pat, sandbox_thread

FAST = ["--rate", "none", "--coordinator", "memory"]


@pytest.fixture(autouse=True)
def _pat(monkeypatch: pytest.MonkeyPatch) -> None:
    only_pat(monkeypatch)


def write(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    """A cohort with a badge_id column: (first name, email, badge or "" for --badge)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["First Name", "Email", "badge_id"])
        writer.writerows(rows)
    return path


# Row 3 names a badge the server does not know, row 6 one it forbids (the sandbox's 403).
ROWS = [
    ("Ann", "a@example.org", ""),
    ("Ben", "b@example.org", "9999"),
    ("Cai", "c@example.org", ""),
    ("Dee", "d@example.org", "3425"),
    ("Eve", "e@example.org", "403"),
]
GOOD = [(51, "a@example.org"), (51, "c@example.org"), (3425, "d@example.org")]


def failures_of(path: Path) -> dict[str, str]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return {line["row"]: line["reason"] for line in csv.DictReader(handle)}


@pytest.mark.parametrize("workers", ["1", "4"])
def test_a_row_badge_the_api_refuses_fails_its_rows_and_the_run_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], workers: str
) -> None:
    """Said before anything is sent, naming the badge and its rows; the good rows issued
    once; the rerun sends nothing more and does not stop (it used to stop at exit 3 on
    every rerun, with --workers 1 before any good row after the bad one)."""
    cohort = write(tmp_path / "cohort.csv", ROWS)
    failures = tmp_path / "cohort.failures.csv"
    args = issue_args(cohort, "", *FAST, "--workers", workers)
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        args[args.index("--base-url") + 1] = sandbox.url
        dry = main([*args, "--dry-run"])
        dry_out = capsys.readouterr()
        assert issue_count(sandbox) == 0
        first = main(args)
        first_out = capsys.readouterr()
        after_first = sorted((a["badge_id"], a["recipient_email"]) for a in sandbox.assertions)
        first_failures = failures_of(failures)
        again = main(args)
        again_out = capsys.readouterr()
        issued = sorted((a["badge_id"], a["recipient_email"]) for a in sandbox.assertions)
        issue_badges = {r.path for r in sandbox.requests if r.kind == "issue"}
    # Before the prompt (and in a dry run): the refused badges, each with its rows.
    assert dry == 1
    for out in (dry_out, first_out):
        assert "of a refused badge: 2" in out.err
        assert "badge 9999 is not found (HTTP 404): Badge not found: row 3" in out.err
        assert "badge 403 is not permitted for these credentials (HTTP 403)" in out.err
        assert "to send: 3" in out.err
    assert re.search(r"would fail +2 ", dry_out.out)
    # Each learner of a good badge issued once; no issue call for a refused badge.
    assert after_first == issued == GOOD
    assert not any("/9999/" in path or "/403/" in path for path in issue_badges)
    for status, out in ((first, first_out), (again, again_out)):
        assert status == 1  # some rows failed: not a stop (3)
        assert "stopped" not in out.err
        assert "row 3 b@example.org: failed: badge 9999 is not found" in out.err
        assert "row 6 e@example.org: failed: badge 403 is not permitted" in out.err
    # The failures file names the badge for its rows, not "not attempted: rerun".
    for reasons in (first_failures, failures_of(failures)):
        assert set(reasons) == {"3", "6"}
        assert reasons["3"].startswith("badge 9999 is not found (HTTP 404)")
        assert reasons["6"].startswith("badge 403 is not permitted")
    assert "to send: 0" in again_out.err
    assert "done earlier: 3" in again_out.err


def test_the_plan_counts_the_holders_of_every_badge_the_file_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Learners holding a row's own badge are counted as already holding before the
    prompt, as the run then finds them (the plan said "to send: 2" and sent 0)."""
    earlier = write(tmp_path / "earlier.csv", [("Pa", "pa@example.org", "3425")])
    cohort = write(
        tmp_path / "cohort.csv",
        [
            ("Pa", "pa@example.org", "3425"),
            ("Pb", "pb@example.org", "3425"),
            ("Pc", "pc@example.org", ""),
        ],
    )
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        assert main(issue_args(earlier, sandbox.url, *FAST, "-q")) == 0
        capsys.readouterr()
        assert main(issue_args(cohort, sandbox.url, *FAST, "--dry-run")) == 0
        plan = capsys.readouterr().err
        assert main(issue_args(cohort, sandbox.url, *FAST)) == 0
        run = capsys.readouterr().err
        issued = sorted((a["badge_id"], a["recipient_email"]) for a in sandbox.assertions)
    for out in (plan, run):
        assert "already holding: 1\n" in out
        assert "to send: 2" in out
    assert issued == [(51, "pc@example.org"), (3425, "pa@example.org"), (3425, "pb@example.org")]
