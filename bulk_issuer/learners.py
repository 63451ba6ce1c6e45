"""Learners: the record sent for one badge, its one field table, and how a learner is known.

A learner arrives as a spreadsheet row, a JSON object, a dict from an LMS or a `Learner`
built in Python; `rows.RowBuilder` turns each into a `Row`. This module holds what every
other part of input agrees on: the fields (`FIELDS`: name, API name, kind, the column
names understood), the `Learner` sent, and `normalised_email`, the one normalisation of an
address (NFC, then lower case) used for the journal key and for matching the server's
answers.

Input, in the order it flows:
```
readers.py        open_source / scan_source: the entry points, one reader per format:
  textfile.py       the encoding of a text file, its lines
  csvfile.py        CSV: delimiter, header, (row number, cells)
  jsonlines.py      JSON Lines: (line number, object)
  workbook.py       .xlsx / .ods: (row number, typed cells) of one sheet
columns.py        which column holds which field (aliases, --map, a failures file's row)
values.py         a cell -> text, whole number, date, consent
rows.py           RowBuilder: a validated Row per record
dedupe.py         the same learner twice for one badge
learners.py       this: the fields, the Learner, Row, Problem, email normalisation
formulas.py       the formula prefixes results files neutralise and readers restore
```
"""

from __future__ import annotations

import datetime
import functools
import re
import types
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from email_validator import EmailNotValidError, validate_email

from .errors import InputError

if TYPE_CHECKING:
    from .columns import field_keys
    from .rows import RowBuilder, validate

__all__ = [
    "COLUMN_ALIASES",
    "FIELDS",
    "FIELD_NAMES",
    "FieldSpec",
    "InputError",
    "Learner",
    "Problem",
    "Row",
    "RowBuilder",
    "field_keys",
    "normalise_header",
    "normalised_email",
    "validate",
]


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One learner field: how it is named in Python, in the API and in a file's header.

    Args:
        name: The `Learner` attribute.
        api: The key in the issue request's JSON body; None when it is not sent there
            (the badge goes in the URL).
        kind: How a cell becomes a value: "text", "id" (a positive whole number), "int"
            (a whole number) or "date".
        aliases: Column names understood, matched with `normalise_header`.
    """

    name: str
    api: str | None
    kind: Literal["text", "id", "int", "date"]
    aliases: tuple[str, ...]


def _spec(name: str, api: str | None, kind: str, aliases: str) -> FieldSpec:
    return FieldSpec(name, api, kind, tuple(aliases.split()))  # type: ignore[arg-type]


FIELDS: Final = (
    _spec(
        "first_name",
        "recipient_firstname",
        "text",
        "first_name firstname first given_name givenname given_names forename forenames "
        "recipient_firstname recipient_first_name student_first_name learner_first_name "
        "user_first_name",
    ),
    _spec(
        "last_name",
        "recipient_lastname",
        "text",
        "last_name lastname last surname family_name familyname recipient_lastname "
        "recipient_last_name recipient_surname student_last_name learner_last_name "
        "user_last_name",
    ),
    _spec(
        "email",
        "recipient_email",
        "text",
        "email e_mail email_address e_mail_address mail mail_address login_email "
        "recipient_email user_email student_email learner_email",
    ),
    _spec(
        "organisation",
        "recipient_organisation",
        "text",
        "organisation organization recipient_organisation recipient_organization",
    ),
    _spec("recipient_id", "recipient_id", "id", "recipient_id navigatr_user_id navigatr_id"),
    _spec("issue_date", "issue_date", "date", "issue_date issued_on date_issued date_of_issue"),
    _spec(
        "end_date",
        "end_date",
        "date",
        "end_date expiry_date expiration_date expiry expires expires_on date_of_expiry valid_until",
    ),
    _spec("evidence_text", "evidence_text", "text", "evidence_text evidence evidence_description"),
    _spec("evidence_url", "evidence_url", "text", "evidence_url evidence_link"),
    _spec("score", "score", "int", "score"),
    _spec("min_score", "min_score", "int", "min_score minimum_score"),
    _spec("provider_id", "provider_id", "id", "provider_id"),
    _spec("badge_id", None, "id", "badge_id"),
)
"""The learner fields, in the order of the Navigatr CSV template: the one table that the
payload, the column aliases and value parsing are derived from."""

FIELD_NAMES: Final = tuple(spec.name for spec in FIELDS)
"""The Learner fields that columns map to, in the order of the Navigatr CSV template."""

FIELD_BY_NAME: Final[Mapping[str, FieldSpec]] = types.MappingProxyType(
    {spec.name: spec for spec in FIELDS}
)
API_FIELDS: Final = frozenset(spec.api or spec.name for spec in FIELDS)
"""Every key a `Learner` field is sent as (or known by): `extra` must not use them."""


def normalise_header(name: str) -> str:
    """Reduce a column name for matching: case-folded, only letters and digits kept."""
    return "".join(ch for ch in name.casefold() if ch.isalnum())


COLUMN_ALIASES: Final[Mapping[str, str]] = types.MappingProxyType(
    {normalise_header(alias): spec.name for spec in FIELDS for alias in spec.aliases}
)
"""Normalised column name -> Learner field, for Navigatr, Moodle, Google and API headers."""


@dataclass(frozen=True, slots=True)
class Learner:
    """One recipient of a badge, as sent to `PUT /v1/badge/{id}/issue`.

    Building a `Learner` never raises: the reader validates it and reports problems.
    Text fields are sent exactly as given apart from surrounding whitespace; the email
    is held (and so sent) in Unicode NFC, the form its `key` is made from, so that an
    address typed decomposed (`zoe\\u0308@...`) is one learner everywhere.

    Args:
        first_name: Required by Navigatr.
        last_name: The family name.
        email: Required unless `recipient_id` names an existing Navigatr user.
        organisation: The learner's organisation, shown on the badge.
        recipient_id: An existing Navigatr user's id, instead of an email.
        issue_date: The date the badge is issued on; None: today, as the server says.
        end_date: The date the badge expires; None: never.
        evidence_text: Evidence of the achievement, in words.
        evidence_url: A link to evidence of the achievement.
        score: The learner's score, a whole number.
        min_score: The score needed to pass, a whole number.
        provider_id: The issuing provider, when the account has more than one.
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
        if isinstance(self.email, str) and not self.email.isascii():
            object.__setattr__(self, "email", unicodedata.normalize("NFC", self.email))

    def __hash__(self) -> int:
        # Hand-written because `extra` is a dict; equal learners have equal extra keys.
        values = tuple(getattr(self, name) for name in FIELD_NAMES)
        return hash((values, tuple(sorted(map(str, self.extra)))))

    def payload(self) -> dict[str, object]:
        """The JSON body for `PUT /v1/badge/{id}/issue`.

        Returns:
            The API's field names and values, without empty optional fields.
        """
        body: dict[str, object] = {"recipient_firstname": self.first_name.strip()}
        for spec in FIELDS:
            if spec.api is None or spec.name == "first_name":
                continue
            value: Any = getattr(self, spec.name)
            if spec.kind == "text":
                value = str(value).strip()
                if not value:
                    continue
            elif value is None:
                continue
            elif spec.kind == "date":
                value = value.isoformat()
            body[spec.api] = value
        for key, value in self.extra.items():
            body.setdefault(key, value)
        return body

    @property
    def key(self) -> str:
        """Identity within one badge: `normalised_email(email)`, or `id:<recipient_id>`."""
        key = self._key
        if key is None:
            email = self.email.strip()
            key = normalised_email(email) if email else f"id:{self.recipient_id}"
            object.__setattr__(self, "_key", key)
        return key


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
            the line number for JSON Lines; index + 1 for in-memory records. A failures
            file fed back keeps the row numbers of the original file (its `row` column).
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


# ----- email addresses -----------------------------------------------------------------

# An unquoted ASCII local part (RFC 5322 dot-atom): valid as written, nothing to normalise.
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


def checked_email(address: str) -> str:
    """Check an address with email-validator (no DNS) and return its normalised form.

    The local part is NFC-normalised, the domain IDNA-normalised; case is kept. A cohort
    has thousands of addresses and a handful of domains, and checking a domain is most of
    email-validator's work: an address with a plain ASCII local part has only its domain
    checked, once per domain; anything else gets the full check.

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


def normalised_email(address: str) -> str:
    """The form of an address that identifies a learner: NFC, domain IDNA-normalised, lower case.

    The journal key (`Learner.key`) and the matching of addresses the server returns
    (holders, lookups) both use it, so `zoe\\u0308@Example.org` (decomposed) and
    `zoë@example.org` are one learner. Lower case (not casefold) keeps the keys of
    journals written by earlier versions. Never raises: an address email-validator
    refuses is NFC-normalised and lower-cased as it is.

    Args:
        address: An email address as typed or as the server returned it.
    """
    text = address.strip()
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    try:
        return checked_email(text).lower()
    except EmailNotValidError:
        return text.lower()


# ----- names that moved (kept importable from here) ------------------------------------

_MOVED: Final = {"RowBuilder": "rows", "validate": "rows", "field_keys": "columns"}


def __getattr__(name: str) -> object:
    # Lazy, because those modules import this one.
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module}", __package__), name)
