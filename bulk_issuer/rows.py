"""Rows: one record (cells under a header, a mapping, or a `Learner`) -> a validated `Row`.

The reader of each format yields raw records; `RowBuilder` matches their columns once
(`columns.py`), parses each value (`values.py`), builds the `Learner`, checks it, and
reports the second record of the same learner for the same badge (`dedupe.py`). A bad
record becomes a `Row` with problems and its row number, never an exception.
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from email_validator import EmailNotValidError

from .columns import ColumnMatcher, ColumnPlan, keys_found
from .dedupe import SeenKeys
from .formulas import restore
from .learners import API_FIELDS, FIELD_BY_NAME, FIELD_NAMES, Learner, Problem, Row, checked_email
from .values import (
    blank,
    cell_text,
    consent_given,
    parse_date,
    parse_integer,
    parse_text,
    sentence,
    web_address,
)

__all__ = ["RowBuilder", "validate"]

_EMAIL_LIKE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
#: The fields printed on the badge: control characters (a NUL, a line break, an escape) in
#: them are a file's damage, not a name, and a database may refuse them with a 500.
_NAMES = frozenset({"first_name", "last_name", "organisation"})
# Unicode's control characters (Cc), and its line and paragraph separators (Zl, Zp).
_DAMAGE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Half a UTF-16 pair, which JSON ("\ud800") and Python strings can hold and no UTF-8 can.
_SURROGATE = re.compile("[\ud800-\udfff]")
_NAME_DAMAGE = re.compile(f"{_DAMAGE.pattern}|{_SURROGATE.pattern}")
_ROW_NUMBER = re.compile(r"[0-9]{1,10}", re.ASCII)


def _damaged(label: str, value: str, char: str) -> Problem:
    """The problem of a value that holds `char`: a lone surrogate, or (in a name) a
    control character or a line break."""
    if _SURROGATE.fullmatch(char):
        return Problem(
            label,
            _SURROGATE.sub("\ufffd", value),
            "holds half of a UTF-16 pair (a lone surrogate), which is not text: fix the "
            "program that wrote the file",
        )
    return Problem(
        label,
        value,
        f"contains a control character or a line break (U+{ord(char):04X}): a name is "
        "printable text on one line",
    )


def validate(learner: Learner) -> tuple[Learner | None, tuple[Problem, ...]]:
    """Check a learner built in Python, as the reader does for rows.

    Returns:
        The cleaned learner (surrounding whitespace stripped) and no problems, or None
        and the problems found.
    """
    row = RowBuilder().from_learner(1, learner)
    return row.learner, row.problems


#: Python refuses to write an integer of more than 4,300 digits; no API field wants 300.
_LONGEST_INT_BITS = 1000


class _Unsendable:
    """Why a value cannot go in the API's JSON body."""

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why


def _sendable(value: object) -> object:
    """An extra field's value as the API's JSON carries it, or why it cannot be.

    A workbook's date cell or a Python date goes as `YYYY-MM-DD` (with its time, when it
    has one), a `Decimal` as a number; text, whole numbers, booleans, finite floats and
    JSON-shaped lists and mappings as they are. Anything else is the row's problem, named,
    not a crash of the run when its request is encoded.
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int):  # bool is one too
        if value.bit_length() > _LONGEST_INT_BITS:
            return _Unsendable("a whole number of more than 300 digits is not one the API takes")
        return value
    if isinstance(value, float | decimal.Decimal):
        if not math.isfinite(value):
            return _Unsendable(f"{value} is not a number JSON can carry")
        if isinstance(value, decimal.Decimal):
            return int(value) if value == value.to_integral_value() else float(value)
        return value
    if isinstance(value, datetime.datetime):
        midnight = value.time() == datetime.time() and value.tzinfo is None
        return value.date().isoformat() if midnight else value.isoformat()
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list | tuple | Mapping):
        try:
            return json.loads(json.dumps(value, allow_nan=False))
        except (TypeError, ValueError, RecursionError):
            pass
    return _Unsendable(
        f"a value of type {type(value).__name__} cannot be sent to the API: "
        "give text, a number, a date, true/false, or JSON lists and objects of them"
    )


class RowBuilder:
    """Turns header + cells, mappings or Learner objects into validated `Row`s.

    One builder reads one input: it remembers the learners seen so far, so the second
    record for the same (badge, learner) becomes a duplicate row.

    Args:
        badge_id: The run's badge; a row's own badge_id overrides it.
        date_format: A `strptime` format that all dates must follow (e.g. "%m/%d/%Y").
        column_map: Learner or API field name -> the user's column header; wins over
            the built-in aliases. An empty header means "do not read this field".
        require_consent: A column that must say yes/y/true/1/x for a learner to be issued.

    Raises:
        InputError: A column_map key names no field.
    """

    def __init__(
        self,
        *,
        badge_id: int | None = None,
        date_format: str | None = None,
        column_map: Mapping[str, str] | None = None,
        require_consent: str | None = None,
    ) -> None:
        self._badge_id = badge_id
        self._date_format = date_format
        self._columns = ColumnMatcher(column_map, require_consent)
        self._seen = SeenKeys()
        self._plan: ColumnPlan | None = None
        self._record_plans: dict[tuple[str, ...], ColumnPlan] = {}

    @property
    def plan(self) -> ColumnPlan | None:
        """The columns of the file's header, once `set_header` was called."""
        return self._plan

    # ----- headers -----------------------------------------------------------------

    def set_header(self, headers: Sequence[str]) -> None:
        """Match a file's header to learner fields; call before `from_cells`.

        Raises:
            InputError: A required column is missing, two columns give the same field,
                or a mapped or consent column is not in the header.
        """
        self._plan = self._columns.plan(tuple(headers), strict=True)

    # ----- building rows -----------------------------------------------------------

    def from_cells(
        self, number: int, cells: Sequence[object], problems: Sequence[Problem] = ()
    ) -> Row:
        """Build the row for one record of a file whose header was given to `set_header`.

        Args:
            number: The row number as a spreadsheet shows it; a failures file's own
                `row` column wins over it.
            cells: The record's values in header order: text, or a workbook's typed
                cells (numbers, dates, booleans).
            problems: Problems the reader already found (e.g. an unclosed quote).
        """
        plan = self._plan
        if plan is None:
            raise RuntimeError("RowBuilder.set_header() must be called before from_cells()")
        width = len(plan.keys)
        texts = [cell if isinstance(cell, str) else cell_text(cell) for cell in cells]
        fields = dict(zip(plan.keys, texts, strict=False))
        found = list(problems)
        if len(cells) < width:
            fields.update(dict.fromkeys(plan.keys[len(cells) :], ""))
        elif len(cells) > width:
            overflow = texts[width:]
            for offset, cell in enumerate(overflow, start=width + 1):
                fields[f"(column {offset})"] = cell
            if any(cell.strip() for cell in overflow):
                found.append(
                    Problem(
                        "row",
                        ", ".join(overflow),
                        f"this row has {len(cells)} values but the header has {width} "
                        f"columns; in a CSV file a value that contains the delimiter must be "
                        f"in quotes, in a workbook every column with values needs a header",
                    )
                )
        values: list[object] = list(cells) if len(cells) >= width else [""] * width
        if len(cells) < width:
            values[: len(cells)] = cells
        for position in plan.index.values():
            # Undo results-file neutralisation ('=Bob -> =Bob) so a failures file reads back.
            value = values[position]
            if isinstance(value, str):
                values[position] = restore(value)
        if plan.row is not None:
            original = texts[plan.row].strip() if plan.row < len(texts) else ""
            if _ROW_NUMBER.fullmatch(original) and int(original) > 0:
                number = int(original)
        return self._build(number, plan, values, fields, found)

    def looks_like_record(self, cells: Sequence[str]) -> bool:
        """Whether cells found inside one value look like a whole learner row of this file.

        Used to spot a quote that was never closed and swallowed the rows after it.
        """
        plan = self._plan
        if plan is None or len(plan.keys) < 2 or len(cells) != len(plan.keys):
            return False
        position = plan.index.get("email")
        if position is not None:
            return _EMAIL_LIKE.fullmatch(cells[position].strip()) is not None
        position = plan.index.get("recipient_id")
        return position is not None and cells[position].strip().isdigit()

    def from_mapping(self, number: int, record: Mapping[Any, object]) -> Row:
        """Build the row for a dict-like record (a JSON object or a dict from an LMS)."""
        extra_map = record.get("extra")
        if isinstance(extra_map, Mapping) and all(isinstance(k, str) for k in extra_map):
            record = {key: value for key, value in record.items() if key != "extra"}
        else:
            extra_map = None
        headers = tuple(str(key) for key in record)
        plan = self._record_plans.get(headers)
        if plan is None:
            if len(self._record_plans) > 64:  # records with ever-changing keys: stay small
                self._record_plans.clear()
            plan = self._columns.plan(headers, strict=False)
            self._record_plans[headers] = plan
        values = list(record.values())
        fields = {key: cell_text(value) for key, value in zip(plan.keys, values, strict=True)}
        for key, value in (extra_map or {}).items():
            fields.setdefault(str(key), cell_text(value))
        problems: list[Problem] = list(plan.issues)
        for target, wanted in self._columns.column_map.items():
            if wanted and target in FIELD_NAMES and target not in plan.index:
                problems.append(
                    Problem(
                        target, "", f"column map names {wanted!r}, but this record has no such key"
                    )
                )
        consent_column = self._columns.require_consent
        if consent_column is not None and plan.consent is None:
            problems.append(
                Problem(
                    consent_column,
                    "",
                    f"no consent recorded: the record has no {consent_column!r} key",
                )
            )
        extra = dict(extra_map) if extra_map is not None else {}
        return self._build(number, plan, values, fields, problems, extra=extra, missing=headers)

    def from_learner(self, number: int, learner: Learner) -> Row:
        """Validate a `Learner` built in Python; a bad value becomes a Problem, not an error."""
        values: list[object] = [getattr(learner, name) for name in FIELD_NAMES]
        plan = self._learner_plan()
        fields = {name: cell_text(value) for name, value in zip(FIELD_NAMES, values, strict=True)}
        for key, value in learner.extra.items():
            fields.setdefault(str(key), cell_text(value))
        problems: list[Problem] = []
        for key in learner.extra:
            if not isinstance(key, str) or key in API_FIELDS:
                problems.append(
                    Problem(
                        "extra",
                        str(key),
                        "extra fields are for other API fields; set the Learner field "
                        "of the same meaning instead",
                    )
                )
        return self._build(number, plan, values, fields, problems, extra=dict(learner.extra))

    def from_item(self, number: int, item: object) -> Row:
        """Build a row from whatever an iterable yielded: a Learner, a mapping, or junk."""
        if isinstance(item, Learner):
            return self.from_learner(number, item)
        if isinstance(item, Mapping):
            return self.from_mapping(number, item)
        kind = type(item).__name__
        return Row(
            number,
            {},
            None,
            (
                Problem(
                    "record", repr(item), f"a {kind} is not a learner; give a Learner or a dict"
                ),
            ),
        )

    def _learner_plan(self) -> ColumnPlan:
        plan = self._record_plans.get(FIELD_NAMES)
        if plan is None:
            plan = ColumnPlan(
                headers=FIELD_NAMES,
                keys=FIELD_NAMES,
                index={name: position for position, name in enumerate(FIELD_NAMES)},
                labels={name: name for name in FIELD_NAMES},
                extras=(),
                consent=None,
                row=None,
                issues=(),
            )
            self._record_plans[FIELD_NAMES] = plan
        return plan

    def _build(
        self,
        number: int,
        plan: ColumnPlan,
        values: Sequence[object],
        fields: dict[str, str],
        problems: list[Problem],
        *,
        extra: dict[str, object] | None = None,
        missing: tuple[str, ...] | None = None,
    ) -> Row:
        parsed: dict[str, object] = {}
        labels = plan.labels
        for name, position in plan.index.items():
            label = labels[name]
            raw = values[position]
            kind = FIELD_BY_NAME[name].kind
            if kind == "text":
                text = parse_text(raw)
                if text is None:
                    problems.append(Problem(label, cell_text(raw), "expected text"))
                else:
                    parsed[name] = text
            elif kind == "date":
                day = parse_date(raw, label, self._date_format)
                if isinstance(day, Problem):
                    problems.append(day)
                elif day is not None:
                    parsed[name] = day
            else:
                whole = parse_integer(raw, label, positive=kind == "id")
                if isinstance(whole, Problem):
                    problems.append(whole)
                elif whole is not None:
                    parsed[name] = whole

        extra = extra if extra is not None else {}
        for position, api_name in plan.extras:
            raw = values[position]
            if blank(raw):
                continue  # a NaN would go out as the invalid JSON `NaN`
            extra[api_name] = raw
        for name, raw in list(extra.items()):
            value = _sendable(raw)
            if isinstance(value, _Unsendable):
                problems.append(Problem(labels.get(name, name), cell_text(raw)[:80], value.why))
                del extra[name]
            else:
                extra[name] = value

        if plan.consent is not None:
            yes, said = consent_given(values[plan.consent])
            if not yes:
                label = plan.headers[plan.consent]
                problems.append(
                    Problem(
                        label,
                        "",
                        f"no consent recorded in column {label!r} (value {said!r}); "
                        f"learners must agree before a badge is issued",
                    )
                )

        for fields_of in (parsed, extra):
            for name, value in fields_of.items():
                if not isinstance(value, str) or (value.isascii() and name not in _NAMES):
                    continue  # the common case: nothing to look for
                if found := (_NAME_DAMAGE if name in _NAMES else _SURROGATE).search(value):
                    problems.append(_damaged(labels.get(name, name), value, found.group()))
        if not parsed.get("first_name"):
            if "first_name" in labels or missing is None:
                message = "first name is empty; every learner needs one"
            else:
                message = f"no first name: name the key first_name{keys_found(missing)}"
            problems.append(Problem(labels.get("first_name", "first_name"), "", message))
        email = str(parsed.get("email", ""))
        email_label = labels.get("email", "email")
        key: str | None = None
        if email:
            try:
                # As `normalised_email`, but a refused address is a problem: NFC first
                # (what Learner holds and sends), then checked and lower-cased.
                nfc = email if email.isascii() else unicodedata.normalize("NFC", email)
                key = checked_email(nfc).lower()
            except EmailNotValidError as exc:
                problems.append(
                    Problem(email_label, email, f"not a valid email address: {sentence(exc)}")
                )
        elif parsed.get("recipient_id") is None:
            where = "" if "email" in labels or missing is None else keys_found(missing)
            problems.append(
                Problem(
                    email_label,
                    "",
                    "email is empty; give the learner's email address, or a recipient_id "
                    f"for an existing Navigatr user{where}",
                )
            )
        else:
            key = f"id:{parsed['recipient_id']}"

        url = str(parsed.get("evidence_url", ""))
        if url and not web_address(url):
            problems.append(
                Problem(
                    labels["evidence_url"],
                    url,
                    "not a web address: an evidence URL starts with https:// or http:// "
                    "and names a host",
                )
            )
        issued, ends = parsed.get("issue_date"), parsed.get("end_date")
        if isinstance(issued, datetime.date) and isinstance(ends, datetime.date) and ends < issued:
            problems.append(
                Problem(
                    labels["end_date"],
                    ends.isoformat(),
                    f"the expiry date is before the issue date ({issued.isoformat()})",
                )
            )

        if problems:
            return Row(number, fields, None, tuple(problems))
        if key is None:  # every path without a problem sets the key; never drop a learner
            raise RuntimeError(f"row {number}: learner has no key and no problem")
        learner = Learner(**parsed, extra=extra)  # type: ignore[arg-type]
        object.__setattr__(learner, "_key", key)  # validated just now: no second validation
        badge = learner.badge_id if learner.badge_id is not None else self._badge_id
        first = self._seen.first_row(f"{badge}\x1f{key}", number)
        if first is not None:
            same = "recipient_id" if key.startswith("id:") else "email"
            column = labels.get(same, same)
            shown = email or str(learner.recipient_id)
            duplicate = Problem(column, shown, f"duplicate of row {first} (same {same})")
            return Row(number, fields, None, (duplicate,), duplicate_of=first)
        return Row(number, fields, learner, ())
