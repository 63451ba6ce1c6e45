"""Every row accounted for, and a preflight before anything is sent, through the command line."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bulk_issuer.cli import main
from bulk_issuer.sandbox import SandboxConfig, ScriptedAnswer
from tests.conftest import (
    child_argv,
    good_rows,
    issue_args,
    issue_count,
    only_pat,
    sandbox_thread,
    write_cohort,
)

PAT = "sandbox-demo-pat"
FAST = ["--rate", "none"]
CATEGORIES = ("issued", "already held", "done earlier", "failed", "invalid", "unconfirmed")


@pytest.fixture(autouse=True)
def _pat(monkeypatch: pytest.MonkeyPatch) -> None:
    only_pat(monkeypatch)


def counts(text: str) -> dict[str, int]:
    """The summary's counts, by label."""
    found = {}
    for label in (*CATEGORIES, "not attempted", "rows", "would issue"):
        match = re.search(rf"^\s+{label}\s+(\d+)", text, re.MULTILINE)
        if match:
            found[label] = int(match.group(1))
    return found


def rows_of(path: Path) -> list[dict[str, str]]:
    """A results file's rows."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def report(cohort: Path, *extra: str) -> tuple[int, dict[str, int]]:
    """`bulk-issuer report FILE --json`: exit status and counts."""
    with contextlib.redirect_stdout(buffer := _Buffer()):
        status = main(["report", str(cohort), "--json", *extra])
    return status, json.loads(buffer.text.strip().splitlines()[-1])


class _Buffer:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass


def test_unknown_badge_accounts_for_every_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--badge 9999: exit 3 before any issue call; all 20 rows are 'not attempted' in the
    summary, the failures file and `report`, which exits non-zero."""
    cohort = write_cohort(tmp_path / "c2.csv", good_rows(20))
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        status = main(["issue", str(cohort), "--badge", "9999", "--base-url", sandbox.url, "--yes"])
        assert issue_count(sandbox) == 0
    captured = capsys.readouterr()
    assert status == 3
    assert counts(captured.out)["not attempted"] == 20
    assert counts(captured.out)["rows"] == 20
    assert "badge 9999 is not found" in captured.err
    assert "rerun the same command" in captured.err
    failures = rows_of(tmp_path / "c2.failures.csv")
    assert [int(r["row"]) for r in failures] == list(range(2, 22))
    assert not list(tmp_path.glob("*.journal.db*"))  # nothing recorded: no journal left


def test_ctrl_c_then_report_counts_the_rest_as_not_attempted(tmp_path: Path) -> None:
    """SIGINT mid-run: exit 130; the summary adds up to every row; `report` counts the
    learners never attempted and exits 1; the rerun finishes with no duplicate."""
    cohort = write_cohort(tmp_path / "big.csv", good_rows(60))
    config = SandboxConfig(rate=(20, 1.0), latency=(0.01, 0.03))
    with sandbox_thread(config) as sandbox:
        child = subprocess.Popen(
            child_argv(cohort, sandbox.url, "--rate", "20/1s"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        deadline = time.monotonic() + 30
        while issue_count(sandbox) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
        at_stop = issue_count(sandbox)
        assert child.returncode == 130, err
        summary = counts(out)
        assert summary["rows"] == 60
        assert summary["not attempted"] > 0
        assert "rerun the same command" in err
        status, reported = report(cohort, "--badge", "51")
        assert status == 1
        assert reported["not_attempted"] + reported["unconfirmed"] == 60 - reported["issued"]
        assert reported["issued"] == at_stop
        assert main(issue_args(cohort, sandbox.url, "-q", "--rate", "20/1s")) == 0
        assert sandbox.duplicates() == {}
        assert report(cohort)[0] == 0


def test_successes_list_every_holder_across_runs_with_how(tmp_path: Path) -> None:
    """After a kill -9 and a rerun, --successes (and report --successes) list every learner
    who holds the badge through the journal, each with how."""
    cohort = write_cohort(tmp_path / "cohort.csv", good_rows(40))
    config = SandboxConfig(rate=(40, 1.0), latency=(0.01, 0.03), drop_after_rate=0.1, seed=3)
    successes = tmp_path / "issued.csv"
    with sandbox_thread(config) as sandbox:
        sandbox.preload(51, ["n0@example.org"])
        child = subprocess.Popen(
            child_argv(cohort, sandbox.url, "-q", "--rate", "40/1s"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=os.environ.copy(),
        )
        deadline = time.monotonic() + 30
        while issue_count(sandbox) < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        rerun = issue_args(cohort, sandbox.url, "-q", "--rate", "40/1s")
        assert main([*rerun, "--successes", str(successes)]) == 0
        assert sandbox.duplicates() == {}
    listed = rows_of(successes)
    assert len(listed) == 40
    how = {row["email"]: row["note"] for row in listed}
    assert how["n0@example.org"] == "already held the badge before"
    assert any(note == "issued by an earlier run" for note in how.values())
    assert any(note == "issued now" for note in how.values())
    again = tmp_path / "again.csv"
    status, _ = report(cohort, "--successes", str(again))
    assert status == 0
    assert {row["email"] for row in rows_of(again)} == set(how)


def test_dry_run_checks_credentials_and_badge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dry run with a wrong PAT or an unknown badge exits 3; --offline checks neither and
    contacts nobody; no dry run sends an issue call."""
    cohort = write_cohort(tmp_path / "cohort.csv", good_rows(5))
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        base = ["issue", str(cohort), "--base-url", sandbox.url, "--dry-run"]
        assert main([*base, "--badge", "9999"]) == 3
        monkeypatch.setenv("NAVIGATR_PAT", "wrong-pat")
        assert main([*base, "--badge", "51"]) == 3
        before = len(sandbox.requests)
        assert main([*base, "--badge", "51", "--offline"]) == 0
        assert len(sandbox.requests) == before
        assert issue_count(sandbox) == 0
    captured = capsys.readouterr()
    assert "refused the credentials" in captured.err
    assert counts(captured.out)["would issue"] == 5


def test_the_plan_says_what_will_happen_before_sending(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before sending: the badge's name, rows, invalid, done earlier, already holding, to
    send and the time it will take, with the holders loaded first."""
    cohort = write_cohort(tmp_path / "cohort.csv", [*good_rows(10), ("Bad", "Row", "bad@")])
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        sandbox.preload(51, [f"n{i}@example.org" for i in range(4)])
        assert main(issue_args(cohort, sandbox.url, "--dry-run")) == 1
    err = capsys.readouterr().err
    assert "badge 51 \u201cSandbox badge\u201d" in err
    assert "rows in" in err
    assert re.search(r"invalid: 1\b", err)
    assert re.search(r"already holding: 4\b", err)
    assert re.search(r"to send: 6, about \d+ s", err)


def test_a_broken_file_is_refused_before_anything_is_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unclosed quote at row 302: exit 2 naming the row, and not one request."""
    cohort = write_cohort(tmp_path / "cohort.csv", good_rows(400))
    lines = cohort.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[301] = 'Broken,"Quote,broken@example.org\n'
    cohort.write_text("".join(lines), encoding="utf-8")
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        status = main(issue_args(cohort, sandbox.url, *FAST))
        assert sandbox.requests == []
    assert status == 2
    assert "302" in capsys.readouterr().err


def test_header_only_file_says_no_learners(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file with a header and no rows: 'no learners found', exit 1, no journal."""
    cohort = write_cohort(tmp_path / "empty.csv", [])
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        assert main(issue_args(cohort, sandbox.url, *FAST)) == 1
        assert sandbox.requests == []
    assert "no learners found" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.journal.db"))


def test_failures_file_round_trip_lands_in_the_original_journal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fix the failures file and feed it back: original row numbers, the original run's
    journal, and the failures file is removed once every row holds the badge."""
    cohort = write_cohort(tmp_path / "cohort.csv", [*good_rows(5), ("Bad", "Mail", "bad@")])
    failures = tmp_path / "cohort.failures.csv"
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        assert main(issue_args(cohort, sandbox.url, *FAST)) == 1
        rows = rows_of(failures)
        assert [r["row"] for r in rows] == ["7"]
        text = failures.read_text(encoding="utf-8").replace("bad@", "fixed@example.org")
        failures.write_text(text, encoding="utf-8")
        assert main(issue_args(failures, sandbox.url, *FAST)) == 0
        assert sandbox.issued_count(51, "fixed@example.org") == 1
    assert not failures.exists()
    assert "Removed" in capsys.readouterr().err
    with contextlib.closing(sqlite3.connect(tmp_path / "cohort.csv.badge-51.journal.db")) as db:
        found = db.execute("SELECT row, state FROM learners WHERE email = 'fixed@example.org'")
        assert found.fetchall() == [(7, "issued")]
    assert not list(tmp_path.glob("cohort.failures.csv.badge-*"))


def test_report_finds_the_journal_without_badge_and_a_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`report FILE` finds the file's one journal; a folder as input says so."""
    cohort = write_cohort(tmp_path / "cohort.csv", good_rows(3))
    with sandbox_thread(SandboxConfig(rate=None)) as sandbox:
        assert main(issue_args(cohort, sandbox.url, *FAST)) == 0
    assert report(cohort) == (
        0,
        {
            "rows": 3,
            "issued": 3,
            "already_held": 0,
            "failed": 0,
            "invalid": 0,
            "unconfirmed": 0,
            "not_attempted": 0,
            "journal": str(tmp_path / "cohort.csv.badge-51.journal.db"),
        },
    )
    assert main(["issue", str(tmp_path), "--badge", "51", "--yes"]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_secrets_echoed_by_the_server_reach_no_output(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that echoes the PAT in its 401s, or a login body: masked on stdout, stderr,
    the --log file, the journal and the failures file; login tokens too."""
    cohort = write_cohort(tmp_path / "cohort.csv", good_rows(6))
    log = tmp_path / "events.jsonl"
    secret_pat = "pat-that-must-never-show-123"
    monkeypatch.setenv("NAVIGATR_PAT", secret_pat)
    config = SandboxConfig(rate=None, echo_secrets=True, token_ttl=0.5, jwt_tokens=False)
    with sandbox_thread(config) as sandbox:
        args = issue_args(cohort, sandbox.url, *FAST, "--log", str(log), "-vv")
        assert main(args) == 3
        monkeypatch.delenv("NAVIGATR_PAT")
        monkeypatch.setenv("NAVIGATR_USER", "demo@example.com")
        monkeypatch.setenv("NAVIGATR_PASS", "wrong-password-never-shown")
        assert main(args) == 3
        monkeypatch.setenv("NAVIGATR_PASS", "demo-password")
        sandbox.config.scripted = []
        assert main([*args, "--workers", "1"]) in (0, 1)
        tokens = sandbox.tokens.issued()
    captured = capfd.readouterr()
    written = [captured.out, captured.err, log.read_text(encoding="utf-8")]
    for path in tmp_path.iterdir():
        written.append(path.read_bytes().decode("utf-8", "replace"))
    everything = "\n".join(written)
    assert "not valid" in everything  # the echo itself did reach the outputs, masked
    for secret in (secret_pat, "wrong-password-never-shown", "demo-password", *tokens):
        assert secret not in everything


#: A base64 PAT (its "/" is what PHP's json_encode escapes) and a password with the
#: characters Go's encoder escapes; neither must show, whole or from its 12th character.
ESCAPED_PAT = "nvg_AbCd/EfGhIjKl+MnOp/QrStUv=="
ESCAPED_PASSWORD = "hu/nter2&<secret>pw-x7"

#: How servers spell a string inside a JSON string: each decodes to the string itself.
JSON_SPELLINGS: dict[str, Callable[[str], str]] = {
    "slash": lambda s: json.dumps(s)[1:-1].replace("/", "\\/"),
    "go": lambda s: (
        json.dumps(s)[1:-1].replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
    ),
    "one character": lambda s: s[:6] + f"\\u{ord(s[6]):04X}" + s[7:],
    "every character": lambda s: "".join(f"\\u{ord(c):04x}" for c in s),
}


def echo_body(spell: Callable[[str], str], secret: str) -> str:
    """A FastAPI-style 422 naming `secret`, as a server's own JSON encoder wrote it."""
    msg = f"header x-access-token={spell(secret)} is not allowed to issue"
    return '{"detail": [{"loc": ["body", "recipient_email"], "msg": "' + msg + '"}]}'


def everything_written(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> str:
    """stdout, stderr and every file under `tmp_path` (the journal's bytes included)."""
    captured = capfd.readouterr()
    written = [captured.out, captured.err]
    for path in tmp_path.iterdir():
        written.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(written)


@pytest.mark.parametrize("spelling", JSON_SPELLINGS)
def test_a_pat_echoed_json_escaped_reaches_no_output_file_or_journal(
    spelling: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 422 that echoes the PAT JSON-escaped (`\\/`, `\\u0026`, any character as
    `\\u00XX`): the learner fails with the server's reason, masked in the summary, the
    --log file, the journal's reason and the results files."""
    cohort = write_cohort(tmp_path / "cohort.csv", good_rows(3))
    monkeypatch.setenv("NAVIGATR_PAT", ESCAPED_PAT)
    body = echo_body(JSON_SPELLINGS[spelling], ESCAPED_PAT)
    refuse = ScriptedAnswer("issue", 422, body=body, content_type="application/json", times=1)
    config = SandboxConfig(rate=None, pats=frozenset({ESCAPED_PAT}), scripted=[refuse])
    with sandbox_thread(config) as sandbox:
        extra = ["--log", str(tmp_path / "events.jsonl"), "--successes", str(tmp_path / "ok.csv")]
        assert main(issue_args(cohort, sandbox.url, *FAST, *extra, "-vv")) == 1
    everything = everything_written(tmp_path, capfd)
    assert ESCAPED_PAT[:12] not in everything
    [failed] = rows_of(tmp_path / "cohort.failures.csv")
    assert "header x-access-token=******** is not allowed" in failed["reason"]


@pytest.mark.parametrize("spelling", JSON_SPELLINGS)
def test_a_password_echoed_json_escaped_reaches_no_output_file_or_journal(
    spelling: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The password echoed JSON-escaped by a refused login, and by an issue call's 422:
    no part of it shows on the console, in the --log file, the journal or the results."""
    cohort = write_cohort(tmp_path / "cohort.csv", good_rows(3))
    monkeypatch.delenv("NAVIGATR_PAT")
    monkeypatch.setenv("NAVIGATR_USER", "demo@example.com")
    monkeypatch.setenv("NAVIGATR_PASS", ESCAPED_PASSWORD)
    spell = JSON_SPELLINGS[spelling]
    refused = '{"detail": "Incorrect username or password: ' + spell(ESCAPED_PASSWORD) + '"}'
    login = ScriptedAnswer("token", 401, body=refused, content_type="application/json", times=1)
    body = echo_body(spell, ESCAPED_PASSWORD)
    issue = ScriptedAnswer("issue", 422, body=body, content_type="application/json", times=1)
    users = {"demo@example.com": ESCAPED_PASSWORD}
    config = SandboxConfig(rate=None, users=users, scripted=[login, issue])
    with sandbox_thread(config) as sandbox:
        args = issue_args(cohort, sandbox.url, *FAST, "--log", str(tmp_path / "events.jsonl"))
        assert main([*args, "-vv"]) == 3  # the login refused, its answer shown
        assert main([*args, "-vv"]) == 1  # logged in; one learner refused
    everything = everything_written(tmp_path, capfd)
    for part in ("nter2", "pw-x7"):
        assert part not in everything
    assert "Incorrect username or password: ********" in everything
    assert "is not allowed to issue" in everything


@pytest.mark.parametrize(
    ("problems", "reason"),
    [
        ([{"loc": None, "msg": "value is not valid", "type": "value_error"}], "value is not valid"),
        ([{"loc": 7, "msg": "value is not valid"}], "7: value is not valid"),
        (["not an object", 2], "not an object; 2"),
        (
            [{"loc": ["body", "email"], "msg": ["not", "a", "string"]}],
            'email: ["not","a","string"]',
        ),
    ],
)
def test_a_validation_list_of_any_shape_fails_only_its_learner(
    problems: object, reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 422 whose validation list is not FastAPI's shape (a `loc` that is null or a
    number, items that are not objects, a `msg` that is not a string): that learner fails
    with the server's detail, the others are issued, exit 1."""
    cohort = write_cohort(tmp_path / "cohort.csv", good_rows(4))
    refuse = ScriptedAnswer("issue", 422, body={"detail": problems}, times=1)
    with sandbox_thread(SandboxConfig(rate=None, scripted=[refuse])) as sandbox:
        assert main(issue_args(cohort, sandbox.url, *FAST, "--workers", "1")) == 1
        assert issue_count(sandbox) == 4
    found = counts(capsys.readouterr().out)
    assert (found["issued"], found["failed"], found["rows"]) == (3, 1, 4)
    [failed] = rows_of(tmp_path / "cohort.failures.csv")
    assert failed["reason"] == reason


def test_a_decomposed_address_after_a_lost_reply_is_issued_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`zoe\\u0308@...` typed decomposed (NFD): sent, journaled and looked up in NFC, so a
    reply lost after the server issued it is verified, not sent again; a rerun without
    the journal finds the learner among the holders."""
    nfd = "zoe\u0308@example.org"
    cohort = write_cohort(tmp_path / "cohort.csv", [("Zoe\u0308", "Mu\u0308ller", nfd)])
    lost = ScriptedAnswer("issue", 500, commit=True, times=1)
    with sandbox_thread(SandboxConfig(rate=None, scripted=[lost])) as sandbox:
        assert main(issue_args(cohort, sandbox.url, *FAST)) == 0
        assert main(issue_args(cohort, sandbox.url, *FAST, "--no-journal")) == 0
        assert issue_count(sandbox) == 1
        assert [a["recipient_email"] for a in sandbox.assertions] == ["zo\u00eb@example.org"]
    out = capsys.readouterr().out
    assert re.search(r"already held\s+1", out)
