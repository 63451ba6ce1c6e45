"""The command line: `bulk-issuer issue | sandbox | report`.

Arguments and the environment are read once into a frozen `IssueSettings`; every
exception that ends a command is mapped to an exit status in one place (`main`, through
`errors.exit_status`), and no traceback reaches the user unless asked for with `-vv`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import glob
import json
import logging
import os
import shlex
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import anyio
from anyio.abc import TaskStatus

from . import __version__
from .auth import Auth, PasswordAuth, PersonalAccessToken
from .client import DEFAULT_BASE_URL, check_base_url, mask, server_of
from .console import Console, plural
from .coordination import IN_PROCESS, choose
from .engine import MAX_WORKERS, BadgeIssuer, Preflight
from .errors import (
    EXIT_BUG,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_USAGE,
    Error,
    FatalError,
    InputError,
    JournalError,
    StoppedError,
    exit_status,
)
from .events import Event, LogSink
from .journal import Journal, default_journal_path
from .learners import COLUMN_ALIASES, normalise_header
from .outcomes import Outcome, Status, Summary, json_lines_logger
from .pacing import Rate
from .readers import LINES_SUFFIXES, Dialect, ReadOptions, open_source, scan_source
from .report import (
    FAILURES_LINES_SUFFIX,
    FAILURES_SUFFIX,
    Accounting,
    account,
    check_writable,
    find_journals,
)
from .retry import RetryPolicy

_ENV_HELP = """\
credentials come from the environment, never from arguments:
  NAVIGATR_PAT                 a Personal Access Token (recommended), or
  NAVIGATR_USER, NAVIGATR_PASS a login exchanged for short-lived tokens
  NAVIGATR_BASE_URL            the API root (default https://api.navigatr.app)

exit status: 0 every learner holds the badge; 1 some failed, were invalid, unconfirmed
or not attempted, or a results file could not be written after the sends (the journal
has them); 2 usage error or unreadable input (nothing sent); 3 stopped by a fatal
answer (credentials, badge not found or forbidden); 4 the API could not be reached or
stayed unavailable (rerun resumes); 70 internal error (a bug); 130 interrupted.
"""


class UsageError(Error):
    """A problem with the command as typed: exit 2, nothing sent."""

    exit_status = EXIT_USAGE


@dataclass(frozen=True, slots=True)
class IssueSettings:
    """Everything `issue` needs, read once from the arguments and the environment."""

    file: str
    label: str
    badge_id: int | None
    base_url: str
    rate: Rate | None
    workers: int | None
    journal: Path | None
    log: Path | None
    failures: Path | None
    successes: Path | None
    dry_run: bool
    offline: bool
    yes: bool
    verbose: int
    quiet: bool
    pat_header: str
    policy: RetryPolicy
    allow_duplicates: bool
    options: ReadOptions
    #: `--coordinator`: None for the local store, `memory`, or a Redis URL.
    coordinator: str | None = None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    verbose = getattr(args, "verbose", 0)
    try:
        if args.command == "sandbox":
            return _sandbox(args)
        with _sigterm_as_ctrl_c():
            if args.command == "issue":
                return _issue(args)
            if args.command == "report":
                return _report(args)
    except KeyboardInterrupt:
        # Before any issue call could leave (at the confirmation prompt, say): once they
        # may have, `_issue_run` says what stands where and returns itself.
        print("\nbulk-issuer: interrupted; nothing was sent", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Error as exc:
        print(f"bulk-issuer: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except ValueError as exc:
        print(f"bulk-issuer: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"bulk-issuer: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        if verbose >= 2:
            traceback.print_exc()
        print(
            f"bulk-issuer: internal error (a bug): {type(exc).__name__}: {exc}. "
            "Rerun with -vv to see where, and report it",
            file=sys.stderr,
        )
        return EXIT_BUG
    parser.print_help(sys.stderr)
    return EXIT_USAGE


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM stops the command as Ctrl-C does, from its start: cleanly, exit 130."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set a handler (and only it receives signals)
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Whatever Ctrl-C does now: asyncio's handler while the event loop runs (it cancels
    # the main task, so every `finally` runs), a KeyboardInterrupt otherwise.
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
        return
    raise KeyboardInterrupt


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
        help="issue a badge to every learner in a CSV, JSON Lines or workbook file",
        epilog=_ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    issue.add_argument(
        "file",
        metavar="FILE",
        help="CSV, JSON Lines (.jsonl) or workbook (.xlsx, .ods) of learners; - for stdin",
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
        "--workers",
        type=_workers,
        help=f"concurrent learners, 1 to {MAX_WORKERS} (default: suits the rate)",
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
        "--failures",
        help="the rows not issued, with row and reason columns (default: FILE-stem.failures.csv,"
        " .jsonl for JSON Lines; a .jsonl name is written as JSON Lines)",
    )
    issue.add_argument(
        "--successes",
        help="write every learner holding the badge through this journal, with how, to this CSV",
    )
    issue.add_argument(
        "--dry-run",
        "--dryrun",
        action="store_true",
        help="check credentials, badge, file and journal; say what would be sent; send nothing",
    )
    issue.add_argument(
        "--offline",
        action="store_true",
        help="with --dry-run: do not contact the API (no credential or badge check)",
    )
    issue.add_argument("--sheet", help="the sheet of a workbook to read (default: the first)")
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
        help="unanswered sends per learner before it counts as failed (default 6)",
    )
    issue.add_argument(
        "--resend-unconfirmed",
        action="store_true",
        help="send again a learner whose send went unanswered even when the server cannot "
        "be asked whether it was issued (may issue twice); default: report it unconfirmed",
    )
    issue.add_argument(
        "--allow-duplicates", action="store_true", help="do not check who already holds the badge"
    )
    issue.add_argument(
        "--coordinator",
        metavar="URL",
        default=os.environ.get("BULK_ISSUER_COORDINATOR"),
        help="share the account's rate budget and claims with runs on other hosts: "
        "redis://HOST:PORT/DB or rediss://... (env BULK_ISSUER_COORDINATOR); default: "
        "every run on this machine, through a local store ('memory': this run only)",
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

    report = commands.add_parser(
        "report", help="where each row of an input stands against its journal; results files"
    )
    report.add_argument(
        "file", nargs="?", metavar="FILE", help="the input file the run read (as for issue)"
    )
    report.add_argument("--badge", type=_badge_id, help="the badge of that run")
    report.add_argument("--journal", help="the journal to read (default: beside FILE)")
    report.add_argument("--failures", help="write the rows not issued (input columns + reason)")
    report.add_argument(
        "--successes", help="write every learner holding the badge, with how, to this CSV"
    )
    report.add_argument("--sheet", help="the sheet of a workbook input")
    report.add_argument("--json", action="store_true", help="print the counts as JSON")
    # How to read the input: by default as the run recorded in its journal; given, they win.
    report.add_argument("--delimiter", help="force the CSV delimiter (default: as the run)")
    report.add_argument("--encoding", help="force the file's encoding (default: as the run)")
    report.add_argument(
        "--date-format", help="strptime format of date columns (default: as the run)"
    )
    report.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="use COLUMN for FIELD, as for issue (default: the run's, which these add to)",
    )
    report.add_argument(
        "--require-consent", metavar="COLUMN", help="the consent column (default: as the run)"
    )

    sandbox = commands.add_parser("sandbox", help="serve a local stand-in for the Navigatr API")
    from .sandbox.cli import add_arguments

    add_arguments(sandbox)
    return parser


#: The most digits of a badge id: as for a `badge_id` column (and every id of a row).
_BADGE_ID_DIGITS = 15


def _badge_id(text: str) -> int:
    digits = text.rstrip("/").rsplit("/badge/", 1)[-1].split("/", 1)[0]
    if not digits.isdigit() or int(digits) < 1:
        raise argparse.ArgumentTypeError(f"a badge id is a positive number like 51, got {text!r}")
    if len(digits.lstrip("0")) > _BADGE_ID_DIGITS:
        raise argparse.ArgumentTypeError(
            f"a badge id has at most {_BADGE_ID_DIGITS} digits, got {text!r}"
        )
    return int(digits)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def _workers(text: str) -> int:
    count = _positive(text)
    if count > MAX_WORKERS:
        raise argparse.ArgumentTypeError(
            f"at most {MAX_WORKERS} workers, got {count}: the pace, not the workers, sets "
            "the speed (the default suits the rate)"
        )
    return count


def _sandbox(args: argparse.Namespace) -> int:
    from .sandbox.cli import config_from_args, serve_forever

    config = config_from_args(args)
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(
            functools.partial(
                serve_forever, config, args.host, args.port, access_log=args.access_log
            )
        )
    return EXIT_OK


# -- settings ------------------------------------------------------------------------------


def _settings(args: argparse.Namespace, source: str) -> IssueSettings:
    """Read the arguments and the environment once, checking each."""
    rate_text = args.rate.strip().lower()
    try:
        rate = None if rate_text in ("none", "unlimited", "0") else Rate.parse(args.rate)
        base_url = check_base_url(
            args.base_url or os.environ.get("NAVIGATR_BASE_URL") or DEFAULT_BASE_URL
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.offline and not args.dry_run:
        raise UsageError("--offline goes with --dry-run (a run must talk to the API)")
    coordinator = (args.coordinator or "").strip() or None
    try:
        choose(coordinator, base_url=base_url, identity="")  # the spec's form only
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.no_journal or args.file == "-":
        journal = Path(args.journal) if args.journal else None
    elif args.journal:
        journal = Path(args.journal)
    else:
        journal = _original_journal(source, args.badge) or default_journal_path(source, args.badge)
    if journal is not None and journal.exists() and not journal.is_file():
        # SQLite would open a device or a pipe, fail, and leave its own files beside it
        # (`/dev/null-journal`).
        raise UsageError(f"--journal {journal}: not a regular file; name a file (or a new one)")
    failures = Path(args.failures) if args.failures else None
    if failures is None and args.file != "-" and not args.dry_run:
        failures = _failures_path(Path(source))
        _check_output(
            "the failures file", failures, staged=True, hint="; choose where with --failures"
        )
    else:
        _check_output("--failures", failures, staged=True)
    _check_output("--successes", args.successes, staged=True)
    _check_output("--log", args.log)
    _check_distinct(
        None if args.file == "-" else source,
        journal,
        [
            ("--failures" if args.failures else "the failures file", failures),
            ("--successes", args.successes),
            ("--log", args.log),
        ],
    )
    return IssueSettings(
        file=source,
        label="standard input" if args.file == "-" else args.file,
        badge_id=args.badge,
        base_url=base_url,
        rate=rate,
        workers=args.workers,
        journal=journal,
        log=Path(args.log) if args.log else None,
        failures=failures,
        successes=Path(args.successes) if args.successes else None,
        dry_run=args.dry_run,
        offline=args.offline,
        yes=args.yes,
        verbose=args.verbose,
        quiet=args.quiet,
        pat_header=args.pat_header,
        policy=RetryPolicy(attempts=args.attempts, resend_unconfirmed=args.resend_unconfirmed),
        allow_duplicates=args.allow_duplicates,
        options=_read_options(args),
        coordinator=coordinator,
    )


_FAILURES_SUFFIX = FAILURES_SUFFIX
#: A JSON Lines input's: each record keeps its own keys (CSV has one set of columns).
_FAILURES_LINES_SUFFIX = FAILURES_LINES_SUFFIX


def _failures_path(source: Path) -> Path:
    """Where the rows not issued go: `STEM.failures.csv` beside the input (`.jsonl` for a
    JSON Lines input); a failures file fed back is rewritten in place (fix, feed back,
    repeat until it is gone)."""
    if _failures_stem(source) is not None:
        return source
    lines = source.suffix.lower() in LINES_SUFFIXES
    return source.with_name(source.stem + (_FAILURES_LINES_SUFFIX if lines else _FAILURES_SUFFIX))


def _failures_stem(path: Path) -> str | None:
    """`cohort` for `cohort.failures.csv` (or `.jsonl`); None for any other name."""
    for suffix in (_FAILURES_SUFFIX, _FAILURES_LINES_SUFFIX):
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return None


def _original_journal(source: str, badge_id: int | None) -> Path | None:
    """For a failures file fed back, the journal of the run that wrote it.

    `cohort.failures.csv` came from a run of `cohort.csv` (or `.xlsx`, ...) whose journal
    is `cohort.csv.badge-ID.journal.db`: the fixes land in that run's records.
    """
    found = [
        candidate for candidate in _original_journals(source) if _badge_of(candidate) == badge_id
    ]
    return found[0] if len(found) == 1 else None


def _original_journals(source: str) -> list[Path]:
    """For a failures file, the journals of the runs of the file it came from (any badge,
    and a run without one: `cohort.csv.journal.db`)."""
    path = Path(source)
    stem = _failures_stem(path)
    if stem is None:
        return []
    return sorted(
        candidate
        for candidate in path.parent.glob(f"{glob.escape(stem)}.*.journal.db")
        if not candidate.name.startswith(path.name)
    )


def _credentials(pat_header: str) -> Auth:
    pat = os.environ.get("NAVIGATR_PAT", "").strip()
    user = os.environ.get("NAVIGATR_USER", "").strip()
    password = os.environ.get("NAVIGATR_PASS", "")
    if pat:
        try:
            return PersonalAccessToken(
                pat, header="bearer" if pat_header == "bearer" else "x-access-token"
            )
        except ValueError as exc:
            raise UsageError(f"NAVIGATR_PAT: {exc}") from None
    if user and password:
        return PasswordAuth(user, password)
    raise UsageError(
        "no credentials: set NAVIGATR_PAT to a Personal Access Token, "
        "or NAVIGATR_USER and NAVIGATR_PASS (never on the command line)"
    )


def _read_options(args: argparse.Namespace) -> ReadOptions:
    column_map: dict[str, str] = {}
    for item in getattr(args, "map", []):
        field, sep, column = item.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise UsageError(
                f'--map takes FIELD=COLUMN, like recipient_email="Work Email"; got {item!r}'
            )
        column_map[field.strip()] = column.strip()
    delimiter = getattr(args, "delimiter", None)
    if delimiter is not None:
        delimiter = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}.get(
            delimiter.lower(), delimiter
        )
        if len(delimiter) != 1:
            raise UsageError(f"--delimiter takes one character (or tab), got {args.delimiter!r}")
    return ReadOptions(
        badge_id=args.badge,
        delimiter=delimiter,
        encoding=getattr(args, "encoding", None),
        date_format=getattr(args, "date_format", None),
        column_map=column_map,
        require_consent=getattr(args, "require_consent", None),
        sheet=getattr(args, "sheet", None),
    )


def _check_file(path: str) -> None:
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"cannot read {path}: it is a folder, not a file")
    if not target.exists():
        raise UsageError(f"cannot read {path}: no such file")
    if not target.is_file():
        raise UsageError(f"cannot read {path}: not a regular file")


def _check_output(
    flag: str, path: str | Path | None, *, staged: bool = False, hint: str = ""
) -> None:
    """Refuse a results path that cannot take its file now, before anything is sent.

    A folder, a device or a pipe (which the file written beside it and moved into place
    would replace), a folder that is missing or cannot be written: found out after the
    run, it would leave a cohort issued and its results nowhere.
    """
    if path is None:
        return
    try:
        check_writable(path, staged=staged)
    except OSError as exc:
        raise UsageError(f"{flag} {path}: {exc.strerror or exc}{hint}") from None


def _check_distinct(
    source: str | None,
    journal: Path | None,
    outputs: Sequence[tuple[str, str | Path | None]],
) -> None:
    """Refuse a results path that is the input, the journal, or another results path.

    Written after the run, it would destroy what it names: the input overwritten with
    results (or read while a log grows into it), the journal lost, or two results files
    moved over each other. Paths are compared resolved (symlinks followed), and as the
    same file where it exists (hard links). The one exception is the README's loop: a
    failures file fed back is its own failures file, rewritten in place.
    """
    taken: list[tuple[str, Path]] = []
    if source is not None:
        taken.append(("the input file", Path(source)))
    if journal is not None:
        taken += [("the journal", Path(f"{journal}{end}")) for end in ("", "-wal", "-shm")]
    for flag, given in outputs:
        if given is None:
            continue
        path = Path(given)
        for what, other in taken:
            fed_back = (
                flag in ("--failures", "the failures file")
                and what == "the input file"
                and _failures_path(other) == other
            )
            if not fed_back and _same_file(path, other):
                raise UsageError(
                    f"{flag} {given} is {what} ({other}): writing it would destroy that; "
                    f"give {flag} another path"
                )
        taken.append((f"the {flag} file" if flag.startswith("--") else flag, path))


def _same_file(one: Path, other: Path) -> bool:
    """Whether two paths name one file: the same resolved path, or the same inode."""
    try:
        if one.resolve() == other.resolve():
            return True
    except (OSError, RuntimeError):  # a symlink loop: compare what exists below
        pass
    try:
        return os.path.samefile(one, other)
    except OSError:  # one of them does not exist (yet)
        return False


# -- issue --------------------------------------------------------------------------------


def _issue(args: argparse.Namespace) -> int:
    if args.file != "-":
        _check_file(args.file)
        return _issue_file(_settings(args, args.file))
    # Standard input can be read once; the run reads its input more than once (a check
    # before anything is sent, then the run), so it is spooled to a private file first.
    with tempfile.TemporaryDirectory(prefix="bulk-issuer-") as folder:
        spooled = _spool_stdin(Path(folder))
        try:
            return _issue_file(_settings(args, spooled))
        except InputError as exc:
            # The private copy's name means nothing to the person who piped the file in.
            message = str(exc).replace(spooled, "standard input")
            raise InputError(message, row=exc.row, path="-") from None


def _spool_stdin(folder: Path) -> str:
    head = sys.stdin.buffer.read(1 << 16)
    first = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    path = folder / ("stdin.jsonl" if first == b"{" else "stdin.csv")
    with path.open("wb") as spool:
        spool.write(head)
        shutil.copyfileobj(sys.stdin.buffer, spool)
    return str(path)


def _issue_file(settings: IssueSettings) -> int:
    auth = None if settings.dry_run and settings.offline else _credentials(settings.pat_header)
    secrets = _secret_values(auth)
    console = Console(
        quiet=settings.quiet, verbose=settings.verbose, mask=lambda text: mask(text, secrets)
    )
    settings = _as_recorded(settings, console)
    with _store_trouble_said(console):
        return _issue_with(settings, console, auth, secrets)


class _OneLine(logging.Handler):
    """The library's own log records (a store write that failed) as one warning line each,
    the exception's type and text without its traceback (`-vv` shows that)."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.WARNING)
        self._console = console

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text += f": {type(exc).__name__}: {exc}"
            if self._console.verbose >= 2:
                text += "\n" + "".join(traceback.format_exception(exc)).rstrip()
        self._console.warn(text)


@contextlib.contextmanager
def _store_trouble_said(console: Console) -> Iterator[None]:
    """While a run lasts, the coordination store's trouble is told on one line."""
    logger = logging.getLogger("bulk_issuer.coordination")
    handler = _OneLine(console)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _issue_with(
    settings: IssueSettings, console: Console, auth: Auth | None, secrets: list[str]
) -> int:
    # The whole file is read before anything is sent: a file that cannot be read to the
    # end is refused now (exit 2), naming the row, not after half the cohort was issued.
    # Which file this is, taken before it is read: the results are written from the file
    # read again by its path after the run, which must be this one still.
    read = _identity(settings.file)
    scan = scan_source(settings.file, settings.options)
    dialect = scan.dialect
    for note in dialect.notes:
        if settings.verbose or not _ordinary(note):
            console.note(f"{settings.label}: {note}")
    if scan.rows == 0:
        console.error(f"no learners found in {settings.label}: it has a header and no rows")
        return EXIT_SOME_FAILED
    has_badge_column = any(
        COLUMN_ALIASES.get(normalise_header(column)) == "badge_id" for column in dialect.columns
    )
    if settings.badge_id is None and not has_badge_column:
        raise UsageError("which badge? pass --badge ID (the number in the badge's URL)")

    # A dry run reads an existing journal (to report who is done) but creates none.
    journal_path = settings.journal
    if settings.dry_run and journal_path is not None and not journal_path.exists():
        journal_path = None
    created = journal_path is not None and not journal_path.exists()
    # A dry run only reads it: opened read-only, it works in a folder that is too.
    journal = Journal(journal_path, read_only=settings.dry_run)
    log_file: TextIO | None = None
    status: int | None = None
    try:
        _check_server(journal, settings)
        if not settings.dry_run:
            _record_server(journal, settings.base_url)
            journal.set_meta("dialect", _dialect_meta(dialect))
            journal.set_meta("source", settings.file)
            _record_badge(journal, settings.badge_id)
            if settings.label != "standard input":  # `report` reads files, not a pipe
                _record_read_options(journal, settings.file, settings.options)
            if settings.log is not None:
                log_file = settings.log.open("a", encoding="utf-8")
        status = _issue_run(settings, auth, journal, dialect, console, log_file, secrets, read)
        return status
    finally:
        # Closed whatever comes meanwhile: Ctrl-C or SIGTERM now waits until they are, and
        # once the run has said where every learner stands, it changes nothing of it (it
        # used to end the command as "interrupted; nothing was sent").
        with _signals_held(dropped=lambda: status is not None):
            # Asked of the journal itself, however the run ended (an error, Ctrl-C while
            # the results were written): a journal holding a learner is never removed, or
            # a rerun would send them again.
            unused = created and journal_path is not None and _holds_no_learner(journal)
            if log_file is not None:
                _close_log(log_file, settings, console)
            journal.close()
            if unused:
                # Stopped before anything was recorded (refused at the preflight, or "no"
                # at the prompt): leave no journal behind that no run will ever need.
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{journal_path}{suffix}").unlink(missing_ok=True)


#: The signals that stop the command (see `_sigterm_as_ctrl_c`).
_STOPS = frozenset({signal.SIGINT, signal.SIGTERM})


@contextlib.contextmanager
def _signals_held(dropped: Callable[[], bool]) -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends; then drop them if `dropped()` says
    so, else let them act. (The main thread only, where the platform can hold signals.)"""
    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "pthread_sigmask"
    ):
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)
    try:
        yield
    finally:
        if dropped() and hasattr(signal, "sigtimedwait"):
            while signal.sigtimedwait(_STOPS, 0) is not None:
                pass
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _holds_no_learner(journal: Journal) -> bool:
    try:
        return journal.is_empty()
    except sqlite3.Error:
        return False  # cannot tell: keep it


def _close_log(log_file: TextIO, settings: IssueSettings, console: Console) -> None:
    try:
        log_file.close()
    except OSError as exc:
        console.error(f"the log {settings.log} could not be written: {exc.strerror or exc}")


def _issue_run(
    settings: IssueSettings,
    auth: Auth | None,
    journal: Journal,
    dialect: Dialect,
    console: Console,
    log_file: TextIO | None,
    secrets: list[str],
    read: _Identity | None,
) -> int:
    holder: dict[str, Any] = {}

    def known_secrets() -> list[str]:
        client = holder.get("client")
        return list(client.tokens.secrets()) if client is not None else list(secrets)

    json_log = LogSink(json_lines_logger(log_file, known_secrets)) if log_file else None
    run_sinks: list[Any] = []

    def during_run(event: Event) -> None:
        for sink in run_sinks:
            sink(event)

    issuer = BadgeIssuer(
        auth=auth or PersonalAccessToken("offline-dry-run-sends-nothing"),
        base_url=settings.base_url,
        rate=settings.rate,
        workers=settings.workers,
        journal=journal,
        policy=settings.policy,
        allow_duplicates=settings.allow_duplicates,
        on_event=during_run,
        logger=False,
        read_options=settings.options,
        # A dry run sends nothing: it needs no shared budget nor claims.
        coordinator=IN_PROCESS if settings.dry_run else settings.coordinator,
    )
    started_wall = time.time()
    plan: Summary | None = None
    summary: Summary | None = None
    stopped: BaseException | None = None
    # Set before the first issue call can leave; until then, whatever stops the command,
    # nothing was sent.
    sending = False
    interrupted = False

    async def session() -> None:
        nonlocal plan, summary, sending
        async with issuer:
            holder["client"] = issuer.client
            checked: Preflight | None = None
            if not settings.offline and settings.badge_id is not None:
                checked = await issuer.preflight(settings.badge_id)
            if settings.dry_run:
                run_sinks.extend([console, *([json_log] if json_log else [])])
            # The rows of a badge the API refused, by its reason (which names the badge).
            refused: dict[str, list[int]] = {}

            def refused_rows(event: Event) -> None:
                if isinstance(event, Outcome) and event.status is Status.FAILED:
                    refused.setdefault(event.reason or "", []).append(event.row)

            run_sinks.append(refused_rows)
            # Every badge a row names is checked, and its holders loaded, as the run's.
            plan = await issuer.dry_run(
                settings.file, badge_id=settings.badge_id, offline=settings.offline
            )
            run_sinks.clear()
            _show_plan(console, settings, checked, plan, refused)
            if settings.dry_run:
                return
            if plan.not_attempted + plan.unconfirmed == 0:
                console.say(
                    "Nothing to send: every learner is done, invalid or of a refused badge."
                    if plan.failed
                    else "Nothing to send: every learner is done or invalid."
                )
            elif sys.stdin.isatty() and not settings.yes and not await _confirm():
                console.say("Nothing sent.")
                raise _Declined
            run_sinks.extend([console, *([json_log] if json_log else [])])
            with console.progress(plan.not_attempted + plan.unconfirmed or None):
                sending = True
                summary = await _with_signals(issuer, settings.file, settings.badge_id)

    try:
        anyio.run(session)
    except _Declined:
        return EXIT_USAGE
    except KeyboardInterrupt:
        if not sending:
            raise  # nothing was sent: `main` says so
        # A second signal while the run wound up (its connections closing, say).
        interrupted = True
        summary = summary or issuer.summary
    except StoppedError as exc:
        stopped = exc
        summary = exc.summary or issuer.summary
    except InputError:
        raise
    except Error:
        raise
    except (sqlite3.Error, OSError) as exc:
        stopped = exc
        summary = issuer.summary
    except Exception as exc:
        if settings.verbose >= 2:
            traceback.print_exc()
        console.error(
            f"internal error (a bug): {type(exc).__name__}: {exc}. The journal is consistent: "
            "rerun the same command to resume; -vv shows where, to report it"
        )
        stopped = exc
        summary = issuer.summary
    if settings.dry_run and (stopped is not None or plan is None):
        console.error(f"stopped: {stopped}")
        return exit_status(stopped) if stopped is not None else EXIT_BUG
    if settings.dry_run:
        assert plan is not None
        console.summary(plan, _title(settings, "Dry run for"), dry_run=True)
        return EXIT_SOME_FAILED if plan.invalid or plan.failed else EXIT_OK
    try:
        if _identity(settings.file) != read:
            return _input_changed(settings, journal, console, summary, stopped, interrupted)
        return _after_run(
            settings, journal, dialect, console, started_wall, summary, stopped, interrupted
        )
    except KeyboardInterrupt:
        console.error(
            "interrupted before the results files were all written: "
            + _where_learners_stand(settings, journal)
        )
        return EXIT_INTERRUPTED


#: A file as `os.stat` tells it apart: device, inode, size, modification time (ns).
_Identity = tuple[int, int, int, int]


def _identity(path: str) -> _Identity | None:
    """Which file `path` is now, and whether it was written since (None: it is gone).

    Cheap at any size (a hash of a million rows would cost seconds): a file replaced
    (a new inode), rewritten in place (size or modification time) or removed shows.
    """
    try:
        found = os.stat(path)
    except OSError:
        return None
    return (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns)


def _input_changed(
    settings: IssueSettings,
    journal: Journal,
    console: Console,
    summary: Summary | None,
    stopped: BaseException | None,
    interrupted: bool,
) -> int:
    """The input was replaced or rewritten while the run read it: write no results file.

    The results are the input read again by its path against the journal: from another
    file they would be untrue (a learner who failed left out of the failures file, holders
    missing from `--successes`, exit 0 with a learner not holding the badge). The run's
    own summary is shown, the journal keeps every learner sent, and `report` writes the
    files once the input is as the run read it. Never exit 0: the results asked for are
    not written.
    """
    if summary is not None:
        if interrupted:
            summary = dataclasses.replace(summary, interrupted=True)
        console.summary(summary, _title(settings, "Issued"), dry_run=False, failures_file=False)
    if stopped is not None:
        _say_why_stopped(console, settings, stopped)
    if journal.path is None or settings.label == "standard input":
        how = _where_learners_stand(settings, journal)
    else:
        how = (
            f"every learner sent stands in the journal {journal.path}: once the file is as "
            f"the run read it, `{_report_command(settings, journal)}` writes the results "
            "files (a rerun of the same command reads the file as it is then; nothing is "
            "sent twice)"
        )
    console.error(
        f"{settings.label} changed during the run (replaced, rewritten or removed after it "
        "was read): no results file was written from it, as its rows may no longer be the "
        f"learners the run sent; {how}"
    )
    if stopped is not None:
        return _stopped_status(stopped)
    if interrupted or (summary is not None and summary.interrupted):
        return EXIT_INTERRUPTED
    return EXIT_SOME_FAILED


def _after_run(
    settings: IssueSettings,
    journal: Journal,
    dialect: Dialect,
    console: Console,
    since: float,
    summary: Summary | None,
    stopped: BaseException | None,
    interrupted: bool,
) -> int:
    """Write the results files, show the summary and what to do next; the exit status."""
    if summary is not None and interrupted:
        summary = dataclasses.replace(summary, interrupted=True)
    try:
        accounting = _results(settings, journal, dialect, since)
    except (OSError, sqlite3.Error, InputError, JournalError) as exc:
        # The learners stand in the journal whatever happens to a results file: say so,
        # with a status that does not claim that nothing was sent.
        if summary is not None:
            console.summary(
                summary,
                _title(settings, "Issued"),
                dry_run=False,
                failures_file=settings.failures is not None,
            )
        if stopped is not None:
            _say_why_stopped(console, settings, stopped)
        console.error(
            f"the results files could not be written: {_what_failed(exc)} (a results file "
            "from before is kept as it was, not replaced); "
            + _where_learners_stand(settings, journal)
        )
        if stopped is not None:
            return _stopped_status(stopped)
        if interrupted or (summary is not None and summary.interrupted):
            return EXIT_INTERRUPTED
        return EXIT_SOME_FAILED
    title = _title(settings, "Issued")
    if summary is None:
        # Stopped before the run began (the preflight): every row stands as the journal says.
        summary = dataclasses.replace(_summary_of(accounting), interrupted=interrupted)
    elif isinstance(stopped, sqlite3.Error | OSError):
        # The run's own tally ended with the write that failed, rows unread and outcomes
        # unrecorded: where each row stands is what the journal and the file say (what the
        # results files say, and what a rerun goes on from).
        summary = _summary_of(accounting, cut_short=summary)
        title = _title(settings, "Holding through the journal, of")
    console.summary(
        summary,
        title,
        dry_run=False,
        failures_file=settings.failures is not None,
    )
    for line in accounting.written:
        console.say(line)
    if journal.path is not None and not journal.path.exists():
        console.warn(
            f"the journal {journal.path} was removed during the run (its folder deleted or "
            "moved): the run went on with it open, but a rerun starts without it, and only "
            "the badge's holders list then keeps it from sending anyone again"
        )
    if accounting.unconfirmed:
        console.warn(
            f"{plural(accounting.unconfirmed, 'learner')} unconfirmed: no answer to a send said "
            "whether it was issued, and the server could not be asked. Rerun the same command "
            "to ask again; --resend-unconfirmed sends them anyway (they may then hold it twice)"
        )
    # Unconfirmed learners may hold it: what is certain is that they are not known to.
    left = (
        f"{plural(accounting.not_holding, 'learner')} of {accounting.rows} "
        f"{'is' if accounting.not_holding == 1 else 'are'} not known to hold the badge yet"
    )
    if stopped is not None:
        _say_why_stopped(console, settings, stopped)
        then = "fix that, then rerun" if isinstance(stopped, FatalError) else "rerun"
        console.error(f"{left}; {then} the same command to go on (nothing is sent twice)")
        return _stopped_status(stopped)
    if summary.interrupted:
        console.error(
            f"interrupted: {left}; rerun the same command to finish (nothing is sent twice)"
        )
        return EXIT_INTERRUPTED
    if accounting.not_holding:
        console.error(f"{left}: see the reasons above; rerun the same command to retry them")
    return EXIT_OK if accounting.not_holding == 0 else EXIT_SOME_FAILED


def _say_why_stopped(console: Console, settings: IssueSettings, stopped: BaseException) -> None:
    if isinstance(stopped, sqlite3.Error):
        # Not a bug: a full disk, most often. Named, so that it is the place to make room.
        where = f" {settings.journal}" if settings.journal is not None else ""
        console.error(f"stopped: the journal{where} could not be written: {stopped}")
    elif isinstance(stopped, OSError):
        what = f"the log {settings.log}" if settings.log is not None else "a file"
        console.error(f"stopped: {what} could not be written: {_what_failed(stopped)}")
    elif _stopped_status(stopped) != EXIT_BUG:  # a bug was said as it happened
        console.error(f"stopped: {stopped}")


def _stopped_status(stopped: BaseException) -> int:
    # The journal or the log failing mid-run: as the README's 70 says, the journal stands.
    return EXIT_BUG if isinstance(stopped, sqlite3.Error | OSError) else exit_status(stopped)


def _what_failed(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc)


def _where_learners_stand(settings: IssueSettings, journal: Journal) -> str:
    """Where every learner sent is recorded, and how to write the results files again."""
    if journal.path is None:
        return "no journal was kept (--no-journal): the summary is all this run leaves"
    again = "rerun the same command"
    if settings.label != "standard input":
        again = f"`{_report_command(settings, journal)}` or a rerun of the same command"
    return (
        f"every learner sent stands in the journal {journal.path}: {again} writes the "
        "results files (nothing is sent twice)"
    )


def _report_command(settings: IssueSettings, journal: Journal) -> str:
    """The `bulk-issuer report` that writes this run's results files from its journal."""
    command = ["bulk-issuer", "report", settings.file]
    if settings.badge_id is not None:
        command += ["--badge", str(settings.badge_id)]
    if settings.badge_id is None or journal.path != default_journal_path(
        settings.file, settings.badge_id
    ):
        command += ["--journal", str(journal.path)]
    for flag, path in (("--failures", settings.failures), ("--successes", settings.successes)):
        if path is not None:
            command += [flag, str(path)]
    return shlex.join(command)


def _summary_of(accounting: Accounting, *, cut_short: Summary | None = None) -> Summary:
    """Where every row stands, from the journal and the file: holding through the journal
    counted as done earlier; or, for a run whose own tally was `cut_short` (a write that
    failed mid-run), as issued, with that run's time and requests."""
    counts: dict[str, Any] = {
        "already_held": accounting.already_held,
        "failed": accounting.failed,
        "invalid": accounting.invalid,
        "unconfirmed": accounting.unconfirmed,
        "not_attempted": accounting.not_attempted,
    }
    if cut_short is None:
        return Summary(issued=0, skipped=accounting.issued, **counts)
    return dataclasses.replace(cut_short, issued=accounting.issued, skipped=0, **counts)


class _Declined(Exception):
    """The operator said no at the prompt."""


def _title(settings: IssueSettings, what: str) -> str:
    badge = f"badge {settings.badge_id}" if settings.badge_id is not None else "each row's badge"
    return f"{what} {badge}: {settings.label}"


def _show_plan(
    console: Console,
    settings: IssueSettings,
    checked: Preflight | None,
    plan: Summary,
    refused: Mapping[str, list[int]],
) -> None:
    """Say what is about to happen, before asking."""
    if settings.quiet:
        return
    badge = (
        f"badge {checked.badge_id} \u201c{checked.badge_name}\u201d"
        if checked is not None and checked.badge_name
        else f"badge {settings.badge_id}"
        if settings.badge_id is not None
        else "the badge of each row"
    )
    if checked is not None and not checked.badge_checked:
        badge += " (the API does not say whether it exists: the first issue call will)"
    to_send = plan.not_attempted + plan.unconfirmed
    lines = [
        f"{'Would issue' if settings.dry_run else 'About to issue'} {badge} via "
        f"{settings.base_url} at {settings.rate or 'no rate limit'}",
        f"  rows in {settings.label}: {plan.total}",
        f"  invalid: {plan.invalid}",
    ]
    if plan.failed:
        # Not sent: each row's own badge that the API refused, with the rows using it.
        lines.append(f"  of a refused badge: {plan.failed}")
        lines.extend(f"    {reason}: {_rows_named(rows)}" for reason, rows in refused.items())
    lines += [
        f"  done earlier: {plan.skipped}",
        f"  already holding: {plan.already_held}"
        + ("" if settings.allow_duplicates or not settings.offline else " (not checked)"),
        f"  to send: {to_send}" + (f", about {_estimate(settings, to_send)}" if to_send else ""),
    ]
    if checked is not None and checked.note:
        lines.append(f"  note: who holds it: {checked.note}")
    if settings.journal is not None and settings.dry_run:
        if settings.journal.exists():
            lines.append(f"  journal: {settings.journal} (read, not changed)")
    elif settings.journal is not None:
        resuming = " (resuming)" if plan.skipped or plan.unconfirmed else ""
        lines.append(f"  journal: {settings.journal}{resuming}; rerun the same command to resume")
    else:
        lines.append("  no journal: a rerun will not know what this run did")
    console.say("\n".join(lines))


def _rows_named(rows: list[int], most: int = 10) -> str:
    """ "row 3", "rows 3, 7", "rows 3, 7, ... and 12 more"."""
    named = ", ".join(map(str, rows[:most]))
    more = f" and {len(rows) - most} more" if len(rows) > most else ""
    return f"{'row' if len(rows) == 1 else 'rows'} {named}{more}"


def _estimate(settings: IssueSettings, to_send: int) -> str:
    if settings.rate is None:
        return "as fast as the server answers"
    seconds = to_send / settings.rate.per_second
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


async def _with_signals(issuer: BadgeIssuer, source: str, badge_id: int | None) -> Summary:
    """The run, with Ctrl-C and SIGTERM turned into a clean stop."""
    result: Summary | None = None
    try:
        async with anyio.create_task_group() as tg:
            # Listening before the first send: a signal from here on stops the run cleanly.
            await tg.start(_handle_signals, issuer)
            try:
                result = await issuer.run(source, badge_id=badge_id)
            finally:
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The run's own error, not the task group's wrapping of it.
        raise _first_cause(group) from None
    assert result is not None
    return result


def _first_cause(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_cause(exc)
        if not isinstance(exc, anyio.get_cancelled_exc_class()):
            return exc
    return group


async def _handle_signals(
    issuer: BadgeIssuer, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    before = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            stopping = False
            async for _ in signals:
                if stopping:
                    # Every journal write is committed before its request leaves: leaving
                    # now keeps it consistent, and the rerun asks the server about anything
                    # unanswered.
                    print("\nbulk-issuer: stopped at once", file=sys.stderr)
                    os._exit(EXIT_INTERRUPTED)
                stopping = True
                print(
                    "\nbulk-issuer: stopping: nothing more is sent; waiting a few seconds for "
                    "requests on the wire (press Ctrl-C again to quit now)",
                    file=sys.stderr,
                )
                issuer.stop()
    finally:
        # asyncio leaves SIGTERM at its default (the process dies, 143) and Ctrl-C at a
        # bare KeyboardInterrupt when it stops listening: the results are still to write.
        for number, handler in before.items():
            if handler is not None:
                signal.signal(number, handler)


async def _confirm() -> bool:
    """Ask on the terminal. The answer is awaited in the event loop, not read by a thread:
    Ctrl-C cancels the wait, where a thread blocked in `input()` kept the process alive."""
    print("Continue? [y/N] ", end="", flush=True)
    descriptor = sys.stdin.fileno()
    await anyio.wait_readable(descriptor)
    # A terminal hands over one line at a time; nothing (end of input) says no.
    answer = os.read(descriptor, 4096).decode(errors="replace")
    return answer.strip().lower() in ("y", "yes")


def _results(
    settings: IssueSettings, journal: Journal, dialect: Dialect, since: float
) -> Accounting:
    """Account for every row of the input and write the results files."""
    return account(
        settings.file,
        journal,
        badge_id=settings.badge_id,
        options=settings.options,
        dialect=dialect,
        failures=settings.failures,
        successes=settings.successes,
        since=since,
        record_fixes=not settings.dry_run,
    )


def _ordinary(note: str) -> bool:
    """Whether a note about the input says only what anyone would assume (UTF-8, commas)."""
    text = note.lower()
    return text in ("encoding utf-8", "delimiter ',' (detected)")


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


#: The journal's meta of how each input was read: its resolved path -> the read options
#: that change what a row is, so that `report` reads it as the run did.
_READ_META = "read_options"

#: The options recorded, as `ReadOptions` fields (`badge_id` is the run's, recorded apart).
_READ_FIELDS = ("delimiter", "encoding", "date_format", "require_consent", "sheet")


def _record_read_options(journal: Journal, source: str, options: ReadOptions) -> None:
    table = dict(_read_table(journal))
    entry: dict[str, Any] = {name: getattr(options, name) for name in _READ_FIELDS}
    entry["column_map"] = dict(options.column_map)
    table[str(Path(source).resolve())] = entry
    journal.set_meta(_READ_META, table)


#: The journal's meta of the API its learners were issued on (`server_of` its base URL).
_SERVER_META = "base_url"


def _check_server(journal: Journal, settings: IssueSettings) -> None:
    """Refuse a journal whose learners were issued on another server (exit 2, before
    anything is sent, dry runs too).

    A journal says who is done: reused against another API (the sandbox rehearsal, then
    the real run, with the same default journal), every learner it holds would be counted
    "done earlier" there and never sent, the summary and `report` saying they hold it.

    An offline dry run talks to no server: it is not refused.

    Raises:
        UsageError: the journal records another server, and holds learners.
    """
    if settings.offline:
        return  # no server at all: it says what the journal holds, wherever that was
    recorded = journal.meta(_SERVER_META)
    here = server_of(settings.base_url)
    if not isinstance(recorded, str) or recorded == here or journal.is_empty():
        return
    raise UsageError(
        f"the journal {journal.path} was kept against {recorded}: its learners were issued "
        f"on that server, not on {here}, which would count them as done and send them "
        "nothing. To issue on this server, use another --journal (or --base-url "
        f"{recorded} to go on there)"
    )


def _record_server(journal: Journal, base_url: str) -> None:
    """Record the server a run sends to, unless the journal already does (a journal
    from before this record takes the one it is run with now)."""
    here = server_of(base_url)
    if journal.meta(_SERVER_META) != here:
        journal.set_meta(_SERVER_META, here)


#: The journal's meta of the badges its runs were given (`--badge`): `report` of a journal
#: whose name does not say (`--journal PATH`) takes the badge from it.
_BADGES_META = "badges"


def _record_badge(journal: Journal, badge_id: int | None) -> None:
    """Add the run's `--badge` to those recorded (a run without one adds none: its rows
    name their own, and `report` reads them so)."""
    recorded = journal.meta(_BADGES_META)
    badges = {b for b in recorded if isinstance(b, int)} if isinstance(recorded, list) else set()
    if badge_id is not None:
        badges.add(badge_id)
    journal.set_meta(_BADGES_META, sorted(badges))


def _recorded_read_options(journal: Journal, source: str) -> dict[str, Any]:
    """How the run read `source`, as recorded; {} for a journal from before they were.

    A file the journal knows under another path (moved with its journal, or a failures
    file of the one file it was run on) is read as that one file was.
    """
    entry, _ = _recorded_for(journal, source)
    table = _read_table(journal)
    if not entry and len(table) == 1:
        only = next(iter(table.values()))
        entry = only if isinstance(only, dict) else {}
    return entry


def _read_table(journal: Journal) -> dict[str, Any]:
    """The journal's record of how each input was read, by its resolved path."""
    recorded = journal.meta(_READ_META)
    return recorded if isinstance(recorded, dict) else {}


#: What decides who a row is and whether it may be issued: a rerun (or its failures file
#: fed back) read another way would send to other addresses, or to a learner who refused.
_DECIDING = {"column_map": "--map", "require_consent": "--require-consent"}


def _as_recorded(settings: IssueSettings, console: Console) -> IssueSettings:
    """The settings with the options the journal's earlier run of this file was read with.

    `--map` and `--require-consent` decide who a row is and whether it may be issued: not
    given, they are taken as recorded (also for the failures file of that run fed back);
    given otherwise, the command is refused before anything is read or sent. The others
    (delimiter, encoding, date format, sheet) only help read the file: taken as recorded
    for the same file where not given, the command line winning.
    """
    path = settings.journal
    if path is None or settings.label == "standard input" or not path.is_file():
        return settings
    try:
        with contextlib.closing(Journal(path, read_only=True)) as journal:
            if journal.is_empty():
                return settings  # nobody issued through it: nothing to keep to
            recorded, same = _recorded_for(journal, settings.file)
    except (JournalError, sqlite3.Error, OSError):
        return settings  # the run itself says what is wrong with the journal
    if not recorded:
        return settings
    given = settings.options
    was = {
        "column_map": {str(k): str(v) for k, v in dict(recorded.get("column_map") or {}).items()},
        "require_consent": recorded.get("require_consent"),
    }
    now = {"column_map": dict(given.column_map), "require_consent": given.require_consent}
    changes: dict[str, Any] = {}
    adopted: list[str] = []
    for name, flag in _DECIDING.items():
        if not now[name] and was[name]:
            changes[name] = was[name]
            adopted.append(_shown_option(flag, was[name]))
        elif now[name] and now[name] != was[name]:
            raise UsageError(
                f"{settings.label} was issued before with "
                f"{_shown_option(flag, was[name]) if was[name] else f'no {flag}'} "
                f"(journal {path}); {_shown_option(flag, now[name])} would read its rows "
                "as other learners, who could get the badge twice or without consent. Give "
                f"the same {flag}, or start afresh with another --journal"
            )
    if same:
        for name in _READ_FIELDS:
            if getattr(given, name) is None and isinstance(recorded.get(name), str):
                changes[name] = recorded[name]
    if adopted:
        console.note(
            f"{settings.label}: read as before ({', '.join(adopted)}), as its journal records"
        )
    if not changes:
        return settings
    return dataclasses.replace(settings, options=dataclasses.replace(given, **changes))


def _shown_option(flag: str, value: object) -> str:
    if isinstance(value, dict):
        return " ".join(f'{flag} {field}="{column}"' for field, column in value.items())
    return f'{flag} "{value}"'


def _recorded_for(journal: Journal, source: str) -> tuple[dict[str, Any], bool]:
    """How the journal's runs read `source` or, for a failures file, the file it came from
    (False: not this very file); ({}, False) when neither was recorded."""
    table = _read_table(journal)
    here = Path(source).resolve()
    entry = table.get(str(here))
    if isinstance(entry, dict):
        return entry, True
    stem = _failures_stem(here)
    if stem is not None:
        for key, entry in table.items():
            origin = Path(key)
            if origin.parent == here.parent and origin.stem == stem and isinstance(entry, dict):
                return entry, False
    return {}, False


def _report_options(args: argparse.Namespace, journal: Journal) -> ReadOptions:
    """The options the run read the input with, where the command line does not say."""
    given = _read_options(args)
    recorded = _recorded_read_options(journal, args.file)

    def chosen(name: str) -> str | None:
        value = getattr(given, name)
        if value is None:
            value = recorded.get(name)
        return value if isinstance(value, str) else None

    column_map = recorded.get("column_map")
    mapped = {
        str(key): str(value)
        for key, value in (column_map.items() if isinstance(column_map, dict) else ())
    }
    return ReadOptions(
        badge_id=given.badge_id,
        delimiter=chosen("delimiter"),
        encoding=chosen("encoding"),
        date_format=chosen("date_format"),
        column_map={**mapped, **given.column_map},
        require_consent=chosen("require_consent"),
        sheet=chosen("sheet"),
    )


# -- report -------------------------------------------------------------------------------


def _report(args: argparse.Namespace) -> int:
    if args.file is None:
        raise UsageError("which input? pass the FILE the run read (and --badge ID)")
    _check_file(args.file)
    if args.journal:
        path = Path(args.journal)
    elif args.badge is not None:
        path = default_journal_path(args.file, args.badge)
        if not path.is_file():
            # A failures file: the journal its fixes went to when fed back (as `issue` does).
            path = _original_journal(args.file, args.badge) or path
    else:
        found = find_journals(args.file) or _original_journals(args.file)
        if not found:
            raise UsageError(f"no journal beside {args.file}: no run of it yet (or pass --journal)")
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise UsageError(f"{args.file} was run for several badges ({names}): pass --badge ID")
        path = found[0]
    if not path.is_file():
        raise UsageError(f"no journal at {path}: no run of this file for this badge yet")
    _check_output("--failures", args.failures, staged=True)
    _check_output("--successes", args.successes, staged=True)
    _check_distinct(
        args.file, path, [("--failures", args.failures), ("--successes", args.successes)]
    )
    with Journal(path, read_only=True) as journal:
        badge_id = (
            args.badge if args.badge is not None else _journal_badge(args.file, path, journal)
        )
        options = dataclasses.replace(_report_options(args, journal), badge_id=badge_id)
        # The failures file in this file's own columns and encoding (the journal's last run
        # may have been of another file sharing it through --journal).
        with open_source(args.file, options) as source:
            dialect = source.dialect
        accounting = account(
            args.file,
            journal,
            badge_id=badge_id,
            options=options,
            dialect=dialect,
            failures=args.failures,
            successes=args.successes,
        )
    counts = accounting.as_dict()
    if args.json:
        print(json.dumps({**counts, "journal": str(path)}))
    else:
        print(f"{args.file} against {path}")
        labels = {
            "issued": "issued",
            "already_held": "already held",
            "failed": "failed",
            "invalid": "invalid",
            "unconfirmed": "unconfirmed",
            "not_attempted": "not attempted",
            "rows": "rows",
        }
        for name, label in labels.items():
            print(f"  {label:<14}{counts[name]:>7}")
        for line in accounting.written:
            print(line)
        if accounting.not_holding:
            print(
                f"{plural(accounting.not_holding, 'learner')} not known to hold the badge yet: "
                "rerun the same issue command to go on"
            )
    return EXIT_OK if accounting.not_holding == 0 else EXIT_SOME_FAILED


def _journal_badge(source: str, path: Path, journal: Journal) -> int | None:
    """The badge of the runs that kept `journal`, for `report` without `--badge`.

    Its name says it for a default journal (`c.csv.badge-51.journal.db`); one named by
    `--journal` says it in its records: the badges its runs were given, or, for a journal
    from before they were recorded, those of its learners (not for a run's own journal
    without a badge, whose rows name theirs).

    Raises:
        UsageError: the runs were for several badges: which one is for `--badge` to say.
    """
    named = _badge_of(path)
    if named is not None:
        return named
    recorded = journal.meta(_BADGES_META)
    if isinstance(recorded, list):
        badges = [b for b in recorded if isinstance(b, int)]
    elif path == default_journal_path(source, None) or path in _original_journals(source):
        return None
    else:
        badges = journal.badges()
    if len(badges) > 1:
        listed = ", ".join(map(str, badges))
        raise UsageError(
            f"the journal {path} was kept for several badges ({listed}): pass --badge ID"
        )
    return badges[0] if badges else None


def _badge_of(journal: Path) -> int | None:
    name = journal.name
    marker = ".badge-"
    if marker in name:
        digits = name.rsplit(marker, 1)[1].split(".", 1)[0]
        if digits.isdigit():
            return int(digits)
    return None
