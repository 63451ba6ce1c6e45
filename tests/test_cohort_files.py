"""The same cohort as people's real files: each issues exactly its valid rows, names intact."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest

from bulk_issuer.cli import main
from bulk_issuer.sandbox import SandboxConfig
from tests.conftest import issue_args, sandbox_thread

# (first, last, email); rows 5, 6 and 8 are bad: no first name, a broken email, a duplicate.
COHORT = [
    ("Zoë", "Müller", "zoe@example.org"),
    ("Siobhán", "O'Brien", "siobhan@example.org"),
    ("José", "Núñez", "jose@example.org"),
    ("", "Nofirst", "nofirst@example.org"),
    ("Ann", "Lee", "ann@@example"),
    ("François", "Dupont", "francois@example.org"),
    ("Zoë", "Again", "ZOE@example.org"),
    ("Björn", "Ångström", "bjorn@example.org"),
    ("Renée", "Côté", "renee@example.org"),
    ("Søren", "Kierkegaard", "soren@example.org"),
]
BAD_ROWS = {5, 6, 8}
GOOD = [row for number, row in enumerate(COHORT, start=2) if number not in BAD_ROWS]

NAVIGATR = ["First Name", "Last Name", "Email"]
MOODLE = ["First name", "Surname", "Email address"]

FILES = {
    "utf8-bom-navigatr.csv": (NAVIGATR, ",", "utf-8-sig", ""),
    "moodle-semicolon.csv": (MOODLE, ";", "utf-8", ""),
    "excel-windows-1252.csv": (NAVIGATR, ",", "cp1252", ""),
    "excel-sep-line.csv": (NAVIGATR, ";", "cp1252", "sep=;\r\n"),
    "tab-separated.tsv": (NAVIGATR, "\t", "utf-8", ""),
    "excel-unicode-text.txt": (NAVIGATR, "\t", "utf-16", ""),
}


def write(path: Path, header: list[str], delimiter: str, encoding: str, prefix: str) -> Path:
    """The cohort in one dialect, as the program that exports it would write it."""
    text = io.StringIO()
    writer = csv.writer(text, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(COHORT)
    path.write_bytes((prefix + text.getvalue()).encode(encoding))
    return path


@pytest.fixture(autouse=True)
def _pat(monkeypatch: pytest.MonkeyPatch) -> None:
    """A PAT in the environment."""
    monkeypatch.delenv("NAVIGATR_USER", raising=False)
    monkeypatch.setenv("NAVIGATR_PAT", "sandbox-demo-pat")


@pytest.mark.parametrize("name", sorted(FILES))
def test_each_file_issues_exactly_its_valid_rows(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Valid rows issued once with names unchanged; bad rows named by number; exit 1."""
    cohort = write(tmp_path / name, *FILES[name])
    failures = tmp_path / "failures.csv"
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        status = main(
            issue_args(cohort, sandbox.url, "--rate", "none", "--failures", str(failures))
        )
        sent = sorted(
            (a["recipient_firstname"], a["recipient_lastname"], a["recipient_email"])
            for a in sandbox.assertions
        )
    captured = capsys.readouterr()
    assert status == 1
    assert sent == sorted(GOOD)
    for number in BAD_ROWS:
        assert f"row {number} " in captured.err
    assert "duplicate of row 2" in captured.err
    assert "Traceback" not in captured.err + captured.out
    delimiter, encoding = FILES[name][1], FILES[name][2]
    text = failures.read_bytes().decode(encoding)
    written = list(csv.DictReader(io.StringIO(text.removeprefix("sep=;\r\n")), delimiter=delimiter))
    assert sorted(int(row["row"]) for row in written) == sorted(BAD_ROWS)


@pytest.mark.parametrize("name", sorted(FILES))
def test_dry_run_names_bad_rows_and_sends_nothing(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--dry-run reports each bad row by number and the server sees no request."""
    cohort = write(tmp_path / name, *FILES[name])
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        status = main(issue_args(cohort, sandbox.url, "--dry-run"))
        assert [r for r in sandbox.requests if r.kind == "issue"] == []
    captured = capsys.readouterr()
    assert status == 1
    for number in BAD_ROWS:
        assert f"row {number} " in captured.err
    assert re.search(r"would issue\s+7\n", captured.out)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16"])
def test_names_reach_the_api_exactly_as_written(tmp_path: Path, encoding: str) -> None:
    """CJK, Vietnamese and Irish names arrive at the API byte for byte."""
    names = [
        ("王", "芳"),
        ("Nguyễn", "Thị Minh Khai"),
        ("Siobhán", "Ní Bhriain"),
        ("Zoë", "Ó Súilleabháin"),
    ]
    rows = [(first, last, f"p{i}@example.org") for i, (first, last) in enumerate(names)]
    text = io.StringIO()
    csv.writer(text).writerows([NAVIGATR, *rows])
    cohort = tmp_path / "cohort.csv"
    cohort.write_bytes(text.getvalue().encode(encoding))
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        assert main(issue_args(cohort, sandbox.url, "--rate", "none", "-q")) == 0
        sent = {(a["recipient_firstname"], a["recipient_lastname"]) for a in sandbox.assertions}
    assert sent == set(names)


def test_map_consent_and_json_lines_through_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--map names an odd column, --require-consent skips rows without consent, JSONL works."""
    odd = tmp_path / "hr-export.csv"
    odd.write_text(
        "Given,Family,Work Email,Consent\n"
        "Ann,Lee,ann@example.org,yes\n"
        "Bob,Ray,bob@example.org,no\n",
        encoding="utf-8",
    )
    lines = tmp_path / "lms.jsonl"
    lines.write_text(
        '{"first_name": "Cai", "email": "cai@example.org"}\n'
        '{"first_name": "Dee", "email": "dee@example.org", "badge_id": 3425}\n',
        encoding="utf-8",
    )
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        mapped = issue_args(
            odd,
            sandbox.url,
            "--rate",
            "none",
            "-q",
            "--map",
            "recipient_email=Work Email",
            "--map",
            "first_name=Given",
            "--require-consent",
            "Consent",
        )
        assert main(mapped) == 1  # Bob gave no consent
        assert main(issue_args(lines, sandbox.url, "--rate", "none", "-q")) == 0
        issued = sorted((a["badge_id"], a["recipient_email"]) for a in sandbox.assertions)
    assert issued == [
        (51, "ann@example.org"),
        (51, "cai@example.org"),
        (3425, "dee@example.org"),
    ]
    assert "row 3" in capsys.readouterr().err


def test_workbook_with_accents_and_dates_issues_its_valid_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An .xlsx export: names exact, date cells sent as dates, failures CSV (BOM) beside it."""
    import datetime

    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Cohort"
    sheet.append([*MOODLE, "Issued On"])
    for first, last, email in COHORT:
        sheet.append([first, last, email, datetime.date(2025, 3, 1)])
    cohort = tmp_path / "cohort.xlsx"
    book.save(cohort)
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        status = main(issue_args(cohort, sandbox.url, "--rate", "none"))
        sent = sorted(
            (a["recipient_firstname"], a["recipient_lastname"], a["recipient_email"])
            for a in sandbox.assertions
        )
        dates = {a.get("issue_date") for a in sandbox.assertions}
    captured = capsys.readouterr()
    assert status == 1
    assert sent == sorted(GOOD)
    assert dates == {"2025-03-01"}
    assert "Traceback" not in captured.err + captured.out
    failures = tmp_path / "cohort.failures.csv"
    data = failures.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    written = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    assert sorted(int(row["row"]) for row in written) == sorted(BAD_ROWS)
    assert {row["First name"] for row in written} == {"", "Ann", "Zoë"}


def test_decomposed_email_reaches_the_api_composed(tmp_path: Path) -> None:
    """An address typed in NFD is sent in NFC, the form its journal key is made from."""
    cohort = tmp_path / "cohort.csv"
    cohort.write_text(
        "First Name,Email\r\nZoë,zoe\u0308@example.org\r\n", encoding="utf-8", newline=""
    )
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        assert main(issue_args(cohort, sandbox.url, "--rate", "none", "-q")) == 0
        sent = [a["recipient_email"] for a in sandbox.assertions]
    assert sent == ["zo\u00eb@example.org"]
