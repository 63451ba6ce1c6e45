"""`BadgeIssuer`: one session, pacer, token and journal for cohorts and single learners.

```
BadgeIssuer.run(learners)   -> Cohort (cohort.py): producer -> queue -> workers
BadgeIssuer.issue(learner)  -> the same executor, for a service issuing as completions arrive
                               executor.settle -> LearnerFlow (flow.py) -> request path (client.py)
```
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import anyio

from .auth import Auth, PasswordAuth, PersonalAccessToken
from .client import DEFAULT_BASE_URL, NavigatrClient, Stopping, new_session
from .cohort import (
    Cohort,
    LearnerInput,
    describe_source,
    invalid_outcome,
    know_badge,
    rows_of,
)
from .coordination import IN_PROCESS, ClaimLedger, Coordinator, SharedSlots, choose
from .errors import CredentialsRejected, FatalError, InputError, StoppedError
from .events import (
    Event,
    EventSink,
    Logger,
    LogSink,
    RunFinished,
    RunStarted,
    check_callback,
    default_logger,
    fan_out,
)
from .executor import (
    Badge,
    Context,
    Job,
    already_done,
    check_badge,
    claim,
    refused,
    remember,
    settle,
)
from .flow import LearnerFlow
from .journal import Journal, State
from .learners import Learner, Row
from .lookups import AssertionLookup
from .outcomes import Outcome, Status, Summary
from .pacing import DEFAULT_MARGIN, DEFAULT_RATE, Pacer, Rate
from .readers import ReadOptions
from .retry import RetryPolicy
from .rows import RowBuilder

__all__ = ["BadgeIssuer", "Preflight", "default_workers"]


#: More concurrent learners than this only cost memory (100,000 took 800 MB and 11 s to
#: issue two badges): the pace, not the workers, sets the speed.
MAX_WORKERS = 1000


def default_workers(rate: Rate | None) -> int:
    """Enough workers to keep the pacer busy through a few hundred ms of latency and retries."""
    if rate is None:
        return 32
    return max(4, min(64, math.ceil(rate.per_second * 1.5) + 4))


@dataclass(frozen=True, slots=True)
class Preflight:
    """What was checked before a run: the credentials, the badge, who already holds it.

    Attributes:
        badge_id: the badge.
        badge_name: its name, when the API says it.
        badge_checked: the API confirmed the badge exists (False: it does not answer
            `GET /v1/badge/{id}`, and the first issue call will tell).
        holders: how many learners already hold it (None when not looked up).
        holders_complete: the holders list was read whole.
        note: anything the operator should know (a list that could not be read whole).
    """

    badge_id: int
    badge_name: str | None
    badge_checked: bool
    holders: int | None
    holders_complete: bool
    note: str | None = None


class _Tally:
    """Counts outcomes into a Summary as they are emitted."""

    def __init__(self) -> None:
        self.summary = Summary()

    def __call__(self, event: Event) -> None:
        if isinstance(event, Outcome):
            self.summary.count(event)


class BadgeIssuer:
    """Issues badges: one session, pacer, token and journal for as many calls as you like.

    Use it as an async context manager. `await issuer.run(learners, badge_id=...)` issues a
    cohort; `await issuer.issue(learner, badge_id=...)` one learner, from as many tasks at
    once as you like; both keep the same exactly-once promise through the journal.

    Args:
        auth: `PersonalAccessToken` or `PasswordAuth`.
        base_url: the API root; plain http only for loopback.
        rate: the server's budget, e.g. `"5/2s"`; `None` for no pacing (a sandbox without limit).
        workers: concurrent learners in a cohort run; the default suits the rate.
        journal: an SQLite file (or an open `Journal`) that makes runs resumable and
            `issue` exactly-once across restarts; `None` keeps state in memory.
        policy: retries, deadlines, how long an outage is ridden out.
        allow_duplicates: do not look up who already holds the badge before issuing.
        on_event: called with every typed event (outcomes, retries, waits, run start/end);
            a plain function, not an async one.
        on_outcome: called with each learner's `Outcome` as it is decided.
        logger: a structlog-style logger (or a standard `logging.Logger`) for the events;
            False for none. By default the library is quiet: it logs to
            `structlog.get_logger("bulk_issuer")` only if the application configured
            structlog, or to the standard `bulk_issuer` logger if logging has a handler.
        read_options: how to read files (delimiter, encoding, column map, consent column).
        margin: seconds of network jitter the pacer leaves in every window.
        coordinator: where the account's pacing budget and claims on learners are shared
            with every other run of the same account (API base URL and credentials):
            `"local"` for every run on this machine (an SQLite file under the user's data
            directory); `"redis://HOST:PORT/DB"` (or `rediss://`) for every host;
            `"memory"` for this issuer only. None: `$BULK_ISSUER_COORDINATOR`, else
            `"local"`. A `Coordinator` object is used as given (its owner opens and
            closes it).

    Raises:
        ValueError: an argument is out of range.
        TypeError: `on_event` or `on_outcome` is an async function (see `check_callback`).
    """

    def __init__(
        self,
        *,
        auth: Auth,
        base_url: str = DEFAULT_BASE_URL,
        rate: str | Rate | None = DEFAULT_RATE,
        workers: int | None = None,
        journal: str | os.PathLike[str] | Journal | None = None,
        policy: RetryPolicy | None = None,
        allow_duplicates: bool = False,
        on_event: EventSink | Callable[[Event], None] | None = None,
        on_outcome: Callable[[Outcome], None] | None = None,
        logger: Logger | logging.Logger | Literal[False] | None = None,
        read_options: ReadOptions | None = None,
        margin: float = DEFAULT_MARGIN,
        coordinator: str | Coordinator | None = None,
    ) -> None:
        if not isinstance(auth, PasswordAuth | PersonalAccessToken):
            raise ValueError("auth must be a PersonalAccessToken or a PasswordAuth")
        check_callback("on_event", on_event)
        check_callback("on_outcome", on_outcome)
        self.rate = Rate.parse(rate) if isinstance(rate, str) else rate
        self.workers = default_workers(self.rate) if workers is None else workers
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ValueError(f"workers must be 1 to {MAX_WORKERS}, got {workers}")
        self.pacer = Pacer(self.rate, margin=margin)
        self.policy = policy or RetryPolicy()
        self.allow_duplicates = allow_duplicates
        self.read_options = read_options or ReadOptions()
        self._auth = auth
        self._base_url = base_url
        identity = (
            auth.token.reveal()
            if isinstance(auth, PersonalAccessToken)
            else auth.username.strip().lower()
        )
        if coordinator is None:
            coordinator = os.environ.get("BULK_ISSUER_COORDINATOR", "").strip() or None
        #: The account's shared store; None: this issuer only, at no cost.
        self._coordinator: Coordinator | None = (
            None
            if coordinator == IN_PROCESS
            else choose(coordinator, base_url=base_url, identity=identity)
        )
        self._owns_coordinator = coordinator is None or isinstance(coordinator, str)
        self._claims: ClaimLedger | None = None
        self._journal_arg = journal
        chosen = default_logger() if logger is None else logger if logger is not False else None
        outcome_sink = None
        if on_outcome is not None:
            callback = on_outcome

            def outcome_sink(event: Event) -> None:
                if isinstance(event, Outcome):
                    callback(event)

        self._sinks: list[Callable[[Event], None] | None] = [
            LogSink(chosen) if chosen is not None else None,
            on_event,
            outcome_sink,
        ]
        self._emit = fan_out(self._sinks)
        self._stopping = anyio.Event()
        self._session: Any = None
        self._ctx: Context | None = None
        self._journal: Journal | None = None
        self._in_flight: dict[tuple[int, str], asyncio.Future[Outcome]] = {}
        self._calls: list[Context] = []  # the runs and dry runs under way
        self._issuing = 0  # the `issue` calls under way
        #: The summary of the last run, also after it raised.
        self.summary: Summary | None = None

    # -- lifetime ------------------------------------------------------------------------

    async def __aenter__(self) -> BadgeIssuer:
        self._stopping = anyio.Event()
        coordinator = self._coordinator
        if coordinator is not None:
            # Before anything else: a coordinator that cannot be had stops here, with
            # nothing sent and nothing opened.
            if self._owns_coordinator:
                await coordinator.open()
            self._claims = ClaimLedger(coordinator)
        try:
            if self._claims is not None:
                await self._claims.start(self._coordinator_lost)
                if self.rate is not None:
                    self.pacer.shared = SharedSlots(self._claims.coordinator)
            self._journal = _open_journal(self._journal_arg, self)
        except BaseException:
            # Nothing is left behind: not the ledger's renewals, not the store's file.
            await self._closing()
            raise
        self._session = new_session(self.workers + 2, self.pacer)
        client = NavigatrClient(
            self._session,
            self._base_url,
            self.pacer,
            self._auth,
            policy=self.policy,
            emit=self._emit,
            stopping=self._stopping,
        )
        self._ctx = Context(
            client=client,
            journal=self._journal,
            lookups=AssertionLookup(client, self._emit),
            emit=self._emit,
            on_stop=self.stop,
            claims=self._claims,
        )
        return self

    def _coordinator_lost(self, error: StoppedError) -> None:
        """The shared store stopped answering: stop taking learners (exit 4 on the CLI)."""
        if self._ctx is not None:
            self._ctx.stop_with(error)

    async def __aexit__(self, *exc_info: object) -> None:
        self._ctx = None
        await self._closing()

    async def _closing(self) -> None:
        """Close what `__aenter__` opened, whatever comes meanwhile.

        A cancellation from outside (`asyncio.wait_for`, `Task.cancel`) goes through
        anyio's shielding on asyncio, so the closing runs as a task of its own that is
        awaited to its end (it is bounded: a few seconds for the ledger at most) before
        the cancellation goes on: no journal is left locked, no renewal running, no
        connection open.
        """
        with anyio.CancelScope(shield=True):
            closing = asyncio.ensure_future(self._close())
            cancelled: asyncio.CancelledError | None = None
            while not closing.done():
                try:
                    await asyncio.shield(closing)
                except asyncio.CancelledError as exc:
                    cancelled = exc
            if cancelled is not None:
                raise cancelled

    async def _close(self) -> None:
        try:
            claims, self._claims = self._claims, None
            if claims is not None:
                # The outcomes still queued for the shared ledger are written first.
                await claims.stop()
        finally:
            self.pacer.shared = None
            try:
                if self._coordinator is not None and self._owns_coordinator:
                    await self._coordinator.close()
            finally:
                journal, self._journal = self._journal, None
                if journal is not None:
                    if isinstance(self._journal_arg, Journal):
                        journal.release(self)
                    else:
                        journal.close()
                session, self._session = self._session, None
                if session is not None:
                    await session.close()

    def stop(self) -> None:
        """Stop: no new learner starts and nothing not yet sent leaves; requests on the wire
        get a few seconds to be answered, and every learner is accounted for."""
        self._stopping.set()
        if self._ctx is not None:
            self._ctx.client.stop()

    @property
    def client(self) -> NavigatrClient:
        """The API client (inside `async with`)."""
        return self._context().client

    def _context(self) -> Context:
        if self._ctx is None:
            raise RuntimeError("use the BadgeIssuer inside `async with` first")
        return self._ctx

    def _begin(self) -> None:
        """A call begins: the runs under way no longer have the journal to themselves."""
        for other in self._calls:
            other.fresh_journal = False

    @contextlib.contextmanager
    def _call(self, tally: _Tally) -> Iterator[Context]:
        """A context of its own for one run or dry run, sharing the issuer's client,
        journal, badges and claims: its outcomes go to its own tally as well, and what
        stops it stops the issuer (and so every other call of it)."""
        base = self._context()
        alone = not self._calls and not self._issuing
        self._begin()
        ctx = replace(
            base,
            emit=fan_out([self._emit, tally]),
            fresh_journal=alone and base.journal.is_empty(),
            stopped=None,
        )

        def stopped() -> None:
            if ctx.stopped is not None:
                base.stop_with(ctx.stopped)

        ctx.on_stop = stopped
        self._calls.append(ctx)
        try:
            yield ctx
        finally:
            self._calls.remove(ctx)

    # -- before a run ----------------------------------------------------------------------

    async def preflight(self, badge_id: int) -> Preflight:
        """Check the credentials and the badge, and load who already holds it.

        Sends no issue call. The holders are kept for the run that follows.

        Args:
            badge_id: the badge, the number in its URL.

        Returns:
            What was found: the badge's name, whether the API confirmed it, the holders.

        Raises:
            CredentialsRejected: the credentials were refused.
            FatalError: the badge is unknown or forbidden to these credentials.
            UnavailableError: the API could not be reached.
        """
        ctx = self._context()
        client = ctx.client
        try:
            fresh = not ctx.badges.setdefault(badge_id, Badge()).checked
            badge = await check_badge(ctx, badge_id)
            if badge.refused is not None:
                raise FatalError(badge.refused)
            checked = badge.exists
            if fresh and not checked:
                # This API does not answer for badges: check the credentials another way;
                # the first issue call will say whether the badge exists.
                who = await client.request("GET", "/v1/user_detail/0")
                if who.status == 401:
                    raise CredentialsRejected(
                        f"the server refused the credentials (HTTP 401): {who.detail}"
                    )
            if not self.allow_duplicates and badge.needs_holders():
                badge.keep_holders(await ctx.lookups.holders(badge_id))
        except Stopping:
            raise StoppedError("stopped before the run began") from None
        holders = badge.holders
        return Preflight(
            badge_id=badge_id,
            badge_name=badge.name,
            badge_checked=checked,
            holders=len(holders.held) if holders is not None else None,
            holders_complete=holders.complete if holders is not None else False,
            note=holders.note if holders is not None else None,
        )

    async def dry_run(
        self, learners: LearnerInput, *, badge_id: int | None, offline: bool = False
    ) -> Summary:
        """Check and count everything, send no issue call.

        Unless `offline`, the credentials and the badge are checked and the holders loaded
        first (`preflight`, once per issuer: a badge already checked is not asked again),
        and so is each row's own badge on its first sight. Learners that would be sent are
        counted as `not_attempted`; those of a row's own badge that the API refused (404,
        403) as `failed`, naming it.

        Args:
            learners: as for `run`.
            badge_id: the badge; a learner's own `badge_id` wins.
            offline: check the input only, without asking the server anything.

        Returns:
            The counts the run would start from: invalid rows, learners done by an earlier
            run (skipped) or already holding the badge, of a refused badge (failed), the
            rest not attempted.

        Raises:
            CredentialsRejected, FatalError, UnavailableError: as `preflight`.
            InputError: the input cannot be read.
        """
        if not offline and badge_id is not None:
            await self.preflight(badge_id)
        started = anyio.current_time()
        tally = _Tally()
        with self._call(tally) as ctx:
            try:
                await self._dry_run(ctx, learners, badge_id, offline)
            except Stopping:
                raise StoppedError("stopped before the run began") from None
        summary = tally.summary
        summary.elapsed = anyio.current_time() - started
        self.summary = summary
        return summary

    async def _dry_run(
        self, ctx: Context, learners: LearnerInput, badge_id: int | None, offline: bool
    ) -> None:
        emit = ctx.emit
        async for row in rows_of(learners, self.read_options, badge_id):
            outcome = invalid_outcome(row, badge_id)
            if outcome is None:
                assert row.learner is not None
                badge = row.learner.badge_id or badge_id
                assert badge is not None
                if not offline and badge != badge_id:
                    # A row's own badge is checked, and its holders loaded, as the run's
                    # badge is by the preflight: the plan counts what the run will do.
                    await know_badge(
                        ctx, badge, row_badge=True, load_holders=not self.allow_duplicates
                    )
                outcome, entry = already_done(ctx, row, badge)
                known = ctx.badges.get(badge)
                if outcome is None and known is not None and known.refused is not None:
                    outcome = refused(ctx, row, badge, entry, record=False)
                if outcome is None:
                    pending = entry is not None and entry.state is State.SENDING
                    outcome = Outcome(
                        row=row.number,
                        email=row.learner.email,
                        badge_id=badge,
                        status=Status.NOT_ATTEMPTED,
                        reason=(
                            "dry run: would be checked with the server, then sent if needed"
                            if pending
                            else "dry run: would be sent"
                        ),
                        fields=dict(row.fields),
                    )
            emit(outcome)

    # -- a cohort ---------------------------------------------------------------------------

    async def run(self, learners: LearnerInput, *, badge_id: int | None) -> Summary:
        """Issue `badge_id` to every learner; a learner's own `badge_id` wins.

        Every row ends in exactly one count of the summary. Ask `stop()` from another task
        (or a signal handler) to end it early and cleanly. A learner's own badge is
        checked before its first learner is sent: one the API does not know (404) or
        forbids (403) fails its learners, naming it, and the run goes on; `badge_id`
        refused stops the run (`FatalError`).

        Args:
            learners: a CSV, JSON Lines or workbook path, or an (async) iterable of
                `Learner` or dict rows (with any of the column names the README lists).
            badge_id: the badge, the number in its URL; a learner's own `badge_id` wins.

        Returns:
            The counts: every row is in exactly one of issued, already_held, skipped,
            failed, invalid, unconfirmed, not_attempted. Also kept as `self.summary`.

        Raises:
            FatalError: the credentials or the badge were refused (`.summary` has the counts).
            UnavailableError: the API could not be reached or stayed unavailable; a rerun
                resumes (`.summary` has the counts).
            InputError: the input cannot be read.
        """
        base = self._context()
        if self._stopping.is_set():
            raise StoppedError("this issuer was stopped; use a new one")
        client = base.client
        tally = _Tally()
        started = anyio.current_time()
        counters = (client.requests, client.token_calls, self.pacer.rate_limited, client.retries)
        with self._call(tally) as ctx:
            return await self._run(ctx, learners, badge_id, tally, started, counters)

    async def _run(
        self,
        ctx: Context,
        learners: LearnerInput,
        badge_id: int | None,
        tally: _Tally,
        started: float,
        counters: tuple[int, int, int, int],
    ) -> Summary:
        client = ctx.client
        ctx.emit(
            RunStarted(
                source=describe_source(learners),
                badge_id=badge_id,
                rate=str(self.rate) if self.rate else "unlimited",
                workers=self.workers,
                journal=str(ctx.journal.path) if ctx.journal.path else None,
            )
        )
        cohort = Cohort(
            ctx,
            learners,
            badge_id=badge_id,
            options=self.read_options,
            policy=self.policy,
            workers=self.workers,
            load_holders=not self.allow_duplicates,
            stopping=self._stopping,
        )
        summary = tally.summary
        try:
            try:
                await cohort.run()
            except BaseExceptionGroup as group:
                raise _first(group) from None
        except StoppedError as exc:
            # Raised straight from the request path (refused credentials, an unreachable
            # host): it carries the counts so far like a stop decided by a learner's flow.
            if exc.summary is None:
                exc.summary = summary
            raise
        finally:
            summary.elapsed = anyio.current_time() - started
            summary.requests = client.requests - counters[0]
            summary.token_calls = client.token_calls - counters[1]
            summary.rate_limited = self.pacer.rate_limited - counters[2]
            summary.retries = client.retries - counters[3]
            if ctx.stopped is None and self._ctx is not None and self._ctx.stopped is not None:
                # Another call of this issuer stopped it for a reason that holds for this
                # run too (refused credentials, the API unavailable): this run says so.
                ctx.stopped = copy.copy(self._ctx.stopped)
            summary.interrupted = self._stopping.is_set() and ctx.stopped is None
            if ctx.stopped is not None:
                summary.stopped = str(ctx.stopped)
            self.summary = summary
            self._emit(RunFinished(summary))
            await ctx.journal.committed()
        if ctx.stopped is not None:
            ctx.stopped.summary = summary
            raise ctx.stopped
        return summary

    # -- one learner --------------------------------------------------------------------------

    async def issue(
        self, learner: Learner | Row | Mapping[str, object], *, badge_id: int | None = None
    ) -> Outcome:
        """Issue the badge to one learner, exactly once, sharing this issuer's pacer, token,
        session and journal with every other call (safe from many tasks at once).

        A learner already issued by an earlier call or run comes back `skipped` without a
        request; two calls for the same learner at once share one result.

        Args:
            learner: the learner, checked as a cohort's rows are (its own `badge_id`, if
                any, wins): a `Learner`, a dict as a cohort's rows may be (`{"First Name":
                ..., "Email": ...}`), or a `Row` from `bulk_issuer.readers`.
            badge_id: the badge, the number in its URL.

        Returns:
            The learner's outcome (issued, already held, skipped, failed, unconfirmed, or
            not attempted after a stop). The same outcome object for every call that was
            waiting on the same learner.

        Raises:
            InputError: no badge given, or the learner is invalid (no request is sent).
            FatalError: the credentials or the badge were refused; later calls raise it too.
            UnavailableError: the API stayed unavailable; later calls raise it too.
            StoppedError: `stop()` was called before this call.
            RuntimeError: called outside `async with`.
        """
        ctx = self._context()
        # Checked as a cohort's rows are: a Learner built in code is not validated yet.
        row = learner if isinstance(learner, Row) else RowBuilder().from_item(1, learner)
        if row.learner is None or not row.ok:
            problems = "; ".join(str(p) for p in row.problems) or "no learner"
            raise InputError(f"cannot issue to an invalid learner: {problems}")
        badge = row.learner.badge_id or badge_id
        if badge is None:
            raise InputError("which badge? pass badge_id= or set the learner's badge_id")
        if ctx.stopped is not None:
            raise ctx.stopped
        if self._stopping.is_set():
            raise StoppedError("this issuer was stopped; use a new one")
        self._begin()
        self._issuing += 1
        try:
            return await self._issue_shared(ctx, row, badge)
        finally:
            self._issuing -= 1

    async def _issue_shared(self, ctx: Context, row: Row, badge: int) -> Outcome:
        """`issue`: calls for the same learner at once share one outcome."""
        assert row.learner is not None
        key = (badge, row.learner.key)
        while (running := self._in_flight.get(key)) is not None:
            try:
                outcome = await asyncio.shield(running)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if running.cancelled() and not (task is not None and task.cancelling()):
                    # The call that was sending it was cancelled, not this one: go on in
                    # its place (the journal makes it ask the server first if need be).
                    continue
                raise
            break
        else:
            future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
            self._in_flight[key] = future
            try:
                outcome = await self._issue_one(ctx, row, badge)
            except asyncio.CancelledError:
                future.cancel()  # the waiters carry on without this call
                raise
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()  # retrieved: the waiters re-raise it
                raise
            finally:
                del self._in_flight[key]
            future.set_result(outcome)
        if ctx.stopped is not None and outcome.status is Status.NOT_ATTEMPTED:
            raise ctx.stopped
        return outcome

    async def _issue_one(self, ctx: Context, row: Row, badge_id: int) -> Outcome:
        badge = ctx.badges.setdefault(badge_id, Badge())
        # The journal first: a learner done by an earlier call or run needs no request,
        # not even the holders' lookup.
        done, entry = already_done(ctx, row, badge_id)
        if done is None and badge.needs_holders() and not self.allow_duplicates:
            try:
                async with badge.lock:
                    if badge.needs_holders():
                        badge.keep_holders(await ctx.lookups.holders(badge_id))
            except StoppedError as exc:
                # As in a cohort run: the holders list stayed unavailable, or the
                # credentials were refused. This call and every later one raise it.
                ctx.stop_with(exc)
                raise
            except Stopping:
                done = Outcome(
                    row=row.number,
                    email=row.learner.email if row.learner else "",
                    badge_id=badge_id,
                    status=Status.NOT_ATTEMPTED,
                    reason="the issuer stopped before it was sent",
                    fields=dict(row.fields),
                )
            else:
                done, entry = already_done(ctx, row, badge_id)
        if done is not None:
            if done.status is Status.ISSUED:
                remember(ctx, row, badge_id, done)
            ctx.emit(done)
            return done
        assert row.learner is not None
        job = Job(
            row,
            row.learner,
            badge_id,
            entry=entry,
            attempts=entry.attempts if entry else 0,
            stored=entry is not None,
        )
        # Another run of the account may hold it, or have done it.
        verify = await claim(ctx, job)
        if isinstance(verify, Outcome):
            await ctx.journal.committed()
            return verify
        flow = LearnerFlow.under(
            self.policy,
            verify_first=verify or (job.entry is not None and job.entry.state is State.SENDING),
        )
        outcome = await settle(ctx, job, flow)
        await ctx.journal.committed()
        return outcome


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception that ended a task group (the others are its echoes: cancellations)."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first(exc)
        if not isinstance(exc, anyio.get_cancelled_exc_class()):
            return exc
    return group


def _open_journal(arg: str | os.PathLike[str] | Journal | None, user: object) -> Journal:
    if isinstance(arg, Journal):
        arg.take(user)
        return arg
    return Journal(None if arg is None else Path(arg))
