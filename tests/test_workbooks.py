"""Workbooks (.xlsx, .ods): sheets, aliases, date cells, ids typed as text, failures file."""

from __future__ import annotations

import codecs
import csv
import datetime
import io
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import pytest

from bulk_issuer.errors import InputError
from bulk_issuer.learners import Row
from bulk_issuer.readers import ReadOptions, open_source, scan_source
from bulk_issuer.results import FailuresWriter

HEADER = ["First name", "Surname", "Email address", "Issued On", "Phone", "Navigatr User ID"]
LEARNERS: list[list[object]] = [
    # accents, a real date cell, a phone typed as text with its leading zero
    ["Zoë", "Müller", "zoe@example.org", datetime.date(2025, 3, 1), "07700900123", None],
    # decomposed accents (NFD), a datetime cell at midnight, a phone as a number
    [
        unicodedata.normalize("NFD", "Renée"),
        "Côté",
        unicodedata.normalize("NFD", "renée@example.org"),
        datetime.datetime(2025, 3, 2),
        447700900123,
        None,
    ],
    # an id as a number cell: 12345, never "12345.0"; no email needed with a recipient_id
    ["Søren", "Kierkegaard", "", None, "+44 7700 900123", 12345],
    # broken: no first name
    ["", "Nofirst", "nofirst@example.org", None, None, None],
]
SECOND = [["First Name", "Email"], ["Björn", "bjorn@example.org"], ["Ann", "ann@example.org"]]


def _xlsx(path: Path, sheets: dict[str, Sequence[Sequence[object]]]) -> Path:
    """A workbook as Excel saves it, one sheet per entry, dates formatted as dates."""
    from openpyxl import Workbook

    book = Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(list(row))
    book.save(path)
    return path


def _ods(path: Path, sheets: dict[str, Sequence[Sequence[object]]]) -> Path:
    """The same as LibreOffice saves it (typed cells: string, float, date)."""
    from odf.opendocument import OpenDocumentSpreadsheet
    from odf.table import Table, TableCell, TableRow
    from odf.text import P

    doc = OpenDocumentSpreadsheet()
    for name, rows in sheets.items():
        table = Table(name=name)
        for row in rows:
            line = TableRow()
            for value in row:
                if value is None:
                    cell = TableCell()
                elif isinstance(value, datetime.date):
                    day = (
                        value.isoformat()
                        if not isinstance(value, datetime.datetime)
                        else (value.isoformat(timespec="seconds"))
                    )
                    cell = TableCell(valuetype="date", datevalue=day)
                    cell.addElement(P(text=day))
                elif isinstance(value, int | float):
                    cell = TableCell(valuetype="float", value=str(value))
                    cell.addElement(P(text=str(value)))
                else:
                    cell = TableCell(valuetype="string")
                    cell.addElement(P(text=str(value)))
                line.addElement(cell)
            table.addElement(line)
        doc.spreadsheet.addElement(table)
    doc.save(str(path))
    return path


WRITERS = {"xlsx": _xlsx, "ods": _ods}


def _read(path: Path, options: ReadOptions | None = None) -> list[Row]:
    with open_source(path, options or ReadOptions(badge_id=51)) as source:
        return list(source)


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_first_sheet_with_accents_dates_and_ids_typed_as_text(tmp_path: Path, kind: str) -> None:
    """Aliases match, date cells are dates, text ids keep their zeros, numbers lose '.0'."""
    path = WRITERS[kind](tmp_path / f"cohort.{kind}", {"Cohort A": [HEADER, *LEARNERS]})
    with open_source(path, ReadOptions(badge_id=51)) as source:
        dialect = source.dialect
        rows = list(source)
    assert (dialect.format, dialect.sheet, dialect.encoding, dialect.delimiter) == (
        kind,
        "Cohort A",
        "utf-8-sig",
        ",",
    )
    assert dialect.columns == tuple(HEADER)
    assert [row.number for row in rows] == [2, 3, 4, 5]
    zoe, renee, soren, nofirst = rows
    assert zoe.learner is not None
    assert renee.learner is not None
    assert soren.learner is not None
    assert zoe.learner.payload() == {
        "recipient_firstname": "Zoë",
        "recipient_lastname": "Müller",
        "recipient_email": "zoe@example.org",
        "issue_date": "2025-03-01",
    }
    assert zoe.fields["Phone"] == "07700900123"
    assert zoe.fields["Issued On"] == "2025-03-01"
    # NFD as typed in the file; the learner holds (and sends) NFC, its key likewise.
    assert renee.fields["First name"] == unicodedata.normalize("NFD", "Renée")
    assert renee.learner.email == "renée@example.org"
    assert renee.learner.key == "renée@example.org"
    assert renee.learner.issue_date == datetime.date(2025, 3, 2)
    assert renee.fields["Phone"] == "447700900123"
    assert soren.learner.recipient_id == 12345
    assert soren.fields["Navigatr User ID"] == "12345"
    assert soren.fields["Phone"] == "+44 7700 900123"
    assert not nofirst.ok
    assert "first name is empty" in nofirst.problems[0].message


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_second_sheet_by_name(tmp_path: Path, kind: str) -> None:
    """ReadOptions(sheet=...) reads that sheet (exact name, else ignoring case)."""
    path = WRITERS[kind](tmp_path / f"two.{kind}", {"Cohort A": [HEADER], "Cohort B": SECOND})
    for name in ("Cohort B", "cohort b"):
        rows = _read(path, ReadOptions(badge_id=51, sheet=name))
        assert [(row.number, row.learner and row.learner.first_name) for row in rows] == [
            (2, "Björn"),
            (3, "Ann"),
        ]
    with pytest.raises(InputError, match=r"has no sheet 'Cohort C'; its sheets are 'Cohort A'"):
        _read(path, ReadOptions(sheet="Cohort C"))


def test_rows_are_numbered_as_the_sheet_shows_them(tmp_path: Path) -> None:
    """A title above the header and blank rows between learners keep the sheet's numbers."""
    rows: list[list[object]] = [
        [None],
        ["First Name", "Email"],
        ["Ann", "ann@example.org"],
        [None, None],
        ["Bob", "bob@example.org"],
    ]
    path = _xlsx(tmp_path / "gaps.xlsx", {"Sheet1": rows})
    assert [row.number for row in _read(path)] == [3, 5]


def test_header_only_and_empty_sheets(tmp_path: Path) -> None:
    """A header alone scans as 0 learners; an empty sheet is refused, naming the others."""
    path = _xlsx(tmp_path / "thin.xlsx", {"Empty": [], "Header": [["First Name", "Email"]]})
    scan = scan_source(path, ReadOptions(badge_id=51, sheet="Header"))
    assert (scan.rows, scan.learners, scan.empty) == (0, 0, True)
    with pytest.raises(InputError, match=r"sheet 'Empty' is empty.*--sheet \(Header\)"):
        _read(path, ReadOptions(sheet="Empty"))


def test_missing_column_names_sheet_and_row(tmp_path: Path) -> None:
    """A header without an email column says which sheet and row it read."""
    path = _xlsx(tmp_path / "bad.xlsx", {"Learners": [["First Name", "Mobile"], ["Ann", "1"]]})
    with pytest.raises(InputError, match=r"sheet 'Learners', row 1: no email column") as caught:
        _read(path)
    assert caught.value.row == 1


def test_workbook_named_csv_and_broken_workbook(tmp_path: Path) -> None:
    """A workbook saved under .csv is read as one; a damaged one is refused with advice."""
    path = _xlsx(tmp_path / "really-a-workbook.csv", {"S": SECOND})
    assert [row.ok for row in _read(path)] == [True, True]
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(path.read_bytes()[:300])
    with pytest.raises(InputError, match="cannot be read as a workbook"):
        _read(broken)


def test_failures_file_is_utf8_bom_csv_and_reads_back_with_row_numbers(tmp_path: Path) -> None:
    """The failures file of a workbook is a UTF-8 CSV with BOM; fed back, rows keep numbers."""
    path = _xlsx(tmp_path / "cohort.xlsx", {"Cohort A": [HEADER, *LEARNERS]})
    failures = tmp_path / "cohort.failures.csv"
    source = open_source(path, ReadOptions(badge_id=51))
    with source, FailuresWriter(failures, source.dialect) as writer:
        for row in source:
            if not row.ok:
                writer.write(row, "; ".join(map(str, row.problems)))
    data = failures.read_bytes()
    assert data.startswith(codecs.BOM_UTF8)
    written = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert written[0] == ["row", "reason", *HEADER]
    assert written[1][0] == "5"
    # Fixed by the administrator and fed back: the learner keeps row 5.
    written[1][2] = "Nora"
    fixed = tmp_path / "fixed.csv"
    with fixed.open("w", encoding="utf-8-sig", newline="") as out:
        csv.writer(out).writerows(written)
    with open_source(fixed, ReadOptions(badge_id=51)) as source:
        assert source.dialect.original_rows
        (row,) = list(source)
    assert row.number == 5
    assert row.learner is not None
    assert row.learner.first_name == "Nora"


def test_first_visible_sheet_is_read(tmp_path: Path) -> None:
    """Without --sheet, a hidden first sheet is passed over for the first one a person sees."""
    from openpyxl import Workbook

    book = Workbook()
    hidden = book.active
    assert hidden is not None
    hidden.title = "Lookup"
    hidden.sheet_state = "hidden"
    hidden.append(["code"])
    shown = book.create_sheet("Learners")
    for row in SECOND:
        shown.append(row)
    path = tmp_path / "hidden.xlsx"
    book.save(path)
    with open_source(path) as source:
        assert source.dialect.sheet == "Learners"
        assert [row.ok for row in source] == [True, True]


def test_values_beyond_the_header_are_a_problem_not_lost(tmp_path: Path) -> None:
    """A value in a column without a header makes that row invalid, kept in its fields."""
    rows = [["First Name", "Email"], ["Ann", "ann@example.org", "stray"]]
    (row,) = _read(_xlsx(tmp_path / "wide.xlsx", {"S": rows}))
    assert not row.ok
    assert "every column with values needs a header" in row.problems[0].message
    assert row.fields["(column 3)"] == "stray"
