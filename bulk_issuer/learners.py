"""Learners: the record sent for one badge, its validation, column aliases and duplicates.

A learner arrives as a spreadsheet row, a JSON object, a dict from an LMS or a `Learner`
built in Python. `RowBuilder` turns each of them into a `Row`: the input's own values
(for results files), the validated `Learner` and every `Problem` found, so that a bad
record is reported with its row number instead of stopping the run.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
import re
import types
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email

from .errors import InputError

__all__ = [
    "COLUMN_ALIASES",
    "FIELD_NAMES",
    "InputError",
    "Learner",
    "Problem",
    "Row",
    "RowBuilder",
    "field_keys",
    "normalise_header",
    "validate",
]


@dataclass(frozen=True, slots=True)
class Learner:
    """One recipient of a badge, as sent to `PUT /v1/badge/{id}/issue`.

    Building a `Learner` never raises: the reader validates it and reports problems.
    Text fields are sent exactly as given apart from surrounding whitespace.

    Args:
        first_name: Required by Navigatr.
        email: Required unless `recipient_id` names an existing Navigatr user.
        badge_id: A per-learner badge that overrides the run's badge.
        extra: Other API fields (e.g. `recipient_xyz`), sent untouched.
    """

    first_name: str
    last_name: str = ""
    email: str = ""
    organisation: str = ""
    recipient_id: int | None = None
    issue_date: datetime.date | None = None
    end_date: datetime.date | None = None
    evidence_text: str = ""
    evidence_url: str = ""
    score: int | None = None
    min_score: int | None = None
    provider_id: int | None = None
    badge_id: int | None = None
    extra: Mapping[str, object] = field(default_factory=dict)
    # `key` costs an email validation; it is asked for several times per learner.
    _key: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # A private copy, so a caller mutating its dict later cannot change a queued learner.
        object.__setattr__(self, "extra", dict(self.extra))

    def __hash__(self) -> int:
        # Hand-written because `extra` is a dict; equal learners have equal extra keys.
        values = tuple(getattr(self, name) for name in FIELD_NAMES)
        return hash((values, tuple(sorted(map(str, self.extra)))))

    def payload(self) -> dict[str, object]:
        """Return the JSON body for `PUT /v1/badge/{id}/issue`, without empty optional fields."""
        body: dict[str, object] = {"recipient_firstname": self.first_name.strip()}
        for name, api_name in (
            ("last_name", "recipient_lastname"),
            ("email", "recipient_email"),
            ("organisation", "recipient_organisation"),
        ):
            text = str(getattr(self, name)).strip()
            if text:
                body[api_name] = text
        if self.recipient_id is not None:
            body["recipient_id"] = self.recipient_id
        for name in ("issue_date", "end_date"):
            day = getattr(self, name)
            if day is not None:
                body[name] = day.isoformat()
        for name in ("evidence_text", "evidence_url"):
            text = str(getattr(self, name)).strip()
            if text:
                body[name] = text
        for name in ("score", "min_score", "provider_id"):
            number = getattr(self, name)
            if number is not None:
                body[name] = number
        for key, value in self.extra.items():
            body.setdefault(key, value)
        return body

    @property
    def key(self) -> str:
        """Identity within one badge: the normalised email, or `id:<recipient_id>`."""
        if self._key is None:
            object.__setattr__(self, "_key", self._normalised_key())
        assert self._key is not None
        return self._key

    def _normalised_key(self) -> str:
        email = self.email.strip()
        if not email:
            return f"id:{self.recipient_id}"
        try:
            return normalised_email(email).lower()
        except EmailNotValidError:
            return email.lower()


FIELD_NAMES: Final = tuple(
    f.name for f in dataclasses.fields(Learner) if f.name != "extra" and not f.name.startswith("_")
)
"""The Learner fields that columns map to, in the order of the Navigatr CSV template."""

_API_NAMES: Final = types.MappingProxyType(
    {
        "first_name": "recipient_firstname",
        "last_name": "recipient_lastname",
        "email": "recipient_email",
        "organisation": "recipient_organisation",
    }
)
_API_FIELDS: Final = frozenset(_API_NAMES.get(name, name) for name in FIELD_NAMES)


@dataclass(frozen=True, slots=True)
class Problem:
    """Something wrong with one value of one row, phrased for the person who fixes it.

    Args:
        column: The user's own column name where known ("Email"), else the field name.
        value: The offending value, shortened to about 80 characters.
        message: What is wrong and how to fix it.
    """

    column: str
    value: str
    message: str

    def __post_init__(self) -> None:
        if len(self.value) > _MAX_VALUE:
            object.__setattr__(self, "value", self.value[: _MAX_VALUE - 3] + "...")

    def __str__(self) -> str:
        if self.value:
            return f"{self.column} {self.value!r}: {self.message}"
        return f"{self.column}: {self.message}"


_MAX_VALUE: Final = 80


@dataclass(frozen=True, slots=True)
class Row:
    """One input record: its own values, the learner read from it, and what is wrong with it.

    Args:
        number: The row as a spreadsheet shows the file (header = 1, first learner = 2);
            the line number for JSON Lines; index + 1 for in-memory records.
        fields: The input's own columns and values, untouched, in input order.
        learner: The validated learner, or None when the row is invalid.
        problems: Empty when the row is valid.
        duplicate_of: The first row with the same learner for the same badge.
    """

    number: int
    fields: Mapping[str, str]
    learner: Learner | None
    problems: tuple[Problem, ...]
    duplicate_of: int | None = None

    @property
    def ok(self) -> bool:
        """Whether the row holds a valid learner to issue to."""
        return self.learner is not None and not self.problems


def normalise_header(name: str) -> str:
    """Reduce a column name for matching: case-folded, only letters and digits kept."""
    return "".join(ch for ch in name.casefold() if ch.isalnum())


def _aliases() -> dict[str, str]:
    table = {
        "first_name": (
            "first_name firstname first given_name givenname given_names forename forenames "
            "recipient_firstname recipient_first_name student_first_name learner_first_name "
            "user_first_name"
        ),
        "last_name": (
            "last_name lastname last surname family_name familyname recipient_lastname "
            "recipient_last_name recipient_surname student_last_name learner_last_name "
            "user_last_name"
        ),
        "email": (
            "email e_mail email_address e_mail_address mail mail_address login_email "
            "recipient_email user_email student_email learner_email"
        ),
        "organisation": "organisation organization recipient_organisation recipient_organization",
        "recipient_id": "recipient_id navigatr_user_id navigatr_id",
        "issue_date": "issue_date issued_on date_issued date_of_issue",
        "end_date": (
            "end_date expiry_date expiration_date expiry expires expires_on date_of_expiry "
            "valid_until"
        ),
        "evidence_text": "evidence_text evidence evidence_description",
        "evidence_url": "evidence_url evidence_link",
        "score": "score",
        "min_score": "min_score minimum_score",
        "provider_id": "provider_id",
        "badge_id": "badge_id",
    }
    return {
        normalise_header(alias): name for name, words in table.items() for alias in words.split()
    }


COLUMN_ALIASES: Final[Mapping[str, str]] = types.MappingProxyType(_aliases())
"""Normalised column name -> Learner field, for Navigatr, Moodle, Google and API headers."""

_API_EXTRA = re.compile(r"recipient_[a-z0-9_]+", re.ASCII)
_TEXT_FIELDS: Final = frozenset(
    {"first_name", "last_name", "email", "organisation", "evidence_text", "evidence_url"}
)
_ID_FIELDS: Final = frozenset({"recipient_id", "provider_id", "badge_id"})
_INT_FIELDS: Final = _ID_FIELDS | {"score", "min_score"}
_DATE_FIELDS: Final = frozenset({"issue_date", "end_date"})
_CONSENT_YES: Final = frozenset({"yes", "y", "true", "1", "x", "✓", "✔", "☑"})
_FORMULA_START: Final = frozenset("=+-@\t\r")
# An unquoted ASCII local part (RFC 5322 dot-atom): valid as written, nothing to normalise.
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


def normalised_email(address: str) -> str:
    """Check an address with email-validator (no DNS) and return its normalised form.

    A cohort has thousands of addresses and a handful of domains, and checking a domain is
    most of email-validator's work: an address with a plain ASCII local part has only its
    domain checked, once per domain; anything else gets the full check.

    Raises:
        EmailNotValidError: with email-validator's explanation.
    """
    local, at, domain = address.rpartition("@")
    if at and len(local) <= 64 and len(address) <= 254 and _PLAIN_LOCAL.fullmatch(local):
        return f"{local}@{_checked_domain(domain)}"
    return validate_email(address, check_deliverability=False).normalized


@functools.lru_cache(maxsize=4096)
def _checked_domain(domain: str) -> str:
    # Failures raise and are not cached; a bad domain is checked (and explained) each time.
    return validate_email(f"x@{domain}", check_deliverability=False).domain


_EMAIL_LIKE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_INTEGER = re.compile(r"[+-]?[0-9]+(?:\.0*)?", re.ASCII)
_ISO_DATE = re.compile(
    r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})(?:[T ][0-9]{1,2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?)?",
    re.ASCII,
)
_DMY_DATE = re.compile(r"([0-9]{1,2})([/.])([0-9]{1,2})\2([0-9]{4})", re.ASCII)
_DATE_HELP: Final = (
    "write dates as YYYY-MM-DD (2025-03-31), DD/MM/YYYY or DD.MM.YYYY, "
    "or give the format with --date-format (date_format=)"
)


def _map_hint(name: str) -> str:
    return f"--map {name}=\"Your Column\" (column_map={{'{name}': 'Your Column'}} in Python)"


def _field_for_key(key: str) -> str | None:
    """The Learner field a column_map key names: a Learner or API field name, or an alias."""
    return COLUMN_ALIASES.get(normalise_header(key))


def validate(learner: Learner) -> tuple[Learner | None, tuple[Problem, ...]]:
    """Check a learner built in Python, as the reader does for rows.

    Returns:
        The cleaned learner (surrounding whitespace stripped) and no problems, or None
        and the problems found.
    """
    builder = RowBuilder()
    row = builder.from_learner(1, learner)
    return row.learner, row.problems


@dataclass(slots=True)
class _Plan:
    """Where each Learner field is found in a header (or in the keys of a record)."""

    headers: tuple[str, ...]
    keys: tuple[str, ...]
    index: dict[str, int]
    labels: dict[str, str]
    extras: list[tuple[int, str]]
    consent: int | None
    issues: tuple[Problem, ...]


class _SeenKeys:
    """Which (badge, learner key) pairs were seen, in 12 bytes of table slot each.

    An open-addressing table of 8-byte BLAKE2b hashes and 4-byte row numbers in flat
    arrays: no Python object per entry, so a million learners cost 24 MB (36 MB while the
    table doubles). Two different keys share a hash with odds of about 1 in 10^7 for
    10^6 learners; such a row is reported as a duplicate, never dropped silently.
    """

    __slots__ = ("_count", "_hashes", "_mask", "_rows")

    def __init__(self) -> None:
        self._hashes = array("Q", [0]) * 1024
        self._rows = array("I", [0]) * 1024
        self._mask = 1023
        self._count = 0

    def first_row(self, token: str, row: int) -> int | None:
        """Return the row that first had `token`, or record `row` for it and return None."""
        digest = hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        wanted = int.from_bytes(digest, "little") or 1  # 0 marks an empty slot
        hashes, mask = self._hashes, self._mask
        slot = wanted & mask
        while (found := hashes[slot]) != 0:
            if found == wanted:
                return self._rows[slot]
            slot = (slot + 1) & mask
        hashes[slot] = wanted
        self._rows[slot] = min(row, _MAX_ROW)
        self._count += 1
        if self._count * 3 >= (mask + 1) * 2:
            self._grow()
        return None

    def _grow(self) -> None:
        old_hashes, old_rows = self._hashes, self._rows
        size = len(old_hashes) * 2
        self._hashes = hashes = array("Q", [0]) * size
        self._rows = rows = array("I", [0]) * size
        self._mask = mask = size - 1
        for wanted, row in zip(old_hashes, old_rows, strict=True):
            if wanted:
                slot = wanted & mask
                while hashes[slot]:
                    slot = (slot + 1) & mask
                hashes[slot] = wanted
                rows[slot] = row


_MAX_ROW: Final = 2**32 - 1  # row numbers past 4 billion are reported as this one


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
        self._require_consent = require_consent
        self._column_map: dict[str, str] = {}
        for key, header in (column_map or {}).items():
            target = _field_for_key(key) or (key if _API_EXTRA.fullmatch(key) else None)
            if target is None:
                known = ", ".join(FIELD_NAMES)
                raise InputError(
                    f"column map: {key!r} is not a learner field. Use one of {known}, "
                    f"an API name such as recipient_email, or recipient_<name> for another "
                    f"API field."
                )
            self._column_map[target] = header
        self._seen = _SeenKeys()
        self._plan: _Plan | None = None
        self._record_plans: dict[tuple[str, ...], _Plan] = {}

    # ----- headers -----------------------------------------------------------------

    def set_header(self, headers: Sequence[str]) -> None:
        """Match a file's header to learner fields; call before `from_cells`.

        Raises:
            InputError: A required column is missing, two columns give the same field,
                or a mapped or consent column is not in the header.
        """
        plan = self._make_plan(tuple(headers), strict=True)
        self._plan = plan

    def _make_plan(self, headers: tuple[str, ...], *, strict: bool) -> _Plan:
        """Work out the columns; strict (files) raises InputError, else issues become problems."""
        found = ", ".join(repr(h) for h in headers) or "none"
        issues: list[str] = []
        index: dict[str, int] = {}
        extras: list[tuple[int, str]] = []
        taken: set[int] = set()
        normalised = [normalise_header(h) for h in headers]

        for target, wanted in self._column_map.items():
            if not wanted:
                index[target] = -1  # the user switched this field off
                continue
            position = _find_header(headers, normalised, wanted)
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
        if self._require_consent is not None:
            consent = _find_header(headers, normalised, self._require_consent)
            if consent is None and strict:
                raise InputError(
                    f"consent column {self._require_consent!r} is not in the file. "
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
            elif name is None and _API_EXTRA.fullmatch(header.strip()):
                extras.append((position, header.strip()))
        for name, positions in by_field.items():
            if len(positions) > 1:
                names = " and ".join(repr(headers[p]) for p in positions)
                every = "both" if len(positions) == 2 else "all"
                message = (
                    f"columns {names} {every} look like the {name} column; choose one with "
                    f"{_map_hint(name).replace('Your Column', headers[positions[0]])}"
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

        keys = field_keys(headers)
        labels = {name: headers[position] for name, position in index.items()}
        problems = tuple(Problem("columns", "", message) for message in issues)
        return _Plan(headers, keys, index, labels, extras, consent, problems)

    # ----- building rows -----------------------------------------------------------

    def from_cells(
        self, number: int, cells: Sequence[str], problems: Sequence[Problem] = ()
    ) -> Row:
        """Build the row for one record of a file whose header was given to `set_header`.

        Args:
            number: The row number as a spreadsheet shows it.
            cells: The record's values in header order.
            problems: Problems the reader already found (e.g. an unclosed quote).
        """
        plan = self._plan
        if plan is None:
            raise RuntimeError("RowBuilder.set_header() must be called before from_cells()")
        width = len(plan.keys)
        fields = dict(zip(plan.keys, cells, strict=False))
        found = list(problems)
        if len(cells) < width:
            fields.update(dict.fromkeys(plan.keys[len(cells) :], ""))
        elif len(cells) > width:
            overflow = cells[width:]
            for offset, cell in enumerate(overflow, start=width + 1):
                fields[f"(column {offset})"] = cell
            if any(cell.strip() for cell in overflow):
                found.append(
                    Problem(
                        "row",
                        ", ".join(overflow),
                        f"this row has {len(cells)} values but the header has {width} "
                        f"columns; a value that contains the delimiter must be in quotes",
                    )
                )
        values = list(cells) if len(cells) >= width else [fields[key] for key in plan.keys]
        for position in plan.index.values():
            # Undo results-file neutralisation ('=Bob -> =Bob) so a failures file reads back.
            cell = values[position]
            if cell[:1] == "'" and cell[1:2] in _FORMULA_START:
                values[position] = cell[1:]
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

    def from_mapping(self, number: int, record: Mapping[object, object]) -> Row:
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
            plan = self._record_plans[headers] = self._make_plan(headers, strict=False)
        values = list(record.values())
        fields = {key: _cell_text(value) for key, value in zip(plan.keys, values, strict=True)}
        for key, value in (extra_map or {}).items():
            fields.setdefault(str(key), _cell_text(value))
        problems: list[Problem] = list(plan.issues)
        for target, wanted in self._column_map.items():
            if wanted and target in FIELD_NAMES and target not in plan.index:
                problems.append(
                    Problem(
                        target, "", f"column map names {wanted!r}, but this record has no such key"
                    )
                )
        if self._require_consent is not None and plan.consent is None:
            problems.append(
                Problem(
                    self._require_consent,
                    "",
                    f"no consent recorded: the record has no {self._require_consent!r} key",
                )
            )
        extra = dict(extra_map) if extra_map is not None else {}
        return self._build(number, plan, values, fields, problems, extra=extra, missing=headers)

    def from_learner(self, number: int, learner: Learner) -> Row:
        """Validate a `Learner` built in Python; a bad value becomes a Problem, not an error."""
        values: list[object] = [getattr(learner, name) for name in FIELD_NAMES]
        plan = self._learner_plan()
        fields = {name: _cell_text(value) for name, value in zip(FIELD_NAMES, values, strict=True)}
        for key, value in learner.extra.items():
            fields.setdefault(str(key), _cell_text(value))
        problems: list[Problem] = []
        for key in learner.extra:
            if not isinstance(key, str) or key in _API_FIELDS:
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

    def _learner_plan(self) -> _Plan:
        plan = self._record_plans.get(FIELD_NAMES)
        if plan is None:
            index = {name: position for position, name in enumerate(FIELD_NAMES)}
            plan = _Plan(FIELD_NAMES, FIELD_NAMES, index, {n: n for n in FIELD_NAMES}, [], None, ())
            self._record_plans[FIELD_NAMES] = plan
        return plan

    def _build(
        self,
        number: int,
        plan: _Plan,
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
            if name in _TEXT_FIELDS:
                text = _text(raw)
                if text is None:
                    problems.append(Problem(label, _cell_text(raw), "expected text"))
                else:
                    parsed[name] = text
            elif name in _INT_FIELDS:
                number_or_problem = _integer(raw, label, positive=name in _ID_FIELDS)
                if isinstance(number_or_problem, Problem):
                    problems.append(number_or_problem)
                elif number_or_problem is not None:
                    parsed[name] = number_or_problem
            else:
                day_or_problem = _date(raw, label, self._date_format)
                if isinstance(day_or_problem, Problem):
                    problems.append(day_or_problem)
                elif day_or_problem is not None:
                    parsed[name] = day_or_problem

        extra = extra if extra is not None else {}
        for position, api_name in plan.extras:
            raw = values[position]
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                continue
            extra[api_name] = raw

        if plan.consent is not None:
            given = values[plan.consent]
            said = "true" if given is True else (_text(given) or "")
            if said.casefold() not in _CONSENT_YES:
                label = plan.headers[plan.consent]
                problems.append(
                    Problem(
                        label,
                        "",
                        f"no consent recorded in column {label!r} (value {said!r}); "
                        f"learners must agree before a badge is issued",
                    )
                )

        if not parsed.get("first_name"):
            if "first_name" in labels or missing is None:
                message = "first name is empty; every learner needs one"
            else:
                message = f"no first name: name the key first_name{_keys_found(missing)}"
            problems.append(Problem(labels.get("first_name", "first_name"), "", message))
        email = str(parsed.get("email", ""))
        email_label = labels.get("email", "email")
        key: str | None = None
        if email:
            try:
                key = normalised_email(email).lower()
            except EmailNotValidError as exc:
                problems.append(
                    Problem(email_label, email, f"not a valid email address: {_sentence(exc)}")
                )
        elif parsed.get("recipient_id") is None:
            where = "" if "email" in labels or missing is None else _keys_found(missing)
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
        if url and not _is_web_address(url):
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
        f"(or {name}), or say which column it is: {_map_hint(name)}."
    )


def _keys_found(keys: Sequence[str]) -> str:
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


def _sentence(exc: Exception) -> str:
    text = str(exc).strip().rstrip(".")
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def _cell_text(value: object) -> str:
    """A record's value as a results-file cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _text(value: object) -> str | None:
    """A text field's value, stripped; None when the value is not text-like."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _integer(value: object, label: str, *, positive: bool) -> int | Problem | None:
    """A whole number from a cell ("12", "12.0") or a JSON number; None when empty."""
    if isinstance(value, bool):
        result: int | None = None
    elif isinstance(value, int):
        result = value
    elif isinstance(value, float) and value.is_integer():
        result = int(value)
    else:
        text = _text(value)
        if text == "":
            return None
        result = int(text.partition(".")[0]) if text and _INTEGER.fullmatch(text) else None
    if result is None or (positive and result < 1):
        wanted = "a positive whole number (a Navigatr id)" if positive else "a whole number"
        return Problem(label, _cell_text(value), f"not {wanted}")
    return result


def _date(value: object, label: str, date_format: str | None) -> datetime.date | Problem | None:
    """A date from a cell in one of the accepted forms; None when empty."""
    if isinstance(value, datetime.datetime):
        return value.date()
    if isinstance(value, datetime.date):
        return value
    text = _text(value)
    if text is None:
        return Problem(label, _cell_text(value), f"not a date: {_DATE_HELP}")
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


def _is_web_address(url: str) -> bool:
    if any(ch.isspace() for ch in url):
        return False
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    return parts.scheme.lower() in {"http", "https"} and bool(host)
