"""Every example runs as written: examples/*.py and each ```python block of the README.

Each runs in a child process, as a reader would run it: in an empty folder holding
`cohort.csv` (examples/cohort.csv), with NAVIGATR_BASE_URL and NAVIGATR_PAT set to a
sandbox with the demo credentials, at the sandbox's real rate limit (5/2s). Nothing is
added to the code: a block that would not run pasted into a file fails here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bulk_issuer.sandbox import Sandbox, SandboxConfig
from tests.conftest import sandbox_thread

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
README = ROOT / "README.md"
PAT = "sandbox-demo-pat"

BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.M | re.S)


def run_script(path: Path, sandbox: Sandbox, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run one script in a child process against the sandbox, in `cwd`."""
    shutil.copy(EXAMPLES / "cohort.csv", cwd / "cohort.csv")
    env = {**os.environ, "NAVIGATR_BASE_URL": sandbox.url, "NAVIGATR_PAT": PAT}
    env.pop("PYTHONPATH", None)  # the installed package, as a reader has it
    return subprocess.run(
        [sys.executable, str(path)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )


def issue_calls(sandbox: Sandbox) -> int:
    """How many issue calls reached the sandbox."""
    return sum(1 for r in sandbox.requests if r.kind == "issue")


def held(sandbox: Sandbox, badge: int = 51) -> list[str]:
    """The addresses holding `badge`, sorted."""
    return sorted(a["recipient_email"] for a in sandbox.assertions if a["badge_id"] == badge)


def test_cohort_script_issues_the_csv_and_a_rerun_skips_everyone(tmp_path: Path) -> None:
    """examples/cohort.py issues the four learners; run again, its journal skips them all."""
    with sandbox_thread(SandboxConfig()) as sandbox:
        first = run_script(EXAMPLES / "cohort.py", sandbox, tmp_path)
        sent = issue_calls(sandbox)
        second = run_script(EXAMPLES / "cohort.py", sandbox, tmp_path)
        assert (first.returncode, first.stderr) == (0, ""), first.stderr
        assert "issued 4, already held 0, skipped 0, failed 0, invalid 0" in first.stdout
        assert (second.returncode, second.stderr) == (0, ""), second.stderr
        assert "issued 0, already held 0, skipped 4" in second.stdout
        assert issue_calls(sandbox) == sent == 4  # the journal answered: nothing sent again
        assert len(held(sandbox)) == 4
        assert sandbox.duplicates() == {}


def test_service_example_issues_completions_from_a_queue_once_each(tmp_path: Path) -> None:
    """examples/service.py: each completion issued once, the repeat too, the bad one refused."""
    with sandbox_thread(SandboxConfig()) as sandbox:
        done = run_script(EXAMPLES / "service.py", sandbox, tmp_path)
        assert (done.returncode, done.stderr) == (0, ""), done.stderr
        assert held(sandbox) == ["amara.okafor@example.org", "bjorn.lindqvist@example.org"]
        assert held(sandbox, 3425) == ["priya.natarajan@example.com"]
        assert sandbox.duplicates() == {}
    lines = done.stdout.splitlines()
    assert "not-an-address: not issued" in done.stdout
    assert sum(line.startswith("amara.okafor@example.org: ") for line in lines) == 2


def test_custom_columns_example_reads_the_lms_export(tmp_path: Path) -> None:
    """examples/custom_columns.py maps the export's own headers and issues its three rows."""
    with sandbox_thread(SandboxConfig()) as sandbox:
        done = run_script(EXAMPLES / "custom_columns.py", sandbox, tmp_path)
        assert (done.returncode, done.stderr) == (0, ""), done.stderr
        assert "issued 3, invalid 0, failed 0" in done.stdout
        assert held(sandbox) == [
            "aoife.kelly@example.org",
            "ingrid.odegard@example.org",
            "jose.garcia@example.org",
        ]
        names = sorted(a["recipient_firstname"] for a in sandbox.assertions)
    assert names == ["Aoife", "Ingrid", "José"]


def test_every_example_is_tested() -> None:
    """A new example gets a test of its own here, and the README has examples to run."""
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == [
        "cohort.py",
        "custom_columns.py",
        "service.py",
    ]
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("number", range(len(BLOCKS)))
def test_readme_block_runs_as_written(number: int, tmp_path: Path) -> None:
    """The README's Python block runs, pasted as it is into a file, without an error."""
    script = tmp_path / f"readme_block_{number}.py"
    script.write_text(BLOCKS[number], encoding="utf-8")
    with sandbox_thread(SandboxConfig()) as sandbox:
        done = run_script(script, sandbox, tmp_path)
        # stderr may hold the log of a block that turns logging on; never a traceback.
        assert done.returncode == 0, BLOCKS[number] + done.stderr
        assert "Traceback" not in done.stderr
        assert sandbox.assertions, "the block issued nothing"
        assert sandbox.duplicates() == {}
    assert PAT not in done.stdout + done.stderr
