"""The local shared store: one SQLite file (WAL) per account under the user's data directory.

Every run of one account on this machine (commands, services, library instances) opens
the same file, so they share one slot schedule and one claim ledger with no set-up.
Every operation runs in a short `BEGIN IMMEDIATE` transaction: SQLite's write lock is what
makes a reservation or a claim atomic across processes. The writes a process asks for in
one turn of its event loop share one transaction and one commit (a group commit).
Commits are not flushed to disk (`synchronous=NORMAL`): a power cut may forget the last
slots and claims, which only costs a lookup (the journal of each run is the durable
record).

A claim names its run's process; a claim whose process has died (kill -9) is taken over
at once, with a lookup first. A lease bounds the rest (a process in another PID
namespace, a reused PID).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from ..errors import UnavailableError
from .gcra import PaceState, Window, rate_limited, reserve
from .protocol import Claim, Ending, Verdict
from .runs import alive_here

__all__ = ["LocalCoordinator", "default_folder"]

_T = TypeVar("_T")

#: Seconds a run waits for others that are creating the same store at the same instant.
_OPEN_PATIENCE = 10.0

#: A claim whose run is about to send (or has sent) the learner.
_SENDING = "sending"

#: Settled claims are remembered this long: concurrent runs need them; a later run finds
#: the learner among the badge's holders.
RETAIN = 86400.0

_SCHEDULE_COLUMNS = (
    "id",
    "tat",
    "resume_at",
    "floor",
    "floor_until",
    "owner",
    "last",
    "streak",
    "fence",
    "ring",
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS schedule (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    tat REAL NOT NULL, resume_at REAL NOT NULL, floor REAL NOT NULL, floor_until REAL NOT NULL,
    owner TEXT NOT NULL, last REAL NOT NULL, streak INTEGER NOT NULL, fence REAL NOT NULL,
    ring TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS claims (
    badge_id   INTEGER NOT NULL,
    learner    TEXT    NOT NULL,
    run_id     TEXT    NOT NULL,
    ending     TEXT,               -- NULL while claimed, 'sending' once a send may leave
    host       TEXT    NOT NULL,
    pid        INTEGER NOT NULL,
    expires_at REAL    NOT NULL,
    at         REAL    NOT NULL,
    PRIMARY KEY (badge_id, learner)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS claims_by_run ON claims (run_id);
"""


def default_folder() -> Path:
    """Where the local stores live: `platformdirs.user_data_dir("bulk-issuer")`."""
    import platformdirs

    return Path(platformdirs.user_data_dir("bulk-issuer", appauthor=False))


class LocalCoordinator:
    """Slots and claims shared by every process of one account on this machine.

    Args:
        account: the account's key (`account_key`), the file's name.
        folder: where the file lives; default `default_folder()`.
    """

    def __init__(self, account: str, folder: Path | None = None) -> None:
        self.path = (folder or default_folder()) / f"{account}.db"
        self.name = f"local store {self.path}"
        self._db: sqlite3.Connection | None = None
        self._batch: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._host = socket.gethostname()
        self._pid = os.getpid()

    async def open(self) -> None:
        """Create or open the file; `UnavailableError` if it cannot be written."""
        deadline = time.monotonic() + _OPEN_PATIENCE
        while True:
            try:
                self._db = self._connect()
                return
            except sqlite3.OperationalError as exc:
                # Runs started at the same instant race to create the file and switch it
                # to WAL; SQLite's busy handler does not cover that switch: try again.
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise self._unopened(exc) from None
            except (OSError, sqlite3.Error) as exc:
                raise self._unopened(exc) from None
            await asyncio.sleep(0.02)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            columns = [row[1] for row in db.execute("PRAGMA table_info(schedule)")]
            if columns and columns != list(_SCHEDULE_COLUMNS):
                # The schedule of an older version: it holds nothing worth keeping beyond a
                # few seconds, so it is started afresh in this version's shape.
                db.execute("DROP TABLE schedule")
            db.executescript(_SCHEMA)
            db.execute(
                "DELETE FROM claims WHERE at < ? AND (ending IS NOT NULL OR expires_at < ?)",
                (time.time() - RETAIN, time.time() - RETAIN),
            )
        except BaseException:
            db.close()
            raise
        return db

    def _unopened(self, exc: BaseException) -> UnavailableError:
        return UnavailableError(
            f"the {self.name} cannot be opened: {exc}; set XDG_DATA_HOME to a writable "
            "folder, or run with --coordinator memory (this run alone: no budget or "
            "claims shared with other runs)",
            host=str(self.path),
        )

    async def close(self) -> None:
        """Close the file."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("open the coordinator first")
        return self._db

    def _fail(self, exc: BaseException) -> UnavailableError:
        return UnavailableError(f"the {self.name} failed: {exc}", host=str(self.path))

    async def _write(self, op: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `op` in a write transaction, together with every other write of this process
        asked for in the same turn of the event loop (one commit for all of them)."""
        self._connection()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[_T] = loop.create_future()
        self._batch.append((op, done))
        if len(self._batch) == 1:
            loop.call_soon(self._commit)
        return await done

    def _commit(self) -> None:
        batch, self._batch = self._batch, []
        db = self._connection()
        results: list[object] = []
        try:
            # IMMEDIATE: the write lock is taken before anything is read, so that what a
            # claim or a reservation reads cannot change before it writes.
            db.execute("BEGIN IMMEDIATE")
            try:
                results = [op(db) for op, _ in batch]
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except Exception as exc:
            # Every caller of the batch hears of it; a bug must not leave one waiting.
            error = self._fail(exc) if isinstance(exc, sqlite3.Error) else exc
            for _, done in batch:
                if not done.done():
                    done.set_exception(error)
            return
        for (_, done), result in zip(batch, results, strict=True):
            if not done.done():
                done.set_result(result)

    async def reserve(
        self,
        interval: float,
        *,
        urgent: bool = False,
        owner: str = "",
        alone: int = 0,
        fence: float = 0.0,
        window: Window | None = None,
    ) -> float:
        """Reserve the next slot; see `Coordinator.reserve`."""

        def op(db: sqlite3.Connection) -> float:
            now = time.time()
            at, after = reserve(_pace(db), now, interval, owner, alone, fence, window)
            _store(db, after)
            return at - now

        return await self._write(op)

    async def rate_limited(self, pause: float, interval: float) -> None:
        """Pause and widen; see `Coordinator.rate_limited`."""

        def op(db: sqlite3.Connection) -> None:
            _store(db, rate_limited(_pace(db), time.time(), pause, interval))

        await self._write(op)

    async def clock(self) -> float:
        """This machine's wall clock, which every process here shares."""
        return time.time()

    async def claim(
        self,
        badge_id: int,
        learner_key: str,
        run_id: str,
        lease_seconds: float,
        *,
        since: float = -math.inf,
    ) -> Claim:
        """Claim a learner; see `Coordinator.claim`."""
        return await self._write(
            lambda db: self._claim(db, badge_id, learner_key, run_id, lease_seconds, since)
        )

    def _claim(
        self,
        db: sqlite3.Connection,
        badge_id: int,
        learner: str,
        run_id: str,
        lease: float,
        since: float,
    ) -> Claim:
        now = time.time()
        # The common case, a learner nobody has claimed, in one statement.
        fresh = db.execute(
            "INSERT INTO claims VALUES (?, ?, ?, NULL, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (badge_id, learner, run_id, self._host, self._pid, now + lease, now),
        )
        if fresh.rowcount == 1:
            return Claim(Verdict.GRANTED)
        row = db.execute(
            "SELECT run_id, ending, host, pid, expires_at, at FROM claims "
            "WHERE badge_id = ? AND learner = ?",
            (badge_id, learner),
        ).fetchone()
        verify = False
        if row is not None:
            holder, ending, host, pid, expires_at, at = row
            if ending in (Ending.ISSUED, Ending.HELD):
                if at >= since:
                    return Claim(Verdict.DONE, holder)
            elif holder != run_id:
                live = ending in (None, _SENDING)
                if live and expires_at > now and self._alive(host, pid, holder):
                    return Claim(Verdict.HELD, holder)
            # A dead run that may have sent it, a send that went unanswered, or this run's
            # own claim of it cut short by a cancellation: it may have been processed, so
            # the server is asked first.
            verify = ending in (_SENDING, Ending.UNCONFIRMED)
        db.execute(
            "INSERT OR REPLACE INTO claims VALUES (?, ?, ?, NULL, ?, ?, ?, ?)",
            (badge_id, learner, run_id, self._host, self._pid, now + lease, now),
        )
        return Claim(Verdict.GRANTED, verify=verify)

    def _alive(self, host: str, pid: int, run_id: str) -> bool:
        if host != self._host:
            return True  # another machine's (or namespace's) process: the lease decides
        if pid == self._pid:
            return alive_here(run_id)  # a run of this process that ended left it behind
        return _process_alive(pid)

    async def sending(self, badge_id: int, learner_key: str, run_id: str) -> bool:
        """Note a send; see `Coordinator.sending`."""
        changed = await self._write(
            lambda db: (
                db.execute(
                    "UPDATE claims SET ending = ? WHERE badge_id = ? AND learner = ? AND run_id = ?"
                    " AND (ending IS NULL OR ending = ?)",
                    (_SENDING, badge_id, learner_key, run_id, _SENDING),
                ).rowcount
            )
        )
        return bool(changed)

    async def confirm(
        self, badge_id: int, learner_key: str, run_id: str, lease_seconds: float
    ) -> bool:
        """Whether the claim is still the run's; see `Coordinator.confirm`."""
        changed = await self._write(
            lambda db: (
                db.execute(
                    "UPDATE claims SET expires_at = ? WHERE badge_id = ? AND learner = ?"
                    " AND run_id = ? AND (ending IS NULL OR ending = ?)",
                    (time.time() + lease_seconds, badge_id, learner_key, run_id, _SENDING),
                ).rowcount
            )
        )
        return bool(changed)

    async def renew(self, run_id: str, lease_seconds: float) -> None:
        """Extend this run's claims; see `Coordinator.renew`."""
        await self._write(
            lambda db: db.execute(
                "UPDATE claims SET expires_at = ? WHERE run_id = ?"
                " AND (ending IS NULL OR ending = ?)",
                (time.time() + lease_seconds, run_id, _SENDING),
            )
        )

    async def settle(self, badge_id: int, learner_key: str, run_id: str, ending: Ending) -> None:
        """Record how a run left a learner; see `Coordinator.settle`."""

        def op(db: sqlite3.Connection) -> None:
            if ending is Ending.RELEASED:
                db.execute(
                    "DELETE FROM claims WHERE badge_id = ? AND learner = ? AND run_id = ?",
                    (badge_id, learner_key, run_id),
                )
            else:
                db.execute(
                    "UPDATE claims SET ending = ?, at = ? "
                    "WHERE badge_id = ? AND learner = ? AND run_id = ?",
                    (ending.value, time.time(), badge_id, learner_key, run_id),
                )

        await self._write(op)


def _pace(db: sqlite3.Connection) -> PaceState:
    row = db.execute(
        "SELECT tat, resume_at, floor, floor_until, owner, last, streak, fence, ring "
        "FROM schedule WHERE id = 1"
    ).fetchone()
    if not row:
        return PaceState()
    return replace(PaceState(*row[:8]), ring=_ring(row[8]))


def _ring(text: str) -> tuple[tuple[str, float, float], ...]:
    """The stored ring; one that cannot be read is forgotten (it only ever slows runs)."""
    try:
        return tuple((str(key), float(at), float(by)) for key, at, by in json.loads(text))
    except (TypeError, ValueError):
        return ()


def _store(db: sqlite3.Connection, state: PaceState) -> None:
    db.execute(
        "INSERT OR REPLACE INTO schedule VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            _finite(state.tat),
            _finite(state.resume_at),
            state.floor,
            _finite(state.floor_until),
            state.owner,
            _finite(state.last),
            state.streak,
            _finite(state.fence),
            json.dumps(state.ring),
        ),
    )


def _finite(value: float) -> float:
    # SQLite stores -inf as a REAL, but keep the file readable by any tool.
    return max(value, -1e18)


def _process_alive(pid: int) -> bool:
    """Whether a process of this machine still runs (a zombie, killed but unreaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # The state letter follows the command name's closing parenthesis.
    return stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] not in ("Z", "X")
