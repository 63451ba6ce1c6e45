"""The command line when it cannot go as planned: results paths that cannot take a file,
a results file or the log failing, Ctrl-C or SIGTERM while the results are written, at the
prompt or before the run, an empty standard input.

Whatever happens, a journal that holds a learner stays, the exit status never claims that
nothing was sent once something may have been, and a rerun sends nobody twice.
"""

from __future__ import annotations

import errno
import io
import os
import pty
import re
import select
import signal
import sqlite3
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bulk_issuer.cli import main
from bulk_issuer.sandbox import Sandbox, SandboxConfig
from tests.conftest import (
    child_argv,
    good_rows,
    issue_args,
    issue_count,
    only_pat,
    sandbox_thread,
    write_cohort,
)

FAST = ["--rate", "none"]


def run_patched(script: str, argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """`bulk-issuer` in a child whose Python first runs `script` (a patch that signals it,
    or fills its disk, at a chosen moment), with `argv`'s arguments and `env` added."""
    return subprocess.run(
        [argv[0], "-c", script, *argv[3:]],
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, **env},
    )


#: Each run alone: the journal, not the machine's shared claims, keeps a rerun from sending
#: twice (and the sandbox cannot say who holds the badge), so a lost journal shows.
ALONE = ["--coordinator", "memory"]


@pytest.fixture(autouse=True)
def _pat(monkeypatch: pytest.MonkeyPatch) -> None:
    only_pat(monkeypatch)


def wait_for(condition: str, check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll `check()` until it is true (a few milliseconds apart)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"never happened: {condition}"
        time.sleep(0.005)


def journal_files(folder: Path) -> list[str]:
    """The journal and its SQLite side files in `folder`."""
    return sorted(p.name for p in folder.iterdir() if ".journal.db" in p.name)


def each_issued_once(sandbox: Sandbox, count: int) -> bool:
    """Whether the sandbox issued the badge to each of the first `count` learners once."""
    return sandbox.duplicates() == {} and all(
        sandbox.issued_count(51, f"n{i}@example.org") == 1 for i in range(count)
    )


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


# -- a results file failing after the sends -----------------------------------------------


def test_a_results_file_failing_after_the_sends_keeps_the_journal(tmp_path: Path) -> None:
    """--successes turns into a folder while the run sends: the learners stand in the
    journal, the message says so and how to write the file (exit 1, not 2), and the rerun
    sends nobody twice, even where the server cannot say who holds the badge."""
    cohort = write_cohort(tmp_path / "cohort.csv", good_rows(8))
    successes = tmp_path / "issued.csv"
    config = SandboxConfig(rate=None, lookup="forbidden")
    with sandbox_thread(config) as sandbox:
        argv = child_argv(cohort, sandbox.url, "--rate", "10/1s", "-q", *ALONE)
        process = subprocess.Popen(
            [*argv, "--successes", str(successes)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for("a first issue call", lambda: issue_count(sandbox) > 0)
            successes.mkdir()  # checked before the run; cannot be written after it
            out, err = process.communicate(timeout=20)
        finally:
            process.kill()
        assert process.returncode == 1, err
        assert issue_count(sandbox) == 8
        assert "nothing was sent" not in err
        assert f"{successes}: it is a folder" in err
        assert "every learner sent stands in the journal" in err
        assert f"bulk-issuer report {cohort} --badge 51" in err
        assert re.search(r"issued\s+8\n", out), out
        assert journal_files(tmp_path) == ["cohort.csv.badge-51.journal.db"]
        successes.rmdir()
        rerun = subprocess.run(
            [*argv, "--successes", str(successes)], capture_output=True, text=True, timeout=20
        )
        assert rerun.returncode == 0, rerun.stderr
        assert issue_count(sandbox) == 8
        assert each_issued_once(sandbox, 8)
    assert len(successes.read_text(encoding="utf-8").splitlines()) == 9


#: `bulk-issuer` whose results files take until a signal comes, to signal it exactly then.
SIGNALLED_WHILE_WRITING = """
import os, signal, sys, time
from bulk_issuer import cli

def account(*args, **kwargs):
    os.kill(os.getpid(), getattr(signal, os.environ["TEST_SIGNAL"]))
    time.sleep(10)
    raise AssertionError("the signal did not stop the results")

cli.account = account
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_a_signal_while_the_results_are_written_keeps_the_journal(
    tmp_path: Path, signal_name: str
) -> None:
    """Ctrl-C or SIGTERM after the sends, while the results files are written: exit 130
    saying where the learners stand (not "nothing was sent"); the rerun sends nobody twice."""
    cohort = write_cohort(tmp_path / "cohort.csv", good_rows(5))
    with sandbox_thread(SandboxConfig(rate=None, lookup="forbidden")) as sandbox:
        argv = child_argv(cohort, sandbox.url, *FAST, *ALONE)
        signalled = run_patched(SIGNALLED_WHILE_WRITING, argv, TEST_SIGNAL=signal_name)
        assert signalled.returncode == 130, signalled.stderr
        assert "nothing was sent" not in signalled.stderr
        assert "interrupted before the results files were all written" in signalled.stderr
        assert journal_files(tmp_path) == ["cohort.csv.badge-51.journal.db"]
        assert main(issue_args(cohort, sandbox.url, *FAST, *ALONE)) == 0
        assert issue_count(sandbox) == 5
        assert each_issued_once(sandbox, 5)


#: `bulk-issuer` that signals itself as it closes the journal, after the run.
SIGNALLED_WHILE_CLOSING = """
import os, signal, sys
from bulk_issuer import cli, journal

close = journal.Journal.close

def signalled_close(self):
    os.kill(os.getpid(), getattr(signal, os.environ["TEST_SIGNAL"]))
    close(self)

journal.Journal.close = signalled_close
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_a_signal_as_the_journal_closes_after_the_run_changes_nothing(
    tmp_path: Path, signal_name: str
) -> None:
    """Ctrl-C or SIGTERM as the journal closes, once the run has said where every learner
    stands: the journal is closed whole and the exit status is the run's (it was 130 and
    "interrupted; nothing was sent", after five badges were issued)."""
    cohort = write_cohort(tmp_path / "cohort.csv", good_rows(5))
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        argv = child_argv(cohort, sandbox.url, *FAST, *ALONE)
        signalled = run_patched(SIGNALLED_WHILE_CLOSING, argv, TEST_SIGNAL=signal_name)
        assert signalled.returncode == 0, signalled.stderr
        assert "nothing was sent" not in signalled.stderr
        assert main(issue_args(cohort, sandbox.url, *FAST, *ALONE)) == 0
        assert issue_count(sandbox) == 5
        assert each_issued_once(sandbox, 5)


# -- Ctrl-C at the prompt -----------------------------------------------------------------


class Terminal:
    """A child process on a pseudo-terminal: its standard input is a terminal, so it asks."""

    def __init__(self, argv: list[str]) -> None:
        self.master, replica = pty.openpty()
        self.process = subprocess.Popen(argv, stdin=replica, stdout=replica, stderr=replica)
        os.close(replica)
        self.output = b""

    def read_until(self, text: bytes, timeout: float = 15.0) -> None:
        """Read the terminal until `text` has been shown."""
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert time.monotonic() < deadline, f"never shown: {text!r} in {self.output!r}"
            self._read(0.1)

    def finish(self, timeout: float) -> int:
        """The exit status, within `timeout` seconds, with all it printed read."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                self.process.kill()
                self.process.wait()
                pytest.fail(f"still running {timeout} s later; it printed {self.output!r}")
            self._read(0.05)
        while self._read(0.05):
            pass
        return self.process.returncode

    def _read(self, wait: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], wait)
        if not ready:
            return False
        try:
            data = os.read(self.master, 4096)
        except OSError:  # the other end closed
            return False
        self.output += data
        return bool(data)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)


@pytest.fixture
def terminal() -> Iterator[list[Terminal]]:
    """Terminals opened by a test, closed (and their processes ended) after it."""
    opened: list[Terminal] = []
    yield opened
    for each in opened:
        each.close()


def test_ctrl_c_at_the_prompt_exits_130_at_once(tmp_path: Path, terminal: list[Terminal]) -> None:
    """Ctrl-C at `Continue? [y/N]` (on a terminal): exit 130 within a second or two, saying
    nothing was sent, no traceback, no journal left, no issue call."""
    cohort = write_cohort(tmp_path / "cohort.csv", good_rows(3))
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        argv = child_argv(cohort, sandbox.url, *FAST)
        argv.remove("--yes")
        shell = Terminal(argv)
        terminal.append(shell)
        shell.read_until(b"Continue? [y/N]")
        shell.process.send_signal(signal.SIGINT)  # what the terminal does on ^C
        assert shell.finish(timeout=5) == 130
        assert issue_count(sandbox) == 0
    shown = shell.output.decode(errors="replace")
    assert "interrupted; nothing was sent" in shown
    assert "Traceback" not in shown
    assert journal_files(tmp_path) == []


@pytest.mark.parametrize(("answer", "status", "issued"), [(b"y\n", 0, 3), (b"n\n", 2, 0)])
def test_the_prompt_takes_its_answer_from_the_terminal(
    tmp_path: Path, terminal: list[Terminal], answer: bytes, status: int, issued: int
) -> None:
    """Typing y at the prompt issues; n sends nothing (exit 2)."""
    cohort = write_cohort(tmp_path / "cohort.csv", good_rows(3))
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        argv = child_argv(cohort, sandbox.url, *FAST)
        argv.remove("--yes")
        shell = Terminal(argv)
        terminal.append(shell)
        shell.read_until(b"Continue? [y/N]")
        os.write(shell.master, answer)
        assert shell.finish(timeout=15) == status, shell.output
        assert issue_count(sandbox) == issued


# -- SIGTERM before the run ---------------------------------------------------------------


@pytest.mark.parametrize("waiting_on", ["badge", "token"])
def test_sigterm_before_the_run_stops_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, waiting_on: str
) -> None:
    """SIGTERM while the badge check or the login waits for an answer: exit 130, saying
    nothing was sent, no journal left behind."""
    if waiting_on == "token":
        monkeypatch.delenv("NAVIGATR_PAT")
        monkeypatch.setenv("NAVIGATR_USER", "demo@example.com")
        monkeypatch.setenv("NAVIGATR_PASS", "demo-password")
    cohort = write_cohort(tmp_path / "cohort.csv", good_rows(3))
    config = SandboxConfig(rate=None, hang=frozenset({waiting_on}))
    with sandbox_thread(config) as sandbox:
        process = subprocess.Popen(
            child_argv(cohort, sandbox.url, *FAST), stderr=subprocess.PIPE, text=True
        )
        try:
            wait_for(
                f"a {waiting_on} request",
                lambda: any(r.kind == waiting_on for r in list(sandbox.requests)),
            )
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=5)
        finally:
            process.kill()
        assert issue_count(sandbox) == 0
    assert process.returncode == 130, err
    assert "interrupted; nothing was sent" in err
    assert journal_files(tmp_path) == []


# -- standard input -----------------------------------------------------------------------


def test_empty_standard_input_is_named_as_such(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`issue -` with nothing piped in: exit 2, "standard input is empty", no temp path."""
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"")))
    assert main(["issue", "-", "--badge", "51", "--yes"]) == 2
    err = capsys.readouterr().err
    assert "standard input is empty" in err
    assert "bulk-issuer-" not in err


#: `bulk-issuer` in a process whose files cannot grow past 1 MiB (a disk that fills up).
SMALL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
from bulk_issuer.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_log_that_cannot_be_written_is_named(tmp_path: Path) -> None:
    """The --log file fills the disk: every message about it names it, and the status is
    the run's stop (70, as for the journal), not "usage error, nothing sent" (2)."""
    cohort = write_cohort(tmp_path / "cohort.csv", good_rows(3))
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"x" * ((1 << 20) - 8))  # the first event does not fit
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        argv = child_argv(cohort, sandbox.url, *FAST, "-q", "--log", str(log))
        ran = run_patched(SMALL_DISK, argv)
    assert ran.returncode == 70, ran.stderr
    about_it = [line for line in ran.stderr.splitlines() if "File too large" in line]
    assert about_it, ran.stderr
    assert all(str(log) in line for line in about_it), ran.stderr


# -- a journal that cannot be written (a full disk) ---------------------------------------


def test_a_rerun_whose_journal_cannot_be_written_stops_before_sending(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A half-done journal on a full disk: the rerun's first write (its settings) fails.
    Nothing is sent; exit 2 with the journal named (not 70, "a bug"); the journal keeps
    what it held, and with space back the rerun issues the rest once each."""
    from bulk_issuer.journal import Journal

    cohort = write_cohort(tmp_path / "cohort.csv", good_rows(3))
    journal = tmp_path / "cohort.csv.badge-51.journal.db"
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        assert main(issue_args(cohort, sandbox.url, *FAST, *ALONE, "-q")) == 0
        write_cohort(cohort, good_rows(6))
        capsys.readouterr()
        real_commit = Journal.commit

        def disk_full(self: Journal) -> None:
            if self._db.in_transaction:
                raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(Journal, "commit", disk_full)
        status = main(issue_args(cohort, sandbox.url, *FAST, *ALONE))
        err = capsys.readouterr().err
        assert status == 2, err
        assert f"the journal {journal} could not be written: database or disk is full" in err
        assert "bug" not in err
        assert issue_count(sandbox) == 3
        monkeypatch.setattr(Journal, "commit", real_commit)
        assert main(issue_args(cohort, sandbox.url, *FAST, *ALONE, "-q")) == 0
        assert each_issued_once(sandbox, 6)


def test_a_first_run_on_a_full_disk_leaves_no_journal(tmp_path: Path) -> None:
    """No byte can be written (a file size limit of 0, as a full disk): the journal cannot
    be created. Exit 2 before anything is sent, naming it, and no empty journal file is
    left for the next run to take as one."""
    import resource

    cohort = write_cohort(tmp_path / "cohort.csv", good_rows(3))

    def no_room() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))

    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        done = subprocess.run(
            child_argv(cohort, sandbox.url, *FAST, *ALONE),
            capture_output=True,
            text=True,
            timeout=30,
            preexec_fn=no_room,
        )
        assert issue_count(sandbox) == 0
    assert journal_files(tmp_path) == []
    assert done.returncode == 2, done.stderr
    assert "cohort.csv.badge-51.journal.db could not be written" in done.stderr


def test_a_successes_file_that_cannot_be_written_keeps_the_one_before(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills while --successes is written: the file of the run before stays
    whole (not cut short at the third learner), no half-written copy is left beside it,
    the message says so, exit 1; with space back, a rerun writes it whole."""
    from bulk_issuer.results import SuccessWriter

    cohort = write_cohort(tmp_path / "cohort.csv", good_rows(6))
    successes = tmp_path / "issued.csv"
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        args = issue_args(cohort, sandbox.url, *FAST, *ALONE, "--successes", str(successes))
        assert main(args) == 0
        before = successes.read_bytes()
        assert len(before.splitlines()) == 7
        capsys.readouterr()
        real_write = SuccessWriter.write

        def fills_the_disk(self: SuccessWriter, *row: object, **kwargs: object) -> None:
            if self.count == 2:
                raise OSError(errno.ENOSPC, "No space left on device", self.path)
            real_write(self, *row, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(SuccessWriter, "write", fills_the_disk)
        status = main(args)
        err = capsys.readouterr().err
        assert status == 1, err
        assert successes.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir() if "issued" in p.name) == ["issued.csv"]
        assert "No space left on device" in err
        assert "kept as it was" in err
        monkeypatch.setattr(SuccessWriter, "write", real_write)
        assert main(args) == 0
        assert issue_count(sandbox) == 6
    assert len(successes.read_text(encoding="utf-8").splitlines()) == 7


# -- the input changed during the run -----------------------------------------------------


@pytest.mark.parametrize("change", ["replaced", "rewritten", "cut short", "removed"])
def test_an_input_changed_during_the_run_writes_no_results_from_it(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    change: str,
) -> None:
    """The input is replaced (without the learner the server refused), rewritten in place,
    cut short or removed after the run read it. No failures nor successes file is written
    from the other file (the refused learner would be in neither, with exit 0), the
    message says that the file changed and how to get the results, and the exit is 1.
    Once the file is as the run read it, `report` writes them, the refused learner in
    the failures file."""
    from bulk_issuer.engine import BadgeIssuer

    rows = good_rows(8)
    rows[1] = ("Refused", "Learner", "refused@no-mail.example.com")  # a 422: failed
    cohort = write_cohort(tmp_path / "cohort.csv", rows)
    original = cohort.read_bytes()
    failures, successes = tmp_path / "cohort.failures.csv", tmp_path / "issued.csv"
    real_run = BadgeIssuer.run

    async def run_then_change(self: BadgeIssuer, *args: object, **kwargs: object) -> object:
        summary = await real_run(self, *args, **kwargs)  # type: ignore[arg-type]
        if change == "replaced":
            new = write_cohort(tmp_path / "new.csv", [r for r in rows if "no-mail" not in r[2]])
            os.replace(new, cohort)
        elif change == "rewritten":
            write_cohort(cohort, [r for r in rows if "no-mail" not in r[2]])
        elif change == "cut short":
            write_cohort(cohort, rows[:3])
        else:
            cohort.unlink()
        return summary

    monkeypatch.setattr(BadgeIssuer, "run", run_then_change)
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        status = main(issue_args(cohort, sandbox.url, *FAST, *ALONE, "--successes", str(successes)))
        assert sandbox.issued_count(51, "refused@no-mail.example.com") == 0
        assert each_issued_once(sandbox, 1)
    out, err = capsys.readouterr()
    assert status == 1, out + err
    assert not failures.exists()
    assert not successes.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert f"{cohort} changed during the run" in err
    assert f"bulk-issuer report {cohort} --badge 51" in err
    cohort.write_bytes(original)
    command = ["report", str(cohort), "--badge", "51", "--failures", str(failures)]
    assert main([*command, "--successes", str(successes)]) == 1
    assert "refused@no-mail.example.com" in failures.read_text(encoding="utf-8")
    assert len(successes.read_text(encoding="utf-8").splitlines()) == 8


def test_a_journal_removed_during_the_run_is_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal's folder deleted while the run goes on: the run finishes (its journal
    open), and says that a rerun starts without it."""
    import shutil

    from bulk_issuer.journal import Journal

    folder = tmp_path / "journals"
    folder.mkdir()
    cohort = write_cohort(tmp_path / "c.csv", good_rows(3))
    real = Journal.mark_sending

    def and_gone(self: Journal, *args: object, **kw: object) -> None:
        real(self, *args, **kw)  # type: ignore[arg-type]
        shutil.rmtree(folder, ignore_errors=True)

    monkeypatch.setattr(Journal, "mark_sending", and_gone)
    monkeypatch.setenv("NAVIGATR_PAT", "sandbox-demo-pat")
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        argv = issue_args(cohort, sandbox.url, "--rate", "none", "--journal", str(folder / "j.db"))
        assert main(argv) == 0
        assert all(sandbox.issued_count(51, row[2]) == 1 for row in good_rows(3))
    assert "was removed during the run" in capsys.readouterr().err
