"""Spreadsheet formulas in results files: which cells a spreadsheet would run, and the undo.

Results files are opened in Excel, LibreOffice or Google Sheets, so a cell that starts like
a formula gets a leading single quote (OWASP, "CSV injection"). A failures file is meant to
be fixed and fed back, so the readers take that quote off again: both sides use this one
prefix set.
"""

from __future__ import annotations

from typing import Final

__all__ = ["FORMULA_START", "neutralise", "restore"]

FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")
"""What a cell starts with when a spreadsheet would run it as a formula."""


def neutralise(cell: str) -> str:
    """Make a cell safe to open in a spreadsheet (OWASP CSV injection).

    A cell starting with = + - @ TAB or CR gets a leading single quote, so that Excel,
    LibreOffice and Google Sheets show it as text instead of running it as a formula.
    """
    if cell.startswith(FORMULA_START):
        return "'" + cell
    return cell


def restore(cell: str) -> str:
    """Undo `neutralise`: `'=Bob` read back from a failures file is `=Bob` again."""
    if cell[:1] == "'" and cell[1:2] in FORMULA_START:
        return cell[1:]
    return cell
