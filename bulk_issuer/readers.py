"""Readers: CSV, JSON Lines, stdin and in-memory records in, validated `Row`s out.

Files are streamed (memory stays flat for any cohort size). The encoding and the
delimiter are detected the way spreadsheet exports need: a byte order mark first
(Excel "CSV UTF-8", Excel "Unicode text" = UTF-16 + TAB), then strict UTF-8, then
Windows-1252; the delimiter from the header line, or from Excel's `sep=;` line.
What was chosen is recorded in `Dialect.notes` so the results files can say so and be
written back the same way.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
import os
import re
import sys
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO, Final, Literal

from .errors import InputError
from .learners import FIELD_NAMES, Learner, Problem, Row
from .rows import RowBuilder
from .workbook import WORKBOOK_SUFFIXES, WorkbookFormat, read_workbook, workbook_kind

__all__ = [
    "Dialect",
    "LearnerSource",
    "ReadOptions",
    "SourceScan",
    "aiter_rows",
    "open_source",
    "scan_source",
]

_PREFIX_BYTES: Final = 1 << 20  # how much is read to choose an encoding when the input is a pipe
_CHUNK_BYTES: Final = 1 << 16
_DELIMITERS: Final = (",", ";", "\t", "|")  # in order of preference when counts tie
_DELIMITER_NAMES: Final = {"\t": "TAB", ",": "','", ";": "';'", "|": "'|'"}
_SEP_LINE = re.compile(r'"?sep=(.)"?[,;\t|]*', re.IGNORECASE | re.DOTALL)
_BEYOND_C1 = re.compile(r"[^\x00-\x9f]")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_CSV_FIELD_LIMIT: Final = 1 << 20  # characters in one value; more means a quote is not closed


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

    @property
    def empty(self) -> bool:
        """No learner to issue to: a header-only file, or only invalid rows."""
        return self.learners == 0


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
        if suffix in {".jsonl", ".ndjson"}:
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

    Then open it again with `open_source(source, options)` to run it. Standard input
    ("-") can be read only once: scan `open_source("-")` with `LearnerSource.scan()`
    instead, after spooling it to a file if it must be read twice.

    Args:
        source: A path, as for `open_source`.
        options: How to read it (the same as for the run, so the counts match).

    Raises:
        InputError: The file cannot be opened, lacks a required column, or cannot be
            read to the end (`.row` names the row, `.path` the file).
    """
    return open_source(source, options).scan()


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


# ----- byte streams: encoding ------------------------------------------------------


class _DecodeFailure(Exception):
    """Bytes that the chosen encoding cannot decode, at an offset from the file start."""

    def __init__(self, offset: int, reason: str, data: bytes) -> None:
        super().__init__(offset, reason, data)
        self.offset = offset
        self.reason = reason
        self.data = data

    def describe(self, codec: str) -> str:
        shown = " ".join(f"0x{byte:02X}" for byte in self.data[:4])
        return f"byte {self.offset} ({shown}) is not valid {_codec_label(codec)}: {self.reason}"


@dataclass(frozen=True, slots=True)
class _Encoding:
    codec: str  # what the bytes after `skip` are decoded with
    skip: int  # length of a byte order mark
    name: str  # for Dialect.encoding (and for writing results files)
    notes: tuple[str, ...]


def _codec_label(codec: str) -> str:
    return {
        "utf-8": "UTF-8",
        "cp1252": "Windows-1252",
        "utf-16-le": "UTF-16",
        "utf-16-be": "UTF-16",
    }.get(codec, codec)


def _read_prefix(stream: IO[bytes]) -> bytes:
    parts: list[bytes] = []
    size = 0
    while size < _PREFIX_BYTES:
        chunk = stream.read(_PREFIX_BYTES - size)
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


def _first_failure(
    stream: IO[bytes], prefix: bytes, codec: str, *, whole: bool
) -> tuple[_DecodeFailure | None, bool]:
    """Decode without keeping the text: the first failure, and whether text before it used
    characters beyond ASCII (and beyond the C1 controls, which real text never holds).

    Args:
        whole: Read the rest of the stream too (seekable files); else only the prefix.
    """
    decoder = codecs.getincrementaldecoder(codec)("strict")
    offset = 0
    seen_text = False
    at_end = whole or len(prefix) < _PREFIX_BYTES
    chunks: Iterator[bytes] = iter([prefix])
    if whole:
        chunks = itertools.chain(chunks, iter(lambda: stream.read(_CHUNK_BYTES), b""))
    for chunk in itertools.chain(chunks, [b""] if at_end else []):
        buffered = decoder.getstate()[0]
        try:
            text = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            data = buffered + chunk
            before = data[: exc.start].decode(codec, "ignore")
            seen_text = seen_text or _BEYOND_C1.search(before) is not None
            where = offset - len(buffered) + exc.start
            return _DecodeFailure(where, exc.reason, data[exc.start : exc.end]), seen_text
        if not seen_text and not chunk.isascii():
            seen_text = _BEYOND_C1.search(text) is not None
        offset += len(chunk)
    return None, seen_text


def _choose_encoding(stream: IO[bytes], prefix: bytes, forced: str | None, name: str) -> _Encoding:
    """Pick the encoding: forced, byte order mark, UTF-16 by its zero bytes, UTF-8, Windows-1252."""
    if forced:
        try:
            codec = codecs.lookup(forced).name
        except LookupError:
            raise InputError(
                f"unknown encoding {forced!r}; try utf-8, utf-8-sig, utf-16 or cp1252"
            ) from None
        return _Encoding(codec, 0, forced, (f"encoding {forced} (given)",))
    if prefix.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return _Encoding("utf-32", 0, "utf-32", ("encoding UTF-32 with byte order mark",))
    if prefix.startswith(codecs.BOM_UTF8):
        note = "encoding UTF-8 with byte order mark (Excel 'CSV UTF-8')"
        return _Encoding("utf-8", 3, "utf-8-sig", (note,))
    for bom, codec in ((codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")):
        if prefix.startswith(bom):
            note = "encoding UTF-16 with byte order mark (Excel 'Unicode Text')"
            return _Encoding(codec, 2, "utf-16", (note,))
    sample = prefix[:4096]
    if len(sample) >= 4 and sample.count(0) * 3 >= len(sample):
        # Mostly-ASCII text in UTF-16 has a zero byte in every other position.
        codec = "utf-16-le" if sample[1::2].count(0) > sample[0::2].count(0) else "utf-16-be"
        return _Encoding(codec, 0, codec, (f"encoding {codec} (no byte order mark; detected)",))

    whole = stream.seekable()
    failure, utf8_text = _first_failure(stream, prefix, "utf-8", whole=whole)
    if whole:
        stream.seek(len(prefix))
    if failure is None:
        return _Encoding("utf-8", 0, "utf-8", ("encoding UTF-8",))
    if utf8_text:
        line = _line_at(stream, failure.offset, len(prefix)) if whole else None
        where = f", line {line}" if line else ""
        raise InputError(
            f"{name}{where}: {failure.describe('utf-8')}, but the text before it is UTF-8: "
            f"the file mixes encodings. Re-save it as UTF-8 (Excel: 'CSV UTF-8'), or say "
            f"which encoding it is with --encoding.",
            row=line,
            path=name,
        )
    if whole:
        bad, _ = _first_failure(stream, prefix, "cp1252", whole=True)
        stream.seek(len(prefix))
        if bad is not None:
            line = _line_at(stream, bad.offset, len(prefix))
            raise InputError(
                f"{name}, line {line}: the file is neither UTF-8 nor Windows-1252: "
                f"{bad.describe('cp1252')}. Re-save it as UTF-8 (Excel: 'CSV UTF-8'), or give "
                f"the encoding with --encoding.",
                row=line,
                path=name,
            )
    note = "file is Windows-1252, not UTF-8: read as cp1252"
    return _Encoding("cp1252", 0, "cp1252", (note,))


def _line_at(stream: IO[bytes], offset: int, resume: int) -> int:
    """The line (1 = the first) holding byte `offset` of a seekable file; then seek to `resume`.

    The row a spreadsheet shows, unless a quoted value spans lines before it.
    """
    stream.seek(0)
    lf = cr = 0
    left = offset
    while left > 0 and (chunk := stream.read(min(left, _CHUNK_BYTES))):
        left -= len(chunk)
        lf += chunk.count(b"\n")
        cr += chunk.count(b"\r")
    stream.seek(resume)
    return (lf or cr) + 1


def _lines(stream: IO[bytes], first: bytes, codec: str, offset: int) -> Iterator[str]:
    """Decode a byte stream into lines that keep their line ends (as csv.reader wants).

    Splits on CRLF, LF and lone CR only (not on the other Unicode line breaks, which
    may sit inside a name).

    Raises:
        _DecodeFailure: Bytes the codec cannot decode, with their offset in the file.
    """
    decoder = codecs.getincrementaldecoder(codec)("strict")
    pending = ""
    data = first
    while True:
        at_end = not data
        buffered = decoder.getstate()[0]
        try:
            text = decoder.decode(data, final=at_end)
        except UnicodeDecodeError as exc:
            joined = buffered + data
            where = offset - len(buffered) + exc.start
            raise _DecodeFailure(where, exc.reason, joined[exc.start : exc.end]) from None
        offset += len(data)
        text = pending + text
        hold = ""
        if not at_end and text.endswith("\r"):
            text, hold = text[:-1], "\r"  # a CR at a chunk end may be half of a CRLF
        if "\r" not in text or text.count("\r") == text.count("\r\n"):
            pieces = text.split("\n")
            rest = pieces.pop()
            for piece in pieces:
                yield piece + "\n"
        else:
            start = 0
            for match in _LINE_BREAK.finditer(text):
                yield text[start : match.end()]
                start = match.end()
            rest = text[start:]
        pending = rest + hold
        if at_end:
            if pending:
                yield pending
            return
        data = stream.read(_CHUNK_BYTES)


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
    builder = _builder(options)
    prefix = _read_prefix(stream)
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
    encoding = _choose_encoding(stream, prefix, options.encoding, name)
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
    lines = _lines(stream, prefix[encoding.skip :], encoding.codec, encoding.skip)
    resource = stream if owned else None
    try:
        if kind == "jsonl":
            return _open_jsonl(lines, encoding, builder, name, resource)
        return _open_csv(lines, encoding, builder, options, name, resource)
    except _DecodeFailure as failure:
        raise InputError(
            f"{name}: {failure.describe(encoding.codec)}. Say which encoding the file uses "
            f"with --encoding, or re-save it as UTF-8.",
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


def _open_csv(
    lines: Iterator[str],
    encoding: _Encoding,
    builder: RowBuilder,
    options: ReadOptions,
    name: str,
    resource: IO[bytes] | None,
) -> LearnerSource:
    notes = list(encoding.notes)
    delimiter = _delimiter_option(options.delimiter) if options.delimiter else None
    number = 0  # rows as a spreadsheet shows them: blank lines count, Excel's sep= line not
    sep_line = False
    header_line = ""
    for line in lines:
        if not line.strip().strip("\ufeff"):
            number += 1
            continue
        if not sep_line and number == 0 and (sep := _SEP_LINE.fullmatch(line.strip("\ufeff\r\n"))):
            sep_line = True
            if delimiter is None:
                delimiter = sep.group(1)
                notes.append(f"Excel 'sep={delimiter}' line honoured")
            continue
        header_line = line.lstrip("\ufeff")
        break
    if not header_line:
        raise InputError(
            f"{name} has no header row: expected column names on the first line", path=name
        )
    if delimiter is None:
        counts = _count_delimiters(header_line)
        delimiter = max(_DELIMITERS, key=lambda d: (counts[d], -_DELIMITERS.index(d)))
        if counts[delimiter] == 0:
            delimiter = ","
            notes.append("only one column in the header; delimiter ',' assumed")
        else:
            notes.append(f"delimiter {_DELIMITER_NAMES[delimiter]} (detected)")
    elif options.delimiter:
        notes.append(f"delimiter {_DELIMITER_NAMES.get(delimiter, repr(delimiter))} (given)")
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    reader = csv.reader(itertools.chain([header_line], lines), delimiter=delimiter)
    try:
        header = next(reader)
    except csv.Error as exc:
        raise InputError(f"{name}: the header row cannot be read: {exc}", path=name) from None
    number += 1
    if header:
        header[0] = header[0].lstrip("\ufeff")
    try:
        builder.set_header(header)
    except InputError as exc:
        hint = ""
        others = [d for d in _DELIMITERS if d != delimiter and any(d in h for h in header)]
        if others:
            hint = (
                f" The header was split at {_DELIMITER_NAMES.get(delimiter, delimiter)}; if "
                f"the file uses {_DELIMITER_NAMES[others[0]]}, pass --delimiter."
            )
        raise InputError(f"{name}: {exc}{hint}", path=name) from None
    fed_back = builder.plan is not None and builder.plan.row is not None
    if fed_back:
        notes.append("a failures file: rows keep their numbers from the original file")
    dialect = Dialect(
        "csv",
        encoding.name,
        delimiter,
        tuple(header),
        tuple(notes),
        sep_line=sep_line,
        original_rows=fed_back,
    )
    rows = _csv_rows(reader, builder, number, tuple(header), delimiter, name, encoding.codec)
    return LearnerSource(dialect, rows, resource, name)


def _csv_rows(
    reader: Iterator[list[str]],
    builder: RowBuilder,
    number: int,
    header: tuple[str, ...],
    delimiter: str,
    name: str,
    codec: str,
) -> Iterator[Row]:
    line_num = getattr(reader, "line_num", 0)
    try:
        for cells in reader:
            number += 1
            used = reader.line_num - line_num  # type: ignore[attr-defined]
            line_num += used
            if not cells or not "".join(cells).strip():
                continue
            if used > 1:
                _check_quotes(cells, header, delimiter, builder, name, number)
            yield builder.from_cells(number, cells)
    except csv.Error as exc:
        raise InputError(
            f"{name}, row {number + 1}: {exc}. A value probably opens a quote that is never "
            f"closed; fix the quotes in that row and run again.",
            row=number + 1,
            path=name,
        ) from None
    except _DecodeFailure as failure:
        raise InputError(
            f"{name}: rows from {number + 1} on cannot be read: {failure.describe(codec)}. "
            f"The start of the file was {_codec_label(codec)}; the file mixes encodings. "
            f"Re-save it as UTF-8, or give the encoding with --encoding.",
            row=number + 1,
            path=name,
        ) from None


def _check_quotes(
    cells: list[str],
    header: tuple[str, ...],
    delimiter: str,
    builder: RowBuilder,
    name: str,
    number: int,
) -> None:
    """Refuse a record that swallowed the rows after it because a quote was never closed.

    Raises:
        InputError: A value spans lines that look like learner rows of this file.
    """
    for position, cell in enumerate(cells):
        inner = _LINE_BREAK.split(cell)[1:]
        for line in inner:
            parsed = next(csv.reader([line], delimiter=delimiter), [])
            if builder.looks_like_record(parsed):
                column = header[position] if position < len(header) else f"column {position + 1}"
                shown = cell if len(cell) <= 60 else cell[:57] + "..."
                raise InputError(
                    f"{name}, row {number}: a quote in column {column!r} ({shown!r}) is not "
                    f"closed, so the {len(inner)} line(s) after it were read into it, and they "
                    f"look like learner rows. Close the quote (or remove it) and run again.",
                    row=number,
                    path=name,
                )


def _open_jsonl(
    lines: Iterator[str],
    encoding: _Encoding,
    builder: RowBuilder,
    name: str,
    resource: IO[bytes] | None,
) -> LearnerSource:
    seen: list[str] = []
    columns: tuple[str, ...] = ()
    for line in lines:
        seen.append(line)
        text = line.strip().lstrip("\ufeff")
        if text:
            try:
                first = json.loads(text)
            except ValueError:
                break
            if isinstance(first, dict):
                columns = tuple(str(key) for key in first)
            break
    dialect = Dialect("jsonl", encoding.name, ",", columns, encoding.notes)
    rows = _jsonl_rows(itertools.chain(seen, lines), builder, name, encoding.codec)
    return LearnerSource(dialect, rows, resource, name)


def _jsonl_rows(lines: Iterator[str], builder: RowBuilder, name: str, codec: str) -> Iterator[Row]:
    number = 0
    try:
        for number, line in enumerate(lines, start=1):
            text = line.strip()
            if number == 1:
                text = text.lstrip("\ufeff")
            if not text:
                continue
            try:
                record = json.loads(text)
            except ValueError as exc:
                message = getattr(exc, "msg", str(exc))
                yield Row(
                    number,
                    {},
                    None,
                    (Problem("line", text, f"not valid JSON ({message}); one object per line"),),
                )
                continue
            if not isinstance(record, dict):
                kind = type(record).__name__
                problem = Problem("line", text, f"a JSON {kind}, not an object; one per line")
                yield Row(number, {}, None, (problem,))
                continue
            yield builder.from_mapping(number, record)
    except _DecodeFailure as failure:
        raise InputError(
            f"{name}: lines from {number + 1} on cannot be read: {failure.describe(codec)}. "
            f"Re-save the file as UTF-8, or give the encoding with --encoding.",
            row=number + 1,
            path=name,
        ) from None


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
