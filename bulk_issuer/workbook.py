"""Workbooks: the rows of one sheet of an Excel (.xlsx, .xlsm, .xlsb, .xls) or LibreOffice
(.ods) file, as raw cells under a header.

Read with python-calamine (Rust): about 20 times faster than openpyxl at 100,000 rows and
the only one of the two that reads .ods (`make bench`, "workbooks"). Cells keep their
types where that helps: a date cell is a `datetime.date`, a whole number is an `int`
(12, never "12.0"), a text cell stays text (a phone number or an id typed as text keeps
its leading zeros and its `+`). Row numbers are the sheet's own, as the spreadsheet shows
them.
"""

from __future__ import annotations

import datetime
import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Final, Literal

from .errors import InputError

if TYPE_CHECKING:
    from python_calamine import CalamineWorkbook

__all__ = ["WORKBOOK_SUFFIXES", "WorkbookTable", "read_workbook", "workbook_kind"]

WorkbookFormat = Literal["xlsx", "ods"]

WORKBOOK_SUFFIXES: Final[dict[str, WorkbookFormat]] = {
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".xlsb": "xlsx",
    ".xls": "xlsx",
    ".ods": "ods",
}
_ZIP: Final = b"PK\x03\x04"
_OLE: Final = b"\xd0\xcf\x11\xe0"  # old binary .xls
_ODS_MIMETYPE: Final = b"mimetypeapplication/vnd.oasis.opendocument.spreadsheet"
_MIDNIGHT: Final = datetime.time()


def workbook_kind(prefix: bytes) -> WorkbookFormat | None:
    """Which workbook format the first bytes of a file show, or None for a text file."""
    if prefix.startswith(_ZIP):
        # An .ods zip starts with its uncompressed `mimetype` member (ODF 1.2, 3.3).
        return "ods" if prefix[30:].startswith(_ODS_MIMETYPE) else "xlsx"
    if prefix.startswith(_OLE):
        return "xlsx"
    return None


@dataclass(frozen=True, slots=True)
class WorkbookTable:
    """One sheet, opened: its header and its records, read lazily.

    Args:
        format: "xlsx" (any Excel workbook) or "ods".
        sheet: The name of the sheet read.
        sheets: Every sheet's name, in order.
        header: The header cells as text, trailing empty ones dropped.
        header_row: The header's row number as the spreadsheet shows it.
        records: (row number, cells) for each row after the header that has a value.
    """

    format: WorkbookFormat
    sheet: str
    sheets: tuple[str, ...]
    header: tuple[str, ...]
    header_row: int
    records: Iterator[tuple[int, list[object]]]


def read_workbook(
    source: str | os.PathLike[str] | IO[bytes],
    name: str,
    kind: WorkbookFormat,
    sheet: str | None = None,
) -> WorkbookTable:
    """Open a workbook and find the header of the sheet to read.

    Args:
        source: A path, or a binary file (standard input, already read into memory).
        name: What to call the input in messages.
        kind: The format, from the file name or its first bytes.
        sheet: The sheet's name (exact, else ignoring case); None: the first visible one.

    Raises:
        InputError: The workbook cannot be read, is password-protected, has no such
            sheet, or the sheet is empty.
    """
    import python_calamine as calamine  # a compiled module: loaded only for workbooks

    try:
        if isinstance(source, str | os.PathLike):
            book = calamine.CalamineWorkbook.from_path(os.fspath(source))
        else:
            book = calamine.CalamineWorkbook.from_filelike(source)
    except calamine.PasswordError:
        raise InputError(
            f"{name} is password-protected; save a copy without a password and give that",
            path=name,
        ) from None
    except (calamine.CalamineError, OSError, ValueError) as exc:
        raise InputError(
            f"{name} cannot be read as a workbook ({exc}); open it in Excel or LibreOffice "
            f"and save it again as .xlsx, or as 'CSV UTF-8'",
            path=name,
        ) from None
    sheets = tuple(book.sheet_names)
    chosen = _choose_sheet(book, sheets, sheet, name)
    try:
        table = book.get_sheet_by_name(chosen)
        rows = table.iter_rows()
    except calamine.CalamineError as exc:
        raise InputError(f"{name}: sheet {chosen!r} cannot be read ({exc})", path=name) from None
    # python-calamine 0.9 yields every row from the sheet's first (blank ones included);
    # others start at the first row with a value. That row is never blank: tell them apart.
    start = table.start[0] if table.start else 0
    first = next(rows, None)
    starts_at_value = first is not None and any(cell != "" for cell in first)
    number = start if starts_at_value else 0
    rows = itertools.chain([] if first is None else [first], rows)
    header: list[str] = []
    for cells in rows:
        number += 1
        texts = [_header_text(cell) for cell in cells]
        while texts and not texts[-1]:
            texts.pop()
        if texts:
            header = texts
            break
    if not header:
        where = f"sheet {chosen!r}" if len(sheets) > 1 else "its only sheet"
        others = [s for s in sheets if s != chosen]
        hint = f"; choose another with --sheet ({', '.join(others)})" if others else ""
        raise InputError(
            f"{name}: {where} is empty: expected a header row and one row per learner{hint}",
            path=name,
        )
    return WorkbookTable(kind, chosen, sheets, tuple(header), number, _records(rows, number))


def _choose_sheet(
    book: CalamineWorkbook, sheets: tuple[str, ...], wanted: str | None, name: str
) -> str:
    if not sheets:
        raise InputError(f"{name} is a workbook without sheets", path=name)
    if wanted is None:
        # The first sheet a person sees: not hidden, and a worksheet (not a chart).
        import python_calamine as calamine

        for meta in book.sheets_metadata:
            if (
                meta.visible == calamine.SheetVisibleEnum.Visible
                and meta.typ == calamine.SheetTypeEnum.WorkSheet
            ):
                return meta.name
        return sheets[0]
    if wanted in sheets:
        return wanted
    folded = [sheet for sheet in sheets if sheet.casefold() == wanted.strip().casefold()]
    if len(folded) == 1:
        return folded[0]
    listed = ", ".join(repr(sheet) for sheet in sheets)
    raise InputError(f"{name} has no sheet {wanted!r}; its sheets are {listed}", path=name)


def _records(rows: Iterator[Sequence[object]], number: int) -> Iterator[tuple[int, list[object]]]:
    for cells in rows:
        number += 1
        values = [_value(cell) for cell in cells]
        while values and values[-1] == "":
            values.pop()
        if values and any(value != "" for value in values):
            yield number, values


def _value(cell: object) -> object:
    """A cell as the row builder takes it: text, int, float, date, bool."""
    if isinstance(cell, float):
        return int(cell) if cell.is_integer() else cell
    if isinstance(cell, datetime.datetime):
        return cell.date() if cell.time() == _MIDNIGHT else cell
    if cell is None:
        return ""
    return cell


def _header_text(cell: object) -> str:
    value = _value(cell)
    if isinstance(value, datetime.date):
        return value.isoformat()
    return str(value).strip()
