"""A cohort run: rows stream through a bounded queue to workers that settle each learner.

```
source -> producer (validate; skip what the journal or the holders list says is done)
       -> bounded queue -> N workers -> executor.settle (flow, request path, journal)
```
Every input row ends in exactly one outcome: issued, already held, done earlier, failed,
invalid, unconfirmed or not attempted. After a stop (Ctrl-C, a fatal answer, the API
unavailable) nothing that has not left yet leaves; requests on the wire get a grace
period and their answers are recorded; the rest of a file is still read, so that each
row is accounted for as not attempted.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from typing import TypeAlias

import anyio
import anyio.lowlevel
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from .client import Stopping
from .errors import StoppedError
from .events import HoldersLoaded
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
from .journal import State
from .learners import Learner, Row
from .outcomes import Outcome, Status
from .readers import LearnerSource, ReadOptions, aiter_rows, open_source
from .retry import RetryPolicy

__all__ = [
    "STOP_GRACE",
    "Cohort",
    "LearnerInput",
    "describe_source",
    "invalid_outcome",
    "know_badge",
    "rows_of",
]

LearnerInput: TypeAlias = (
    str
    | os.PathLike[str]
    | LearnerSource
    | Iterable[Learner | Mapping[str, object]]
    | AsyncIterable[Learner | Mapping[str, object]]
)

#: Seconds that requests on the wire get to finish after a stop.
STOP_GRACE = 4.0


class Cohort:
    """One pass over one input.

    Args:
        ctx: the executor's context (client, journal, lookups, badges, sink).
        learners: the input.
        badge_id: the badge, unless a row names its own.
        options: how to read files.
        policy: retries, for each learner's flow.
        workers: concurrent learners.
        load_holders: look up who holds each badge before its first learner.
        stopping: set when the run must stop.
    """

    def __init__(
        self,
        ctx: Context,
        learners: LearnerInput,
        *,
        badge_id: int | None,
        options: ReadOptions,
        policy: RetryPolicy,
        workers: int,
        load_holders: bool,
        stopping: anyio.Event,
    ) -> None:
        self.ctx = ctx
        self.learners = learners
        self.badge_id = badge_id
        self.options = options
        self.policy = policy
        self.workers = workers
        self.load_holders = load_holders
        self.stopping = stopping
        self._on_wire: set[anyio.CancelScope] = set()

    async def run(self) -> None:
        """Read every row and settle every learner (or account for it after a stop)."""
        send, receive = anyio.create_memory_object_stream[Job](self.workers * 2)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._grace_after_stop)
            tg.start_soon(self._produce_into, send)
            async with receive, anyio.create_task_group() as workers:
                for _ in range(self.workers):
                    workers.start_soon(self._work, receive.clone())
            tg.cancel_scope.cancel()

    async def _grace_after_stop(self) -> None:
        await self.stopping.wait()
        await anyio.sleep(STOP_GRACE)
        for scope in list(self._on_wire):
            scope.cancel()

    async def _produce_into(self, send: ObjectSendStream[Job]) -> None:
        async with send:
            endless = isinstance(self.learners, AsyncIterable)
            async for row in rows_of(self.learners, self.options, self.badge_id):
                if endless and self.stopping.is_set():
                    # A stream (an LMS feed, a queue) may never end: stop reading it. A file
                    # or a list is read to its end, so that every row is accounted for.
                    break
                job = await self._admit(row)
                if job is None:
                    continue
                if self.stopping.is_set():
                    self._not_attempted(job)
                    continue
                try:
                    await send.send(job)
                except anyio.BrokenResourceError:
                    # The workers are gone: cancelled (the caller's `wait_for`, a scope), or
                    # ended by an error. That, not this echo of it, is what the run raises.
                    return

    async def _admit(self, row: Row) -> Job | None:
        """The job for a row, or None when the row's outcome is known without a request."""
        ctx = self.ctx
        outcome = invalid_outcome(row, self.badge_id)
        if outcome is not None:
            ctx.emit(outcome)
            return None
        learner = row.learner
        assert learner is not None
        badge_id = learner.badge_id or self.badge_id
        assert badge_id is not None
        if not self.stopping.is_set():
            try:
                await self._know_badge(badge_id)
            except StoppedError as exc:
                # The holders list stayed unavailable (or the credentials were refused):
                # the run stops, and this row and the rest are accounted for below.
                ctx.stop_with(exc)
            except Stopping:
                pass
        done, entry = already_done(ctx, row, badge_id)
        if done is not None:
            remember(ctx, row, badge_id, done)
            ctx.emit(done)
            return None
        badge = ctx.badges.get(badge_id)
        if badge is not None and badge.refused is not None:
            # A row's own badge that the API refused: this row fails, naming the badge,
            # and the run goes on with the others.
            ctx.emit(refused(ctx, row, badge_id, entry, record=True))
            return None
        return Job(
            row,
            learner,
            badge_id,
            entry=entry,
            attempts=entry.attempts if entry else 0,
            stored=entry is not None,
        )

    async def _know_badge(self, badge_id: int) -> None:
        """On a badge's first sight, check it if it is a row's own, and learn who holds it."""
        await know_badge(
            self.ctx,
            badge_id,
            row_badge=badge_id != self.badge_id,
            load_holders=self.load_holders,
        )

    async def _work(self, jobs: ObjectReceiveStream[Job]) -> None:
        async with jobs:
            async for job in jobs:
                if self.stopping.is_set():
                    self._not_attempted(job)
                    continue
                # Another run of the account may hold it, or have done it.
                verify = await claim(self.ctx, job)
                if isinstance(verify, Outcome):
                    continue
                flow = LearnerFlow.under(
                    self.policy, verify_first=verify or (job.entry is not None and _is_sending(job))
                )
                with anyio.CancelScope() as scope:
                    self._on_wire.add(scope)
                    try:
                        await settle(self.ctx, job, flow)
                    finally:
                        self._on_wire.discard(scope)

    def _not_attempted(self, job: Job) -> None:
        if _is_sending(job):
            reason = "the run stopped; an earlier send is still unconfirmed"
            status = Status.UNCONFIRMED
        else:
            reason = "the run stopped before it was sent"
            status = Status.NOT_ATTEMPTED
        self.ctx.emit(
            Outcome(
                row=job.row.number,
                email=job.learner.email,
                badge_id=job.badge_id,
                status=status,
                attempts=job.attempts,
                reason=reason,
                fields=dict(job.row.fields),
                queued=True,
            )
        )


async def know_badge(ctx: Context, badge_id: int, *, row_badge: bool, load_holders: bool) -> Badge:
    """What a run must know of a badge before its first learner: a row's own badge (not
    the run's) is checked with the API (`check_badge`; the run's badge is checked by the
    preflight, or by its first issue call), and who holds it is loaded unless the API
    refused it.

    Raises:
        StoppedError: the credentials were refused, or the holders list stayed unavailable.
        Stopping: the run is stopping.
    """
    badge = ctx.badges.setdefault(badge_id, Badge())
    if row_badge:
        badge.of_rows = True
        await check_badge(ctx, badge_id)
    if badge.refused is not None:
        return badge  # none of its learners is sent: who holds it does not matter
    if load_holders and badge.needs_holders():
        async with badge.lock:
            if badge.needs_holders():
                holders = await ctx.lookups.holders(badge_id)
                badge.keep_holders(holders)
                ctx.emit(HoldersLoaded(badge_id, len(holders.held), holders.complete, holders.note))
    return badge


def _is_sending(job: Job) -> bool:
    return job.entry is not None and job.entry.state is State.SENDING


async def rows_of(
    learners: LearnerInput, options: ReadOptions, badge_id: int | None
) -> AsyncIterator[Row]:
    """The input's rows, from a file, an iterable or an async iterable."""
    options = dataclasses.replace(options, badge_id=badge_id)
    if isinstance(learners, AsyncIterable):
        async for row in aiter_rows(learners, options):
            yield row
        return
    with open_source(learners, options) as source:
        for number, row in enumerate(source):
            yield row
            if number % 256 == 255:
                # Reading a file never blocks on I/O long, but validating thousands of rows
                # would starve the workers: let them run between chunks.
                await anyio.lowlevel.checkpoint()


def invalid_outcome(row: Row, badge_id: int | None) -> Outcome | None:
    """The outcome of a row that cannot be sent (invalid, or no badge), else None."""
    if not row.ok or row.learner is None:
        reason = "; ".join(str(p) for p in row.problems) or "invalid row"
        return Outcome(
            row=row.number,
            email=_email_of(row),
            badge_id=badge_id,
            status=Status.INVALID,
            reason=reason,
            fields=dict(row.fields),
        )
    if row.learner.badge_id is None and badge_id is None:
        return Outcome(
            row=row.number,
            email=row.learner.email,
            badge_id=None,
            status=Status.INVALID,
            reason="no badge for this row: pass --badge or fill a badge_id column",
            fields=dict(row.fields),
        )
    return None


def _email_of(row: Row) -> str:
    if row.learner is not None:
        return row.learner.email
    for name, value in row.fields.items():
        if "mail" in name.lower():
            return value
    return ""


def describe_source(learners: LearnerInput) -> str:
    """A short name for the input, for the `run.started` event."""
    if isinstance(learners, str | os.PathLike):
        return os.fspath(learners)
    if isinstance(learners, LearnerSource):
        return learners.name
    return type(learners).__name__
