"""Readers: encodings, delimiters, row numbers, JSON Lines, stdin and in-memory records."""

from __future__ import annotations

import csv
import datetime
import io
import re
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bulk_issuer.learners import InputError, Learner, Row
from bulk_issuer.readers import Dialect, ReadOptions, aiter_rows, open_source, scan_source

HEADER = "First Name,Last Name,Email\r\n"


def _read(path: Path | str, options: ReadOptions | None = None) -> tuple[Dialect, list[Row]]:
    with open_source(path, options or ReadOptions()) as source:
        return source.dialect, list(source)


def _write(tmp_path: Path, data: bytes, name: str = "cohort.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


class _Pipe(io.RawIOBase):
    """A non-seekable byte stream, like a shell pipe."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        chunk = self._data.read(min(len(buffer), 4096))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def _stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    raw = io.BufferedReader(_Pipe(data))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(raw, encoding="utf-8"))


# ----- encodings ---------------------------------------------------------------------


def test_utf8_bom_is_not_part_of_the_first_header(tmp_path: Path) -> None:
    """Excel 'CSV UTF-8' starts with a BOM; the first column is still First Name."""
    path = _write(tmp_path, ("\ufeff" + HEADER + "Zoë,Ng,zoe@example.com\r\n").encode())
    dialect, (row,) = _read(path)
    assert dialect.encoding == "utf-8-sig"
    assert dialect.columns[0] == "First Name"
    assert row.learner is not None
    assert row.learner.first_name == "Zoë"


def test_excel_unicode_text_is_utf16_with_tabs(tmp_path: Path) -> None:
    """Excel 'Unicode text' (UTF-16LE with BOM, TAB-delimited) reads names exactly."""
    text = "First Name\tLast Name\tEmail\r\n王芳\tNguyễn\twang@example.com\r\n"
    dialect, (row,) = _read(_write(tmp_path, text.encode("utf-16")))
    assert (dialect.encoding, dialect.delimiter) == ("utf-16", "\t")
    assert row.learner == Learner("王芳", "Nguyễn", "wang@example.com")


def test_utf16_without_bom_is_detected(tmp_path: Path) -> None:
    """UTF-16 without a byte order mark is recognised by its zero bytes."""
    text = HEADER + "Ann,Lee,ann@example.com\r\n"
    dialect, (row,) = _read(_write(tmp_path, text.encode("utf-16-le")))
    assert dialect.encoding == "utf-16-le"
    assert row.ok


def test_windows_1252_file_reads_accents(tmp_path: Path) -> None:
    """A Windows-1252 export with é and ö is read as cp1252, and the notes say so."""
    text = HEADER + "José,Björk,jose@example.com\r\nChloë,Søren,chloe@example.com\r\n"
    dialect, rows = _read(_write(tmp_path, text.encode("cp1252")))
    assert dialect.encoding == "cp1252"
    assert "file is Windows-1252, not UTF-8: read as cp1252" in dialect.notes
    assert [(r.learner.first_name, r.learner.last_name) for r in rows if r.learner] == [
        ("José", "Björk"),
        ("Chloë", "Søren"),
    ]


# Over a MiB of plain ASCII rows, long rather than many so that the tests stay fast.
_MIB_OF_ASCII = HEADER + "".join(f"A{i} {'x' * 2000},B,a{i}@example.com\r\n" for i in range(600))


def test_windows_1252_after_the_first_mebibyte_of_a_file(tmp_path: Path) -> None:
    """A file is checked whole, so a late é still makes it cp1252 (no mojibake)."""
    assert len(_MIB_OF_ASCII) > 1 << 20
    text = _MIB_OF_ASCII + "José,Lee,jose@example.com\r\n"
    dialect, rows = _read(_write(tmp_path, text.encode("cp1252")))
    assert dialect.encoding == "cp1252"
    assert rows[-1].learner is not None
    assert rows[-1].learner.first_name == "José"


def test_late_bad_byte_on_a_pipe_names_the_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    """From a pipe only the first MiB decides; a later bad byte is an error, not mojibake."""
    head = _MIB_OF_ASCII.encode()
    _stdin(monkeypatch, head + "José,Lee,jose@example.com\r\n".encode("cp1252"))
    with open_source("-") as source:
        assert source.dialect.encoding == "utf-8"
        with pytest.raises(InputError, match=rf"byte {len(head) + 3} \(0xE9\) is not valid UTF-8"):
            list(source)


def test_c1_controls_are_not_taken_for_utf8(tmp_path: Path) -> None:
    """cp1252 bytes that happen to decode to a C1 control do not count as UTF-8 text."""
    text = HEADER + "ÂŒ,A,a@example.com\r\nJosé,B,j@example.com\r\n"
    dialect, rows = _read(_write(tmp_path, text.encode("cp1252")))
    assert dialect.encoding == "cp1252"
    assert [row.fields["First Name"] for row in rows] == ["ÂŒ", "José"]


def test_mixed_encodings_are_refused(tmp_path: Path) -> None:
    """UTF-8 text followed by a Windows-1252 byte is an error naming the byte."""
    data = (HEADER + "Zoë,A,z@example.com\r\n").encode() + "José,B,j@example.com\r\n".encode(
        "cp1252"
    )
    with pytest.raises(InputError, match="mixes encodings"):
        _read(_write(tmp_path, data))


def test_bytes_neither_utf8_nor_cp1252(tmp_path: Path) -> None:
    """A byte undefined in Windows-1252 too gives an error that suggests --encoding."""
    with pytest.raises(InputError, match=r"neither UTF-8 nor Windows-1252.*0x81"):
        _read(_write(tmp_path, HEADER.encode() + b"A\x81,B,a@example.com\r\n"))


def test_forced_encoding(tmp_path: Path) -> None:
    """--encoding overrides detection, and an unknown name is a clear error."""
    data = (HEADER + "Ωmega,B,o@example.com\r\n").encode("iso-8859-7")
    dialect, (row,) = _read(_write(tmp_path, data), ReadOptions(encoding="iso-8859-7"))
    assert dialect.encoding == "iso-8859-7"
    assert row.learner is not None
    assert row.learner.first_name == "Ωmega"
    with pytest.raises(InputError, match="unknown encoding 'klingon'"):
        _read(_write(tmp_path, data), ReadOptions(encoding="klingon"))


# ----- delimiters and structure ------------------------------------------------------


def test_moodle_semicolon_export(tmp_path: Path) -> None:
    """A Moodle export (First name;Surname;Email address) is sniffed as semicolons."""
    text = "First name;Surname;Email address;City\nSiobhán;O'Neill;s@example.com;Cork\n"
    dialect, (row,) = _read(_write(tmp_path, text.encode()))
    assert dialect.delimiter == ";"
    assert "delimiter ';' (detected)" in dialect.notes
    assert row.learner == Learner("Siobhán", "O'Neill", "s@example.com")


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_delimiter_sniffed_from_the_header(tmp_path: Path, delimiter: str) -> None:
    """Each supported delimiter is found from the header line."""
    lines = [["First Name", "Email"], ["Ann, Jr; |x", "ann@example.com"]]
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter).writerows(lines)
    dialect, (row,) = _read(_write(tmp_path, buffer.getvalue().encode()))
    assert dialect.delimiter == delimiter
    assert row.learner is not None
    assert row.learner.first_name == "Ann, Jr; |x"


def test_delimiters_inside_quoted_headers_do_not_count(tmp_path: Path) -> None:
    """Commas inside a quoted header do not outvote the real delimiter."""
    text = '"First Name";"Email";"Notes, comments, etc, etc"\nAnn;a@example.com;x\n'
    dialect, _ = _read(_write(tmp_path, text.encode()))
    assert dialect.delimiter == ";"


def test_excel_sep_line_is_honoured(tmp_path: Path) -> None:
    """An Excel 'sep=;' first line sets the delimiter and is not a row."""
    text = "sep=;\r\nFirst Name;Email\r\nAnn;ann@example.com\r\n"
    dialect, (row,) = _read(_write(tmp_path, text.encode()))
    assert (dialect.delimiter, dialect.sep_line) == (";", True)
    assert "Excel 'sep=;' line honoured" in dialect.notes
    assert row.number == 2


def test_forced_delimiter(tmp_path: Path) -> None:
    """--delimiter wins over sniffing; 'tab' is understood."""
    text = "First Name\tEmail\tNotes,a,b,c\nAnn\tann@example.com\tx,y,z,w\n"
    dialect, (row,) = _read(_write(tmp_path, text.encode()), ReadOptions(delimiter="tab"))
    assert dialect.delimiter == "\t"
    assert row.ok
    assert row.fields["Notes,a,b,c"] == "x,y,z,w"


def test_row_numbers_count_blank_lines_and_multiline_records(tmp_path: Path) -> None:
    """Numbers match a spreadsheet: blank lines count, a quoted line break does not."""
    text = (
        HEADER
        + "Ann,Lee,ann@example.com\r\n"
        + "\r\n"
        + ",,\r\n"
        + '"Bo\r\nB",Ray,bo@example.com\r\n'
        + "Cy,Doe,cy@example.com\r\n"
    )
    _, rows = _read(_write(tmp_path, text.encode()))
    assert [(row.number, row.fields["First Name"]) for row in rows] == [
        (2, "Ann"),
        (5, "Bo\r\nB"),
        (6, "Cy"),
    ]


def test_old_mac_line_endings(tmp_path: Path) -> None:
    """Lone CR line ends (old Mac Excel) are line ends."""
    text = "First Name,Email\rAnn,ann@example.com\rBob,bob@example.com\r"
    _, rows = _read(_write(tmp_path, text.encode()))
    assert [row.number for row in rows if row.ok] == [2, 3]


def test_unclosed_quote_refuses_the_file_naming_the_row(tmp_path: Path) -> None:
    """A quote never closed swallows the next rows: the file is refused, naming that row."""
    text = (
        HEADER
        + '"Ann,Lee,ann@example.com\r\nBob,Ray,bob@example.com\r\n"Cy",Doe,cy@example.com\r\n'
    )
    path = _write(tmp_path, text.encode())
    with pytest.raises(InputError, match=r"row 2: a quote in column 'First Name'") as caught:
        _read(path)
    assert (caught.value.row, caught.value.path) == (2, str(path))


def test_multiline_value_with_commas_is_fine(tmp_path: Path) -> None:
    """Evidence text over several lines with commas is not mistaken for a lost quote."""
    text = HEADER.replace("\r\n", ",Evidence Text\r\n") + (
        'Ann,Lee,ann@example.com,"Led, planned, wrote,\r\nand presented, twice, well"\r\n'
    )
    _, (row,) = _read(_write(tmp_path, text.encode()))
    assert row.ok


def test_empty_and_header_only_files(tmp_path: Path) -> None:
    """An empty file is an InputError; a header alone gives no rows."""
    with pytest.raises(InputError, match="is empty"):
        _read(_write(tmp_path, b"\r\n  \r\n"))
    _, rows = _read(_write(tmp_path, HEADER.encode()))
    assert rows == []


def test_missing_column_error_names_file_and_suggests_delimiter(tmp_path: Path) -> None:
    """A header split at the wrong delimiter says so."""
    path = _write(tmp_path, b"First Name;Email\nAnn;a@example.com\n")
    with pytest.raises(InputError) as caught:
        _read(path, ReadOptions(delimiter=","))
    message = str(caught.value)
    assert message.startswith(f"{path}: no first-name column found.")
    assert "'First Name;Email'" in message
    assert "if the file uses ';', pass --delimiter" in message
    assert (caught.value.row, caught.value.path) == (1, str(path))


def test_broken_workbooks_and_json_arrays_are_refused_with_advice(tmp_path: Path) -> None:
    """A broken workbook (even named .csv), or a JSON array, says what to give instead."""
    with pytest.raises(InputError, match=r"cannot be read as a workbook.*'CSV UTF-8'"):
        _read(_write(tmp_path, b"PK\x03\x04" + bytes(100), "cohort.csv"))
    with pytest.raises(InputError, match="give JSON Lines instead"):
        _read(_write(tmp_path, b'[{"first_name": "A"}]', "cohort.json"))


def test_missing_and_unreadable_paths(tmp_path: Path) -> None:
    """A missing file or a folder is an InputError, not a traceback."""
    with pytest.raises(InputError, match="no such file"):
        open_source(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="is a folder"):
        open_source(tmp_path)


def test_open_source_accepts_an_open_source(monkeypatch: pytest.MonkeyPatch) -> None:
    """An open LearnerSource passes through, so stdin can be probed and then read."""
    _stdin(monkeypatch, (HEADER + "Ann,Lee,ann@example.com\r\n").encode())
    with open_source("-") as probe:
        assert open_source(probe) is probe
        assert [row.ok for row in probe] == [True]


def test_source_reads_once_and_closes(tmp_path: Path) -> None:
    """A LearnerSource is read once; close() is safe twice."""
    source = open_source(_write(tmp_path, (HEADER + "A,B,a@example.com\r\n").encode()))
    assert len(list(source)) == 1
    with pytest.raises(RuntimeError, match="read once"):
        iter(source)
    source.close()
    source.close()


# ----- JSON Lines, stdin and records -------------------------------------------------


def test_json_lines(tmp_path: Path) -> None:
    """JSON Lines: aliases apply, rows are line numbers, bad lines become problems (one
    nested past Python's stack too, where json.loads raises RecursionError)."""
    deep = "[" * 100_000
    text = (
        '{"first_name": "Zoë", "recipient_email": "zoe@example.com", "score": 9}\n'
        "\n"
        "not json\n"
        "[1, 2]\n"
        '{"First Name": "Ann", "Email": "ann@example.com"}\n' + deep + "\n"
        '{"First Name": "Bo", "Email": "bo@example.com"}\n'
    )
    dialect, rows = _read(_write(tmp_path, text.encode(), "cohort.jsonl"))
    assert dialect.format == "jsonl"
    assert dialect.columns == ("first_name", "recipient_email", "score")
    assert [(row.number, row.ok) for row in rows] == [
        (1, True),
        (3, False),
        (4, False),
        (5, True),
        (6, False),
        (7, True),
    ]
    assert rows[0].learner == Learner("Zoë", email="zoe@example.com", score=9)
    assert rows[1].problems[0].message.startswith("not valid JSON")
    assert "nested too deeply" in rows[4].problems[0].message


def test_stdin_csv_and_jsonl_are_told_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """'-' reads stdin as CSV, or as JSON Lines when it starts with '{'."""
    _stdin(monkeypatch, (HEADER + "Ann,Lee,ann@example.com\r\n").encode())
    dialect, (row,) = _read("-")
    assert (dialect.format, row.ok) == ("csv", True)
    _stdin(monkeypatch, b'\n {"first_name": "Ann", "email": "ann@example.com"}\n')
    dialect, (row,) = _read("-")
    assert (dialect.format, row.number, row.ok) == ("jsonl", 2, True)


def test_records_of_learners_and_dicts() -> None:
    """An iterable mixes Learner objects and dicts; a bad Learner becomes a Problem."""
    items: list[Learner | Mapping[str, object]] = [
        Learner("Zoë", email="zoe@example.com"),
        {"first_name": "Ann", "email": "ann@example.com"},
        Learner("Bad", email="not-an-email"),
    ]
    dialect, rows = _read_records(items)
    assert dialect.format == "records"
    assert dialect.columns[:3] == ("first_name", "last_name", "email")
    assert [(row.number, row.ok) for row in rows] == [(1, True), (2, True), (3, False)]
    assert rows[2].problems[0].column == "email"
    assert rows[2].fields["email"] == "not-an-email"


def _read_records(items: list[Learner | Mapping[str, object]]) -> tuple[Dialect, list[Row]]:
    with open_source(items) as source:
        return source.dialect, list(source)


def test_records_stream_lazily() -> None:
    """A generator of learners is consumed as rows are read, not up front."""
    taken: list[int] = []

    def learners() -> Iterator[Mapping[str, object]]:
        for number in range(1000):
            taken.append(number)
            yield {"first_name": "A", "email": f"a{number}@example.com"}

    with open_source(learners()) as source:
        first = next(iter(source))
        assert first.ok
        assert len(taken) <= 2


def test_wrong_source_types_are_refused() -> None:
    """A single dict or bytes is a TypeError that says what to pass."""
    with pytest.raises(TypeError, match="wrap a single record in a list"):
        open_source({"first_name": "A"})  # type: ignore[dict-item]


async def test_async_iterable() -> None:
    """aiter_rows validates an async iterable, with duplicates across it."""

    async def learners() -> AsyncIterator[Learner | Mapping[str, object]]:
        yield {"First Name": "Ann", "Email": "ann@example.com"}
        yield Learner("Ann", email="ANN@example.com")

    rows = [row async for row in aiter_rows(learners(), ReadOptions(badge_id=5))]
    assert [(row.number, row.duplicate_of) for row in rows] == [(1, None), (2, 1)]


# ----- round trip (property) ---------------------------------------------------------

_SPECIAL = ",;\t|\"'\r\n =+-@\u2028\x85\ufeff"  # delimiters, quotes, line breaks, BOM
_EMAIL = st.from_regex(
    r"[a-z0-9]{1,8}(\.[a-z0-9]{1,6})?@[a-z0-9]{1,6}(-[a-z0-9]{1,6})?\.(com|org|ac\.uk)",
    fullmatch=True,
)


_UTF8_SEQUENCE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}"
)


def _plain(text: str) -> bool:
    """Not a neutralised cell ('=x), which the reader deliberately reads back as =x."""
    return not (text[:1] == "'" and text[1:2] in "=+-@\t\r")


@st.composite
def _cohorts(draw: st.DrawFn, codec: str) -> list[tuple[str, str, str, str, str, str]]:
    """Learners whose text fields use any character the encoding can hold (their names
    any but control characters, which are a row's problem)."""
    chars = st.characters(codec=codec, exclude_characters="\x00")  # a codec excludes surrogates
    special = st.sampled_from([char for char in _SPECIAL if char.encode(codec, "ignore")])
    printable = st.characters(codec=codec, exclude_categories=("Cc", "Zl", "Zp"))
    printed = st.sampled_from(
        [c for c in _SPECIAL if c.encode(codec, "ignore") and c.isprintable()]
    )
    text = st.text(st.one_of(special, chars), max_size=12).filter(_plain)
    shown = st.text(st.one_of(printed, printable), max_size=12).filter(_plain)
    name = st.text(st.one_of(printed, printable), min_size=1, max_size=12).filter(
        lambda value: bool(value.strip()) and _plain(value)
    )
    emails = draw(st.lists(_EMAIL, min_size=1, max_size=6, unique_by=str.lower))
    day = st.one_of(st.just(""), st.dates().map(datetime.date.isoformat))
    return [
        (draw(name), draw(shown), email, draw(shown), draw(day), draw(text)) for email in emails
    ]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.data(),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "cp1252"]),
    delimiter=st.sampled_from([",", ";", "\t", "|"]),
    sep_line=st.booleans(),
)
def test_any_cohort_round_trips(
    tmp_path: Path, data: st.DataObject, encoding: str, delimiter: str, sep_line: bool
) -> None:
    """Any table of learners written by csv in any supported dialect reads back the same."""
    cohort = data.draw(_cohorts("cp1252" if encoding == "cp1252" else "utf-8"))
    buffer = io.StringIO()
    if sep_line:
        buffer.write(f"sep={delimiter}\r\n")
    writer = csv.writer(buffer, delimiter=delimiter)
    writer.writerow(
        ["First Name", "Last Name", "Email", "Organisation", "Issue Date", "Evidence Text"]
    )
    writer.writerows(cohort)
    encoded = buffer.getvalue().encode(encoding)
    # cp1252 bytes that also form UTF-8 text (mojibake such as "Ã©") are refused as mixed.
    assume(encoding != "cp1252" or not _UTF8_SEQUENCE.search(encoded))
    path = tmp_path / "cohort.csv"
    path.write_bytes(encoded)
    dialect, rows = _read(path)
    assert dialect.delimiter == delimiter
    expected = [
        Learner(
            first.strip(),
            last.strip(),
            email,
            organisation.strip(),
            issue_date=datetime.date.fromisoformat(day) if day else None,
            evidence_text=evidence.strip(),
        )
        for first, last, email, organisation, day, evidence in cohort
    ]
    assert [row.problems for row in rows] == [()] * len(cohort)
    assert [row.learner for row in rows] == expected
    assert [row.number for row in rows] == list(range(2, len(cohort) + 2))


# ----- scan: the whole file before anything is sent ------------------------------------


def test_scan_counts_learners_invalid_and_duplicates(tmp_path: Path) -> None:
    """scan_source reads the whole file once: every data row in exactly one count."""
    text = (
        "First Name,Email,Badge ID\r\n"
        "Ann,ann@example.com,\r\n"
        "\r\n"
        "Bob,bob@@example.com,\r\n"
        "Ann,ANN@example.com,\r\n"
        "Ann,ann@example.com,7\r\n"
        ",cy@example.com,\r\n"
    )
    scan = scan_source(_write(tmp_path, text.encode()), ReadOptions(badge_id=51))
    assert (scan.rows, scan.learners, scan.invalid, scan.duplicates) == (5, 2, 2, 1)
    assert scan.badge_ids == {7, 51}
    assert not scan.empty
    assert scan.dialect.format == "csv"
    assert scan.seconds >= 0


def test_scan_of_a_header_only_file_finds_no_learners(tmp_path: Path) -> None:
    """A header alone is readable, and the scan says 0 learners."""
    scan = scan_source(_write(tmp_path, HEADER.encode()), ReadOptions(badge_id=51))
    assert (scan.rows, scan.learners, scan.empty) == (0, 0, True)


def test_scan_refuses_a_value_over_the_field_limit_naming_the_row(tmp_path: Path) -> None:
    """A quote opened at row 3 and never closed runs past the size limit: row 3 is named."""
    rows = "".join(f"P{i},L,p{i}@example.com\r\n" for i in range(40_000))
    text = HEADER + "Ann,Lee,ann@example.com\r\n" + '"Bob,Ray,bob@example.com\r\n' + rows
    path = _write(tmp_path, text.encode())
    with pytest.raises(InputError, match="row 3: field larger than field limit") as caught:
        scan_source(path)
    assert (caught.value.row, caught.value.path) == (3, str(path))


def test_scan_refuses_bytes_of_another_encoding_naming_the_line(tmp_path: Path) -> None:
    """UTF-8 with a Windows-1252 é on line 3: refused at once, line 3 named."""
    data = (HEADER + "Zoë,A,z@example.com\r\n").encode() + "José,B,j@example.com\r\n".encode(
        "cp1252"
    )
    with pytest.raises(InputError, match=r"line 3: byte \d+ \(0xE9\)") as caught:
        scan_source(_write(tmp_path, data))
    assert caught.value.row == 3


def test_scan_then_run_from_the_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """scan.open() reads the input again: a path, or the copy of standard input scanned."""
    data = (HEADER + "Ann,Lee,ann@example.com\r\n").encode()
    _stdin(monkeypatch, data)
    for source in ("-", _write(tmp_path, data)):
        scan = scan_source(source, ReadOptions(badge_id=51))
        assert scan.learners == 1
        assert scan.name == ("standard input" if source == "-" else str(source))
        for _ in range(2):
            with scan.open() as opened:
                assert [row.number for row in opened if row.ok] == [2]


def test_a_source_scanned_is_read_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """LearnerSource.scan() reads the source it is called on; it cannot reopen it."""
    _stdin(monkeypatch, (HEADER + "Ann,Lee,ann@example.com\r\n").encode())
    source = open_source("-", ReadOptions(badge_id=51))
    scan = source.scan()
    assert (scan.name, scan.learners) == ("standard input", 1)
    with pytest.raises(RuntimeError, match="can be read once"):
        list(source)
    with pytest.raises(RuntimeError, match="use scan_source"):
        scan.open()


def test_undecodable_json_lines_name_the_line(tmp_path: Path) -> None:
    """UTF-8 JSON Lines with a Windows-1252 byte on line 2 is refused, naming line 2."""
    data = '{"first_name": "Zoë", "email": "z@example.com"}\n'.encode()
    data += '{"first_name": "José", "email": "j@example.com"}\n'.encode("cp1252")
    with pytest.raises(InputError, match="line 2") as caught:
        scan_source(_write(tmp_path, data, "cohort.jsonl"))
    assert caught.value.row == 2


# ----- a failures file fed back --------------------------------------------------------


def test_failures_file_fed_back_keeps_original_row_numbers(tmp_path: Path) -> None:
    """Its `row` column gives each record its original number; `reason` is not read."""
    text = (
        "row,reason,First Name,Email\r\n"
        "17,Email 'ann@': not valid,Ann,ann@example.com\r\n"
        "40,first name is empty,Bob,bob@example.com\r\n"
        ",,Cy,cy@example.com\r\n"
    )
    dialect, rows = _read(_write(tmp_path, text.encode(), "cohort.failures.csv"))
    assert dialect.original_rows
    assert [row.number for row in rows] == [17, 40, 4]
    assert all(row.ok for row in rows)
    plain, _ = _read(_write(tmp_path, (HEADER + "A,B,a@example.com\r\n").encode()))
    assert not plain.original_rows


# ----- Unicode emails ------------------------------------------------------------------


def test_decomposed_email_is_read_composed(tmp_path: Path) -> None:
    """An NFD address in a file is held, sent and keyed in NFC."""
    nfd = "zoe\u0308@example.org"
    _, (row,) = _read(_write(tmp_path, (HEADER + f"Zoë,Ng,{nfd}\r\n").encode()))
    assert row.learner is not None
    assert row.fields["Email"] == nfd  # the results files keep what was typed
    assert row.learner.email == "zoë@example.org"
    assert row.learner.payload()["recipient_email"] == "zoë@example.org"
    assert row.learner.key == "zoë@example.org"
