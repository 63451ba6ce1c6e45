"""Results files: neutralised cells, the failures file in the input's dialect, the success file."""

from __future__ import annotations

import csv
import io
import os
import stat
from collections.abc import Mapping
from pathlib import Path

import pytest

from bulk_issuer.formulas import restore
from bulk_issuer.journal import Journal
from bulk_issuer.learners import Learner, Row
from bulk_issuer.readers import Dialect, ReadOptions, open_source
from bulk_issuer.report import account
from bulk_issuer.results import FailuresWriter, SuccessWriter, neutralise
from tests.conftest import good_rows, write_cohort


def _read_rows(path: Path, options: ReadOptions | None = None) -> tuple[Dialect, list[Row]]:
    with open_source(path, options or ReadOptions()) as source:
        return source.dialect, list(source)


def _fail_all(source: Path, failures: Path, reason: str = "server said no") -> list[Row]:
    """Read `source` and write every row to a failures file, as a run that issued none."""
    dialect, rows = _read_rows(source)
    with FailuresWriter(failures, dialect) as writer:
        for row in rows:
            writer.write(row, reason)
    return rows


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1", "'+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("Zoë", "Zoë"),
        ("a=b", "a=b"),
        ("", ""),
    ],
)
def test_neutralise(cell: str, expected: str) -> None:
    """Cells starting with = + - @ TAB or CR get a leading quote; others are untouched."""
    assert neutralise(cell) == expected
    assert restore(neutralise(cell)) == cell  # what the readers undo, from the same set


def test_failures_file_of_a_workbook_is_utf8_bom_csv_with_commas(tmp_path: Path) -> None:
    """A workbook's dialect (xlsx, utf-8-sig, ",") gives a CSV that Excel opens as UTF-8."""
    dialect = Dialect("xlsx", "utf-8-sig", ",", ("First Name", "Email"), sheet="Cohort")
    with FailuresWriter(tmp_path / "cohort.failures.csv", dialect) as writer:
        writer.write_fields(5, {"First Name": "Zoë", "Email": "zoe@"}, "bad email")
    data = (tmp_path / "cohort.failures.csv").read_bytes()
    assert data == "\ufeffrow,reason,First Name,Email\r\n5,bad email,Zoë,zoe@\r\n".encode()


def test_failures_file_has_row_reason_and_input_columns(tmp_path: Path) -> None:
    """The failures file holds row, reason, then the input's own columns and values."""
    source = tmp_path / "cohort.csv"
    source.write_text("First Name,Email,Notes\r\nAnn,ann@,x\r\n", encoding="utf-8")
    _fail_all(source, tmp_path / "failures.csv", "Email 'ann@': not a valid email address")
    with open(tmp_path / "failures.csv", encoding="utf-8", newline="") as handle:
        assert list(csv.reader(handle)) == [
            ["row", "reason", "First Name", "Email", "Notes"],
            ["2", "Email 'ann@': not a valid email address", "Ann", "ann@", "x"],
        ]


def test_failures_file_keeps_encoding_delimiter_and_sep_line(tmp_path: Path) -> None:
    """A cp1252 semicolon file with a sep= line is written back the same way."""
    source = tmp_path / "cohort.csv"
    source.write_bytes("sep=;\r\nFirst Name;Email\r\nJosé;jose@\r\n".encode("cp1252"))
    _fail_all(source, tmp_path / "failures.csv")
    data = (tmp_path / "failures.csv").read_bytes()
    assert data.decode("cp1252") == (
        "sep=;\r\nrow;reason;First Name;Email\r\n2;server said no;José;jose@\r\n"
    )


def test_failures_file_in_utf16_with_tabs(tmp_path: Path) -> None:
    """An Excel 'Unicode text' input gives a UTF-16, TAB-delimited failures file."""
    source = tmp_path / "cohort.txt"
    source.write_bytes("First Name\tEmail\r\n王芳\twang@\r\n".encode("utf-16"))
    _fail_all(source, tmp_path / "failures.txt")
    data = (tmp_path / "failures.txt").read_bytes()
    assert data.startswith(b"\xff\xfe")
    assert data.decode("utf-16").splitlines()[1] == "2\tserver said no\t王芳\twang@"


def test_failures_file_neutralises_every_cell(tmp_path: Path) -> None:
    """Formula-like cells, including the reason, are neutralised."""
    source = tmp_path / "cohort.csv"
    source.write_text('First Name,Email\r\n=cmd|"/c calc"!A1,@evil\r\n', encoding="utf-8")
    _fail_all(source, tmp_path / "failures.csv", "-bad")
    with open(tmp_path / "failures.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[1] == ["2", "'-bad", '\'=cmd|"/c calc"!A1', "'@evil"]


def test_failures_file_reads_back_to_the_same_learners(tmp_path: Path) -> None:
    """Fed back in, a failures file gives the same learners at their original row numbers."""
    source = tmp_path / "cohort.csv"
    source.write_text(
        "First Name;Surname;Email address;Issue Date;Score;Evidence Text\r\n"
        'Zoë;=Nguyễn;zoe@example.com;31/03/2025;-1;"two\r\nlines; here"\r\n'
        "Siobhán;O'Neill;s@example.com;;;\r\n"
        "王芳;Wang;wang@example.com;2025-01-02;7;x\r\n",
        encoding="utf-8-sig",
    )
    rows = _fail_all(source, tmp_path / "failures.csv")
    dialect, again = _read_rows(tmp_path / "failures.csv")
    assert dialect.encoding == "utf-8-sig"
    assert dialect.delimiter == ";"
    assert [row.learner for row in again] == [row.learner for row in rows]
    assert [row.number for row in again] == [row.number for row in rows] == [2, 3, 4]
    assert dialect.original_rows
    assert all(row.ok for row in again)


def test_failures_file_fed_back_twice_does_not_nest_columns(tmp_path: Path) -> None:
    """A failures file of a failures file reuses the row and reason columns."""
    source = tmp_path / "cohort.csv"
    source.write_text("First Name,Email\r\nAnn,ann@example.com\r\n", encoding="utf-8")
    _fail_all(source, tmp_path / "f1.csv", "first")
    _fail_all(tmp_path / "f1.csv", tmp_path / "f2.csv", "second")
    with open(tmp_path / "f2.csv", encoding="utf-8", newline="") as handle:
        assert list(csv.reader(handle)) == [
            ["row", "reason", "First Name", "Email"],
            ["2", "second", "Ann", "ann@example.com"],
        ]


def test_failures_file_avoids_clashing_with_input_columns(tmp_path: Path) -> None:
    """An input with its own Reason column keeps it; ours gets another name."""
    source = tmp_path / "cohort.csv"
    source.write_text("First Name,Email,Reason\r\nAnn,ann@,holiday\r\n", encoding="utf-8")
    _fail_all(source, tmp_path / "failures.csv")
    header = (tmp_path / "failures.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header == "row,bulk-issuer reason,First Name,Email,Reason"


def test_failures_file_keeps_overflowing_cells(tmp_path: Path) -> None:
    """Values beyond the header are kept at the end of the row, not lost."""
    source = tmp_path / "cohort.csv"
    source.write_text("First Name,Email\r\nAnn,ann@example.com,extra\r\n", encoding="utf-8")
    _fail_all(source, tmp_path / "failures.csv")
    line = (tmp_path / "failures.csv").read_text(encoding="utf-8").splitlines()[1]
    assert line == "2,server said no,Ann,ann@example.com,extra"


def test_failures_file_for_records_is_utf8_csv(tmp_path: Path) -> None:
    """Records are written as UTF-8 CSV; keys the header lacks go into the reason."""
    items: list[Learner | Mapping[str, object]] = [
        {"first_name": "Ann", "email": "ann@"},
        {"first_name": "Zoë", "email": "zoe@", "phone": "=1"},
        Learner("Bob", email="bob@"),
    ]
    with open_source(items) as source:
        dialect, rows = source.dialect, list(source)
    with FailuresWriter(tmp_path / "failures.csv", dialect) as writer:
        for row in rows:
            writer.write(row, "invalid")
    with open(tmp_path / "failures.csv", encoding="utf-8", newline="") as handle:
        written = list(csv.reader(handle))
    assert written[0] == ["row", "reason", "first_name", "email"]
    assert written[2] == ["2", "invalid (other fields: phone='=1')", "Zoë", "zoe@"]
    assert written[3] == ["3", "invalid", "Bob", "bob@"]


def test_failures_writer_flushes_each_row(tmp_path: Path) -> None:
    """Each row is on disk as soon as it is written (a crash loses at most one)."""
    dialect = Dialect("csv", "utf-8", ",", ("First Name", "Email"))
    writer = FailuresWriter(tmp_path / "failures.csv", dialect)
    writer.write_fields(7, {"First Name": "Ann", "Email": "ann@"}, "bad email")
    assert (tmp_path / "failures.csv").read_text(encoding="utf-8").splitlines()[-1] == (
        "7,bad email,Ann,ann@"
    )
    assert writer.count == 1
    writer.close()
    writer.close()
    with pytest.raises(ValueError, match="is closed"):
        writer.write_fields(8, {}, "late")


def test_reason_that_the_encoding_cannot_hold_is_replaced(tmp_path: Path) -> None:
    """A reason with characters outside cp1252 is written with '?', not a crash."""
    dialect = Dialect("csv", "cp1252", ",", ("First Name", "Email"))
    with FailuresWriter(tmp_path / "failures.csv", dialect) as writer:
        writer.write_fields(2, {"First Name": "José", "Email": "j@"}, "domain 王 invalid")
    text = (tmp_path / "failures.csv").read_bytes().decode("cp1252")
    assert text.splitlines()[1] == "2,domain ? invalid,José,j@"


def test_empty_failures_file_still_has_a_header(tmp_path: Path) -> None:
    """With nothing written, the file holds the header alone."""
    dialect = Dialect("csv", "utf-8-sig", ",", ("First Name", "Email"))
    FailuresWriter(tmp_path / "failures.csv", dialect).close()
    assert (
        tmp_path / "failures.csv"
    ).read_bytes() == b"\xef\xbb\xbfrow,reason,First Name,Email\r\n"


def test_success_file(tmp_path: Path) -> None:
    """The success file lists row, email, assertion id and a note, neutralised, UTF-8, commas."""
    with SuccessWriter(tmp_path / "issued.csv") as writer:
        writer.write(2, "zoë@example.com", 1234)
        writer.write(3, "+ann@example.com", None, "sent again without checking")
    assert (tmp_path / "issued.csv").read_bytes().decode("utf-8") == (
        "row,email,assertion_id,note\r\n2,zoë@example.com,1234,\r\n"
        "3,'+ann@example.com,,sent again without checking\r\n"
    )


def test_success_file_appends_for_a_resumed_run(tmp_path: Path) -> None:
    """append=True adds rows under the existing header."""
    with SuccessWriter(tmp_path / "issued.csv") as writer:
        writer.write(2, "a@example.com", "x1")
    with SuccessWriter(tmp_path / "issued.csv", append=True) as writer:
        writer.write(3, "b@example.com", "x2")
    lines = io.StringIO((tmp_path / "issued.csv").read_text(encoding="utf-8")).readlines()
    assert [line.strip() for line in lines] == [
        "row,email,assertion_id,note",
        "2,a@example.com,x1,",
        "3,b@example.com,x2,",
    ]


def test_account_never_replaces_a_special_file_nor_leaves_a_partial_copy(tmp_path: Path) -> None:
    """`account` refuses a pipe as the failures file (its copy moved over the pipe would
    replace it) and, when the successes file cannot be opened, leaves no half-written copy
    of the failures file beside it."""
    source = write_cohort(tmp_path / "cohort.csv", good_rows(2))
    dialect, _ = _read_rows(source)
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    folder = tmp_path / "folder"
    folder.mkdir()
    with Journal(None) as journal:
        with pytest.raises(OSError, match="not a regular file"):
            account(
                source, journal, badge_id=51, options=ReadOptions(), dialect=dialect, failures=pipe
            )
        with pytest.raises(IsADirectoryError):
            account(
                source,
                journal,
                badge_id=51,
                options=ReadOptions(),
                dialect=dialect,
                failures=tmp_path / "failures.csv",
                successes=folder,
            )
    assert stat.S_ISFIFO(pipe.stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort.csv", "folder", "pipe"]
