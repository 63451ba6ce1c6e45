"""The command line when it cannot go as planned: results paths that cannot take a file
are refused before anything is sent, and a special file is never replaced."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulk_issuer.cli import main
from bulk_issuer.sandbox import SandboxConfig
from tests.conftest import good_rows, issue_args, sandbox_thread, write_cohort

PAT = "sandbox-demo-pat"
FAST = ["--rate", "none"]


@pytest.fixture(autouse=True)
def _pat(monkeypatch: pytest.MonkeyPatch) -> None:
    """A PAT in the environment, nothing else."""
    for name in ("NAVIGATR_USER", "NAVIGATR_PASS", "NAVIGATR_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NAVIGATR_PAT", PAT)


def journal_files(folder: Path) -> list[str]:
    """The journal and its SQLite side files in `folder`."""
    return sorted(p.name for p in folder.iterdir() if ".journal.db" in p.name)


# -- results paths ------------------------------------------------------------------------


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    """A named pipe with a reader, so that writing to it (as before the fix) never blocks."""
    path = tmp_path / "pipe"
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        yield path
    finally:
        os.close(reader)


@pytest.mark.parametrize("flag", ["--failures", "--successes", "--log"])
@pytest.mark.parametrize("kind", ["folder", "fifo", "device", "missing folder"])
def test_a_results_path_that_cannot_take_a_file_is_refused_before_sending(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fifo: Path, flag: str, kind: str
) -> None:
    """A folder, a pipe, a device or a missing folder as a results path: exit 2 before any
    request, naming the flag and the path; the special file is left as it was."""
    if kind == "folder":
        target = tmp_path / "out"
        target.mkdir()
    elif kind == "fifo":
        target = fifo
    elif kind == "device":
        target = tmp_path / "full"
        try:
            os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(1, 7))  # what /dev/full is
        except PermissionError:
            pytest.skip("creating a device needs CAP_MKNOD")
    else:
        target = tmp_path / "no-such-folder" / "out.csv"
    rows = [*good_rows(2), ("Bad", "Mail", "bad@")]  # a failures file is due
    cohort = write_cohort(tmp_path / "cohort.csv", rows)
    mode = target.stat().st_mode if target.exists() else None
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        status = main(issue_args(cohort, sandbox.url, *FAST, flag, str(target)))
        assert list(sandbox.requests) == []
    err = capsys.readouterr().err
    assert status == 2, err
    assert f"{flag} {target}" in err
    assert journal_files(tmp_path) == []
    assert (target.stat().st_mode if target.exists() else None) == mode


@pytest.mark.parametrize("flag", ["--failures", "--successes"])
def test_report_refuses_a_special_file_as_a_results_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fifo: Path, flag: str
) -> None:
    """`report --failures PIPE`: exit 2, and the pipe is still a pipe."""
    cohort = write_cohort(tmp_path / "cohort.csv", [*good_rows(2), ("Bad", "Mail", "bad@")])
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        assert main(issue_args(cohort, sandbox.url, *FAST)) == 1
    capsys.readouterr()
    assert main(["report", str(cohort), flag, str(fifo)]) == 2
    assert f"{flag} {fifo}" in capsys.readouterr().err
    assert stat.S_ISFIFO(fifo.stat().st_mode)
