"""Readers: a path, standard input or in-memory records in, validated `Row`s out.

The entry points: `open_source` (stream the rows; memory stays flat for any cohort size)
and `scan_source` (read and validate a whole file once before anything is sent, keeping
only counts). One reader per format yields raw records: `csvfile.py` (with `textfile.py`
choosing the encoding), `jsonlines.py`, `workbook.py`; a `rows.RowBuilder` turns them
into `Row`s. What was detected is recorded in `Dialect` so the results files can say so
and be written back the same way.
"""

from __future__ import annotations

import codecs
import dataclasses
import io
import itertools
import os
import shutil
import sys
import tempfile
import time
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO, Final, Literal

from .columns import failures_file_columns
from .csvfile import check_quotes, delimiter_hint, open_csv
from .errors import InputError
from .jsonlines import open_jsonl
from .learners import FIELD_NAMES, Learner, Problem, Row
from .rows import RowBuilder
from .textfile import DecodeFailure, Encoding, choose_encoding, decoded_lines, read_prefix
from .workbook import WORKBOOK_SUFFIXES, WorkbookFormat, read_workbook, workbook_kind

__all__ = [
    "LINES_SUFFIXES",
    "Dialect",
    "LearnerSource",
    "ReadOptions",
    "SourceScan",
    "aiter_rows",
    "open_source",
    "scan_source",
]


#: The names of a JSON Lines file (anything else not a workbook is read as CSV).
LINES_SUFFIXES: Final = frozenset({".jsonl", ".ndjson"})


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """How to read learner records.

    Args:
        badge_id: The run's badge, for per-badge duplicate detection (a row's own
            badge_id column overrides it).
        delimiter: Force the CSV delimiter; None detects it from the header line.
        encoding: Force the file encoding; None detects it.
        date_format: A `strptime` format that every date must follow, e.g. "%m/%d/%Y".
        column_map: Learner or API field name -> the user's column header ("--map").
        require_consent: A column that must say yes/y/true/1/x for a learner to be issued.
        sheet: The sheet of a workbook (.xlsx, .ods) to read; None reads the first.
    """

    badge_id: int | None = None
    delimiter: str | None = None
    encoding: str | None = None
    date_format: str | None = None
    column_map: Mapping[str, str] = field(default_factory=dict)
    require_consent: str | None = None
    sheet: str | None = None


@dataclass(frozen=True, slots=True)
class Dialect:
    """How an input was read, so that results files can be written back the same way.

    Args:
        format: "csv", "jsonl", "xlsx", "ods", or "records" (an in-memory iterable).
        encoding: A Python codec name: "utf-8", "utf-8-sig", "utf-16", "cp1252", ...
            For a workbook "utf-8-sig": its failures file is a CSV that Excel opens as UTF-8.
        delimiter: The CSV delimiter ("," for JSON Lines, workbooks and records): with
            `encoding`, how the failures file is written.
        columns: The header as found (JSON Lines and records: the first record's keys).
        notes: What was detected, in words for a person.
        sep_line: The file started with Excel's `sep=;` line.
        sheet: The sheet read, for a workbook.
        original_rows: The input is a failures file fed back: its `row` column gives
            each record the row number it had in the original file.
    """

    format: Literal["csv", "jsonl", "xlsx", "ods", "records"]
    encoding: str
    delimiter: str
    columns: tuple[str, ...]
    notes: tuple[str, ...] = ()
    sep_line: bool = False
    sheet: str | None = None
    original_rows: bool = False

    @property
    def workbook(self) -> bool:
        """Whether the input was a workbook (its failures file is a CSV beside it)."""
        return self.format in ("xlsx", "ods")


@dataclass(frozen=True, slots=True)
class SourceScan:
    """What a whole read of an input found, before anything is sent (the preflight's counts).

    Every data row is in exactly one of `learners`, `invalid` and `duplicates`.

    Args:
        name: The input, as messages call it (its path, or "standard input").
        dialect: How it was read.
        rows: Data rows (blank lines and the header not counted).
        learners: Valid learners, each once: what a run would try to issue.
        invalid: Rows with a problem, duplicates not included.
        duplicates: Rows whose learner an earlier row already has, for the same badge.
        badge_ids: The badges the learners would get (a row's own badge_id column, or
            the run's badge); empty when there are no learners.
        seconds: How long the scan took.
    """

    name: str
    dialect: Dialect
    rows: int
    learners: int
    invalid: int
    duplicates: int
    badge_ids: frozenset[int]
    seconds: float
    _reopen: Callable[[], LearnerSource] | None = field(default=None, repr=False, compare=False)

    @property
    def empty(self) -> bool:
        """No learner to issue to: a header-only file (`rows == 0`), or only bad rows."""
        return self.learners == 0

    def open(self) -> LearnerSource:
        """Open the scanned input again, to run it (standard input: the copy scanned).

        Raises:
            RuntimeError: The scan came from `LearnerSource.scan()`, which cannot reopen.
        """
        if self._reopen is None:
            raise RuntimeError("this scan cannot reopen its input; use scan_source()")
        return self._reopen()


class LearnerSource:
    """The rows of one input, streamed; read it once, then close it (or use `with`)."""

    def __init__(
        self,
        dialect: Dialect,
        rows: Iterator[Row],
        resource: IO[bytes] | None = None,
        name: str = "records",
    ) -> None:
        """Wrap a row iterator.

        Args:
            dialect: What was detected about the input.
            rows: The rows, produced lazily.
            resource: A file to close with the source (not stdin).
            name: What to call the input in messages (its path, or "standard input").
        """
        self.dialect = dialect
        self.name = name
        self._rows = rows
        self._resource = resource
        self._started = False
        self._badge_id: int | None = None

    def __iter__(self) -> Iterator[Row]:
        if self._started:
            raise RuntimeError("a LearnerSource can be read once; call open_source() again")
        self._started = True
        return self._rows

    def scan(self) -> SourceScan:
        """Read and validate every row, keeping only counts; this reads the source up.

        Open the input again (`open_source`) to run it. Memory stays flat: rows are
        counted, not kept.

        Raises:
            InputError: The input cannot be read to the end (a quote never closed, a value
                over the size limit, bytes that are not the file's encoding); `.row` names
                the row and `.path` the file.
        """
        started = time.perf_counter()
        rows = learners = invalid = duplicates = 0
        badges: set[int] = set()
        run_badge = self._badge_id
        with self:
            for row in self:
                rows += 1
                learner = row.learner
                if learner is not None and not row.problems:
                    learners += 1
                    badge = learner.badge_id if learner.badge_id is not None else run_badge
                    if badge is not None:
                        badges.add(badge)
                elif row.duplicate_of is not None:
                    duplicates += 1
                else:
                    invalid += 1
        seconds = time.perf_counter() - started
        return SourceScan(
            self.name,
            self.dialect,
            rows,
            learners,
            invalid,
            duplicates,
            frozenset(badges),
            seconds,
        )

    def close(self) -> None:
        """Stop reading and close the file; safe to call twice."""
        close = getattr(self._rows, "close", None)
        if close is not None:
            close()
        if self._resource is not None:
            self._resource.close()
            self._resource = None

    def __enter__(self) -> LearnerSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


_DEFAULT_OPTIONS: Final = ReadOptions()


def open_source(
    source: str | os.PathLike[str] | Iterable[Learner | Mapping[str, object]] | LearnerSource,
    options: ReadOptions = _DEFAULT_OPTIONS,
) -> LearnerSource:
    """Open learner records for reading; the header is checked before this returns.

    Args:
        source: A path (`.jsonl`/`.ndjson` = JSON Lines, anything else CSV), "-" for
            standard input (CSV or JSON Lines, told apart by the first character), or
            an iterable of `Learner` objects and dicts. An open `LearnerSource` is
            returned as it is (its options were set when it was opened).
        options: How to read it.

    Raises:
        InputError: The file is missing, empty, undecodable, or lacks a required column.
    """
    if isinstance(source, LearnerSource):
        return source  # already open (e.g. standard input, which can be read only once)
    opened = _open(source, options)
    opened._badge_id = options.badge_id
    return opened


def _open(
    source: str | os.PathLike[str] | Iterable[Learner | Mapping[str, object]],
    options: ReadOptions,
) -> LearnerSource:
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        if path == "-":
            return _open_stream(sys.stdin.buffer, "standard input", None, options, owned=False)
        kind: Literal["csv", "jsonl"] | None = "csv"
        suffix = os.path.splitext(path)[1].lower()
        if suffix in WORKBOOK_SUFFIXES and os.path.isfile(path):
            return _open_workbook(path, path, WORKBOOK_SUFFIXES[suffix], options)
        if suffix in LINES_SUFFIXES:
            kind = "jsonl"
        elif suffix == ".json":
            kind = None
        try:
            stream = open(path, "rb")  # noqa: SIM115 - the LearnerSource owns and closes it
        except FileNotFoundError:
            raise InputError(f"no such file: {path}", path=path) from None
        except IsADirectoryError:
            raise InputError(
                f"{path} is a folder; give the learner file inside it", path=path
            ) from None
        except OSError as exc:
            raise InputError(f"cannot open {path}: {exc.strerror or exc}", path=path) from None
        try:
            return _open_stream(stream, path, kind, options, owned=True)
        except BaseException:
            stream.close()
            raise
    if isinstance(source, bytes | bytearray | Mapping):
        kind_name = type(source).__name__
        raise TypeError(
            f"open_source() takes a path, '-', or an iterable of Learner objects or dicts, "
            f"not a {kind_name}; wrap a single record in a list"
        )
    if isinstance(source, Iterable):
        return _open_records(source, options)
    raise TypeError(
        f"open_source() takes a path, '-', or an iterable of learners, "
        f"not a {type(source).__name__}"
    )


def scan_source(
    source: str | os.PathLike[str], options: ReadOptions = _DEFAULT_OPTIONS
) -> SourceScan:
    """Read and validate a whole file once, before anything is sent; return the counts.

    Then run it from `scan.open()` (the same as `open_source(source, options)` for a
    path). Standard input ("-") is copied to an anonymous temporary file as it is
    scanned, so that `scan.open()` can read it again.

    Args:
        source: A path, or "-", as for `open_source`.
        options: How to read it (the same as for the run, so the counts match).

    Raises:
        InputError: The file cannot be opened, lacks a required column, or cannot be
            read to the end (`.row` names the row, `.path` the file).
    """
    if os.fspath(source) != "-":
        path = os.fspath(source)
        scan = open_source(path, options).scan()
        return dataclasses.replace(scan, _reopen=lambda: open_source(path, options))
    spool = _Spool(sys.stdin.buffer)

    def reopen() -> LearnerSource:
        stream = spool.open()
        try:
            opened = _open_stream(stream, "standard input", None, options, owned=True)
        except BaseException:
            stream.close()
            raise
        opened._badge_id = options.badge_id
        return opened

    return dataclasses.replace(reopen().scan(), _reopen=reopen)


class _Spool:
    """Standard input copied to an anonymous temporary file, so that it can be read twice.

    The file has no name (nothing is left behind, even after kill -9); its descriptor is
    closed when the spool is garbage-collected, i.e. with the scan that holds it.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        with tempfile.TemporaryFile() as copy:
            shutil.copyfileobj(stream, copy)
            copy.flush()
            self._fd = os.dup(copy.fileno())
        weakref.finalize(self, os.close, self._fd)

    def open(self) -> IO[bytes]:
        """A new handle on the copy, from its start (one reader at a time)."""
        handle = os.fdopen(os.dup(self._fd), "rb")
        handle.seek(0)
        return handle


async def aiter_rows(
    source: AsyncIterable[Learner | Mapping[str, object]],
    options: ReadOptions = _DEFAULT_OPTIONS,
) -> AsyncIterator[Row]:
    """Validate learners from an async iterable; row numbers are index + 1.

    Args:
        source: Learner objects or dicts, e.g. from an LMS paging API.
        options: How to read them.
    """
    builder = _builder(options)
    number = 0
    async for item in source:
        number += 1
        yield builder.from_item(number, item)


def _builder(options: ReadOptions) -> RowBuilder:
    return RowBuilder(
        badge_id=options.badge_id,
        date_format=options.date_format,
        column_map=options.column_map,
        require_consent=options.require_consent,
    )


# ----- in-memory records -------------------------------------------------------------


def _open_records(items: Iterable[object], options: ReadOptions) -> LearnerSource:
    builder = _builder(options)
    iterator = iter(items)
    end = object()
    first = next(iterator, end)
    columns: tuple[str, ...] = ()
    if isinstance(first, Learner):
        columns = FIELD_NAMES + tuple(str(key) for key in first.extra)
    elif isinstance(first, Mapping):
        columns = tuple(str(key) for key in first if key != "extra")
        nested = first.get("extra")
        if isinstance(nested, Mapping):
            columns += tuple(str(key) for key in nested)
    chained = iterator if first is end else itertools.chain([first], iterator)

    def rows() -> Iterator[Row]:
        for number, item in enumerate(chained, start=1):
            yield builder.from_item(number, item)

    dialect = Dialect("records", "utf-8", ",", columns)
    return LearnerSource(dialect, rows())


# ----- byte streams: CSV and JSON Lines --------------------------------------------


def _open_stream(
    stream: IO[bytes],
    name: str,
    kind: Literal["csv", "jsonl"] | None,
    options: ReadOptions,
    *,
    owned: bool,
) -> LearnerSource:
    """Detect the encoding (and the format when `kind` is None), check the header."""
    prefix = read_prefix(stream)
    if not prefix.strip():
        raise InputError(
            f"{name} is empty: expected a header row and one row per learner", path=name
        )
    workbook = workbook_kind(prefix)
    if workbook is not None:
        # A workbook named .csv, or piped in: read it whole (calamine wants all of it).
        data = io.BytesIO(prefix + stream.read())
        if owned:
            stream.close()
        return _open_workbook(data, name, workbook, options)
    encoding = choose_encoding(stream, prefix, options.encoding, name)
    if kind is None:
        start = codecs.decode(prefix[encoding.skip : 4096], encoding.codec, "ignore")
        first = start.lstrip("\ufeff \t\r\n")[:1]
        if first == "[":
            raise InputError(
                f"{name} holds a JSON array; give JSON Lines instead (one object per line, "
                f"e.g. from: jq -c '.[]' cohort.json > cohort.jsonl)",
                path=name,
            )
        kind = "jsonl" if first == "{" else "csv"
    lines = decoded_lines(stream, prefix[encoding.skip :], encoding.codec, encoding.skip)
    resource = stream if owned else None
    try:
        if kind == "jsonl":
            return _open_jsonl(lines, encoding, options, name, resource)
        return _open_csv(lines, encoding, options, name, resource)
    except DecodeFailure as failure:
        raise InputError(
            f"{name}: {failure.describe(encoding.codec)}. Say which encoding the file uses "
            f"with --encoding, or re-save it as UTF-8.",
            path=name,
        ) from None


def _open_csv(
    lines: Iterator[str],
    encoding: Encoding,
    options: ReadOptions,
    name: str,
    resource: IO[bytes] | None,
) -> LearnerSource:
    table = open_csv(
        lines,
        name=name,
        codec=encoding.codec,
        delimiter=options.delimiter,
        notes=encoding.notes,
    )
    builder = _builder(options)
    try:
        builder.set_header(table.header)
    except InputError as exc:
        hint = delimiter_hint(table.header, table.delimiter)
        raise InputError(f"{name}: {exc}{hint}", row=table.header_row, path=name) from None
    notes = table.notes
    fed_back = builder.plan is not None and builder.plan.row is not None
    if fed_back:
        notes += ("a failures file: rows keep their numbers from the original file",)
    dialect = Dialect(
        "csv",
        encoding.name,
        table.delimiter,
        table.header,
        notes,
        sep_line=table.sep_line,
        original_rows=fed_back,
    )

    def rows() -> Iterator[Row]:
        for number, cells, lines_used in table.records:
            if lines_used > 1:
                check_quotes(
                    cells,
                    table.header,
                    table.delimiter,
                    builder.looks_like_record,
                    name=name,
                    number=number,
                )
            yield builder.from_cells(number, cells)

    return LearnerSource(dialect, rows(), resource, name)


def _open_jsonl(
    lines: Iterator[str],
    encoding: Encoding,
    options: ReadOptions,
    name: str,
    resource: IO[bytes] | None,
) -> LearnerSource:
    table = open_jsonl(lines, name=name, codec=encoding.codec)
    builder = _builder(options)
    notes = encoding.notes
    fed_back = failures_file_columns(table.columns)
    if fed_back:
        notes += ("a failures file: records keep their numbers from the original file",)
    dialect = Dialect("jsonl", encoding.name, ",", table.columns, notes, original_rows=fed_back)

    def rows() -> Iterator[Row]:
        for number, record in table.records:
            if isinstance(record, Problem):
                yield Row(number, {}, None, (record,))
            else:
                yield builder.from_mapping(_original_row(record) or number, record)

    return LearnerSource(dialect, rows(), resource, name)


def _original_row(record: Mapping[str, object]) -> int | None:
    """A failures file's record (`row` and `reason` first): the row number it keeps."""
    keys = list(record)
    if not failures_file_columns(keys):
        return None
    number = record[keys[0]]
    if isinstance(number, str) and number.strip().isdigit():
        number = int(number.strip())
    if isinstance(number, int) and not isinstance(number, bool) and 0 < number < 1 << 31:
        return number
    return None


# ----- workbooks -------------------------------------------------------------------


def _open_workbook(
    source: str | IO[bytes], name: str, kind: WorkbookFormat, options: ReadOptions
) -> LearnerSource:
    """A sheet of a workbook: the header checked now, the rows read lazily."""
    table = read_workbook(source, name, kind, options.sheet)
    builder = _builder(options)
    try:
        builder.set_header(table.header)
    except InputError as exc:
        raise InputError(
            f"{name}, sheet {table.sheet!r}, row {table.header_row}: {exc}",
            row=table.header_row,
            path=name,
        ) from None
    notes = [f"sheet {table.sheet!r}" + (f" of {len(table.sheets)}" if table.sheets[1:] else "")]
    if table.header_row > 1:
        notes.append(f"header on row {table.header_row}")
    dialect = Dialect(
        table.format,
        "utf-8-sig",  # the failures file: a CSV that Excel opens as UTF-8
        ",",
        table.header,
        tuple(notes),
        sheet=table.sheet,
        original_rows=builder.plan is not None and builder.plan.row is not None,
    )

    def rows() -> Iterator[Row]:
        for number, cells in table.records:
            yield builder.from_cells(number, cells)

    return LearnerSource(dialect, rows(), None, name)
