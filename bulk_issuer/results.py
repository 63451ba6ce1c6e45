"""Results files: the rows not issued (to fix and feed back) and the learners issued.

Both are CSV that a course administrator opens in a spreadsheet, so every cell is
neutralised against formula injection. The failures file is written in the input's own
columns, delimiter and encoding (a workbook's as UTF-8 CSV with a BOM, beside it), so
that it can be corrected and fed back unchanged: read again, its `row` column gives each
record its row number in the original file and `reason` is ignored. A failures file
named `.jsonl` (a JSON Lines input's) is JSON Lines instead, each record with its own keys.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import IO, Final, Self

from .columns import failures_file_columns, field_keys
from .formulas import neutralise
from .learners import Row
from .readers import Dialect

__all__ = ["FailuresLinesWriter", "FailuresWriter", "SuccessWriter", "neutralise"]

_ROW: Final = "row"
_REASON: Final = "reason"
_OVERFLOW_PREFIX: Final = "(column "


class _ResultsFile:
    """A results file written record by record and flushed after each, so a crash loses
    at most one; closed by `close()` or its `with` block."""

    def __init__(
        self, path: str | os.PathLike[str], *, encoding: str, append: bool = False
    ) -> None:
        self.path = os.fspath(path)
        self.count = 0
        self._encoding = encoding
        self._file: IO[str] | None = open(  # noqa: SIM115 - closed by close() / __exit__
            self.path, "a" if append else "w", encoding=encoding, newline=""
        )

    def _open(self) -> IO[str]:
        if self._file is None:
            raise ValueError(f"{self.path} is closed; open a new writer to add rows")
        return self._file

    def close(self) -> None:
        """Close the file; safe to call twice."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _CsvFile(_ResultsFile):
    """A CSV results file."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        encoding: str,
        delimiter: str,
        append: bool = False,
    ) -> None:
        super().__init__(path, encoding=encoding, append=append)
        self._writer = csv.writer(self._open(), delimiter=delimiter, lineterminator="\r\n")

    def _write(self, cells: Sequence[str]) -> None:
        file = self._open()
        safe = [neutralise(cell) for cell in cells]
        try:
            self._writer.writerow(safe)
        except UnicodeEncodeError:
            # Only values that did not come from this file's own encoding can get here
            # (csv writes a whole row in one call, so nothing was written yet).
            self._writer.writerow([self._safe(cell) for cell in safe])
        file.flush()

    def _safe(self, text: str) -> str:
        """Text of our own (a reason) made writable in the file's encoding."""
        return text.encode(self._encoding, "replace").decode(self._encoding)


class FailuresWriter(_CsvFile):
    """The rows that were not issued: `row`, `reason`, then the input's own columns.

    CSV inputs are written back in their own encoding and delimiter (with Excel's `sep=`
    line if they had one); JSON Lines and in-memory records as UTF-8 CSV with commas.
    The header is written at once, so an empty failures file still says what it holds.

    Args:
        path: Where to write; an existing file is replaced.
        dialect: How the input was read (`LearnerSource.dialect`).
    """

    def __init__(self, path: str | os.PathLike[str], dialect: Dialect) -> None:
        # CSV and workbooks: as the dialect says (a workbook's says UTF-8 with BOM and
        # commas, for a CSV beside it that Excel opens); the others: UTF-8 with commas.
        is_csv = dialect.format == "csv"
        own = is_csv or dialect.workbook
        encoding = dialect.encoding if own else "utf-8"
        delimiter = dialect.delimiter if own else ","
        super().__init__(path, encoding=encoding, delimiter=delimiter)
        self._is_csv = is_csv
        columns = list(dialect.columns)
        # A failures file fed back in already starts with our two columns: reuse them.
        self._ours: tuple[str, ...] = ()
        if failures_file_columns(columns):
            self._ours = tuple(field_keys(columns)[:2])
            columns = columns[2:]
        self._keys = field_keys(columns)
        taken = {name.casefold() for name in columns}
        self._row_column = _ROW if _ROW not in taken else "bulk-issuer row"
        self._reason_column = _REASON if _REASON not in taken else "bulk-issuer reason"
        if self._file is not None and is_csv and dialect.sep_line:
            self._file.write(f"sep={delimiter}\r\n")
        self._write([self._row_column, self._reason_column, *columns])

    def write(self, row: Row, reason: str) -> None:
        """Add one row that was not issued, with the reason a person can act on."""
        self.write_fields(row.number, row.fields, reason)

    def write_fields(self, row_number: int, fields: Mapping[str, str], reason: str) -> None:
        """Add one row from its number and its input values (e.g. kept in the journal)."""
        values = dict(fields)
        for key in self._ours:
            values.pop(key, None)
        cells = [str(values.pop(key, "")) for key in self._keys]
        overflow = [str(values.pop(k)) for k in list(values) if k.startswith(_OVERFLOW_PREFIX)]
        others = ", ".join(f"{key}={value!r}" for key, value in values.items() if value != "")
        if others:
            # A record with keys the header does not have: keep their values, in the reason.
            reason = f"{reason} (other fields: {others})"
        self._write([str(row_number), self._safe(reason), *cells, *overflow])
        self.count += 1


class FailuresLinesWriter(_ResultsFile):
    """The rows that were not issued, as JSON Lines: one object per row, `row` and
    `reason` first, then that row's own keys and values.

    JSON Lines needs no common columns: a record keeps every key it had (a CSV failures
    file of JSON Lines input has the first record's keys, and can only mention the others
    in `reason`), so that fed back unchanged, it is read as it was. UTF-8; no cell is
    neutralised (no spreadsheet runs a JSON value).

    Args:
        path: Where to write; an existing file is replaced.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path, encoding="utf-8")

    def write(self, row: Row, reason: str) -> None:
        """Add one row that was not issued, with the reason a person can act on."""
        self.write_fields(row.number, row.fields, reason)

    def write_fields(self, row_number: int, fields: Mapping[str, str], reason: str) -> None:
        """Add one row from its number and its input values."""
        file = self._open()
        keys = list(fields)
        if failures_file_columns(keys):  # a failures file fed back: its own row and reason
            keys = keys[2:]
        taken = {key.casefold() for key in keys}
        record: dict[str, object] = {
            _ROW if _ROW not in taken else "bulk-issuer row": row_number,
            _REASON if _REASON not in taken else "bulk-issuer reason": reason,
        }
        record.update((key, fields[key]) for key in keys)
        file.write(json.dumps(record, ensure_ascii=False) + "\n")
        file.flush()
        self.count += 1


class SuccessWriter(_CsvFile):
    """The learners issued: `row`, `email`, `assertion_id`, `note` (UTF-8 CSV with commas).

    The note flags what deserves a look, e.g. a learner re-sent without the server being
    asked first whether an unanswered attempt had already issued the badge.

    Args:
        path: Where to write.
        append: Add to an existing file (a resumed run) instead of replacing it.
    """

    def __init__(self, path: str | os.PathLike[str], *, append: bool = False) -> None:
        fresh = not append or not os.path.exists(path) or os.path.getsize(path) == 0
        super().__init__(path, encoding="utf-8", delimiter=",", append=append)
        if fresh:
            self._write(["row", "email", "assertion_id", "note"])

    def write(
        self, row_number: int | None, email: str, assertion_id: str | int | None, note: str = ""
    ) -> None:
        """Add one issued learner (`row_number` None: one no row of the input is)."""
        shown = "" if assertion_id is None else str(assertion_id)
        self._write(["" if row_number is None else str(row_number), email, shown, note])
        self.count += 1
