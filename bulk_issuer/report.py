"""Accounting: every row of an input against its journal, and the results files from it.

`issue` (at the end of a run, however it ended) and `report` (any time later) both call
`account`, so they write the same files the same way: the rows not issued (failed,
invalid, unconfirmed, not attempted) in input order, ready to fix and feed back, and every
learner who holds the badge through this journal across all runs, with how.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from .cohort import invalid_outcome
from .columns import failures_file_columns
from .journal import Entry, Journal, State, default_journal_path
from .learners import Row
from .readers import LINES_SUFFIXES, Dialect, ReadOptions, open_source
from .results import FailuresLinesWriter, FailuresWriter, SuccessWriter

__all__ = [
    "FAILURES_LINES_SUFFIX",
    "FAILURES_SUFFIX",
    "Accounting",
    "account",
    "check_writable",
    "find_journals",
]

#: The failures file of `cohort.csv` (or `.xlsx`, ...) is `cohort.failures.csv` beside it.
FAILURES_SUFFIX = ".failures.csv"
#: A JSON Lines input's: each record keeps its own keys (CSV has one set of columns).
FAILURES_LINES_SUFFIX = ".failures.jsonl"

_FAILURES_SUFFIXES = (FAILURES_SUFFIX, FAILURES_LINES_SUFFIX)

#: The journal's meta of the fixes fed back: a failures file's resolved path -> the
#: [badge, key] of each learner holding the badge through one of its rows.
_FIXES_META = "fixes"

#: The category of each journal state.
_CATEGORY = {
    State.ISSUED: "issued",
    State.HELD: "already_held",
    State.FAILED: "failed",
    State.SENDING: "unconfirmed",
}

#: How a learner came to hold the badge, from the flags of its journal entry.
_HOW = {
    "verified": "issued by this tool; confirmed by lookup after its reply was lost",
    "resent_unverified": (
        "issued by this tool; re-sent without the server being asked first: look for a "
        "second claim email"
    ),
}


@dataclass(slots=True)
class Accounting:
    """Where each input row stands: counts, and the results files written.

    Every row is in exactly one of `issued`, `already_held`, `failed`, `invalid`,
    `unconfirmed`, `not_attempted`. `not_in_file` counts the learners holding the badge
    through the journal that no row is (listed in `--successes`; not rows).
    """

    issued: int = 0
    already_held: int = 0
    failed: int = 0
    invalid: int = 0
    unconfirmed: int = 0
    not_attempted: int = 0
    not_in_file: int = 0
    written: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return (
            self.issued
            + self.already_held
            + self.failed
            + self.invalid
            + self.unconfirmed
            + self.not_attempted
        )

    @property
    def not_holding(self) -> int:
        """Rows whose learner does not hold the badge (or not known to)."""
        return self.rows - self.issued - self.already_held

    def as_dict(self) -> dict[str, int]:
        return {
            "rows": self.rows,
            "issued": self.issued,
            "already_held": self.already_held,
            "failed": self.failed,
            "invalid": self.invalid,
            "unconfirmed": self.unconfirmed,
            "not_attempted": self.not_attempted,
        }


def account(
    learners: str | os.PathLike[str],
    journal: Journal,
    *,
    badge_id: int | None,
    options: ReadOptions,
    dialect: Dialect,
    failures: str | os.PathLike[str] | None = None,
    successes: str | os.PathLike[str] | None = None,
    since: float | None = None,
    record_fixes: bool = False,
) -> Accounting:
    """Read the input against the journal; write the results files asked for.

    Args:
        learners: the input, read again from the start.
        journal: the run's journal.
        badge_id: the badge (a row's own `badge_id` wins).
        options: how to read the input (as the run did).
        dialect: the input's dialect, for the failures file's columns and encoding.
        failures: where to write the rows not issued. Always rewritten; when every row
            holds the badge, a file left by an earlier run is removed.
        successes: where to write every learner who holds the badge through the journal.
        since: the wall-clock start of the run just made: learners issued since then are
            "issued now", earlier ones "issued earlier".
        record_fixes: record in the journal (written: not `report`'s) which learners hold
            the badge through the rows of a failures file fed back, so that only the file
            it came from counts them (see `_Fixes`).
    """
    tally = Accounting()
    for target in (failures, successes):
        if target:
            _refuse_special(Path(target))
    # Written beside the target and moved into place at the end: the input itself may be
    # a failures file being fed back (the same path), and a crash or a full disk leaves
    # the old file whole (not cut short where the disk filled).
    staging = _staging(Path(failures)) if failures else None
    staged_successes = _staging(Path(successes)) if successes else None
    try:
        with contextlib.ExitStack() as files:
            failures_writer: FailuresWriter | FailuresLinesWriter | None = None
            if failures and staging is not None:
                # JSON Lines where the name says so (as the readers tell it when fed back).
                lines = Path(failures).suffix.lower() in LINES_SUFFIXES
                failures_writer = (
                    files.enter_context(FailuresLinesWriter(staging))
                    if lines
                    else files.enter_context(FailuresWriter(staging, dialect))
                )
            successes_writer = (
                files.enter_context(SuccessWriter(staged_successes))
                if staged_successes is not None
                else None
            )
            seen: set[tuple[int, str]] = set()
            fixed: set[tuple[int, str]] = set()
            for row, category, reason, entry, email in _rows(learners, journal, badge_id, options):
                setattr(tally, category, getattr(tally, category) + 1)
                if entry is not None:
                    seen.add((entry.badge_id, entry.key))
                    if category in ("issued", "already_held") and _fed_back(row):
                        fixed.add((entry.badge_id, entry.key))
                if category in ("issued", "already_held"):
                    if successes_writer is not None and email is not None:
                        how = _how(category, entry, since)
                        if row.learner is None or email != row.learner.email:
                            how += f"; {_FIXED}"
                        successes_writer.write(
                            row.number, email, entry.assertion_id if entry else None, how
                        )
                elif failures_writer is not None:
                    failures_writer.write_fields(row.number, row.fields, reason)
            if record_fixes and fixed:
                _record_fixes(journal, learners, fixed)
            if successes_writer is not None:
                for entry in _not_in_file(journal, badge_id, seen):
                    tally.not_in_file += 1
                    how = _how(_CATEGORY[entry.state], entry, since)
                    successes_writer.write(
                        None, entry.email or entry.key, entry.assertion_id, f"{how}; {_gone(entry)}"
                    )
        if failures and staging is not None:
            path = Path(failures)
            if tally.not_holding:
                os.replace(staging, path)
                tally.written.append(
                    f"Rows not issued ({tally.not_holding}): {path} "
                    "(fix them and feed the file back, or rerun the same command)"
                )
            else:
                staging.unlink(missing_ok=True)
                if path.exists():
                    path.unlink()
                    tally.written.append(
                        f"Removed {path}: every row of an earlier run's failures now holds "
                        "the badge"
                    )
        if successes and staged_successes is not None:
            os.replace(staged_successes, Path(successes))
    except BaseException:
        # The targets keep what they held; no half-written copy is left beside them.
        for partial in (staging, staged_successes):
            if partial is not None:
                partial.unlink(missing_ok=True)
        raise
    if successes:
        holding = tally.issued + tally.already_held + tally.not_in_file
        gone = f", {tally.not_in_file} of them not in this file" if tally.not_in_file else ""
        tally.written.append(f"Holding the badge ({holding}{gone}): {successes}")
    return tally


def check_writable(path: str | os.PathLike[str], *, staged: bool = False) -> None:
    """Check, before a run sends anything, that a results file can be written at `path`.

    Args:
        path: where the file will go.
        staged: it is written beside `path` first and then moved over it (as `account`
            writes the failures file), so its folder must take a new file too.

    Raises:
        OSError: naming `path`: a folder, a device or a pipe (which a results file must
            not replace), a folder that does not exist, or one that cannot be written.
    """
    target = Path(path)
    exists = _refuse_special(target)
    folder = target.parent
    try:
        if exists:
            with target.open("a"):
                pass
        if staged or not exists:
            handle, probe = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".probe")
            os.close(handle)
            os.unlink(probe)
    except OSError as exc:
        where = "it" if exists and not staged else f"a file in {folder}"
        raise OSError(exc.errno, f"cannot write {where} ({exc.strerror})", str(target)) from None


def _refuse_special(path: Path) -> bool:
    """Whether `path` exists, as a regular file; raise OSError if it is anything else."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "it is a folder: name a file", str(path))
    if not stat.S_ISREG(mode):
        raise OSError(
            errno.EINVAL, "not a regular file (a device or a pipe): name a file", str(path)
        )
    return True


def _staging(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


#: How `--successes` tells a learner issued from a row fixed in a failures file.
_FIXED = "from its row fixed in a failures file fed back"


def _rows(
    learners: str | os.PathLike[str], journal: Journal, badge_id: int | None, options: ReadOptions
) -> Iterator[tuple[Row, str, str, Entry | None, str | None]]:
    """Each row, its category and reason, its journal entry and the address that holds it."""
    with open_source(learners, replace(options, badge_id=badge_id)) as source:
        fixes = _Fixes(journal, _own_fixes(journal, learners))
        for row in source:
            category, reason, entry = _stands(row, journal, badge_id)
            email = row.learner.email if row.learner is not None else None
            if category not in ("issued", "already_held"):
                # Fixed in a failures file and fed back: the fix holds it (as `issue` of
                # that file said), though this row, unfixed, cannot be sent.
                fixed = fixes.holding(row, badge_id, _fixable(row, entry))
                if fixed is not None:
                    category, reason, entry, email = _CATEGORY[fixed.state], "", fixed, fixed.email
            yield row, category, reason, entry, email


def _fed_back(row: Row) -> bool:
    """Whether the row is one of a failures file fed back (its `row` and `reason` first)."""
    return failures_file_columns(list(row.fields))


def _record_fixes(
    journal: Journal, source: str | os.PathLike[str], fixed: set[tuple[int, str]]
) -> None:
    """Add the learners holding the badge through the rows of the failures file `source`
    to those the journal records of it."""
    recorded = journal.meta(_FIXES_META)
    table = dict(recorded) if isinstance(recorded, dict) else {}
    name = str(Path(source).resolve())
    before = table.get(name)
    known = {(b, k) for b, k in before} if isinstance(before, list) else set()
    table[name] = [list(pair) for pair in sorted(known | fixed)]
    journal.set_meta(_FIXES_META, table)


def _own_fixes(journal: Journal, source: str | os.PathLike[str]) -> set[tuple[int, str]]:
    """The learners holding the badge through the rows of `source`'s own failures file
    (`STEM.failures.csv` or `.jsonl` beside it) fed back, as recorded."""
    recorded = journal.meta(_FIXES_META)
    if not isinstance(recorded, dict):
        return set()
    path = Path(source).resolve()
    own: set[tuple[int, str]] = set()
    # The file itself too: a failures file is its own (rewritten in place when fed back).
    for name in (path, *(path.with_name(path.stem + s) for s in _FAILURES_SUFFIXES)):
        listed = recorded.get(str(name))
        for pair in listed if isinstance(listed, list) else ():
            if isinstance(pair, list) and len(pair) == 2:
                own.add((int(pair[0]), str(pair[1])))
    return own


def _not_in_file(
    journal: Journal, badge_id: int | None, seen: set[tuple[int, str]]
) -> Iterator[Entry]:
    """The learners holding the badge through the journal whom no row of the input is: a
    row removed from the export after its learner was issued still holds it, and
    `--successes` is every learner holding the badge through the journal, across runs.

    Args:
        journal: the journal.
        badge_id: the run's badge; None (each row names its own): every badge.
        seen: the (badge, key) of the entries the input's rows stand by.
    """
    for entry in journal.entries(State.ISSUED, State.HELD):
        if (badge_id is None or entry.badge_id == badge_id) and (
            entry.badge_id,
            entry.key,
        ) not in seen:
            yield entry


def _gone(entry: Entry) -> str:
    """What `--successes` says of a learner no row of the input is."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(entry.updated_at))
    return f"not in this file (recorded in the journal {when})"


def _stands(row: Row, journal: Journal, badge_id: int | None) -> tuple[str, str, Entry | None]:
    invalid = invalid_outcome(row, badge_id)
    if invalid is not None or row.learner is None:
        return "invalid", (invalid.reason if invalid else "") or "invalid", None
    badge = row.learner.badge_id or badge_id
    assert badge is not None
    entry = journal.get(badge, row.learner.key)
    if entry is None:
        return "not_attempted", "not attempted: rerun the same command", None
    if entry.state is State.SENDING:
        reason = entry.reason or "a send went unanswered: rerun the same command to ask the server"
    elif entry.state is State.FAILED:
        reason = entry.reason or "failed"
    else:
        reason = ""
    return _CATEGORY[entry.state], reason, entry


def _fixable(row: Row, entry: Entry | None) -> set[str]:
    """The columns a fix of this row may have changed: those its problems name, or, for a
    learner the server refused (or not yet answered), the cells of its address."""
    columns = {problem.column for problem in row.problems}
    if row.learner is not None and entry is not None:
        address = (entry.email or row.learner.email).strip()
        columns |= {key for key, value in row.fields.items() if value.strip() == address}
    return columns


class _Fixes:
    """The learners holding the badge through this input's own failures file fed back.

    A failures file keeps each row's number in the original file, so its fixes are
    journaled at those numbers, with its `row` and `reason` columns among their fields. A
    number alone proves nothing (the file is exported again and another learner is that
    row now; another input sharing the journal has a row of that number), so a fix counts
    for a row only when it came from this input's own failures file (as recorded when it
    was fed back) and differs from the row in no cell but those the row's fault is in.
    When in doubt it does not count: the row stays in the failures file.
    Read from the journal once, when the first row not holding the badge asks.

    Args:
        journal: the journal.
        own: the (badge, key) of the learners holding the badge through this input's own
            failures file.
    """

    def __init__(self, journal: Journal, own: set[tuple[int, str]]) -> None:
        self._journal = journal
        self._own = own
        self._by_row: dict[int, list[Entry]] | None = None

    def holding(self, row: Row, badge_id: int | None, fixable: set[str]) -> Entry | None:
        """The fix holding the badge for `row`, whose cells in `fixable` may differ."""
        if not self._own:
            return None
        if self._by_row is None:
            self._by_row = {}
            for entry in self._journal.entries(State.ISSUED, State.HELD):
                if (
                    entry.row is not None
                    and entry.fields
                    and failures_file_columns(list(entry.fields))
                    and (entry.badge_id, entry.key) in self._own
                ):
                    self._by_row.setdefault(entry.row, []).append(entry)
        found = [
            entry
            for entry in self._by_row.get(row.number, ())
            if (badge_id is None or entry.badge_id == badge_id)
            and _same_row(entry.fields or {}, row.fields, fixable)
        ]
        return found[0] if len(found) == 1 else None


def _same_row(fixed: Mapping[str, str], row: Mapping[str, str], fixable: set[str]) -> bool:
    """Whether a fed-back row is `row` fixed: the same columns, the same cells but those
    a fix may change."""
    ours = _own_columns(list(fixed))
    if ours != _own_columns(list(row)):
        return False
    return all(fixed[key] == row[key] for key in ours if key not in fixable)


def _own_columns(keys: list[str]) -> list[str]:
    """The input's columns among a row's keys: not a failures file's own, nor overflow."""
    if failures_file_columns(keys):
        keys = keys[2:]
    return [key for key in keys if not key.startswith("(column ")]


def _how(category: str, entry: Entry | None, since: float | None) -> str:
    if category == "already_held":
        return "already held the badge before"
    flags = [flag for flag in ((entry.flags if entry else None) or "").split(",") if flag]
    for flag in flags:
        if flag in _HOW:
            return _HOW[flag]
    if since is not None and entry is not None and entry.updated_at >= since:
        return "issued now"
    return "issued by an earlier run" if since is not None else "issued"


def find_journals(source: str | os.PathLike[str]) -> list[Path]:
    """The journals that runs of `source` left beside it: one per badge, and one of a run
    without a badge (the file's `badge_id` column)."""
    path = Path(source)
    found = sorted(path.parent.glob(f"{glob.escape(path.name)}.badge-*.journal.db"))
    own = default_journal_path(path, None)
    return [own, *found] if own.is_file() else found
