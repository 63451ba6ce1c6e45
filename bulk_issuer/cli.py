"""The command line: `bulk-issuer issue | sandbox | report`."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import signal
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import anyio

from . import __version__
from .auth import Auth, PasswordAuth, PersonalAccessToken
from .client import DEFAULT_BASE_URL, check_base_url
from .console import Console, EventLog, ResultFiles
from .engine import BadgeIssuer, FatalError
from .journal import Journal, State, default_journal_path
from .learners import COLUMN_ALIASES, InputError, normalise_header
from .outcomes import Outcome, Summary, flag_notes, json_lines_logger
from .pacing import Rate
from .readers import Dialect, LearnerSource, ReadOptions, open_source
from .results import FailuresWriter, SuccessWriter
from .retry import RetryPolicy

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_FATAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

_ENV_HELP = """\
credentials come from the environment, never from arguments:
  NAVIGATR_PAT                 a Personal Access Token (recommended), or
  NAVIGATR_USER, NAVIGATR_PASS a login exchanged for short-lived tokens
  NAVIGATR_BASE_URL            the API root (default https://api.navigatr.app)

exit status: 0 every learner holds the badge; 1 some failed or were invalid;
2 usage error or unreadable input (nothing sent); 3 stopped by a fatal answer
(credentials, badge not found or forbidden); 130 interrupted, stopped cleanly.
"""


class UsageError(Exception):
    """A problem with the command as typed: exit 2, nothing sent."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "issue":
            return _issue(args)
        if args.command == "report":
            return _report(args)
        if args.command == "sandbox":
            from .sandbox.cli import config_from_args, serve_forever

            config = config_from_args(args)
            with contextlib.suppress(KeyboardInterrupt):
                anyio.run(
                    functools.partial(
                        serve_forever, config, args.host, args.port, access_log=args.access_log
                    )
                )
            return EXIT_OK
    except KeyboardInterrupt:
        # Before the run started (at the confirmation prompt, say): nothing was sent.
        print("\nbulk-issuer: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (UsageError, InputError, ValueError) as exc:
        print(f"bulk-issuer: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"bulk-issuer: error: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        return EXIT_USAGE
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bulk-issuer",
        description="Issue a Navigatr badge to every learner of a cohort, safely and fast.",
        epilog=_ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    issue = commands.add_parser(
        "issue",
        help="issue a badge to every learner in a CSV or JSON Lines file",
        epilog=_ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    issue.add_argument(
        "file", metavar="FILE", help="CSV or JSON Lines file of learners; - for stdin"
    )
    issue.add_argument("--badge", type=_badge_id, help="badge id (the number in its URL)")
    issue.add_argument(
        "--base-url", help=f"API root (default $NAVIGATR_BASE_URL or {DEFAULT_BASE_URL})"
    )
    issue.add_argument(
        "--rate",
        default="5/2s",
        help="the server's limit, like 5/2s, 50/1s, 150/1m, or none (default 5/2s)",
    )
    issue.add_argument(
        "--workers", type=_positive, help="concurrent learners (default: suits the rate)"
    )
    issue.add_argument(
        "--journal", help="the SQLite journal that makes a rerun resume (default: beside FILE)"
    )
    issue.add_argument(
        "--no-journal",
        action="store_true",
        help="keep no journal: a rerun will not know what was done",
    )
    issue.add_argument(
        "--log", help="write JSON lines, one event per learner outcome, to this file"
    )
    issue.add_argument(
        "--failures", help="write the rows not issued, with a reason column, to this file"
    )
    issue.add_argument(
        "--successes", help="write row, email and assertion id of each issued learner to this CSV"
    )
    issue.add_argument(
        "--dry-run", action="store_true", help="read and validate, report, send nothing"
    )
    issue.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    issue.add_argument(
        "-v", "--verbose", action="count", default=0, help="say more (every outcome, retries)"
    )
    issue.add_argument(
        "-q", "--quiet", action="store_true", help="print only errors and the summary"
    )
    issue.add_argument(
        "--pat-header",
        choices=("x-access-token", "bearer"),
        default=os.environ.get("NAVIGATR_PAT_HEADER", "x-access-token"),
        help="how a PAT is sent (default X-Access-Token)",
    )
    issue.add_argument(
        "--attempts",
        type=_positive,
        default=6,
        help="sends per learner before it counts as failed (default 6)",
    )
    issue.add_argument(
        "--allow-duplicates", action="store_true", help="do not check who already holds the badge"
    )
    issue.add_argument("--delimiter", help="force the CSV delimiter (default: detected)")
    issue.add_argument("--encoding", help="force the file's encoding (default: detected)")
    issue.add_argument("--date-format", help="strptime format of date columns, e.g. %%d/%%m/%%Y")
    issue.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help='use COLUMN for FIELD, e.g. --map recipient_email="Work Email" (repeatable)',
    )
    issue.add_argument(
        "--require-consent", metavar="COLUMN", help="issue only rows whose COLUMN says yes/true/1"
    )

    report = commands.add_parser("report", help="what a journal holds; write results files")
    report.add_argument(
        "file", nargs="?", metavar="FILE", help="the input file, to find its default journal"
    )
    report.add_argument("--badge", type=_badge_id, help="the badge of that run")
    report.add_argument("--journal", help="the journal to read")
    report.add_argument("--failures", help="write the rows not issued (input columns + reason)")
    report.add_argument("--successes", help="write row, email, assertion id of the issued learners")
    report.add_argument("--json", action="store_true", help="print the counts as JSON")

    sandbox = commands.add_parser("sandbox", help="serve a local stand-in for the Navigatr API")
    from .sandbox.cli import add_arguments

    add_arguments(sandbox)
    return parser


def _badge_id(text: str) -> int:
    digits = text.rstrip("/").rsplit("/badge/", 1)[-1].split("/", 1)[0]
    if not digits.isdigit() or int(digits) < 1:
        raise argparse.ArgumentTypeError(f"a badge id is a positive number like 51, got {text!r}")
    return int(digits)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def _credentials(pat_header: str) -> Auth:
    pat = os.environ.get("NAVIGATR_PAT", "").strip()
    user = os.environ.get("NAVIGATR_USER", "").strip()
    password = os.environ.get("NAVIGATR_PASS", "")
    if pat:
        return PersonalAccessToken(
            pat, header="bearer" if pat_header == "bearer" else "x-access-token"
        )
    if user and password:
        return PasswordAuth(user, password)
    raise UsageError(
        "no credentials: set NAVIGATR_PAT to a Personal Access Token, "
        "or NAVIGATR_USER and NAVIGATR_PASS (never on the command line)"
    )


def _read_options(args: argparse.Namespace) -> ReadOptions:
    column_map: dict[str, str] = {}
    for item in args.map:
        field, sep, column = item.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise UsageError(
                f'--map takes FIELD=COLUMN, like recipient_email="Work Email"; got {item!r}'
            )
        column_map[field.strip()] = column.strip()
    delimiter = args.delimiter
    if delimiter is not None:
        delimiter = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}.get(
            delimiter.lower(), delimiter
        )
        if len(delimiter) != 1:
            raise UsageError(f"--delimiter takes one character (or tab), got {args.delimiter!r}")
    return ReadOptions(
        badge_id=args.badge,
        delimiter=delimiter,
        encoding=args.encoding,
        date_format=args.date_format,
        column_map=column_map,
        require_consent=args.require_consent,
    )


def _issue(args: argparse.Namespace) -> int:
    if args.file != "-":
        return _issue_file(args, args.file)
    # Standard input can be read once; the run reads its input twice (a check before
    # anything is sent, then the run), so it is spooled to a private file first.
    with tempfile.TemporaryDirectory(prefix="bulk-issuer-") as folder:
        return _issue_file(args, _spool_stdin(Path(folder)))


def _spool_stdin(folder: Path) -> str:
    head = sys.stdin.buffer.read(1 << 16)
    first = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    path = folder / ("stdin.jsonl" if first == b"{" else "stdin.csv")
    with path.open("wb") as spool:
        spool.write(head)
        shutil.copyfileobj(sys.stdin.buffer, spool)
    return str(path)


def _issue_file(args: argparse.Namespace, source_path: str) -> int:
    label = "standard input" if args.file == "-" else source_path
    console = Console(quiet=args.quiet, verbose=args.verbose)
    options = _read_options(args)
    rate = (
        None if args.rate.strip().lower() in ("none", "unlimited", "0") else Rate.parse(args.rate)
    )
    base_url = check_base_url(
        args.base_url or os.environ.get("NAVIGATR_BASE_URL") or DEFAULT_BASE_URL
    )
    if not Path(source_path).is_file():
        raise UsageError(f"cannot read {source_path}: no such file")
    # The input is opened (encoding, header) before anything is sent: a file that cannot
    # be read at all is a usage error (exit 2), not a run that fails half-way. The run
    # then reads the same open source, not the file a second time.
    with open_source(source_path, options) as source:
        return _issue_source(
            args, source, path=source_path, label=label, console=console, rate=rate, url=base_url
        )


def _issue_source(
    args: argparse.Namespace,
    source: LearnerSource,
    *,
    path: str,
    label: str,
    console: Console,
    rate: Rate | None,
    url: str,
) -> int:
    """Confirm, run and report `issue` on an input that is open and checked."""
    source_path, base_url = path, url
    dialect = source.dialect
    options = _read_options(args)
    for note in dialect.notes:
        if args.verbose or not _ordinary(note):
            console.note(f"{label}: {note}")
    if args.no_journal or args.file == "-":
        journal_path = Path(args.journal) if args.journal else None
    else:
        journal_path = (
            Path(args.journal) if args.journal else default_journal_path(source_path, args.badge)
        )
    auth = None if args.dry_run else _credentials(args.pat_header)
    total = _count_rows(source_path)

    has_badge_column = any(
        COLUMN_ALIASES.get(normalise_header(column)) == "badge_id" for column in dialect.columns
    )
    if not args.dry_run and args.badge is None and not has_badge_column:
        raise UsageError("which badge? pass --badge ID (the number in the badge's URL)")
    if not args.dry_run:
        console.say(
            f"Issuing badge {args.badge} to the learners in {label}"
            f"{f' (about {total})' if total else ''} via {base_url} at {rate or 'no rate limit'}."
        )
        console.say(
            f"Journal: {journal_path} (rerun the same command to resume)"
            if journal_path
            else "No journal: a rerun will not know what this run did."
        )
        if sys.stdin.isatty() and not args.yes and not _confirm():
            console.say("Nothing sent.")
            return EXIT_USAGE

    # A dry run reads an existing journal (to report who is done) but creates none.
    use_journal = journal_path is not None and (not args.dry_run or journal_path.exists())
    journal = Journal(journal_path) if journal_path and use_journal else None
    if journal is not None and not args.dry_run:
        journal.set_meta("dialect", _dialect_meta(dialect))
        journal.set_meta("source", str(source_path))
    results = ResultFiles(
        dialect,
        args.file,
        failures=args.failures,
        successes=args.successes,
        dry_run=args.dry_run,
    )
    log_file: TextIO | None = open(args.log, "a", encoding="utf-8") if args.log else None  # noqa: SIM115
    secrets = _secret_values(auth)
    events = EventLog(json_lines_logger(log_file, lambda: secrets) if log_file else None, console)

    def on_outcome(outcome: Outcome) -> None:
        console.outcome(outcome)
        results.write(outcome)

    issuer = BadgeIssuer(
        auth=auth or PersonalAccessToken("dry-run-sends-nothing"),
        base_url=base_url,
        rate=rate,
        workers=args.workers,
        journal=journal,
        policy=RetryPolicy(attempts=args.attempts),
        allow_duplicates=args.allow_duplicates,
        on_outcome=on_outcome,
        logger=events,
        read_options=options,
    )
    fatal: FatalError | None = None
    summary = Summary()
    try:
        with console.progress(total):
            result = anyio.run(_run_issue, issuer, source, args.badge, args.dry_run)
            if isinstance(result, FatalError):
                fatal, summary = result, result.summary or Summary()
            else:
                summary = result
    except (InputError, KeyboardInterrupt):
        raise
    except Exception as exc:
        # A bug, not an answer: say so plainly; the journal is committed as it went.
        if args.verbose >= 2:
            traceback.print_exc()
        console.error(
            f"unexpected error: {type(exc).__name__}: {exc}. The journal is consistent: "
            "rerun the same command to resume (-vv shows the details to report)"
        )
        return EXIT_SOME_FAILED
    finally:
        results.close()
        if journal is not None:
            journal.close()
        if log_file is not None:
            log_file.close()

    console.summary(summary, args.badge, label, dry_run=args.dry_run)
    if journal_path and not args.dry_run:
        console.say(f"Journal: {journal_path}")
    for line in results.paths():
        console.say(line)
    if fatal is not None:
        console.error(f"stopped: {fatal}")
        return EXIT_FATAL
    if summary.interrupted:
        console.error("interrupted: rerun the same command to finish; nothing will be sent twice")
        return EXIT_INTERRUPTED
    return EXIT_OK if summary.ok else EXIT_SOME_FAILED


async def _run_issue(
    issuer: BadgeIssuer, source: LearnerSource, badge_id: int | None, dry_run: bool
) -> Summary | FatalError:
    """The run, with Ctrl-C and SIGTERM turned into a clean stop."""
    result: Summary | FatalError
    async with anyio.create_task_group() as tg:
        tg.start_soon(_handle_signals, issuer)
        try:
            async with issuer:
                if dry_run:
                    result = await issuer.dry_run(source, badge_id=badge_id)
                else:
                    result = await issuer.run(source, badge_id=badge_id)
        except FatalError as exc:
            result = exc
        tg.cancel_scope.cancel()
    return result


async def _handle_signals(issuer: BadgeIssuer) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        stopping = False
        async for _ in signals:
            if stopping:
                # Every journal write is its own committed transaction: leaving now keeps it
                # consistent, and the rerun asks the server about anything left `sending`.
                print("\nbulk-issuer: stopped at once", file=sys.stderr)
                os._exit(EXIT_INTERRUPTED)
            stopping = True
            print(
                "\nbulk-issuer: stopping: no new learners, letting requests in flight finish "
                "(press Ctrl-C again to quit now)",
                file=sys.stderr,
            )
            issuer.stop()


def _confirm() -> bool:
    try:
        answer = input("Continue? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _ordinary(note: str) -> bool:
    """Whether a note about the input says only what anyone would assume (UTF-8, commas)."""
    text = note.lower()
    return text in ("encoding utf-8", "delimiter ',' (detected)")


def _count_rows(source: str) -> int | None:
    """About how many learners a file holds (lines minus the header), for the progress bar."""
    if source == "-":
        return None
    with contextlib.suppress(OSError), open(source, "rb") as handle:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
        return max(lines - (0 if source.endswith((".jsonl", ".ndjson")) else 1), 0) or None
    return None


def _secret_values(auth: Auth | None) -> list[str]:
    if isinstance(auth, PersonalAccessToken):
        return [auth.token.reveal()]
    if isinstance(auth, PasswordAuth):
        return [auth.password.reveal()]
    return []


def _dialect_meta(dialect: Dialect) -> dict[str, Any]:
    return {
        "format": dialect.format,
        "encoding": dialect.encoding,
        "delimiter": dialect.delimiter,
        "columns": list(dialect.columns),
    }


def _dialect_from_meta(meta: object) -> Dialect:
    data = meta if isinstance(meta, dict) else {}
    return Dialect(
        format=data.get("format", "csv"),
        encoding=data.get("encoding", "utf-8"),
        delimiter=data.get("delimiter", ","),
        columns=tuple(data.get("columns", ())),
        notes=(),
    )


def _report(args: argparse.Namespace) -> int:
    if args.journal:
        path = Path(args.journal)
    elif args.file:
        path = default_journal_path(args.file, args.badge)
    else:
        raise UsageError("which journal? pass --journal PATH, or the input FILE and --badge ID")
    if not path.is_file():
        raise UsageError(f"no journal at {path}")
    with Journal(path) as journal:
        counts = journal.counts()
        dialect = _dialect_from_meta(journal.meta("dialect"))
        written: list[str] = []
        if args.failures:
            with FailuresWriter(Path(args.failures), dialect) as failures:
                count = 0
                for entry in journal.entries(State.FAILED, State.SENDING):
                    reason = entry.reason or (
                        "no answer recorded: rerun to ask the server and finish"
                        if entry.state is State.SENDING
                        else "failed"
                    )
                    failures.write_fields(entry.row or 0, entry.fields or {}, reason)
                    count += 1
                for row, fields, reason in journal.invalid_rows():
                    failures.write_fields(row, fields, reason)
                    count += 1
            written.append(f"Rows not issued ({count}): {args.failures}")
        if args.successes:
            with SuccessWriter(Path(args.successes)) as successes:
                count = 0
                for entry in journal.entries(State.ISSUED):
                    flags = tuple((entry.flags or "").split(",")) if entry.flags else ()
                    successes.write(
                        entry.row or 0, entry.email or "", entry.assertion_id, flag_notes(flags)
                    )
                    count += 1
            written.append(f"Issued ({count}): {args.successes}")
    if args.json:
        print(json.dumps(counts))
    else:
        print(f"Journal {path}")
        labels = {
            "issued": "issued",
            "already_held": "already held",
            "failed": "failed",
            "sending": "unanswered",
            "invalid": "invalid rows",
        }
        for state, label in labels.items():
            print(f"  {label:<13}{counts.get(state, 0):>7}")
    for line in written:
        print(line)
    return (
        EXIT_OK
        if not (counts["failed"] or counts["sending"] or counts["invalid"])
        else EXIT_SOME_FAILED
    )
