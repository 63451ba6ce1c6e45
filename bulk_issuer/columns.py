"""Columns: which column of a header (or key of a record) holds which learner field.

Built-in aliases (`learners.COLUMN_ALIASES`) are matched ignoring case, spaces, `_` and
`-`; `--map FIELD=COLUMN` wins over them; `recipient_*` columns pass through to the API;
anything else is kept for the results files only. A failures file fed back starts with
our `row` and `reason` columns: `row` gives each record its original row number and
`reason` is not read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from .learners import COLUMN_ALIASES, FIELD_NAMES, InputError, Problem, normalise_header

__all__ = [
    "REASON_COLUMNS",
    "ROW_COLUMNS",
    "ColumnMatcher",
    "ColumnPlan",
    "field_keys",
    "keys_found",
]

API_EXTRA: Final = re.compile(r"recipient_[a-z0-9_]+", re.ASCII)
ROW_COLUMNS: Final = ("row", "bulk-issuer row")
"""The names a failures file gives its row-number column (the second when `row` is taken)."""
REASON_COLUMNS: Final = ("reason", "bulk-issuer reason")


@dataclass(frozen=True, slots=True)
class ColumnPlan:
    """Where each Learner field is found in a header (or in the keys of a record).

    Args:
        headers: The header as found.
        keys: The `Row.fields` keys (the header, a repeated name made unique).
        index: Learner field -> position.
        labels: Learner field -> the user's column name, for messages.
        extras: (position, API name) of columns sent through untouched.
        consent: Position of the consent column, when one is required and found.
        row: Position of a failures file's `row` column (the original row numbers).
        issues: Problems with the header itself (non-strict plans only).
    """

    headers: tuple[str, ...]
    keys: tuple[str, ...]
    index: Mapping[str, int]
    labels: Mapping[str, str]
    extras: tuple[tuple[int, str], ...]
    consent: int | None
    row: int | None
    issues: tuple[Problem, ...]


def map_hint(name: str) -> str:
    """How to name a column for `name` yourself, on the command line and in Python."""
    return f"--map {name}=\"Your Column\" (column_map={{'{name}': 'Your Column'}} in Python)"


def keys_found(keys: Sequence[str]) -> str:
    """` (keys found: a, b)`, for messages about records without a needed key."""
    return f" (keys found: {', '.join(keys) or 'none'})"


def field_keys(headers: Sequence[str]) -> tuple[str, ...]:
    """The `Row.fields` keys for a header: its names, a repeated one made unique ("Notes (2)")."""
    seen: set[str] = set()
    keys: list[str] = []
    for header in headers:
        key, count = header, 1
        while key in seen:
            count += 1
            key = f"{header} ({count})"
        seen.add(key)
        keys.append(key)
    return tuple(keys)


def failures_file_columns(headers: Sequence[str]) -> bool:
    """Whether a header starts with a failures file's `row` and `reason` columns."""
    return (
        len(headers) >= 2
        and headers[0].strip().casefold() in ROW_COLUMNS
        and headers[1].strip().casefold() in REASON_COLUMNS
    )


class ColumnMatcher:
    """Matches headers to learner fields, with the user's `--map` and consent column.

    Args:
        column_map: Learner or API field name -> the user's column header; wins over
            the built-in aliases. An empty header means "do not read this field".
        require_consent: A column that must say yes for a learner to be issued.

    Raises:
        InputError: A column_map key names no field.
    """

    def __init__(
        self, column_map: Mapping[str, str] | None = None, require_consent: str | None = None
    ) -> None:
        self.require_consent = require_consent
        self.column_map: dict[str, str] = {}
        for key, header in (column_map or {}).items():
            target = COLUMN_ALIASES.get(normalise_header(key))
            if target is None and API_EXTRA.fullmatch(key):
                target = key
            if target is None:
                known = ", ".join(FIELD_NAMES)
                raise InputError(
                    f"column map: {key!r} is not a learner field. Use one of {known}, "
                    f"an API name such as recipient_email, or recipient_<name> for another "
                    f"API field."
                )
            self.column_map[target] = header

    def plan(self, headers: tuple[str, ...], *, strict: bool) -> ColumnPlan:
        """Work out the columns; strict (files) raises InputError, else issues become problems.

        Raises:
            InputError: (strict) A required column is missing, two columns give the same
                field, or a mapped or consent column is not in the header.
        """
        found = ", ".join(repr(h) for h in headers) or "none"
        issues: list[str] = []
        index: dict[str, int] = {}
        extras: list[tuple[int, str]] = []
        taken: set[int] = set()
        normalised = [normalise_header(h) for h in headers]
        row: int | None = None
        if strict and failures_file_columns(headers):
            row = 0
            taken.update((0, 1))  # our own columns: never matched to a field

        for target, wanted in self.column_map.items():
            if not wanted:
                index[target] = -1  # the user switched this field off
                continue
            position = _find_header(headers, normalised, wanted)
            same = [p for p, header in enumerate(headers) if header.strip() == wanted.strip()]
            if len(same) > 1:
                # Two columns of that very name: which one the map means cannot be told.
                where = ", ".join(str(p + 1) for p in same)
                message = (
                    f"column map: {target}={wanted!r}, but {len(same)} columns are named "
                    f"{wanted!r} (columns {where}): rename all but one"
                )
                if strict:
                    raise InputError(message)
                issues.append(message)
            if position is None:
                if strict:
                    raise InputError(
                        f"column map: {target}={wanted!r}, but there is no column {wanted!r}. "
                        f"Headers found: {found}."
                    )
                continue
            taken.add(position)
            if target in FIELD_NAMES:
                index[target] = position
            else:
                extras.append((position, target))

        consent: int | None = None
        if self.require_consent is not None:
            consent = _find_header(headers, normalised, self.require_consent)
            if consent is None and strict:
                raise InputError(
                    f"consent column {self.require_consent!r} is not in the file. "
                    f"Headers found: {found}. Add the column or name the right one "
                    f"with --require-consent."
                )

        by_field: dict[str, list[int]] = {}
        for position, (header, norm) in enumerate(zip(headers, normalised, strict=True)):
            if position in taken or position == consent:
                continue
            name = COLUMN_ALIASES.get(norm)
            if name is not None and name not in index:
                by_field.setdefault(name, []).append(position)
            elif name is None and API_EXTRA.fullmatch(header.strip()):
                extras.append((position, header.strip()))
        for name, positions in by_field.items():
            if len(positions) > 1:
                names = " and ".join(repr(headers[p]) for p in positions)
                every = "both" if len(positions) == 2 else "all"
                message = (
                    f"columns {names} {every} look like the {name} column; choose one with "
                    f"{map_hint(name).replace('Your Column', headers[positions[0]])}"
                )
                if strict:
                    raise InputError(message)
                issues.append(message)
            index[name] = positions[0]
        index = {name: position for name, position in index.items() if position >= 0}

        if strict:
            if "first_name" not in index:
                raise InputError(_missing("first-name", "First Name", "first_name", found))
            if "email" not in index and "recipient_id" not in index:
                raise InputError(_missing("email", "Email", "email", found))

        return ColumnPlan(
            headers=headers,
            keys=field_keys(headers),
            index=index,
            labels={name: headers[position] for name, position in index.items()},
            extras=tuple(extras),
            consent=consent,
            row=row,
            issues=tuple(Problem("columns", "", message) for message in issues),
        )


def _find_header(headers: Sequence[str], normalised: Sequence[str], wanted: str) -> int | None:
    """Position of `wanted` in the header: exact match first, then a normalised one."""
    stripped = wanted.strip()
    for position, header in enumerate(headers):
        if header.strip() == stripped:
            return position
    norm = normalise_header(wanted)
    matches = [position for position, other in enumerate(normalised) if other == norm]
    return matches[0] if len(matches) == 1 and norm else None


def _missing(what: str, usual: str, name: str, found: str) -> str:
    return (
        f"no {what} column found. Headers found: {found}. Name the column {usual!r} "
        f"(or {name}), or say which column it is: {map_hint(name)}."
    )
