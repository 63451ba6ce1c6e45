"""CSV files: the delimiter, the header, and each record's cells with its row number.

The delimiter is detected from the header line (or Excel's `sep=;` line, or given). Row
numbers are the rows a spreadsheet shows: blank lines count, a quoted line break does not,
Excel's `sep=` line does not. A file that cannot be read to the end (a value over the size
limit, which is what a quote never closed becomes in a long file, or bytes of another
encoding) raises `InputError` naming the row.
"""

from __future__ import annotations

import csv
import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from .errors import InputError
from .textfile import LINE_BREAK, DecodeFailure, codec_label

__all__ = ["CsvTable", "check_quotes", "delimiter_hint", "open_csv"]

_DELIMITERS: Final = (",", ";", "\t", "|")  # in order of preference when counts tie
_DELIMITER_NAMES: Final = {"\t": "TAB", ",": "','", ";": "';'", "|": "'|'"}
_SEP_LINE = re.compile(r'"?sep=(.)"?[,;\t|]*', re.IGNORECASE | re.DOTALL)
_CSV_FIELD_LIMIT: Final = 1 << 20  # characters in one value; more means a quote is not closed


@dataclass(frozen=True, slots=True)
class CsvTable:
    """A CSV file, opened: its header, and its records read lazily.

    Args:
        header: The column names as found (a BOM taken off the first).
        delimiter: The delimiter used.
        notes: What was detected, in words for a person (the encoding's notes first).
        sep_line: The file started with Excel's `sep=;` line.
        header_row: The header's row number (after blank lines, not counting `sep=`).
        records: (row number, cells, lines the record spanned), blank rows left out.
    """

    header: tuple[str, ...]
    delimiter: str
    notes: tuple[str, ...]
    sep_line: bool
    header_row: int
    records: Iterator[tuple[int, list[str], int]]


def open_csv(
    lines: Iterator[str],
    *,
    name: str,
    codec: str,
    delimiter: str | None,
    notes: Sequence[str] = (),
) -> CsvTable:
    """Find the header and the delimiter; the records are read when iterated.

    Args:
        lines: The decoded lines, line ends kept.
        name: What to call the input in messages.
        codec: The encoding the lines are decoded with (for messages).
        delimiter: The user's `--delimiter` (a character or a name such as "tab").
        notes: What was said about the encoding.

    Raises:
        InputError: No header, an unusable delimiter, or a header that cannot be read.
    """
    found_notes = list(notes)
    given = _delimiter_option(delimiter) if delimiter else None
    chosen = given
    number = 0  # rows as a spreadsheet shows them: blank lines count, Excel's sep= line not
    sep_line = False
    header_line = ""
    for line in lines:
        if not line.strip().strip("\ufeff"):
            number += 1
            continue
        if not sep_line and number == 0 and (sep := _SEP_LINE.fullmatch(line.strip("\ufeff\r\n"))):
            sep_line = True
            if chosen is None:
                chosen = sep.group(1)
                found_notes.append(f"Excel 'sep={chosen}' line honoured")
            continue
        header_line = line.lstrip("\ufeff")
        break
    if not header_line:
        raise InputError(
            f"{name} has no header row: expected column names on the first line", path=name
        )
    if chosen is None:
        counts = _count_delimiters(header_line)
        chosen = max(_DELIMITERS, key=lambda d: (counts[d], -_DELIMITERS.index(d)))
        if counts[chosen] == 0:
            chosen = ","
            found_notes.append("only one column in the header; delimiter ',' assumed")
        else:
            found_notes.append(f"delimiter {_DELIMITER_NAMES[chosen]} (detected)")
    elif given is not None:
        found_notes.append(f"delimiter {_DELIMITER_NAMES.get(chosen, repr(chosen))} (given)")
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    reader = csv.reader(itertools.chain([header_line], lines), delimiter=chosen)
    try:
        header = next(reader)
    except csv.Error as exc:
        raise InputError(f"{name}: the header row cannot be read: {exc}", path=name) from None
    number += 1
    if header:
        header[0] = header[0].lstrip("\ufeff")
    return CsvTable(
        tuple(header),
        chosen,
        tuple(found_notes),
        sep_line,
        number,
        _records(reader, number, name, codec),
    )


def delimiter_hint(header: Sequence[str], delimiter: str) -> str:
    """A sentence for a header without the needed columns that another delimiter would split."""
    others = [d for d in _DELIMITERS if d != delimiter and any(d in h for h in header)]
    if not others:
        return ""
    return (
        f" The header was split at {_DELIMITER_NAMES.get(delimiter, delimiter)}; if "
        f"the file uses {_DELIMITER_NAMES[others[0]]}, pass --delimiter."
    )


def check_quotes(
    cells: Sequence[str],
    header: Sequence[str],
    delimiter: str,
    looks_like_record: Callable[[Sequence[str]], bool],
    *,
    name: str,
    number: int,
) -> None:
    """Refuse a record that swallowed the rows after it because a quote was never closed.

    Args:
        cells: A record that spanned more than one line.
        looks_like_record: Whether cells found inside one value look like a learner row.

    Raises:
        InputError: A value spans lines that look like learner rows of this file.
    """
    for position, cell in enumerate(cells):
        inner = LINE_BREAK.split(cell)[1:]
        for line in inner:
            parsed = next(csv.reader([line], delimiter=delimiter), [])
            if looks_like_record(parsed):
                column = header[position] if position < len(header) else f"column {position + 1}"
                shown = cell if len(cell) <= 60 else cell[:57] + "..."
                raise InputError(
                    f"{name}, row {number}: a quote in column {column!r} ({shown!r}) is not "
                    f"closed, so the {len(inner)} line(s) after it were read into it, and they "
                    f"look like learner rows. Close the quote (or remove it) and run again.",
                    row=number,
                    path=name,
                )


def _records(
    reader: Iterator[list[str]], number: int, name: str, codec: str
) -> Iterator[tuple[int, list[str], int]]:
    line_num = getattr(reader, "line_num", 0)
    try:
        for cells in reader:
            number += 1
            used = reader.line_num - line_num  # type: ignore[attr-defined]
            line_num += used
            if cells and "".join(cells).strip():
                yield number, cells, used
    except csv.Error as exc:
        raise InputError(
            f"{name}, row {number + 1}: {exc}. A value probably opens a quote that is never "
            f"closed; fix the quotes in that row and run again.",
            row=number + 1,
            path=name,
        ) from None
    except DecodeFailure as failure:
        raise InputError(
            f"{name}: rows from {number + 1} on cannot be read: {failure.describe(codec)}. "
            f"The start of the file was {codec_label(codec)}; the file mixes encodings. "
            f"Re-save it as UTF-8, or give the encoding with --encoding.",
            row=number + 1,
            path=name,
        ) from None


def _delimiter_option(value: str) -> str:
    named = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
    delimiter = named.get(value.lower(), value)
    if len(delimiter) != 1 or delimiter in '"\r\n' or delimiter.isalnum():
        raise InputError(
            f"delimiter {value!r} cannot be used; give one character such as ',', ';', '|' or 'tab'"
        )
    return delimiter


def _count_delimiters(line: str) -> dict[str, int]:
    """Count candidate delimiters outside quotes in one line."""
    counts = dict.fromkeys(_DELIMITERS, 0)
    quoted = False
    for char in line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    return counts
