"""The journal: an SQLite ledger of every learner's fate, written before each send.

One row per (badge, learner key). A learner is marked `sending` and committed before its
request leaves, and marked with the answer after it comes back, so a crash at any instant
leaves either a final state or `sending` (ambiguous: ask the server before sending again).

Writes gather in one transaction that is committed a millisecond later: every request
about to leave waits for that commit (`committed()`), and all the writes of that moment
share it, so a busy run pays for one commit per moment, not two per learner.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import JournalError

__all__ = ["Entry", "Journal", "State", "default_journal_path"]


#: Seconds writes wait for company before a commit: a millisecond gathers every worker's
#: writes of a busy moment into one commit, and delays a paced request by nothing that matters.
_COMMIT_DELAY = 0.001


class State(enum.StrEnum):
    """Where a learner stands."""

    SENDING = "sending"
    ISSUED = "issued"
    HELD = "already_held"
    FAILED = "failed"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS learners (
    badge_id     INTEGER NOT NULL,
    key          TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    row          INTEGER,
    email        TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    http_status  INTEGER,
    reason       TEXT,
    assertion_id TEXT,
    flags        TEXT,
    fields       TEXT,
    created_at   REAL    NOT NULL,
    updated_at   REAL    NOT NULL,
    PRIMARY KEY (badge_id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Entry:
    """One learner's line in the journal."""

    badge_id: int
    key: str
    state: State
    row: int | None
    email: str | None
    attempts: int
    http_status: int | None
    reason: str | None
    assertion_id: str | None
    flags: str | None
    fields: Mapping[str, str] | None
    #: When the entry last changed (wall clock, seconds since the epoch).
    updated_at: float = 0.0


def default_journal_path(source: str | Path, badge_id: int | None) -> Path:
    """Where the journal of a file's run lives when `--journal` is not given: beside it."""
    path = Path(source)
    suffix = f".badge-{badge_id}" if badge_id is not None else ""
    return path.with_name(f"{path.name}{suffix}.journal.db")


class Journal:
    """The SQLite ledger (WAL, one writer). `path=None` keeps it in memory for one run.

    Writes are committed within a millisecond, and `committed()` waits for that: the
    engine awaits it between marking a learner `sending` and sending its request.

    One run at a time: the file is locked for as long as it is open, so a second run of
    the same cohort cannot send the same learners in parallel; it is told so and stops.

    Args:
        path: the SQLite file, created if missing; None keeps the journal in memory.
        read_only: only read it (`report`, a dry run): nothing is written, the file is
            not locked against a run, and a folder that cannot be written will do.

    Raises:
        JournalError: the file is in use by another run, or is not a journal (or, read
            only, cannot be read where it is).
    """

    def __init__(self, path: str | Path | None = None, *, read_only: bool = False) -> None:
        self.path = None if path is None else Path(path)
        if read_only and self.path is not None:
            self._db = _open_read_only(self.path)
            self._db.row_factory = sqlite3.Row
            self._pending: asyncio.Future[None] | None = None
            self._timer: asyncio.TimerHandle | None = None
            self._user: object | None = None
            return
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        target = ":memory:" if self.path is None else str(self.path)
        fresh = self.path is not None and not self.path.exists()
        try:
            self._db = sqlite3.connect(
                target, isolation_level=None, check_same_thread=False, timeout=1.0
            )
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"cannot use {target} as a journal: {exc}", path=target) from None
        try:
            # Exclusive: no second run on this journal at once (it would send the same
            # learners), and no file-lock calls on every commit.
            self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives any crash of this process (SIGKILL included);
            # only a power cut can lose the last commits.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            self._db.close()  # a refused journal leaves no file open
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise JournalError(
                    f"the journal {target} is in use by another run of bulk-issuer; "
                    "wait for it to finish (or stop it), then run again",
                    path=target,
                ) from None
            if fresh and self.path is not None:
                # Created just now and never written (a full disk): a 0-byte file left
                # behind would be taken for a journal by the next run.
                _remove(self.path)
            if isinstance(exc, sqlite3.OperationalError):
                raise _unwritable(target, exc) from None
            raise JournalError(f"cannot use {target} as a journal: {exc}", path=target) from None
        self._db.row_factory = sqlite3.Row
        self._pending = None
        self._timer = None
        self._user = None

    def take(self, user: object) -> None:
        """Let `user` (an issuer) use this open journal: one at a time, as the file lock
        allows one process at a time.

        Args:
            user: the one that will use it.

        Raises:
            JournalError: another issuer of this process is using it.
        """
        if self._user is not None and self._user is not user:
            where = self.path if self.path is not None else "in memory"
            raise JournalError(
                f"the journal {where} is in use by another issuer in this process; "
                "wait for it to finish, or give each its own journal",
                path=str(where),
            )
        self._user = user

    def release(self, user: object) -> None:
        """`user` is done with it (see `take`).

        Args:
            user: the one that took it.
        """
        if self._user is user:
            self._user = None

    def close(self) -> None:
        """Commit and close (closed even when the commit fails).

        Raises:
            JournalError: the last writes could not be committed (a full disk), naming
                the journal.
        """
        try:
            self._commit_pending()
        except sqlite3.Error as exc:
            raise _unwritable(self._where(), exc) from None
        finally:
            self._db.close()

    def commit(self) -> None:
        """Commit what was written since the last commit, now."""
        if self._db.in_transaction:
            self._db.execute("COMMIT")

    async def committed(self) -> None:
        """Return once everything written so far is committed (shared by all who ask now)."""
        if self._db.in_transaction:
            await asyncio.shield(self._commit_soon())

    def _commit_soon(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        if self._pending is None or self._pending.get_loop() is not loop:
            self._pending = loop.create_future()
            self._timer = loop.call_later(_COMMIT_DELAY, self._commit_pending)
        return self._pending

    def _commit_pending(self) -> None:
        pending, self._pending = self._pending, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            self.commit()
        except sqlite3.Error as exc:
            if pending is not None and not pending.done():
                pending.set_exception(exc)
                # Every send waiting for this commit raises it; marked as seen so that a
                # commit nobody waits for any more is not reported again as unretrieved.
                pending.exception()
            elif pending is None:
                raise
        else:
            if pending is not None and not pending.done():
                pending.set_result(None)

    def _write(self, sql: str, params: Sequence[object]) -> None:
        """Write inside the open transaction; it is committed a moment later."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no running loop (a synchronous caller): commit at once
            self._write_now(sql, params)
            return
        if not self._db.in_transaction:
            self._db.execute("BEGIN")
        self._db.execute(sql, params)
        self._commit_soon()

    def _write_now(self, sql: str, params: Sequence[object]) -> None:
        """Write and commit at once, outside a run (its settings before it, `report`'s
        fixes after it).

        A write that fails (a full disk) is undone, so that closing the journal does not
        try it again, and raised as the journal's error, naming it: the command stops
        before anything is sent, with the exit status of a journal that cannot be used,
        not as a bug. Writes still pending from a run are committed first, on their own,
        and never undone.

        Raises:
            JournalError: the journal could not be written.
        """
        try:
            self.commit()
        except sqlite3.Error as exc:
            raise _unwritable(self._where(), exc) from None
        try:
            self._db.execute("BEGIN")
            self._db.execute(sql, params)
            self.commit()
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            raise _unwritable(self._where(), exc) from None

    def _where(self) -> str:
        return str(self.path) if self.path is not None else "in memory"

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def set_meta(self, name: str, value: object) -> None:
        """Remember something about the input (its columns, dialect) for `report`.

        Args:
            name: what it is.
            value: anything JSON can hold.
        """
        self._write(
            "INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, json.dumps(value))
        )

    def meta(self, name: str) -> object:
        """What `set_meta` stored.

        Args:
            name: what it was stored as.

        Returns:
            The value, or None when nothing is stored under `name`.
        """
        found = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if found is None else json.loads(found[0])

    def get(self, badge_id: int, key: str) -> Entry | None:
        """The learner's entry, if any run has seen it.

        Args:
            badge_id: the badge.
            key: the learner's key (`Learner.key`: the normalised email, or the user id).

        Returns:
            The entry, or None.
        """
        found = self._db.execute(
            "SELECT * FROM learners WHERE badge_id = ? AND key = ?", (badge_id, key)
        ).fetchone()
        return None if found is None else _entry(found)

    def is_empty(self) -> bool:
        """Whether no learner has been recorded yet (a first run needs no look-ups).

        Returns:
            True for a journal no run has recorded a learner in.
        """
        return self._db.execute("SELECT 1 FROM learners LIMIT 1").fetchone() is None

    def badges(self) -> list[int]:
        """The badges the journal holds learners of (`report` of a journal named by
        `--journal`, which its name does not tell).

        Returns:
            The badge ids, in order.
        """
        return [
            found[0]
            for found in self._db.execute(
                "SELECT DISTINCT badge_id FROM learners ORDER BY badge_id"
            )
        ]

    def mark_sending(
        self,
        badge_id: int,
        key: str,
        *,
        row: int,
        email: str,
        attempts: int,
        fields: Mapping[str, str] | None,
    ) -> None:
        """Record attempt number `attempts` about to leave.

        Args:
            badge_id: the badge.
            key: the learner's key.
            row: the learner's row in the input.
            email: the address as written in the input.
            attempts: the number of this send, over all runs.
            fields: the input row, stored for the failures file; None keeps what is stored.
        """
        now = time.time()
        self._write(
            "INSERT INTO learners (badge_id, key, state, row, email, attempts, fields,"
            " created_at, updated_at) VALUES (?, ?, 'sending', ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (badge_id, key) DO UPDATE SET state = 'sending', row = excluded.row,"
            " email = excluded.email, attempts = excluded.attempts,"
            " fields = coalesce(excluded.fields, fields), updated_at = excluded.updated_at",
            (badge_id, key, row, email, attempts, _dumps(fields), now, now),
        )

    def mark(
        self,
        badge_id: int,
        key: str,
        state: State,
        *,
        row: int,
        email: str,
        fields: Mapping[str, str] | None,
        http_status: int | None = None,
        reason: str | None = None,
        assertion_id: str | None = None,
        flags: str | None = None,
    ) -> None:
        """Record where a learner now stands (the answer, or what the server said it holds).

        Args:
            badge_id: the badge.
            key: the learner's key.
            state: where it stands now.
            row: the learner's row in the input.
            email: the address as written in the input.
            fields: the input row for the failures file; None keeps what is stored.
            http_status: the last answer's status, if any.
            reason: why it failed, in words.
            assertion_id: the server's id for the issued badge, when known.
            flags: comma-separated notes such as `verified`.
        """
        now = time.time()
        self._write(
            "INSERT INTO learners (badge_id, key, state, row, email, attempts, http_status,"
            " reason, assertion_id, flags, fields, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (badge_id, key) DO UPDATE SET state = excluded.state,"
            " row = excluded.row, email = excluded.email, http_status = excluded.http_status,"
            " reason = excluded.reason,"
            " assertion_id = coalesce(excluded.assertion_id, assertion_id),"
            " flags = coalesce(excluded.flags, flags),"
            " fields = coalesce(excluded.fields, fields),"
            " updated_at = excluded.updated_at",
            (
                badge_id,
                key,
                str(state),
                row,
                email,
                http_status,
                reason,
                assertion_id,
                flags,
                _dumps(fields),
                now,
                now,
            ),
        )

    def restore(self, badge_id: int, key: str, entry: Entry | None) -> None:
        """Put a learner back as it stood before a send that never left.

        Args:
            badge_id: the badge.
            key: the learner's key.
            entry: how it stood before; None removes it.
        """
        if entry is None:
            self._write("DELETE FROM learners WHERE badge_id = ? AND key = ?", (badge_id, key))
            return
        self._write(
            "UPDATE learners SET state = ?, attempts = ?, http_status = ?, reason = ?,"
            " updated_at = ? WHERE badge_id = ? AND key = ?",
            (
                str(entry.state),
                entry.attempts,
                entry.http_status,
                entry.reason,
                time.time(),
                badge_id,
                key,
            ),
        )

    def counts(self) -> dict[str, int]:
        """How many learners stand in each state (invalid rows are not learners: `report`
        finds them by reading the input again).

        Returns:
            state (`sending`, `issued`, `already_held`, `failed`) -> count.
        """
        counts = {str(state): 0 for state in State}
        for state, number in self._db.execute(
            "SELECT state, count(*) FROM learners GROUP BY state"
        ):
            counts[state] = number
        return counts

    def entries(self, *states: State) -> Iterator[Entry]:
        """The learners in any of `states`, in input order.

        Args:
            states: the states wanted; none given: every learner.

        Returns:
            An iterator of entries.
        """
        where = f" WHERE state IN ({', '.join('?' * len(states))})" if states else ""
        cursor = self._db.execute(
            f"SELECT * FROM learners{where} ORDER BY row", [str(s) for s in states]
        )
        return (_entry(found) for found in cursor)


def _open_read_only(path: Path) -> sqlite3.Connection:
    """A journal opened to be read (`report`, a dry run): it writes nothing, not even in
    its folder, which may be read-only.

    SQLite reads a WAL journal through its -wal and -shm files, which it must create
    beside it; in a folder that cannot take them, a journal whose every write was merged
    (no -wal left, as a finished run leaves it) is read as the immutable file it is there.
    """
    uri = path.resolve().as_uri()
    wal = Path(f"{path}-wal")
    pending = wal.exists() and wal.stat().st_size > 0
    attempts = [f"{uri}?mode=ro"]
    if not pending and not os.access(path.parent, os.W_OK):
        attempts.insert(0, f"{uri}?immutable=1")
    for target in attempts:
        try:
            db = sqlite3.connect(target, uri=True, isolation_level=None, timeout=1.0)
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"cannot read {path} as a journal: {exc}", path=str(path)) from None
        try:
            db.execute("SELECT 1 FROM learners LIMIT 1").fetchall()
            db.execute("SELECT 1 FROM meta LIMIT 1").fetchall()
        except sqlite3.DatabaseError as exc:
            db.close()
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise JournalError(
                    f"the journal {path} is in use by a run of bulk-issuer; wait for it to "
                    "finish, then ask again",
                    path=str(path),
                ) from None
            if not os.access(path.parent, os.W_OK):
                unmerged = " and it holds writes not yet merged (its -wal file)" if pending else ""
                raise JournalError(
                    f"cannot read the journal {path}: its folder is read-only{unmerged}; "
                    "SQLite needs to write beside it. Copy the journal (with its -wal) to a "
                    "folder that can be written and pass --journal",
                    path=str(path),
                ) from None
            if isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc):
                raise JournalError(f"{path} is not a journal", path=str(path)) from None
            raise JournalError(f"cannot read {path} as a journal: {exc}", path=str(path)) from None
        return db
    raise AssertionError("unreachable: at least one way to open")


def _unwritable(where: str, exc: sqlite3.Error) -> JournalError:
    """The journal could not be written (a full disk, a read-only file): said as such."""
    return JournalError(f"the journal {where} could not be written: {exc}", path=where)


def _remove(path: Path) -> None:
    """Remove a journal and its SQLite side files, as far as they exist."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def _entry(found: sqlite3.Row) -> Entry:
    return Entry(
        badge_id=found["badge_id"],
        key=found["key"],
        state=State(found["state"]),
        row=found["row"],
        email=found["email"],
        attempts=found["attempts"],
        http_status=found["http_status"],
        reason=found["reason"],
        assertion_id=found["assertion_id"],
        flags=found["flags"],
        fields=json.loads(found["fields"]) if found["fields"] else None,
        updated_at=found["updated_at"],
    )


def _dumps(fields: Mapping[str, str] | None) -> str | None:
    if fields is None:
        return None
    return json.dumps(dict(fields), ensure_ascii=False, separators=(",", ":"))
