"""Text files: the encoding chosen the way spreadsheet exports need it, lines decoded lazily.

A byte order mark first (Excel "CSV UTF-8", Excel "Unicode text" = UTF-16 + TAB), then
strict UTF-8, then Windows-1252. A seekable file is checked whole before it is read, so a
late byte of another encoding is refused at once (naming its line), never turned into
mojibake; from a pipe, the first MiB decides. Shared by the CSV and JSON Lines readers.
"""

from __future__ import annotations

import codecs
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Final

from .errors import InputError

__all__ = [
    "LINE_BREAK",
    "PREFIX_BYTES",
    "DecodeFailure",
    "Encoding",
    "choose_encoding",
    "codec_label",
    "decoded_lines",
    "read_prefix",
]

PREFIX_BYTES: Final = 1 << 20  # how much is read to choose an encoding when the input is a pipe
_CHUNK_BYTES: Final = 1 << 16
_BEYOND_C1 = re.compile(r"[^\x00-\x9f]")
LINE_BREAK = re.compile(r"\r\n|\r|\n")


class DecodeFailure(Exception):
    """Bytes that the chosen encoding cannot decode, at an offset from the file start."""

    def __init__(self, offset: int, reason: str, data: bytes) -> None:
        super().__init__(offset, reason, data)
        self.offset = offset
        self.reason = reason
        self.data = data

    def describe(self, codec: str) -> str:
        shown = " ".join(f"0x{byte:02X}" for byte in self.data[:4])
        return f"byte {self.offset} ({shown}) is not valid {codec_label(codec)}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Encoding:
    """The encoding chosen for a text file, and what to tell the user about it."""

    codec: str  # what the bytes after `skip` are decoded with
    skip: int  # length of a byte order mark
    name: str  # for Dialect.encoding (and for writing results files)
    notes: tuple[str, ...]


def codec_label(codec: str) -> str:
    """A codec's name as people know it: "UTF-8", "Windows-1252", "UTF-16"."""
    return {
        "utf-8": "UTF-8",
        "cp1252": "Windows-1252",
        "utf-16-le": "UTF-16",
        "utf-16-be": "UTF-16",
    }.get(codec, codec)


def read_prefix(stream: IO[bytes]) -> bytes:
    """The first MiB of a stream (less at its end): enough to choose an encoding from a pipe."""
    parts: list[bytes] = []
    size = 0
    while size < PREFIX_BYTES:
        chunk = stream.read(PREFIX_BYTES - size)
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


def _first_failure(
    stream: IO[bytes], prefix: bytes, codec: str, *, whole: bool
) -> tuple[DecodeFailure | None, bool]:
    """Decode without keeping the text: the first failure, and whether text before it used
    characters beyond ASCII (and beyond the C1 controls, which real text never holds).

    Args:
        whole: Read the rest of the stream too (seekable files); else only the prefix.
    """
    decoder = codecs.getincrementaldecoder(codec)("strict")
    offset = 0
    seen_text = False
    at_end = whole or len(prefix) < PREFIX_BYTES
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
            return DecodeFailure(where, exc.reason, data[exc.start : exc.end]), seen_text
        if not seen_text and not chunk.isascii():
            seen_text = _BEYOND_C1.search(text) is not None
        offset += len(chunk)
    return None, seen_text


def choose_encoding(stream: IO[bytes], prefix: bytes, forced: str | None, name: str) -> Encoding:
    """Pick the encoding: forced, byte order mark, UTF-16 by its zero bytes, UTF-8, Windows-1252."""
    if forced:
        try:
            codec = codecs.lookup(forced).name
        except LookupError:
            raise InputError(
                f"unknown encoding {forced!r}; try utf-8, utf-8-sig, utf-16 or cp1252"
            ) from None
        return Encoding(codec, 0, forced, (f"encoding {forced} (given)",))
    if prefix.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return Encoding("utf-32", 0, "utf-32", ("encoding UTF-32 with byte order mark",))
    if prefix.startswith(codecs.BOM_UTF8):
        note = "encoding UTF-8 with byte order mark (Excel 'CSV UTF-8')"
        return Encoding("utf-8", 3, "utf-8-sig", (note,))
    for bom, codec in ((codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")):
        if prefix.startswith(bom):
            note = "encoding UTF-16 with byte order mark (Excel 'Unicode Text')"
            return Encoding(codec, 2, "utf-16", (note,))
    sample = prefix[:4096]
    if len(sample) >= 4 and sample.count(0) * 3 >= len(sample):
        # Mostly-ASCII text in UTF-16 has a zero byte in every other position.
        codec = "utf-16-le" if sample[1::2].count(0) > sample[0::2].count(0) else "utf-16-be"
        return Encoding(codec, 0, codec, (f"encoding {codec} (no byte order mark; detected)",))

    whole = stream.seekable()
    failure, utf8_text = _first_failure(stream, prefix, "utf-8", whole=whole)
    if whole:
        stream.seek(len(prefix))
    if failure is None:
        return Encoding("utf-8", 0, "utf-8", ("encoding UTF-8",))
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
    return Encoding("cp1252", 0, "cp1252", (note,))


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


def decoded_lines(stream: IO[bytes], first: bytes, codec: str, offset: int) -> Iterator[str]:
    """Decode a byte stream into lines that keep their line ends (as csv.reader wants).

    Splits on CRLF, LF and lone CR only (not on the other Unicode line breaks, which
    may sit inside a name).

    Raises:
        DecodeFailure: Bytes the codec cannot decode, with their offset in the file.
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
            raise DecodeFailure(where, exc.reason, joined[exc.start : exc.end]) from None
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
            for match in LINE_BREAK.finditer(text):
                yield text[start : match.end()]
                start = match.end()
            rest = text[start:]
        pending = rest + hold
        if at_end:
            if pending:
                yield pending
            return
        data = stream.read(_CHUNK_BYTES)
