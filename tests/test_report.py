"""`bulk-issuer report` agrees with the run, and results paths never destroy what they name."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulk_issuer.cli import main
from bulk_issuer.sandbox import SandboxConfig
from tests.conftest import (
    good_rows,
    issue_args,
    issue_count,
    only_pat,
    sandbox_thread,
    write_cohort,
)

FAST = ["--rate", "none"]


@pytest.fixture(autouse=True)
def _pat(monkeypatch: pytest.MonkeyPatch) -> None:
    only_pat(monkeypatch)


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


# -- report reads the input as the run did ----------------------------------------------


def test_report_reads_the_input_with_the_runs_options(tmp_path: Path) -> None:
    """After `issue --encoding cp1251 --map ... --date-format ... --require-consent ...`,
    `report` counts, writes and exits as the run did (it counted the issued row invalid,
    refused --map, and wrote Cyrillic as ?????); options given to `report` win."""
    cohort = tmp_path / "cyr.csv"
    cohort.write_bytes(
        "Given,Work Email,Issue Date,Consent\r\n"
        "Анна,anna@example.com,03/31/2025,yes\r\n"
        "Борис,boris@example.com,04/01/2025,no\r\n"
        "Вера,vera@@example.com,04/02/2025,yes\r\n".encode("cp1251")
    )
    options = ["--encoding", "cp1251", "--map", "first_name=Given", "--map"]
    options += ["email=Work Email", "--date-format", "%m/%d/%Y", "--require-consent", "Consent"]
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        assert main(issue_args(cohort, sandbox.url, *FAST, *options)) == 1
        assert sandbox.issued_count(51, "anna@example.com") == 1
    written = (tmp_path / "cyr.failures.csv").read_bytes()
    assert "Борис".encode("cp1251") in written
    successes, failures = tmp_path / "s.csv", tmp_path / "f.csv"
    status, counts = report(str(cohort), "--successes", str(successes), "--failures", str(failures))
    assert status == 1
    assert (counts["issued"], counts["invalid"], counts["rows"]) == (1, 2, 3)
    assert failures.read_bytes() == written
    assert "anna@example.com" in successes.read_text(encoding="utf-8")
    # Given on the command line, an option wins over the run's: now no date reads.
    status, counts = report(str(cohort), "--date-format", "%d/%m/%Y")
    assert (status, counts["issued"], counts["invalid"]) == (1, 0, 3)
    status, counts = report(str(cohort), "--map", "email=Given")
    assert counts["invalid"] == 3


def test_report_of_a_journal_from_before_the_read_options_were_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A journal without the recorded options: read with defaults, or the options given."""
    cohort = tmp_path / "map.csv"
    cohort.write_text("Given,Work Email\r\nAnn,ann@example.com\r\n", encoding="utf-8")
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        argv = issue_args(cohort, sandbox.url, *FAST, "--map", "first_name=Given")
        assert main([*argv, "--map", "email=Work Email"]) == 0
    journal = tmp_path / "map.csv.badge-51.journal.db"
    with contextlib.closing(sqlite3.connect(journal)) as db, db:
        db.execute("DELETE FROM meta WHERE name = 'read_options'")
    assert main(["report", str(cohort)]) == 2  # as before: the columns are not found
    assert "Given" in capsys.readouterr().err
    options = ["--map", "first_name=Given", "--map", "email=Work Email"]
    assert report(str(cohort), *options)[1]["issued"] == 1


def test_report_writes_each_files_failures_in_its_own_dialect(tmp_path: Path) -> None:
    """Two files sharing one journal (--journal): each one's failures file has its own
    columns, delimiter and encoding, not those of the last run."""
    first = tmp_path / "a2.csv"
    first.write_text(
        "First Name,Email,Dept\r\nAnn,x@@example.com,D1\r\nBo,bo@example.com,D2\r\n",
        encoding="utf-8",
    )
    second = tmp_path / "b2.csv"
    second.write_bytes(
        "Given Name;Mail;Team\r\nCéline;y@@example.com;T1\r\nDe;de@example.com;T2\r\n".encode(
            "cp1252"
        )
    )
    journal = tmp_path / "a2.csv.badge-51.journal.db"
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        assert main(issue_args(first, sandbox.url, *FAST)) == 1
        assert main(issue_args(second, sandbox.url, *FAST, "--journal", str(journal))) == 1
    failures = tmp_path / "r.csv"
    assert report(str(first), "--failures", str(failures))[0] == 1
    lines = failures.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "row,reason,First Name,Email,Dept"
    assert lines[1].endswith(",Ann,x@@example.com,D1")
    assert report(str(second), "--journal", str(journal), "--failures", str(failures))[0] == 1
    lines = failures.read_bytes().decode("cp1252").splitlines()
    assert lines[0] == "row;reason;Given Name;Mail;Team"
    assert lines[1].endswith(";Céline;y@@example.com;T1")


# -- report after a failures file was fed back; finding the journal -----------------------


def test_report_after_the_fix_and_feed_back_loop_agrees_with_the_run(tmp_path: Path) -> None:
    """An invalid row fixed in the failures file and fed back holds the badge: `report` of
    the original file counts it so (it said invalid, exit 1, and left it out of
    --successes), and `report` of the failures file finds the journal `issue` used."""
    cohort = write_cohort(tmp_path / "c.csv", [*good_rows(2), ("Bad", "Mail", "bad@")])
    failures = tmp_path / "c.failures.csv"
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        assert main(issue_args(cohort, sandbox.url, *FAST)) == 1
        journal = str(tmp_path / "c.csv.badge-51.journal.db")
        for badge in (["--badge", "51"], []):
            status, counts = report(str(failures), *badge)
            assert (status, counts["invalid"], counts["journal"]) == (1, 1, journal)
        fixed = failures.read_text(encoding="utf-8").replace("bad@", "fixed@example.org")
        failures.write_text(fixed, encoding="utf-8")
        assert main(issue_args(failures, sandbox.url, *FAST)) == 0
        assert sandbox.issued_count(51, "fixed@example.org") == 1
    successes = tmp_path / "s.csv"
    status, counts = report(str(cohort), "--successes", str(successes))
    assert (status, counts["issued"], counts["invalid"], counts["rows"]) == (0, 3, 0, 3)
    rows = successes.read_text(encoding="utf-8").splitlines()
    assert rows[-1].startswith("4,fixed@example.org,")
    assert "fixed in a failures file" in rows[-1]


def test_a_fix_in_another_files_failures_does_not_count(tmp_path: Path) -> None:
    """A journal shared by two files: a fix fed back from one file's failures (same row
    number, other columns) does not make the other file's invalid row hold the badge."""
    first = write_cohort(tmp_path / "a.csv", [("Bad", "Mail", "bad@")])
    second = tmp_path / "b.csv"
    second.write_text("Given Name,Mail\r\nBo,bo@\r\n", encoding="utf-8")
    journal = tmp_path / "a.csv.badge-51.journal.db"
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        assert main(issue_args(first, sandbox.url, *FAST)) == 1
        assert main(issue_args(second, sandbox.url, *FAST, "--journal", str(journal))) == 1
        failures = tmp_path / "b.failures.csv"
        fixed = failures.read_text(encoding="utf-8").replace("bo@", "bo@example.org")
        failures.write_text(fixed, encoding="utf-8")
        assert main(issue_args(failures, sandbox.url, *FAST, "--journal", str(journal))) == 0
    assert report(str(first))[1]["invalid"] == 1
    assert report(str(second), "--journal", str(journal))[1]["issued"] == 1


def test_a_fix_counts_only_for_the_row_it_fixed(tmp_path: Path) -> None:
    """Row 3 fixed in the failures file and fed back; then the export changes and another
    learner with a bad address is row 3: that row is not counted as holding the badge by
    the row's number (it was, so its learner was left out of the failures file and would
    never get the badge). The row fixed, at row 4 now, is not credited either: not proven."""
    cohort = write_cohort(
        tmp_path / "c.csv", [("Ann", "A", "ann@example.org"), ("Al", "B", "al@@x.org")]
    )
    failures = tmp_path / "c.failures.csv"
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        assert main(issue_args(cohort, sandbox.url, *FAST)) == 1
        failures.write_text(failures.read_text(encoding="utf-8").replace("al@@x.org", "al@x.org"))
        assert main(issue_args(failures, sandbox.url, *FAST)) == 0
        # Unchanged, the file counts its fixed row as holding (the README's loop).
        assert report(str(cohort))[1]["issued"] == 2
        write_cohort(
            cohort,
            [("Ann", "A", "ann@example.org"), ("Cy", "C", "cy@x,org"), ("Al", "B", "al@@x.org")],
        )
        successes, rows = tmp_path / "s.csv", tmp_path / "f.csv"
        argv = ["--successes", str(successes), "--failures", str(rows)]
        status, counts = report(str(cohort), *argv)
        assert (status, counts["issued"], counts["invalid"]) == (1, 1, 2)
        assert 'Cy,C,"cy@x,org"' in rows.read_text(encoding="utf-8")
        assert not any(
            line.startswith("3,") for line in successes.read_text(encoding="utf-8").splitlines()
        )
        # `issue` of the new export says the same and keeps Cy in its failures file.
        assert main(issue_args(cohort, sandbox.url, *FAST)) == 1
        assert 'Cy,C,"cy@x,org"' in failures.read_text(encoding="utf-8")


@pytest.mark.parametrize("other", [("Bea", "B", "bea@@x.org"), ("Al", "B", "al@@x.org")])
def test_a_fix_fed_back_from_another_file_sharing_the_journal_does_not_count(
    tmp_path: Path, other: tuple[str, str, str]
) -> None:
    """a.csv and b.csv share a journal, each with an invalid row 3 in the same columns;
    b.failures.csv fixed and fed back does not make a.csv's row 3 hold the badge (`issue
    a.csv` said invalid 1, exited 0 and removed a.failures.csv: Al's only record), even
    when the two rows read alike."""
    journal = tmp_path / "shared.db"
    first = write_cohort(tmp_path / "a.csv", [("Ann", "A", "ann@x.org"), ("Al", "B", "al@@x.org")])
    second = write_cohort(tmp_path / "b.csv", [("Bob", "C", "bob@x.org"), other])
    shared = ["--journal", str(journal)]
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        assert main(issue_args(first, sandbox.url, *FAST, *shared)) == 1
        assert main(issue_args(second, sandbox.url, *FAST, *shared)) == 1
        fixes = tmp_path / "b.failures.csv"
        fixes.write_text(fixes.read_text(encoding="utf-8").replace("@@", "@fixed."))
        assert main(issue_args(fixes, sandbox.url, *FAST, *shared)) == 0
        assert main(issue_args(first, sandbox.url, *FAST, *shared)) == 1
        assert "al@@x.org" in (tmp_path / "a.failures.csv").read_text(encoding="utf-8")
    assert report(str(first), *shared)[1]["invalid"] == 1
    assert report(str(second), *shared)[1]["issued"] == 2


def test_report_finds_the_journal_of_a_run_without_badge(tmp_path: Path) -> None:
    """A run with a badge_id column and no --badge keeps `b.csv.journal.db`: `report b.csv`
    finds it (it looked only for b.csv.badge-*), and its failures file fed back without
    --badge lands in it, as for a run with one."""
    cohort = tmp_path / "b.csv"
    cohort.write_text(
        "First Name,Email,badge_id\r\nCy,cy@example.com,51\r\nDi,di@,51\r\n", encoding="utf-8"
    )
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        argv = ["--base-url", sandbox.url, "--yes", *FAST]
        assert main(["issue", str(cohort), *argv]) == 1
        journal = str(tmp_path / "b.csv.journal.db")
        status, counts = report(str(cohort))
        assert (status, counts["issued"], counts["invalid"], counts["journal"]) == (
            1,
            1,
            1,
            journal,
        )
        failures = tmp_path / "b.failures.csv"
        fixed = failures.read_text(encoding="utf-8").replace("di@", "di@example.com")
        failures.write_text(fixed, encoding="utf-8")
        assert main(["issue", str(failures), *argv]) == 0
    assert not list(tmp_path.glob("b.failures.csv*"))
    status, counts = report(str(cohort))
    assert (status, counts["issued"], counts["journal"]) == (0, 2, journal)


# -- JSON Lines failures files --------------------------------------------------------


def test_a_json_lines_failures_file_keeps_each_records_own_keys(tmp_path: Path) -> None:
    """A JSON Lines input's failures file is JSON Lines, each record with its own keys: fed
    back unchanged, its rows stay invalid (the CSV one had the first record's columns and
    put the other keys in `reason`, so the learners were issued without them)."""
    cohort = tmp_path / "c.jsonl"
    records: list[dict[str, object]] = [
        {"first_name": "Ann", "email": "ann@example.com"},
        {"first_name": "Fi", "email": "fi@example.com", "issue_date": "31/02/2025",
         "recipient_organisation": "Acme"},
        {"first_name": "Ed", "email": "ed@example.com", "score": 12345678901234567890},
        {"first_name": "Am", "Email": "am@example.com", "email": "am2@example.com"},
    ]  # fmt: skip
    cohort.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    failures = tmp_path / "c.failures.jsonl"
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        assert main(issue_args(cohort, sandbox.url, *FAST)) == 1
        assert issue_count(sandbox) == 1
        written = [json.loads(line) for line in failures.read_text(encoding="utf-8").splitlines()]
        assert [(r["row"], list(r)[2:]) for r in written] == [
            (2, ["first_name", "email", "issue_date", "recipient_organisation"]),
            (3, ["first_name", "email", "score"]),
            (4, ["first_name", "Email", "email"]),
        ]
        assert written[0]["issue_date"] == "31/02/2025"
        assert written[2]["email"] == "am2@example.com"
        assert not (tmp_path / "c.failures.csv").exists()
        before = failures.read_bytes()
        assert main(issue_args(failures, sandbox.url, *FAST)) == 1
        assert issue_count(sandbox) == 1
        again = [json.loads(line) for line in failures.read_text(encoding="utf-8").splitlines()]
        assert [{**r, "reason": ""} for r in again] == [{**r, "reason": ""} for r in written]
        # Fixed and fed back: issued at its original row, in the original's journal.
        lines = before.decode().splitlines()
        lines[0] = lines[0].replace("31/02/2025", "28/02/2025")
        failures.write_text("\n".join(lines) + "\n", encoding="utf-8")
        assert main(issue_args(failures, sandbox.url, *FAST)) == 1
        assert sandbox.issued_count(51, "fi@example.com") == 1
    status, counts = report(str(cohort))
    assert (status, counts["issued"], counts["invalid"]) == (1, 2, 2)
    assert not list(tmp_path.glob("c.failures.jsonl.badge-*"))


# -- read-only uses of a journal; standard input's summary ---------------------------


@contextlib.contextmanager
def _read_only_view(folder: Path) -> Iterator[Path]:
    """`folder` seen through a read-only bind mount (root only; skips elsewhere)."""
    view = folder.with_name(folder.name + "-ro")
    view.mkdir()
    mounted = subprocess.run(["mount", "--bind", str(folder), str(view)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"a read-only folder needs a bind mount: {mounted.stderr.decode().strip()}")
    try:
        remount = ["mount", "-o", "remount,ro,bind", str(view)]
        if subprocess.run(remount, capture_output=True).returncode != 0:
            pytest.skip("cannot remount the bind mount read-only")
        if os.access(view, os.W_OK) and not _cannot_write(view):
            pytest.skip("the read-only mount can still be written")
        yield view
    finally:
        subprocess.run(["umount", str(view)], capture_output=True)


def _cannot_write(folder: Path) -> bool:
    try:
        (folder / ".probe").write_text("x")
    except OSError:
        return True
    (folder / ".probe").unlink()
    return False


def test_report_and_an_offline_dry_run_read_a_journal_in_a_read_only_folder(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Reading a journal writes nothing: in a read-only folder, `report` and `issue
    --dry-run --offline` work (they said "disk I/O error")."""
    folder = tmp_path / "cohort"
    folder.mkdir()
    cohort = write_cohort(folder / "c.csv", good_rows(2))
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        assert main(issue_args(cohort, sandbox.url, *FAST)) == 0
    with _read_only_view(folder) as view:
        argv = [sys.executable, "-m", "bulk_issuer"]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
        done = subprocess.run(
            [*argv, "report", "c.csv", "--json"], cwd=view, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["issued"] == 2
        dry = [*argv, "issue", "c.csv", "--badge", "51", "--dry-run", "--offline"]
        done = subprocess.run(dry, cwd=view, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert re.search(r"done earlier\s+2", done.stdout)
    assert sorted(p.name for p in folder.iterdir()) == ["c.csv", "c.csv.badge-51.journal.db"]


def test_standard_input_without_failures_file_does_not_say_to_feed_it_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`issue -` keeps no failures file unless --failures: its summary does not say to
    feed one back."""
    data = b"First Name,Email\r\nAnn,ann@example.com\r\nBad,bad@\r\n"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        assert main(["issue", "-", "--badge", "51", "--base-url", sandbox.url, "--yes"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"invalid\s+1", out)
    assert "failures file" not in out
    assert "--failures writes them" in out


# -- a rerun, or its failures file fed back, reads the rows as the first run did ------------


def test_a_failures_file_fed_back_keeps_the_runs_consent_and_map(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first run had --require-consent and --map; the failures file is fixed and fed
    back with the README's own command, without them: the learner who said no is still
    not issued, and the fixed one is issued at the mapped address."""
    cohort = tmp_path / "k.csv"
    cohort.write_text(
        "First Name,Email,Work Email,Consent\r\n"
        "Ann,ann@home.example,ann@work.example,yes\r\n"
        "Bob,bob@home.example,bob@work.example,no\r\n"
        "Cy,cy@home.example,cy@@work.example,yes\r\n",
        encoding="utf-8",
    )
    options = ["--map", "email=Work Email", "--require-consent", "Consent"]
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        assert main(issue_args(cohort, sandbox.url, *FAST, *options)) == 1
        failures = tmp_path / "k.failures.csv"
        fixed = failures.read_text(encoding="utf-8").replace("cy@@work", "cy@work")
        failures.write_text(fixed, encoding="utf-8")
        capsys.readouterr()
        assert main(issue_args(failures, sandbox.url, *FAST)) == 1  # Bob: still no consent
        said = capsys.readouterr()
        assert "--require-consent" in said.out + said.err
        held = {a["recipient_email"] for a in sandbox.assertions}
    assert held == {"ann@work.example", "cy@work.example"}


def test_a_rerun_with_another_map_is_refused_before_anything_is_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rerun with no --map: read as the journal records (nothing sent twice). Rerun with
    another --map, or a --require-consent the run did not have: refused (exit 2), naming
    both, before anything is sent."""
    cohort = tmp_path / "m.csv"
    cohort.write_text(
        "First Name,Email,Work Email\r\nAnn,ann@home.example,ann@work.example\r\n",
        encoding="utf-8",
    )
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        assert main(issue_args(cohort, sandbox.url, *FAST, "--map", "email=Work Email")) == 0
        assert main(issue_args(cohort, sandbox.url, *FAST)) == 0
        capsys.readouterr()
        assert main(issue_args(cohort, sandbox.url, *FAST, "--map", "email=Email")) == 2
        err = capsys.readouterr().err
        assert main(issue_args(cohort, sandbox.url, *FAST, "--require-consent", "Ok")) == 2
        held = [a["recipient_email"] for a in sandbox.assertions]
    assert held == ["ann@work.example"]
    assert '--map email="Work Email"' in err
    assert '--map email="Email"' in err


# -- a journal named by --journal: its badge ----------------------------------------------


def test_report_of_a_journal_named_by_flag_knows_its_badge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`report c.csv --journal my.db` without --badge counts the learners as the run left
    them (it took the badge from the journal's name only: every row "invalid: no badge for
    this row", exit 1); a journal of runs for two badges asks which (exit 2)."""
    cohort = write_cohort(tmp_path / "c.csv", good_rows(2))
    journal = tmp_path / "my.db"
    failures = tmp_path / "f.csv"
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        assert main(issue_args(cohort, sandbox.url, *FAST, "--journal", str(journal))) == 0
        status, counts = report(str(cohort), "--journal", str(journal), "--failures", str(failures))
        assert (status, counts["issued"], counts["invalid"]) == (0, 2, 0)
        assert not failures.exists()
        other = [*issue_args(cohort, sandbox.url, *FAST, "--journal", str(journal))]
        other[other.index("51")] = "3425"
        assert main(other) == 0
    assert main(["report", str(cohort), "--journal", str(journal)]) == 2
    assert "--badge" in capsys.readouterr().err
    assert report(str(cohort), "--journal", str(journal), "--badge", "3425")[1]["issued"] == 2


# -- --successes: every learner holding the badge through the journal --------------------


def test_successes_list_learners_the_journal_holds_whom_the_file_no_longer_has(
    tmp_path: Path,
) -> None:
    """A learner issued and then left out of the export still holds the badge through the
    journal: `--successes` of `issue` and of `report` lists it, with its address, assertion
    and when, as not in this file (it listed the file's rows only)."""
    cohort = write_cohort(tmp_path / "c.csv", good_rows(3))
    by_issue, by_report = tmp_path / "s1.csv", tmp_path / "s2.csv"
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        assert main(issue_args(cohort, sandbox.url, *FAST)) == 0
        write_cohort(cohort, [good_rows(3)[0], good_rows(3)[2]])  # n1 left out
        assert main(issue_args(cohort, sandbox.url, *FAST, "--successes", str(by_issue))) == 0
        assert issue_count(sandbox) == 3
        [assertion] = [
            a["id"] for a in sandbox.assertions if a["recipient_email"] == "n1@example.org"
        ]
    status, counts = report(str(cohort), "--successes", str(by_report))
    assert (status, counts["rows"], counts["issued"]) == (0, 2, 2)
    for successes in (by_issue, by_report):
        with successes.open(encoding="utf-8", newline="") as handle:
            rows = {row["email"]: row for row in csv.DictReader(handle)}
        assert sorted(rows) == ["n0@example.org", "n1@example.org", "n2@example.org"]
        gone = rows["n1@example.org"]
        assert (gone["row"], gone["assertion_id"]) == ("", str(assertion))
        assert "not in this file" in gone["note"]
        assert re.search(r"\d{4}-\d\d-\d\d", gone["note"])
