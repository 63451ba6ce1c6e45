"""Learner, Problem, Row, column aliases, validation and duplicate detection."""

from __future__ import annotations

import dataclasses
import datetime

import pytest

from bulk_issuer.learners import (
    COLUMN_ALIASES,
    FIELDS,
    InputError,
    Learner,
    Problem,
    Row,
    RowBuilder,
    field_keys,
    normalise_header,
    normalised_email,
    validate,
)

HEADER = ["First Name", "Last Name", "Email"]


def _rows(header: list[str], *records: list[str], builder: RowBuilder | None = None) -> list[Row]:
    """Build rows the way the CSV reader does: header = row 1, records from row 2."""
    builder = builder or RowBuilder()
    builder.set_header(header)
    return [builder.from_cells(number, cells) for number, cells in enumerate(records, start=2)]


def _one(header: list[str], cells: list[str], **options: object) -> Row:
    builder = RowBuilder(**options)  # type: ignore[arg-type]
    builder.set_header(header)
    return builder.from_cells(2, cells)


# ----- Learner -----------------------------------------------------------------------


def test_payload_has_every_field_with_api_names() -> None:
    """payload() names the fields as the API does and writes dates as YYYY-MM-DD."""
    learner = Learner(
        first_name="Zoë",
        last_name="Nguyễn",
        email="zoe@example.com",
        organisation="ACME",
        recipient_id=7,
        issue_date=datetime.date(2025, 3, 1),
        end_date=datetime.date(2026, 3, 1),
        evidence_text="Passed",
        evidence_url="https://example.com/e/1",
        score=90,
        min_score=50,
        provider_id=12,
        badge_id=51,
        extra={"recipient_xyz": "v"},
    )
    assert learner.payload() == {
        "recipient_firstname": "Zoë",
        "recipient_lastname": "Nguyễn",
        "recipient_email": "zoe@example.com",
        "recipient_organisation": "ACME",
        "recipient_id": 7,
        "issue_date": "2025-03-01",
        "end_date": "2026-03-01",
        "evidence_text": "Passed",
        "evidence_url": "https://example.com/e/1",
        "score": 90,
        "min_score": 50,
        "provider_id": 12,
        "recipient_xyz": "v",
    }


def test_payload_omits_empty_optional_fields_and_keeps_names_exact() -> None:
    """Empty optional fields are left out; names keep case and accents, only trimmed."""
    learner = Learner(first_name="  siobhán ", last_name=" MacDONALD ", email=" A@B.org ")
    assert learner.payload() == {
        "recipient_firstname": "siobhán",
        "recipient_lastname": "MacDONALD",
        "recipient_email": "A@B.org",
    }


def test_payload_known_fields_win_over_extra() -> None:
    """An extra key never replaces a field the Learner sets itself."""
    learner = Learner("Ann", email="ann@example.com", extra={"recipient_email": "x@y.z"})
    assert learner.payload()["recipient_email"] == "ann@example.com"


def test_key_is_normalised_email_or_recipient_id() -> None:
    """The key lower-cases the email (domain IDNA-normalised) or falls back to the id."""
    assert Learner("A", email=" Ann.Lee@Example.COM ").key == "ann.lee@example.com"
    assert Learner("A", email="a@xn--bcher-kva.de").key == Learner("A", email="a@bücher.de").key
    assert Learner("A", recipient_id=42).key == "id:42"


def test_decomposed_email_is_held_sent_and_keyed_composed() -> None:
    """An NFD address (zoe + combining diaeresis) is one learner with the NFC one."""
    nfd, nfc = "zoe\u0308@example.org", "zoë@example.org"
    learner = Learner("Zoë", email=nfd)
    assert learner.email == nfc
    assert learner.payload()["recipient_email"] == nfc
    assert learner.key == Learner("Zoë", email=nfc).key == normalised_email(nfd) == nfc
    assert learner == Learner("Zoë", email=nfc)


@pytest.mark.parametrize(
    ("address", "key"),
    [
        (" Ann.Lee@Example.COM ", "ann.lee@example.com"),  # as journals have it: lower case
        ("ZOE\u0308@EXAMPLE.ORG", "zoë@example.org"),
        ("a@xn--bcher-kva.de", "a@bücher.de"),
        ("STRASSE@example.org", "strasse@example.org"),
        ("Straße@example.org", "straße@example.org"),  # lower, not casefold: keys unchanged
        ("not an address", "not an address"),  # never raises: matching must not fail
    ],
)
def test_normalised_email_is_the_learner_key(address: str, key: str) -> None:
    """normalised_email() gives the journal key's form, for matching the server's addresses."""
    assert normalised_email(address) == key
    if "@" in address and " " not in address.strip():
        assert Learner("A", email=address).key == key


def test_one_field_table_matches_the_learner() -> None:
    """FIELDS lists every Learner field in order; each field's own and API names are aliases."""
    names = [f.name for f in dataclasses.fields(Learner) if f.name not in ("extra", "_key")]
    assert [spec.name for spec in FIELDS] == names
    for spec in FIELDS:
        assert COLUMN_ALIASES[normalise_header(spec.name)] == spec.name
        if spec.api is not None:
            assert COLUMN_ALIASES[normalise_header(spec.api)] == spec.name


def test_learner_repr_hash_and_private_extra() -> None:
    """A Learner reprs plainly, hashes despite its dict, and copies the extra it is given."""
    extra: dict[str, object] = {"recipient_x": 1}
    learner = Learner("Zoë", email="z@example.com", extra=extra)
    extra["recipient_x"] = 2
    assert learner.extra == {"recipient_x": 1}
    assert repr(learner).startswith("Learner(first_name='Zoë', last_name='', email='z@example")
    assert hash(learner) == hash(Learner("Zoë", email="z@example.com", extra={"recipient_x": 1}))
    assert {learner, Learner("Zoë", email="z@example.com", extra={"recipient_x": 1})} == {learner}


# ----- Problem and Row ---------------------------------------------------------------


def test_problem_reads_as_a_sentence_and_truncates_long_values() -> None:
    """str(Problem) names the column and value; long values are cut to about 80 chars."""
    problem = Problem("Email", "x@", "not a valid email address")
    assert str(problem) == "Email 'x@': not a valid email address"
    assert str(Problem("First Name", "", "first name is empty")) == (
        "First Name: first name is empty"
    )
    long = Problem("Notes", "y" * 500, "too long")
    assert len(long.value) == 80
    assert long.value.endswith("...")


def test_row_ok_needs_a_learner_and_no_problems() -> None:
    """Row.ok is true only for a learner without problems."""
    assert Row(2, {}, Learner("A", email="a@example.com"), ()).ok
    assert not Row(2, {}, None, (Problem("Email", "", "empty"),)).ok


# ----- validation of Learner objects -------------------------------------------------


def test_validate_turns_a_bad_learner_into_problems() -> None:
    """validate() reports a bad email as a Problem instead of raising."""
    learner, problems = validate(Learner("Ann", email="ann@example..com"))
    assert learner is None
    assert len(problems) == 1
    assert problems[0].column == "email"
    assert problems[0].message.startswith("not a valid email address: ")


def test_validate_returns_a_trimmed_learner() -> None:
    """validate() of a good learner returns it with surrounding whitespace stripped."""
    learner, problems = validate(Learner(" Zoë ", "  Smith", " zoe@example.com "))
    assert problems == ()
    assert learner == Learner("Zoë", "Smith", "zoe@example.com")


def test_validate_rejects_extra_keys_that_shadow_fields() -> None:
    """An extra key that is a known API field is a Problem (set the field instead)."""
    _, problems = validate(Learner("A", email="a@example.com", extra={"recipient_email": "b"}))
    assert [p.column for p in problems] == ["extra"]


def test_validate_checks_types_given_in_python() -> None:
    """A wrongly typed value in a Learner is reported, not sent."""
    learner = Learner("A", email="a@example.com", score="lots")  # type: ignore[arg-type]
    _, problems = validate(learner)
    assert [(p.column, p.message) for p in problems] == [("score", "not a whole number")]


# ----- column aliases -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ("First Name", "first_name"),
        ("first_name", "first_name"),
        ("FIRSTNAME", "first_name"),
        ("first-name", "first_name"),
        ("Given Name", "first_name"),
        ("recipient_firstname", "first_name"),
        ("Surname", "last_name"),
        ("Family Name", "last_name"),
        ("Email address", "email"),
        ("E-mail", "email"),
        ("Mail", "email"),
        ("Login Email", "email"),
        ("recipient_email", "email"),
        ("Organization", "organisation"),
        ("Organisation", "organisation"),
        ("Issue Date", "issue_date"),
        ("Expiry Date", "end_date"),
        ("Evidence URL", "evidence_url"),
        ("Evidence Text", "evidence_text"),
        ("Badge ID", "badge_id"),
        ("min_score", "min_score"),
        ("provider_id", "provider_id"),
    ],
)
def test_aliases_match_common_headers(header: str, field: str) -> None:
    """Navigatr, Moodle, Google and API headers map to the learner field."""
    assert COLUMN_ALIASES[normalise_header(header)] == field


def test_full_name_column_is_not_split() -> None:
    """A single "Name" column is not guessed into first and last names."""
    assert normalise_header("Name") not in COLUMN_ALIASES
    with pytest.raises(InputError, match="no first-name column"):
        RowBuilder().set_header(["Name", "Email"])


def test_missing_first_name_column_error_teaches() -> None:
    """The error names the missing column, lists the headers and suggests --map."""
    with pytest.raises(InputError) as caught:
        RowBuilder().set_header(["Nom", "Courriel"])
    message = str(caught.value)
    assert "no first-name column found" in message
    assert "'Nom', 'Courriel'" in message
    assert "--map first_name=" in message


def test_missing_email_column_error_teaches() -> None:
    """Without an email or recipient_id column the error says so."""
    with pytest.raises(InputError, match=r"no email column found\. Headers found: 'First'"):
        RowBuilder().set_header(["First", "Work Address"])


def test_recipient_id_column_can_replace_email() -> None:
    """A recipient_id column is enough without an email column."""
    (row,) = _rows(["First Name", "recipient_id"], ["Ann", "42"])
    assert row.learner == Learner("Ann", recipient_id=42)
    assert row.learner.key == "id:42"


def test_two_columns_for_one_field_is_an_error() -> None:
    """Two email-like columns are ambiguous: the user must choose one."""
    with pytest.raises(InputError, match="'Email' and 'E-mail' both look like the email"):
        RowBuilder().set_header(["First Name", "Email", "E-mail"])


def test_column_map_wins_over_aliases() -> None:
    """--map recipient_email="Work Email" reads that column, not the Email alias."""
    builder = RowBuilder(column_map={"recipient_email": "Work Email"})
    (row,) = _rows(
        ["First Name", "Email", "Work Email"],
        ["Ann", "home@example.com", "work@example.com"],
        builder=builder,
    )
    assert row.learner is not None
    assert row.learner.email == "work@example.com"
    assert row.fields["Email"] == "home@example.com"


def test_column_map_can_switch_a_column_off_and_name_extra_fields() -> None:
    """An empty mapping ignores a column; recipient_<x> maps any column to an API field."""
    builder = RowBuilder(column_map={"badge_id": "", "recipient_phone": "Phone"})
    (row,) = _rows(
        ["First Name", "Email", "Badge ID", "Phone"],
        ["Ann", "ann@example.com", "not a number", "0123"],
        builder=builder,
    )
    assert row.learner is not None
    assert row.learner.badge_id is None
    assert row.learner.extra == {"recipient_phone": "0123"}


def test_column_map_errors_name_the_problem() -> None:
    """An unknown field or a column not in the file is an InputError."""
    with pytest.raises(InputError, match="'shoe_size' is not a learner field"):
        RowBuilder(column_map={"shoe_size": "Shoes"})
    with pytest.raises(InputError, match="there is no column 'Work Email'"):
        RowBuilder(column_map={"email": "Work Email"}).set_header(HEADER)


def test_a_column_map_naming_two_columns_of_one_name_is_refused() -> None:
    """Two columns named `Email` (a home and a work address exported under one name):
    `--map email=Email` cannot tell which; refused, naming both (it picked the first)."""
    with pytest.raises(InputError, match=r"2 columns are named 'Email' \(columns 3, 4\)"):
        RowBuilder(column_map={"email": "Email"}).set_header([*HEADER, "Email"])


def test_unknown_columns_are_kept_but_not_sent() -> None:
    """Unknown columns stay in Row.fields; recipient_<x> columns go to extra."""
    (row,) = _rows([*HEADER, "Notes", "recipient_xyz"], ["Ann", "Lee", "ann@example.com", "n", "v"])
    assert row.learner is not None
    assert row.learner.extra == {"recipient_xyz": "v"}
    assert "Notes" not in row.learner.payload()
    assert list(row.fields) == [*HEADER, "Notes", "recipient_xyz"]


def test_repeated_header_names_get_unique_keys() -> None:
    """A repeated unknown header is kept twice in Row.fields."""
    assert field_keys(["Notes", "Notes", ""]) == ("Notes", "Notes (2)", "")
    (row,) = _rows([*HEADER, "Notes", "Notes"], ["A", "B", "a@example.com", "1", "2"])
    assert row.fields["Notes (2)"] == "2"


# ----- values ------------------------------------------------------------------------


def test_first_name_and_email_are_required() -> None:
    """An empty first name or email is a problem naming the user's column."""
    row = _one(HEADER, ["  ", "Lee", ""])
    assert [(p.column, p.message.split(";")[0]) for p in row.problems] == [
        ("First Name", "first name is empty"),
        ("Email", "email is empty"),
    ]
    assert row.learner is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-03-31", datetime.date(2025, 3, 31)),
        ("2025-3-1", datetime.date(2025, 3, 1)),
        ("2025-03-31 00:00:00", datetime.date(2025, 3, 31)),
        ("31/03/2025", datetime.date(2025, 3, 31)),
        ("31.03.2025", datetime.date(2025, 3, 31)),
        ("01/02/2025", datetime.date(2025, 2, 1)),
        ("", None),
    ],
)
def test_dates_in_accepted_forms(value: str, expected: datetime.date | None) -> None:
    """ISO, DD/MM/YYYY and DD.MM.YYYY dates are read; empty means none."""
    row = _one([*HEADER, "Issue Date"], ["A", "B", "a@example.com", value])
    assert row.learner is not None
    assert row.learner.issue_date == expected


def test_bad_dates_are_problems_with_hints() -> None:
    """A non-date, an impossible date and a US-style date each say how to fix them."""
    header = [*HEADER, "Issue Date"]
    (problem,) = _one(header, ["A", "B", "a@example.com", "March 3rd"]).problems
    assert problem.column == "Issue Date"
    assert "YYYY-MM-DD" in problem.message
    (problem,) = _one(header, ["A", "B", "a@example.com", "2025-02-30"]).problems
    assert problem.message.startswith("not a real date")
    (problem,) = _one(header, ["A", "B", "a@example.com", "03/25/2025"]).problems
    assert "--date-format %m/%d/%Y" in problem.message


def test_date_format_option_forces_the_format() -> None:
    """date_format reads US dates, and rejects anything else."""
    header = [*HEADER, "Issue Date"]
    row = _one(header, ["A", "B", "a@example.com", "03/25/2025"], date_format="%m/%d/%Y")
    assert row.learner is not None
    assert row.learner.issue_date == datetime.date(2025, 3, 25)
    row = _one(header, ["A", "B", "a@example.com", "2025-03-25"], date_format="%m/%d/%Y")
    assert "does not match the date format '%m/%d/%Y'" in row.problems[0].message


def test_expiry_before_issue_is_a_problem() -> None:
    """An expiry date before the issue date is reported on the expiry column."""
    header = [*HEADER, "Issue Date", "Expiry Date"]
    row = _one(header, ["A", "B", "a@example.com", "2025-03-01", "2024-03-01"])
    assert [p.column for p in row.problems] == ["Expiry Date"]


@pytest.mark.parametrize(
    ("column", "value", "ok"),
    [
        ("Score", "12", True),
        ("Score", "12.0", True),
        ("Score", "-3", True),
        ("Score", "12.5", False),
        ("Score", "abc", False),
        ("Score", "١٢", False),
        ("recipient_id", "0", False),
        ("Badge ID", "51", True),
        ("Badge ID", "-51", False),
        ("provider_id", "1_000", False),
    ],
)
def test_integers(column: str, value: str, ok: bool) -> None:
    """Whole numbers only (ASCII digits); ids must be positive."""
    row = _one([*HEADER, column], ["A", "B", "a@example.com", value])
    assert row.ok is ok
    if not ok:
        assert row.problems[0].column == column
        assert row.problems[0].value == value


class NAType:
    """Stands in for pandas' `pd.NA` (the class name is what is recognised)."""


class NaTType(datetime.datetime):
    """Stands in for pandas' `pd.NaT`, which passes for a datetime."""


def test_a_nan_or_na_cell_is_empty_not_the_text_nan() -> None:
    """pandas' `df.to_dict("records")` gives NaN for an empty cell: sent as nothing, never
    as "nan" on a badge, nor as the invalid JSON NaN; a NaN first name is an empty one."""
    builder = RowBuilder()
    nan = float("nan")
    record = {
        "First Name": "Ada",
        "Last Name": nan,
        "Email": "a@example.org",
        "Organisation": NAType(),
        "Score": nan,
        "Issue Date": nan,
        "Expiry Date": NaTType(2000, 1, 1),
        "recipient_title": nan,
    }
    row = builder.from_mapping(1, record)
    assert row.ok
    assert row.learner is not None
    assert row.learner.payload() == {
        "recipient_firstname": "Ada",
        "recipient_email": "a@example.org",
    }
    assert set(row.fields.values()) == {"Ada", "a@example.org", ""}
    nameless = builder.from_mapping(2, {"First Name": nan, "Email": "b@example.org"})
    assert [p.message for p in nameless.problems] == [
        "first name is empty; every learner needs one"
    ]


@pytest.mark.parametrize(
    "record",
    [
        {"first_name": "Ada\ud800", "email": "a@example.com"},
        {"first_name": "Ada", "email": "a\udc00@example.com"},
        {"first_name": "Ada", "email": "a@example.com", "evidence_text": "x\ud83d"},
        {"first_name": "Ada", "email": "a@example.com", "recipient_title": "Dr\udfff"},
    ],
)
def test_a_lone_surrogate_is_the_rows_problem(record: dict[str, str]) -> None:
    """JSON ("\\ud800") and Python strings can hold half a UTF-16 pair, which no UTF-8
    journal, results file or request can: that row is invalid, shown with U+FFFD."""
    builder = RowBuilder()
    row = builder.from_mapping(1, record)
    assert not row.ok
    assert "lone surrogate" in row.problems[0].message
    assert "\ufffd" in row.problems[0].value
    row.problems[0].value.encode("utf-8")  # printable, writable
    assert builder.from_mapping(2, {"first_name": "Zoë 😀", "email": "b@example.com"}).ok


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("first_name", "B\x00o", "U+0000"),  # a NUL: a damaged file
        ("last_name", "Love\nlace", "U+000A"),
        ("organisation", "Acme\x1b[31m", "U+001B"),  # a terminal escape
        ("first_name", "A\u2028da", "U+2028"),  # a line separator (inside: ends are stripped)
    ],
)
def test_a_name_with_a_control_character_is_the_rows_problem(
    field: str, value: str, code: str
) -> None:
    """Names are printable text on one line; Zoë, 李 and emoji are fine."""
    builder = RowBuilder()
    record = {"first_name": "Ada", "email": "a@example.com", field: value}
    row = builder.from_mapping(1, record)
    assert not row.ok
    assert (row.problems[0].column, row.problems[0].value) == (field, value)
    assert code in row.problems[0].message
    fine = {"first_name": "Zoë 李", "last_name": "O'Brien-😀", "email": "b@example.com"}
    assert builder.from_mapping(2, fine).ok


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("9" * 5000, "999999999999... (5000 characters)"),  # past Python's 4,300 digits
        ("1" + "0" * 15, "100000000000... (16 characters)"),
        (10**20, str(10**20)),  # a record's number, not text
    ],
)
def test_an_integer_too_large_is_the_rows_problem(value: object, shown: str) -> None:
    """More than 15 digits is no score or id: that row is invalid, the rest go on."""
    builder = RowBuilder()
    row = builder.from_mapping(1, {"first_name": "A", "email": "a@example.com", "score": value})
    assert not row.ok
    assert (row.problems[0].column, row.problems[0].value) == ("score", shown)
    assert "too large" in row.problems[0].message
    good = builder.from_mapping(2, {"first_name": "B", "email": "b@example.com", "score": 7})
    assert good.ok


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://example.com/evidence/1", True),
        ("http://example.com", True),
        ("ftp://example.com/x", False),
        ("example.com/x", False),
        ("https://", False),
        ("https://exa mple.com", False),
    ],
)
def test_evidence_url_must_be_web_address(url: str, ok: bool) -> None:
    """Evidence URLs must be http(s) with a host."""
    row = _one([*HEADER, "Evidence URL"], ["A", "B", "a@example.com", url])
    assert row.ok is ok


def test_email_kept_as_written_but_bad_email_explained() -> None:
    """A valid email is kept as written; a bad one says what email_validator found."""
    row = _one(HEADER, ["A", "B", " Ann@Example.COM "])
    assert row.learner is not None
    assert row.learner.email == "Ann@Example.COM"
    (problem,) = _one(HEADER, ["A", "B", "ann@example..com"]).problems
    assert str(problem).startswith("Email 'ann@example..com': not a valid email address: ")


def test_neutralised_cells_read_back_as_written() -> None:
    """A cell neutralised by a failures file ('=Bob) is read as =Bob again."""
    row = _one(HEADER, ["'=Bob", "'-Lee", "bob@example.com"])
    assert row.learner is not None
    assert (row.learner.first_name, row.learner.last_name) == ("=Bob", "-Lee")
    assert row.fields["First Name"] == "'=Bob"


def test_neutralisation_is_undone_only_for_files() -> None:
    """A value given in Python is never altered, even if it looks neutralised."""
    row = RowBuilder().from_mapping(1, {"first_name": "'=Bob", "email": "bob@example.com"})
    assert row.learner is not None
    assert row.learner.first_name == "'=Bob"


def test_overflowing_row_is_a_problem_but_trailing_empties_are_not() -> None:
    """More values than columns means a missing quote; empty extra cells are harmless."""
    ok, bad = _rows(HEADER, ["A", "B", "a@example.com", "", ""], ["C", "D", "c@example.com", "x"])
    assert ok.ok
    assert bad.problems[0].message.startswith("this row has 4 values but the header has 3")
    assert bad.fields["(column 4)"] == "x"


def test_short_row_is_padded() -> None:
    """A row with fewer values than columns reads the missing ones as empty."""
    (row,) = _rows([*HEADER, "Organisation"], ["A", "B", "a@example.com"])
    assert row.ok
    assert row.fields["Organisation"] == ""


# ----- consent -----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["yes", "Y", "TRUE", "1", "x", " Yes "])
def test_consent_yes_values(value: str) -> None:
    """yes/y/true/1/x in the consent column (any case) allow the learner."""
    row = _one([*HEADER, "Consent"], ["A", "B", "a@example.com", value], require_consent="Consent")
    assert row.ok


@pytest.mark.parametrize("value", ["no", "", "maybe", "0"])
def test_consent_missing_is_a_problem(value: str) -> None:
    """Anything else is a problem quoting the column and value."""
    row = _one([*HEADER, "Consent"], ["A", "B", "a@example.com", value], require_consent="Consent")
    (problem,) = row.problems
    assert f"no consent recorded in column 'Consent' (value '{value}')" in problem.message


def test_consent_from_json_true() -> None:
    """A JSON true in the consent key counts as consent."""
    builder = RowBuilder(require_consent="consent")
    row = builder.from_mapping(1, {"first_name": "A", "email": "a@example.com", "consent": True})
    assert row.ok
    row = builder.from_mapping(2, {"first_name": "B", "email": "b@example.com"})
    assert "no consent recorded" in row.problems[0].message


def test_consent_column_must_exist() -> None:
    """--require-consent naming a column the file lacks is an InputError."""
    with pytest.raises(InputError, match="consent column 'Consent' is not in the file"):
        RowBuilder(require_consent="Consent").set_header(HEADER)


# ----- duplicates --------------------------------------------------------------------


def test_duplicates_point_at_the_first_row() -> None:
    """The same email again (any case) is a duplicate of the first row number."""
    rows = _rows(
        HEADER,
        ["Ann", "Lee", "ann@example.com"],
        ["Bob", "Ray", "bob@example.com"],
        ["Ann", "Lee", "ANN@Example.com"],
    )
    assert [row.ok for row in rows] == [True, True, False]
    assert rows[2].duplicate_of == 2
    assert rows[2].learner is None
    assert str(rows[2].problems[0]) == "Email 'ANN@Example.com': duplicate of row 2 (same email)"


def test_duplicates_are_per_badge() -> None:
    """The same learner for two different per-row badges is not a duplicate."""
    header = [*HEADER, "Badge ID"]
    rows = _rows(
        header,
        ["Ann", "Lee", "ann@example.com", "1"],
        ["Ann", "Lee", "ann@example.com", "2"],
        ["Ann", "Lee", "ann@example.com", ""],
        builder=RowBuilder(badge_id=2),
    )
    assert [row.duplicate_of for row in rows] == [None, None, 3]


def test_duplicate_recipient_ids() -> None:
    """Learners known only by recipient_id are duplicates by that id."""
    rows = _rows(["First Name", "recipient_id"], ["Ann", "7"], ["Ann", "7"])
    assert rows[1].duplicate_of == 2
    assert "(same recipient_id)" in rows[1].problems[0].message


def test_invalid_first_occurrence_does_not_block_the_second() -> None:
    """Only valid rows count for duplicates, so the corrected copy is issued."""
    rows = _rows(
        [*HEADER, "Issue Date"],
        ["Ann", "Lee", "ann@example.com", "soon"],
        ["Ann", "Lee", "ann@example.com", "2025-01-01"],
    )
    assert [row.ok for row in rows] == [False, True]


def test_duplicate_table_survives_growth() -> None:
    """Thousands of learners keep their first row numbers as the table grows."""
    builder = RowBuilder()
    builder.set_header(HEADER)
    for number in range(2, 5002):
        assert builder.from_cells(number, ["A", "B", f"l{number}@example.com"]).ok
    again = builder.from_cells(6000, ["A", "B", "l1234@example.com"])
    assert again.duplicate_of == 1234


# ----- records -----------------------------------------------------------------------


def test_mapping_records_use_aliases_and_typed_values() -> None:
    """Dict keys go through the aliases; JSON numbers and Python dates are accepted."""
    builder = RowBuilder()
    row = builder.from_mapping(
        1,
        {
            "First Name": "Zoë",
            "email": "zoe@example.com",
            "score": 7,
            "issue_date": datetime.date(2025, 1, 2),
            "recipient_id": 3.0,
            "recipient_extra": {"a": 1},
            "extra": {"recipient_more": True},
        },
    )
    assert row.learner == Learner(
        "Zoë",
        email="zoe@example.com",
        score=7,
        issue_date=datetime.date(2025, 1, 2),
        recipient_id=3,
        extra={"recipient_extra": {"a": 1}, "recipient_more": True},
    )
    assert row.fields["issue_date"] == "2025-01-02"
    assert row.fields["recipient_extra"] == '{"a": 1}'


def test_mapping_without_required_keys_names_the_keys_found() -> None:
    """A record with no first-name key says which keys it had."""
    row = RowBuilder().from_mapping(4, {"Name": "Ann Lee", "mail": "ann@example.com"})
    assert [str(p) for p in row.problems] == [
        "first_name: no first name: name the key first_name (keys found: Name, mail)"
    ]


def test_from_item_reports_junk_instead_of_raising() -> None:
    """Something that is neither a Learner nor a mapping becomes an invalid row."""
    row = RowBuilder().from_item(3, ("Ann", "ann@example.com"))
    assert row.number == 3
    assert row.problems[0].message.startswith("a tuple is not a learner")
