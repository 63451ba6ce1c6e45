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


@pytest.mark.parametrize("workers", ["1", "4"])
def test_where_the_api_cannot_say_a_row_badge_is_refused_by_its_first_issue_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], workers: str
) -> None:
    """An API that does not answer `GET /v1/badge/{id}`: the first issue call of a row's
    own badge answers 404, which fails that badge's rows only (sent once, the others not
    sent), not the run; the rerun does the same and does not stop either."""
    rows = [
        ("Ann", "a@example.org", ""),
        ("Ben", "b@example.org", "9999"),
        ("Cai", "c@example.org", ""),
        ("Bo", "bo@example.org", "9999"),
        ("Dee", "d@example.org", "3425"),
    ]
    cohort = write(tmp_path / "cohort.csv", rows)
    failures = tmp_path / "cohort.failures.csv"
    with sandbox_thread(SandboxConfig(rate=None, badge_endpoint="missing")) as sandbox:
        args = issue_args(cohort, sandbox.url, *FAST, "--workers", workers)
        statuses, outs = [], []
        for _ in range(2):
            statuses.append(main(args))
            outs.append(capsys.readouterr())
            assert set(failures_of(failures)) == {"3", "5"}
        issued = sorted((a["badge_id"], a["recipient_email"]) for a in sandbox.assertions)
        refused_sends = [r for r in sandbox.requests if r.kind == "issue" and "/9999/" in r.path]
    assert statuses == [1, 1]
    assert issued == [(51, "a@example.org"), (51, "c@example.org"), (3425, "d@example.org")]
    assert len(refused_sends) == 2  # one a run: the badge's first learner
    for reason in failures_of(failures).values():
        assert reason.startswith("badge 9999 is not found (HTTP 404): Badge not found")
    for out in outs:
        assert "stopped" not in out.err
        assert "row 3 b@example.org: failed: badge 9999 is not found" in out.err
        assert "row 5 bo@example.org: failed: badge 9999 is not found" in out.err


def test_refused_credentials_stay_fatal_when_only_rows_name_badges(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --badge, the first row badge's check meets the 401: the run stops before
    the prompt (exit 3), nothing sent, and no row is failed for its badge."""
    monkeypatch.setenv("NAVIGATR_PAT", "not-the-sandbox-pat")
    cohort = write(tmp_path / "cohort.csv", [("Ann", "a@example.org", "51")])
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        args = issue_args(cohort, sandbox.url, *FAST)
        del args[args.index("--badge") : args.index("--badge") + 2]
        assert main(args) == 3
        assert issue_count(sandbox) == 0
    err = capsys.readouterr().err
    assert "refused the credentials (HTTP 401)" in err
    assert "failed" not in err
