"""Values: one cell (or JSON value) read as text, a whole number, a date or a yes.

Each parser returns the value, None for an empty cell, or a `Problem` that says what is
wrong and how to fix it; none of them raises on bad input.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from typing import Final
from urllib.parse import urlsplit

from .learners import Problem

__all__ = [
    "blank",
    "cell_text",
    "consent_given",
    "parse_date",
    "parse_integer",
    "parse_text",
    "sentence",
    "web_address",
]

_INTEGER = re.compile(r"[+-]?[0-9]+(?:\.0*)?", re.ASCII)
#: A whole number of more digits than this is no score or Navigatr id (and Python refuses
#: to read one of more than 4,300 digits).
_MAX_DIGITS: Final = 15
_ISO_DATE = re.compile(
    r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})(?:[T ][0-9]{1,2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?)?",
    re.ASCII,
)
_DMY_DATE = re.compile(r"([0-9]{1,2})([/.])([0-9]{1,2})\2([0-9]{4})", re.ASCII)
_DATE_HELP: Final = (
    "write dates as YYYY-MM-DD (2025-03-31), DD/MM/YYYY or DD.MM.YYYY, "
    "or give the format with --date-format (date_format=)"
)
_CONSENT_YES: Final = frozenset({"yes", "y", "true", "1", "x", "✓", "✔", "☑"})


def blank(value: object) -> bool:
    """No value: None, an empty or blank string, a float NaN (what pandas' `to_dict(
    "records")` gives for an empty cell), or pandas' own `NA` and `NaT`."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, float):
        return math.isnan(value)
    return type(value).__name__ in ("NAType", "NaTType")


def cell_text(value: object) -> str:
    """A record's value as a results-file cell (a whole float without its `.0`)."""
    if value is None or (not isinstance(value, str) and blank(value)):
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime.datetime) and value.time() == datetime.time():
        return value.date().isoformat()
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def parse_text(value: object) -> str | None:
    """A text field's value, stripped; None when the value is not text-like."""
    if isinstance(value, str):
        return value.strip()
    if blank(value):
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return cell_text(value)
    return None


def parse_integer(value: object, label: str, *, positive: bool) -> int | Problem | None:
    """A whole number from a cell ("12", "12.0") or a JSON number; None when empty."""
    if isinstance(value, bool):
        result: int | None = None
    elif isinstance(value, int):
        result = value
    elif isinstance(value, float) and value.is_integer():
        result = int(value)
    else:
        text = parse_text(value)
        if text == "":
            return None
        result = None
        if text and _INTEGER.fullmatch(text):
            whole = text.partition(".")[0]
            if len(whole.lstrip("+-").lstrip("0")) > _MAX_DIGITS:
                shown = f"{whole[:12]}... ({len(whole)} characters)"
                return Problem(label, shown, f"too large: more than {_MAX_DIGITS} digits")
            result = int(whole)
    if result is not None and abs(result) >= 10**_MAX_DIGITS:
        return Problem(label, cell_text(value), f"too large: more than {_MAX_DIGITS} digits")
    if result is None or (positive and result < 1):
        wanted = "a positive whole number (a Navigatr id)" if positive else "a whole number"
        return Problem(label, cell_text(value), f"not {wanted}")
    return result


def parse_date(
    value: object, label: str, date_format: str | None
) -> datetime.date | Problem | None:
    """A date from a cell in one of the accepted forms (or a real date cell); None when empty."""
    if isinstance(value, datetime.date):  # a datetime is one too, and so is pandas' NaT
        if blank(value):
            return None
        return value.date() if isinstance(value, datetime.datetime) else value
    text = parse_text(value)
    if text is None:
        return Problem(label, cell_text(value), f"not a date: {_DATE_HELP}")
    if not text:
        return None
    if date_format:
        try:
            return datetime.datetime.strptime(text, date_format).date()
        except ValueError:
            return Problem(label, text, f"does not match the date format {date_format!r}")
    if match := _ISO_DATE.fullmatch(text):
        year, month, day = (int(part) for part in match.group(1, 2, 3))
    elif match := _DMY_DATE.fullmatch(text):
        day, month, year = int(match.group(1)), int(match.group(3)), int(match.group(4))
    else:
        return Problem(label, text, f"not a date: {_DATE_HELP}")
    try:
        return datetime.date(year, month, day)
    except ValueError as exc:
        hint = ""
        if match.re is _DMY_DATE and month > 12 and day <= 12:
            sep = match.group(2)
            hint = f"; if the file writes month first, use --date-format %m{sep}%d{sep}%Y"
        return Problem(label, text, f"not a real date ({exc}){hint}")


def consent_given(value: object) -> tuple[bool, str]:
    """Whether a consent cell says yes (yes/y/true/1/x/a tick), and what it said."""
    said = "true" if value is True else (parse_text(value) or "")
    return said.casefold() in _CONSENT_YES, said


def web_address(url: str) -> bool:
    """Whether `url` is an http(s) address with a host and no spaces."""
    if any(ch.isspace() for ch in url):
        return False
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    return parts.scheme.lower() in {"http", "https"} and bool(host)


def sentence(exc: Exception) -> str:
    """An exception's message as the tail of a sentence: lower-case start, no final stop."""
    text = str(exc).strip().rstrip(".")
    return text[:1].lower() + text[1:] if text[1:2].islower() else text
