"""The engine: learners stream through a bounded queue to workers that issue each one once.

```
source -> producer (validate, skip what the journal or server says is done)
       -> bounded queue -> N workers -> pacer -> token -> PUT /v1/badge/{id}/issue
       -> classify -> journal + event + callback
```
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import AsyncIterable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import anyio
import anyio.lowlevel
import structlog
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from .auth import Auth, CredentialsRejected, PasswordAuth, PersonalAccessToken
from .client import DEFAULT_BASE_URL, Answer, NavigatrClient, TransportError, new_session
from .journal import Journal, State
from .learners import Learner, Row
from .lookups import AssertionLookup, LookupRefused
from .outcomes import EVENTS, Outcome, Status, Summary
from .pacing import DEFAULT_MARGIN, DEFAULT_RATE, Pacer, Rate
from .readers import LearnerSource, ReadOptions, aiter_rows, open_source
from .retry import RetryPolicy, Verdict, classify, retry_after

__all__ = ["BadgeIssuer", "FatalError", "LearnerInput", "issue_badges"]

LearnerInput: TypeAlias = (
    str
    | os.PathLike[str]
    | LearnerSource
    | Iterable[Learner | Mapping[str, object]]
    | AsyncIterable[Learner | Mapping[str, object]]
)

#: Seconds that in-flight requests get to finish after a stop is asked for.
STOP_GRACE = 4.0


class FatalError(Exception):
    """The run stopped early: the server refused the credentials or the badge.

    `summary` holds what was done before the stop.
    """

    def __init__(self, message: str, summary: Summary | None = None) -> None:
        super().__init__(message)
        self.summary = summary


def default_workers(rate: Rate | None) -> int:
    """Enough workers to keep the pacer busy through a few hundred ms of latency and retries."""
    if rate is None:
        return 32
    return max(4, min(64, math.ceil(rate.per_second * 1.5) + 4))


@dataclass(slots=True)
class _Job:
    row: Row
    learner: Learner
    badge_id: int
    verify_first: bool
    attempts: int = 0
    flags: list[str] = field(default_factory=list)
    #: Whether this run has written the row to the journal (with its first send).
    stored: bool = False


@dataclass(slots=True)
class _Badge:
    """What the run knows of one badge: confirmed to exist, and who already holds it."""

    lock: anyio.Lock = field(default_factory=anyio.Lock)
    confirmed: bool = False
    held: dict[str, str | None] = field(default_factory=dict)


class BadgeIssuer:
    """Issues badges to cohorts: one session, pacer and token for as many runs as you like.

    Use it as an async context manager, then `await issuer.run(learners, badge_id=...)`.

    Args:
        auth: `PersonalAccessToken` or `PasswordAuth`.
        base_url: the API root; plain http only for loopback.
        rate: the server's budget, e.g. `"5/2s"`; `None` for no pacing (a sandbox without limit).
        workers: concurrent learners; the default suits the rate.
        journal: an SQLite file to make runs resumable; `None` keeps state for this run only.
        policy: retry budget and backoff.
        allow_duplicates: do not look up who already holds the badge before issuing.
        on_outcome: called with each learner's `Outcome` as it is decided.
        logger: a structlog logger for the events (default `structlog.get_logger("bulk_issuer")`).
        read_options: how to read files (delimiter, encoding, column map, consent column).
        margin: seconds of network jitter the pacer leaves in every window.
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
        on_outcome: Callable[[Outcome], None] | None = None,
        logger: Any = None,
        read_options: ReadOptions | None = None,
        margin: float = DEFAULT_MARGIN,
    ) -> None:
        if not isinstance(auth, PasswordAuth | PersonalAccessToken):
            raise ValueError("auth must be a PersonalAccessToken or a PasswordAuth")
        self.rate = Rate.parse(rate) if isinstance(rate, str) else rate
        self.workers = workers or default_workers(self.rate)
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.pacer = Pacer(self.rate, margin=margin)
        self.policy = policy or RetryPolicy()
        self.allow_duplicates = allow_duplicates
        self.read_options = read_options or ReadOptions()
        self._auth = auth
        self._base_url = base_url
        self._journal_arg = journal
        self._on_outcome = on_outcome
        self._log = logger if logger is not None else structlog.get_logger("bulk_issuer")
        self._session: Any = None
        self._client: NavigatrClient | None = None
        self._stop = anyio.Event()

    async def __aenter__(self) -> BadgeIssuer:
        self._session = new_session(self.workers + 2, self.pacer)
        self._client = NavigatrClient(
            self._session, self._base_url, self.pacer, self._auth, policy=self.policy
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._session.close()

    def stop(self) -> None:
        """Ask the run to stop: no new learner starts; requests in flight get a few seconds."""
        self._stop.set()

    @property
    def client(self) -> NavigatrClient:
        """The API client (inside `async with`)."""
        if self._client is None:
            raise RuntimeError("use the BadgeIssuer inside `async with` before running it")
        return self._client

    async def run(self, learners: LearnerInput, *, badge_id: int | None) -> Summary:
        """Issue `badge_id` to every learner; a learner's own `badge_id` wins.

        Raises:
            FatalError: credentials refused, or the badge unknown or forbidden.
            readers.InputError: the input cannot be read at all.
        """
        if self._stop.is_set():
            self._stop = anyio.Event()  # an earlier run was stopped; this one starts afresh
        return await _Run(self, learners, badge_id).execute()

    async def dry_run(self, learners: LearnerInput, *, badge_id: int | None) -> Summary:
        """Read and validate everything, send nothing; `summary.issued` counts what would be."""
        summary = Summary()
        started = anyio.current_time()
        journal = _open_journal(self._journal_arg)
        try:
            async for row in _rows(learners, self._options(badge_id)):
                outcome = _invalid_outcome(row, badge_id)
                if outcome is None:
                    assert row.learner is not None
                    badge = row.learner.badge_id or badge_id
                    assert badge is not None
                    entry = journal.get(badge, row.learner.key)
                    if entry is not None and entry.state in (State.ISSUED, State.HELD):
                        outcome = _outcome(
                            row, badge, Status.SKIPPED, reason="done by an earlier run"
                        )
                    else:
                        summary.issued += 1
                        continue
                summary.count(outcome)
                self._emit(outcome)
        finally:
            if not isinstance(self._journal_arg, Journal):
                journal.close()
        summary.elapsed = anyio.current_time() - started
        return summary

    def _options(self, badge_id: int | None) -> ReadOptions:
        return dataclasses.replace(self.read_options, badge_id=badge_id)

    def _emit(self, outcome: Outcome) -> None:
        level = (
            "info" if outcome.status in (Status.ISSUED, Status.HELD, Status.SKIPPED) else "warning"
        )
        getattr(self._log, level)(EVENTS[outcome.status], **outcome.event())
        if self._on_outcome is not None:
            self._on_outcome(outcome)


class _Run:
    """One pass over one input."""

    def __init__(self, issuer: BadgeIssuer, learners: LearnerInput, badge_id: int | None) -> None:
        self.issuer = issuer
        self.client = issuer.client
        self.learners = learners
        self.badge_id = badge_id
        self.summary = Summary()
        self.journal = _open_journal(issuer._journal_arg)
        self.badges: dict[int, _Badge] = {}
        self.log = issuer._log
        self.policy = issuer.policy
        self.fresh_journal = False
        self.assertions = AssertionLookup(self.client, self.policy, self.log, self._sleep)

    async def execute(self) -> Summary:
        issuer = self.issuer
        started = anyio.current_time()
        requests0, tokens0, limited0 = (
            self.client.requests,
            self.client.token_calls,
            issuer.pacer.rate_limited,
        )
        self.journal.start_validation()
        # Nothing recorded yet: no learner can have been done before, so no look-ups.
        self.fresh_journal = self.journal.is_empty()
        self.log.info(
            "run.started",
            source=_describe_source(self.learners),
            badge_id=self.badge_id,
            rate=str(issuer.rate) if issuer.rate else "unlimited",
            workers=issuer.workers,
            journal=str(self.journal.path) if self.journal.path else None,
        )
        fatal: FatalError | None = None
        try:
            try:
                await self._pump()
            except BaseExceptionGroup as group:
                raise _first(group) from None
        except FatalError as exc:
            fatal = exc
            self.summary.stopped = str(exc)
        except (CredentialsRejected, LookupRefused) as exc:
            fatal = FatalError(str(exc))
            self.summary.stopped = str(exc)
        finally:
            self.summary.elapsed = anyio.current_time() - started
            self.summary.requests = self.client.requests - requests0
            self.summary.token_calls = self.client.token_calls - tokens0
            self.summary.rate_limited = issuer.pacer.rate_limited - limited0
            self.summary.interrupted = issuer._stop.is_set()
            if not isinstance(issuer._journal_arg, Journal):
                self.journal.close()
            self.log.info("run.finished", **self.summary.as_dict())
        if fatal is not None:
            fatal.summary = self.summary
            raise fatal
        return self.summary

    async def _pump(self) -> None:
        send, receive = anyio.create_memory_object_stream[_Job](self.issuer.workers * 2)
        async with anyio.create_task_group() as tg:
            producer = anyio.CancelScope()
            tg.start_soon(self._watch_stop, producer, tg.cancel_scope)
            tg.start_soon(self._produce_into, send, producer)
            async with receive, anyio.create_task_group() as workers:
                for _ in range(self.issuer.workers):
                    workers.start_soon(self._work, receive.clone())
            # Every worker is done: the input is exhausted, or a stop cut it short.
            tg.cancel_scope.cancel()

    async def _watch_stop(self, producer: anyio.CancelScope, run: anyio.CancelScope) -> None:
        await self.issuer._stop.wait()
        producer.cancel()
        await anyio.sleep(STOP_GRACE)
        run.cancel()

    async def _produce_into(self, send: ObjectSendStream[_Job], scope: anyio.CancelScope) -> None:
        with scope:
            # BrokenResourceError: every worker stopped early, as a stop asks them to.
            async with send:
                with contextlib.suppress(anyio.BrokenResourceError):
                    await self._produce(send.send)

    async def _produce(self, put: Callable[[_Job], Any]) -> None:
        async for row in _rows(self.learners, self.issuer._options(self.badge_id)):
            if self.issuer._stop.is_set():
                return
            outcome = _invalid_outcome(row, self.badge_id)
            if outcome is not None:
                self.journal.mark_invalid(row.number, row.fields, outcome.reason or "")
                self._emit(outcome)
                continue
            learner = row.learner
            assert learner is not None
            badge_id = learner.badge_id or self.badge_id
            assert badge_id is not None
            badge = await self._badge(badge_id)
            entry = None if self.fresh_journal else self.journal.get(badge_id, learner.key)
            if entry is not None and entry.state is State.ISSUED:
                self._emit(
                    _outcome(
                        row,
                        badge_id,
                        Status.SKIPPED,
                        attempts=entry.attempts,
                        reason="issued by an earlier run",
                        assertion_id=entry.assertion_id,
                    )
                )
                continue
            if learner.key in badge.held or (entry is not None and entry.state is State.HELD):
                assertion = badge.held.get(learner.key) or (entry.assertion_id if entry else None)
                self._finish(
                    row,
                    badge_id,
                    Status.HELD,
                    State.HELD,
                    attempts=entry.attempts if entry else 0,
                    reason="already holds the badge",
                    assertion_id=assertion,
                )
                continue
            verify = entry is not None and entry.state is State.SENDING
            await put(_Job(row, learner, badge_id, verify, attempts=entry.attempts if entry else 0))

    async def _work(self, jobs: ObjectReceiveStream[_Job]) -> None:
        async with jobs:
            async for job in jobs:
                if self.issuer._stop.is_set():
                    return
                await self._issue(job)

    async def _badge(self, badge_id: int) -> _Badge:
        """The badge's state; on first sight, learn who already holds it."""
        badge = self.badges.get(badge_id)
        if badge is None:
            badge = self.badges[badge_id] = _Badge()
            if not self.issuer.allow_duplicates:
                badge.held = await self.assertions.holders(badge_id)
        return badge

    async def _issue(self, job: _Job) -> None:
        """Take one learner to a final state: issued, held, or failed."""
        failures = 0
        limited = 0
        verify = job.verify_first
        last: tuple[int | None, str] = (None, "")
        while True:
            if verify:
                found, assertion = await self.assertions.find(
                    job.badge_id, job.learner.email, job.learner.key
                )
                if found:
                    self._done(job, Status.ISSUED, State.ISSUED, 200, None, assertion, "verified")
                    return
                if found is None:
                    job.flags.append("resent_unverified")
                verify = False
                if failures >= self.policy.attempts:
                    self._failed(job, last[0], last[1])
                    return
            try:
                answer = await self._send(job)
            except TransportError as exc:
                status, detail, headers = None, str(exc), None
            else:
                status, detail, headers = answer.status, answer.detail, answer.headers
            verdict = classify(status)
            if verdict is Verdict.ISSUED:
                assert isinstance(status, int)
                body = answer.body if isinstance(answer.body, dict) else {}
                self._done(
                    job, Status.ISSUED, State.ISSUED, status, None, _str_or_none(body.get("id"))
                )
                return
            if verdict is Verdict.HELD:
                self._done(job, Status.HELD, State.HELD, status, detail, None)
                return
            if verdict is Verdict.FAILED:
                self._failed(job, status, detail)
                return
            if verdict is Verdict.UNAUTHORIZED:
                self._failed(job, status, f"not issued: credentials refused ({detail})")
                raise FatalError(f"the server refused the credentials (HTTP 401): {detail}")
            if verdict is Verdict.FATAL and status == 404 and self.badges[job.badge_id].confirmed:
                # The badge exists (it was issued to others): what is missing is this
                # learner's own reference, a provider_id or recipient_id.
                self._failed(job, status, detail)
                return
            if verdict is Verdict.FATAL:
                self._failed(job, status, f"not issued: {detail}")
                what = "not found" if status == 404 else "not permitted for these credentials"
                raise FatalError(f"badge {job.badge_id} is {what} (HTTP {status}): {detail}")
            # RETRY or AMBIGUOUS: the learner is not done.
            self.summary.retries += 1
            last = (status, detail)
            if status == 429:
                limited += 1
                wait = self.issuer.pacer.rate_limited_for(retry_after(headers or {}))
                if limited > self.policy.rate_limited_attempts:
                    self._failed(job, status, f"rate limited {limited} times: {detail}")
                    return
                self._mark(job, State.FAILED, status, f"will retry: {detail}")
            else:
                failures += 1
                hinted = retry_after(headers) if headers is not None else None
                wait = hinted if hinted is not None else self.policy.backoff(failures)
                if verdict is Verdict.AMBIGUOUS:
                    verify = True  # the journal still says `sending`: ask before re-sending
                else:
                    self._mark(job, State.FAILED, status, f"will retry: {detail}")
                if failures >= self.policy.attempts and not verify:
                    self._failed(job, status, f"gave up after {failures} attempts: {detail}")
                    return
            self.log.info(
                "badge.retry_scheduled",
                row=job.row.number,
                email=job.learner.email,
                badge_id=job.badge_id,
                attempts=job.attempts,
                http_status=status,
                reason=detail,
                wait=round(wait, 3),
            )
            if not await self._sleep(wait if status != 429 else 0.0):
                return

    async def _send(self, job: _Job) -> Answer:
        """One issue call; until the badge is confirmed to exist, one at a time."""
        badge = self.badges[job.badge_id]
        if not badge.confirmed:
            async with badge.lock:
                if not badge.confirmed:
                    answer = await self._put(job)
                    badge.confirmed = 200 <= answer.status < 300
                    return answer
        return await self._put(job)

    async def _put(self, job: _Job) -> Answer:
        async def before_send() -> None:
            job.attempts += 1
            self.journal.mark_sending(
                job.badge_id,
                job.learner.key,
                row=job.row.number,
                email=job.learner.email,
                attempts=job.attempts,
                # The row is stored with this run's first attempt; retries need not encode it.
                fields=None if job.stored else job.row.fields,
            )
            job.stored = True
            # The attempt is on disk before the request leaves.
            await self.journal.committed()

        return await self.client.request(
            "PUT",
            f"/v1/badge/{job.badge_id}/issue",
            body=job.learner.payload(),
            before_send=before_send,
        )

    async def _sleep(self, seconds: float) -> bool:
        """Wait, unless a stop is asked for; False when stopping."""
        if seconds > 0:
            with anyio.move_on_after(seconds):
                await self.issuer._stop.wait()
        return not self.issuer._stop.is_set()

    def _mark(self, job: _Job, state: State, status: int | None, reason: str | None) -> None:
        self.journal.mark(
            job.badge_id,
            job.learner.key,
            state,
            row=job.row.number,
            email=job.learner.email,
            fields=None if job.stored else job.row.fields,
            http_status=status,
            reason=reason,
            flags=",".join(job.flags) or None,
        )

    def _failed(self, job: _Job, status: int | None, reason: str) -> None:
        self._done(job, Status.FAILED, State.FAILED, status, reason, None)

    def _done(
        self,
        job: _Job,
        status: Status,
        state: State,
        http_status: int | None,
        reason: str | None,
        assertion_id: str | None,
        flag: str | None = None,
    ) -> None:
        if flag:
            job.flags.append(flag)
        self._finish(
            job.row,
            job.badge_id,
            status,
            state,
            store_fields=not job.stored,
            attempts=job.attempts,
            http_status=http_status,
            reason=reason,
            assertion_id=assertion_id,
            flags=tuple(job.flags),
        )

    def _finish(
        self,
        row: Row,
        badge_id: int,
        status: Status,
        state: State,
        *,
        store_fields: bool = True,
        attempts: int = 0,
        http_status: int | None = None,
        reason: str | None = None,
        assertion_id: str | None = None,
        flags: tuple[str, ...] = (),
    ) -> None:
        learner = row.learner
        assert learner is not None
        self.journal.mark(
            badge_id,
            learner.key,
            state,
            row=row.number,
            email=learner.email,
            fields=row.fields if store_fields else None,
            http_status=http_status,
            reason=reason,
            assertion_id=assertion_id,
            flags=",".join(flags) or None,
        )
        self._emit(
            _outcome(
                row,
                badge_id,
                status,
                attempts=attempts,
                http_status=http_status,
                reason=reason,
                assertion_id=assertion_id,
                flags=flags,
            )
        )

    def _emit(self, outcome: Outcome) -> None:
        self.summary.count(outcome)
        self.issuer._emit(outcome)


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception that ended a task group (the others are its echoes: cancellations)."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first(exc)
        if not isinstance(exc, anyio.get_cancelled_exc_class()):
            return exc
    return group


def _open_journal(arg: str | os.PathLike[str] | Journal | None) -> Journal:
    if isinstance(arg, Journal):
        return arg
    return Journal(None if arg is None else Path(arg))


async def _rows(learners: LearnerInput, options: ReadOptions) -> AsyncIterable[Row]:
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


def _describe_source(learners: LearnerInput) -> str:
    if isinstance(learners, str | os.PathLike):
        return os.fspath(learners)
    if isinstance(learners, LearnerSource):
        return learners.name
    return type(learners).__name__


def _invalid_outcome(row: Row, badge_id: int | None) -> Outcome | None:
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


def _outcome(row: Row, badge_id: int, status: Status, **kw: Any) -> Outcome:
    learner = row.learner
    return Outcome(
        row=row.number,
        email=learner.email if learner else _email_of(row),
        badge_id=badge_id,
        status=status,
        fields=dict(row.fields),
        **kw,
    )


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


async def issue_badges(
    learners: LearnerInput,
    *,
    badge_id: int | None,
    auth: Auth,
    base_url: str = DEFAULT_BASE_URL,
    rate: str | Rate | None = DEFAULT_RATE,
    journal: str | os.PathLike[str] | Journal | None = None,
    **options: Any,
) -> Summary:
    """Issue `badge_id` to every learner and return the counts.

    Args:
        learners: a CSV or JSON Lines path, or an (async) iterable of `Learner` or dict rows.
        badge_id: the badge, the number in its URL; a row's own `badge_id` wins.
        auth: `PersonalAccessToken(...)` or `PasswordAuth(user, password)`.
        base_url: the API root.
        rate: the server's budget, like `"5/2s"`.
        journal: an SQLite path that makes a rerun resume; None for none.
        **options: anything `BadgeIssuer` takes (workers, policy, on_outcome, logger, ...).

    Raises:
        FatalError: the credentials or the badge were refused; `.summary` has the counts.
    """
    async with BadgeIssuer(
        auth=auth, base_url=base_url, rate=rate, journal=journal, **options
    ) as issuer:
        return await issuer.run(learners, badge_id=badge_id)
