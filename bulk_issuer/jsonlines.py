"""JSON Lines: one object per line, each with its line number; a bad line is a problem.

A line that is not JSON, or not an object, is that line's problem (the rest are read);
bytes of another encoding make the file unreadable from there on: `InputError` naming
the line.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import InputError
from .learners import Problem
from .textfile import DecodeFailure

__all__ = ["JsonLinesTable", "open_jsonl"]


@dataclass(frozen=True, slots=True)
class JsonLinesTable:
    """A JSON Lines file, opened.

    Args:
        columns: The first object's keys (for the results files' header).
        records: (line number, the object, or the problem with that line).
    """

    columns: tuple[str, ...]
    records: Iterator[tuple[int, dict[str, object] | Problem]]


def open_jsonl(lines: Iterator[str], *, name: str, codec: str) -> JsonLinesTable:
    """Peek at the first object for its keys; the records are read when iterated."""
    seen: list[str] = []
    columns: tuple[str, ...] = ()
    for line in lines:
        seen.append(line)
        text = line.strip().lstrip("\ufeff")
        if text:
            try:
                first = json.loads(text)
            except (ValueError, RecursionError):
                break
            if isinstance(first, dict):
                columns = tuple(str(key) for key in first)
            break
    return JsonLinesTable(columns, _records(itertools.chain(seen, lines), name, codec))


def _records(
    lines: Iterator[str], name: str, codec: str
) -> Iterator[tuple[int, dict[str, object] | Problem]]:
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
            except RecursionError:
                problem = Problem("line", text, "nested too deeply to read; one object per line")
                yield number, problem
                continue
            except ValueError as exc:
                message = getattr(exc, "msg", str(exc))
                problem = Problem("line", text, f"not valid JSON ({message}); one object per line")
                yield number, problem
                continue
            if not isinstance(record, dict):
                kind = type(record).__name__
                yield number, Problem("line", text, f"a JSON {kind}, not an object; one per line")
                continue
            yield number, record
    except DecodeFailure as failure:
        raise InputError(
            f"{name}: lines from {number + 1} on cannot be read: {failure.describe(codec)}. "
            f"Re-save the file as UTF-8, or give the encoding with --encoding.",
            row=number + 1,
            path=name,
        ) from None
