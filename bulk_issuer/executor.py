"""Carrying out one learner's flow: the only place that sends issue calls.

The `LearnerFlow` (flow.py) decides; the executor does what it says, in this order for
every send: take a pacer slot, mark the learner `sending` in the journal, wait for the
commit, send. It records the final state in the journal and emits the outcome. It is
shared by a cohort run and by `BadgeIssuer.issue` for one learner at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import anyio

from .client import Answer, NavigatrClient, NoReply, NotSent, Stopping
from .coordination import ClaimLedger, Ending, Verdict
from .errors import CredentialsRejected, FatalError, StoppedError
from .events import Event, RetryScheduled
from .flow import Finish, LearnerFlow, Lookup, Send, Verify, Wait
from .journal import Entry, Journal, State
from .learners import Learner, Row, normalised_email
from .lookups import AssertionLookup, Holders
from .outcomes import Outcome, Status
from .retry import RequestRetry

__all__ = [
    "Badge",
    "Context",
    "Job",
    "already_done",
    "check_badge",
    "claim",
    "refused",
    "remember",
    "settle",
]

#: Seconds a badge's holders list is used before it is read again: well within the time the
#: account's shared ledger remembers a learner issued (a day: each store's `RETAIN`).
HOLDERS_FRESH = 6 * 3600.0

#: The journal state each final status is recorded as (None: nothing recorded).
_STATES: dict[Status, State | None] = {
    Status.ISSUED: State.ISSUED,
    Status.HELD: State.HELD,
    Status.FAILED: State.FAILED,
    Status.UNCONFIRMED: State.SENDING,
    Status.NOT_ATTEMPTED: None,
}

#: How a claimed learner is left in the account's shared ledger, by final status.
_ENDINGS: dict[Status, Ending] = {
    Status.ISSUED: Ending.ISSUED,
    Status.HELD: Ending.HELD,
    Status.UNCONFIRMED: Ending.UNCONFIRMED,
}

#: The reason of a learner that another run of the account issued (or found holding it).
DONE_BY_ANOTHER_RUN = "done by another run"
#: The reason of a learner an earlier run sent, unanswered, whom the holders list shows.
EARLIER_SEND_WENT_THROUGH = (
    "an earlier run's unanswered send went through (the holders list has it)"
)
#: The flag of a learner whose send went unanswered and whom the server showed holding it.
VERIFIED = "verified"
#: ... and of one that another call of the same issuer settled while this one waited.
DONE_BY_ANOTHER_CALL = "done by another call at the same time"


@dataclass(slots=True)
class Badge:
    """What is known of one badge: confirmed to exist, and who already holds it."""

    lock: anyio.Lock = field(default_factory=anyio.Lock)
    confirmed: bool = False
    #: The API answered for the badge itself (the preflight's check): it exists, so a 404
    #: to an issue call is about the learner's own reference (a provider_id, say).
    exists: bool = False
    holders: Holders | None = None
    #: When `holders` was read (`time.monotonic()`).
    holders_at: float = 0.0
    name: str | None = None
    #: The API was asked about the badge (`check_badge`), whatever it answered.
    checked: bool = False
    #: Why the API refuses the badge (unknown: 404, forbidden: 403), naming it: "badge
    #: 9999 is not found (HTTP 404): ..."; None while it is not known to refuse it.
    refused: str | None = None
    #: The HTTP status of that refusal.
    refused_status: int | None = None
    #: A row's own badge (a `badge_id` column), not the run's: a 403 or 404 to its issue
    #: calls fails its learners only, where for the run's badge it stops the run.
    of_rows: bool = False

    def needs_holders(self) -> bool:
        """The holders list is not read yet, or was read long enough ago that the account's
        shared ledger may have forgotten learners issued since (a service's issuer lives
        for days: a learner another run issued yesterday is in neither its old list nor
        the ledger any more)."""
        if self.holders is None:
            return True
        return time.monotonic() - self.holders_at > HOLDERS_FRESH

    def keep_holders(self, holders: Holders) -> None:
        self.holders, self.holders_at = holders, time.monotonic()


@dataclass(slots=True)
class Context:
    """What the executor works with: the client, journal, lookups, badges, and the sink."""

    client: NavigatrClient
    journal: Journal
    lookups: AssertionLookup
    emit: Callable[[Event], None]
    badges: dict[int, Badge] = field(default_factory=dict)
    #: The journal had no learner when the run began: no look-ups are needed.
    fresh_journal: bool = False
    #: Why the run stopped, once it must: a fatal answer or the API unavailable.
    stopped: StoppedError | None = None
    on_stop: Callable[[], None] = lambda: None
    #: The account's shared claims (None: this process only, as before coordination).
    claims: ClaimLedger | None = None
    #: The learners a call of this issuer is settling now (a run's, `issue`'s), shared by
    #: every context of the issuer: one call per learner at a time.
    busy: dict[tuple[int, str], anyio.Event] = field(default_factory=dict)

    def stop_with(self, error: StoppedError) -> None:
        """Stop the run for `error` (the first reason wins)."""
        if self.stopped is None:
            self.stopped = error
        self.on_stop()


@dataclass(slots=True)
class Job:
    """One learner to settle."""

    row: Row
    learner: Learner
    badge_id: int
    entry: Entry | None = None
    #: Issue calls sent for this learner over all runs (the journal's count).
    attempts: int = 0
    #: Issue calls sent in this run.
    sends: int = 0
    stored: bool = False
    #: A send of this run may have been processed (it went unanswered).
    maybe_sent: bool = False
    #: This run holds the learner's claim in the account's shared ledger.
    claimed: bool = False
    #: This call holds the learner in its issuer (`Context.busy`).
    held: bool = False
    #: An issue call of it is out, its answer not yet read.
    on_wire: bool = False
    #: When the ledger last said the claim is still this run's (`time.monotonic()`).
    confirmed_at: float = 0.0
    #: When this run last sent it (loop time); None before its first send.
    sent_at: float | None = None


def already_done(ctx: Context, row: Row, badge_id: int) -> tuple[Outcome | None, Entry | None]:
    """The one rule for a learner who needs no request: done by an earlier run, or holding it.

    Returns:
        (the outcome, None) when nothing needs sending; (None, the journal entry or None)
        when the learner must be sent (or verified, if the entry says `sending`).
    """
    learner = row.learner
    assert learner is not None
    entry = None if ctx.fresh_journal else ctx.journal.get(badge_id, learner.key)
    if entry is not None and entry.state in (State.ISSUED, State.HELD):
        how = (
            "issued by an earlier run"
            if entry.state is State.ISSUED
            else ("found holding it by an earlier run")
        )
        return (
            _outcome(
                row,
                badge_id,
                Status.SKIPPED,
                attempts=entry.attempts,
                reason=how,
                assertion_id=entry.assertion_id,
                flags=_flags(entry.flags),
            ),
            entry,
        )
    badge = ctx.badges.get(badge_id)
    holders = badge.holders if badge is not None else None
    if holders is not None and learner.key in holders.held:
        if entry is not None and entry.state is State.SENDING:
            # An earlier run's send went unanswered, or the run was cut short with it on
            # the wire: the holders list says it went through. Issued by this tool, not
            # held before.
            return (
                _outcome(
                    row,
                    badge_id,
                    Status.ISSUED,
                    attempts=entry.attempts,
                    reason=EARLIER_SEND_WENT_THROUGH,
                    assertion_id=holders.held[learner.key],
                    flags=(VERIFIED,),
                ),
                entry,
            )
        return (
            _outcome(
                row,
                badge_id,
                Status.HELD,
                attempts=entry.attempts if entry else 0,
                reason="already holds the badge",
                assertion_id=holders.held[learner.key],
            ),
            entry,
        )
    return None, entry


async def check_badge(ctx: Context, badge_id: int) -> Badge:
    """Ask the API about a badge, once (`GET /v1/badge/{id}`): it exists (and its name), it
    is refused (unknown, 404, or forbidden to these credentials, 403: `Badge.refused`
    says so, naming the badge), or the API does not answer for badges (a 404 `Not Found`
    of the route itself, a page): then the first issue call will tell.

    Raises:
        CredentialsRejected: the credentials were refused (HTTP 401).
        Stopping: the run is stopping.
        UnavailableError: the API could not be reached.
    """
    badge = ctx.badges.setdefault(badge_id, Badge())
    if badge.checked:
        return badge
    async with badge.lock:
        if badge.checked:
            return badge
        answer = await ctx.client.request("GET", f"/v1/badge/{badge_id}")
        if answer.status == 401:
            raise CredentialsRejected(
                f"the server refused the credentials (HTTP 401): {answer.detail}"
            )
        if answer.status == 403:
            badge.refused = (
                f"badge {badge_id} is not permitted for these credentials "
                f"(HTTP 403): {answer.detail}"
            )
            badge.refused_status = 403
        elif answer.status == 404 and answer.detail.strip().lower() != "not found":
            badge.refused = f"badge {badge_id} is not found (HTTP 404): {answer.detail}"
            badge.refused_status = 404
        elif 200 <= answer.status < 300 and isinstance(answer.body, dict):
            # A JSON object: a page (a proxy's, say) checks nothing.
            badge.exists = True
            name = answer.body.get("name")
            badge.name = answer.shown(name) if name else None
        badge.checked = True
    return badge


def refused(ctx: Context, row: Row, badge_id: int, entry: Entry | None, *, record: bool) -> Outcome:
    """The outcome of a learner of a badge the API refused (`Badge.refused`): failed,
    with no request, naming the badge; the run goes on with the other badges' learners.

    Recorded in the journal as failed when `record` (a run, not a dry run), so that the
    failures file and `report` give the reason. A learner whose earlier send went
    unanswered stays unconfirmed: the journal keeps `sending`.
    """
    learner = row.learner
    assert learner is not None
    badge = ctx.badges[badge_id]
    reason = badge.refused or f"badge {badge_id} is refused"
    if entry is not None and entry.state is State.SENDING:
        return _outcome(
            row,
            badge_id,
            Status.UNCONFIRMED,
            attempts=entry.attempts,
            http_status=badge.refused_status,
            reason=f"{reason}; an earlier send is still unconfirmed",
        )
    if record:
        ctx.journal.mark(
            badge_id,
            learner.key,
            State.FAILED,
            row=row.number,
            email=learner.email,
            fields=None if entry is not None else row.fields,
            http_status=badge.refused_status,
            reason=reason,
        )
    return _outcome(
        row,
        badge_id,
        Status.FAILED,
        attempts=entry.attempts if entry is not None else 0,
        http_status=badge.refused_status,
        reason=reason,
    )


def remember(ctx: Context, row: Row, badge_id: int, done: Outcome) -> None:
    """Write to the journal what the holders list showed of a learner `already_done` found
    needing no request: holding the badge before, or issued by an earlier run's send."""
    learner = row.learner
    assert learner is not None
    if done.status not in (Status.HELD, Status.ISSUED):
        return
    issued = done.status is Status.ISSUED
    ctx.journal.mark(
        badge_id,
        learner.key,
        State.ISSUED if issued else State.HELD,
        row=row.number,
        email=learner.email,
        # An earlier run's send stored the row with it; a holder is stored now.
        fields=None if issued else row.fields,
        reason=done.reason,
        assertion_id=done.assertion_id,
        flags=VERIFIED if issued else None,
    )


async def claim(ctx: Context, job: Job) -> Outcome | bool:
    """Claim the learner in its issuer, then in the account's shared ledger, before its
    first send; `settle` lets go of it.

    While another call of the issuer (a run, `issue`) or another live run of the account
    holds it, wait for that one's outcome. Call before building the learner's flow.

    Returns:
        The outcome when nothing is to be sent (done by another call or run, or the run
        stopped meanwhile; already emitted); else whether to ask the server first (an
        earlier claimant may have sent it: it died, or its send went unanswered).
    """
    done = await _hold(ctx, job)
    if done is not None:
        return done
    going_on = False
    try:
        verify = await _claim_shared(ctx, job)
        going_on = not isinstance(verify, Outcome)
        return verify
    finally:
        if not going_on:
            _let_go(ctx, job)


async def _hold(ctx: Context, job: Job) -> Outcome | None:
    """One call of the issuer per learner at a time: wait while another settles it (a run
    and `issue`, two runs at once), then look at the journal again, as it may have been
    done meanwhile, by that call or by one that ended before this job began."""
    key = (job.badge_id, job.learner.key)
    waited = False
    while (other := ctx.busy.get(key)) is not None:
        waited = True
        if not await _set_before(other, ctx.client.stopping):
            return _stopped_waiting(ctx, job)
    ctx.busy[key] = anyio.Event()
    job.held = True
    if not waited and ctx.fresh_journal:
        return None  # an empty journal that only this run writes: nothing to look at
    done, entry = already_done(ctx, job.row, job.badge_id)
    if done is not None:
        if done.status is Status.ISSUED:
            remember(ctx, job.row, job.badge_id, done)
        _let_go(ctx, job)
        if waited and done.status is Status.SKIPPED:
            done = replace(done, reason=DONE_BY_ANOTHER_CALL)
        ctx.emit(done)
        return done
    job.entry, job.stored = entry, entry is not None
    job.attempts = entry.attempts if entry is not None else 0
    return None


async def _set_before(event: anyio.Event, stopping: anyio.Event) -> bool:
    """Wait for `event`; False if `stopping` is set first."""
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_cancel_when, stopping, scope)
            await event.wait()
            tg.cancel_scope.cancel()
    return not scope.cancelled_caught


async def _cancel_when(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


def _stopped_waiting(ctx: Context, job: Job) -> Outcome:
    """The outcome of a learner the run stopped before this call could send it."""
    if job.entry is not None and job.entry.state is State.SENDING:
        why = "the run stopped; an earlier send is still unconfirmed"
        return _record(ctx, job, Finish(Status.UNCONFIRMED, reason=why))
    return _record(
        ctx, job, Finish(Status.NOT_ATTEMPTED, reason="the run stopped before it was sent")
    )


def _let_go(ctx: Context, job: Job) -> None:
    if job.held:
        job.held = False
        ctx.busy.pop((job.badge_id, job.learner.key)).set()


async def _claim_shared(ctx: Context, job: Job) -> Outcome | bool:
    if ctx.claims is None:
        return False
    try:
        got = await ctx.claims.take(job.badge_id, job.learner.key, ctx.client.stopping)
    except StoppedError as exc:
        ctx.stop_with(exc)
        got = None
    if got is None:
        return _stopped_waiting(ctx, job)
    if got.verdict is Verdict.DONE:
        # In this run's journal too, so that its results and reruns count it as holding.
        ctx.journal.mark(
            job.badge_id,
            job.learner.key,
            State.HELD,
            row=job.row.number,
            email=job.learner.email,
            fields=None if job.stored else job.row.fields,
            reason=DONE_BY_ANOTHER_RUN,
        )
        outcome = _outcome(
            job.row,
            job.badge_id,
            Status.SKIPPED,
            attempts=job.attempts,
            reason=DONE_BY_ANOTHER_RUN,
            queued=True,
        )
        ctx.emit(outcome)
        return outcome
    job.claimed = True
    return got.verify


async def settle(ctx: Context, job: Job, flow: LearnerFlow) -> Outcome:
    """Take one learner to a final status for this run, and record it.

    A stop (Ctrl-C, a fatal answer elsewhere, the API unavailable) ends it early: as
    not attempted if nothing of it may have reached the server, else unconfirmed (the
    journal keeps `sending`, so the next run asks the server first).
    """
    try:
        try:
            finish = await _drive(ctx, job, flow)
        except Stopping:
            finish = _cut_short(job, "the run stopped before it was sent")
        except StoppedError as exc:
            ctx.stop_with(exc)
            finish = _cut_short(job, f"the run stopped: {exc}")
        except anyio.get_cancelled_exc_class():
            # The stop's grace ran out (or a caller cancelled), most likely with this
            # learner's request on the wire: recorded (synchronously, so the cancellation
            # cannot interrupt it), then the cancellation goes on.
            job.maybe_sent = job.maybe_sent or job.on_wire
            where = "while it was on the wire" if job.on_wire else "before it was sent"
            _record(ctx, job, _cut_short(job, f"the run stopped {where}"))
            raise
        return _record(ctx, job, finish)
    finally:
        _let_go(ctx, job)


async def _drive(ctx: Context, job: Job, flow: LearnerFlow) -> Finish:
    client = ctx.client
    action = flow.start()
    while True:
        if isinstance(action, Finish):
            if action.stop is not None:
                message = action.stop.message
                if action.stop.http_status in (403, 404):
                    message = f"badge {job.badge_id} {message}"
                    badge = ctx.badges.setdefault(job.badge_id, Badge())
                    if badge.of_rows:
                        # A row's own badge (the API did not answer for it before): its
                        # learners fail, this one and those after, and the run goes on.
                        badge.refused = badge.refused or message
                        badge.refused_status = badge.refused_status or action.stop.http_status
                        return replace(action, status=Status.FAILED, reason=message, stop=None)
                refused = action.stop.http_status == 401
                ctx.stop_with(CredentialsRejected(message) if refused else FatalError(message))
            return action
        if isinstance(action, Wait):
            if job.maybe_sent or action.seconds > 0:
                ctx.emit(
                    RetryScheduled(
                        job.row.number,
                        job.learner.email,
                        job.badge_id,
                        job.attempts,
                        None,
                        action.why,
                        action.seconds,
                    )
                )
            await client.sleep(action.seconds)
            action = action.then
            continue
        if isinstance(action, Verify):
            action = flow.looked_up(await _look_up(ctx, job))
            continue
        assert isinstance(action, Send)
        action = await _send(ctx, job, flow)


#: Seconds after a send before the badge's list is believed when it does not show the
#: learner: a list behind its writes (a read replica, a search index) shows an assertion
#: made a moment ago only a moment later, and "not held" then sends it again.
LOOKUP_SETTLE = 3.0


async def _look_up(ctx: Context, job: Job) -> Lookup:
    """Ask the server whether the learner holds the badge (a send of it may have gone
    through). Found is believed at once; not found only from a lookup begun at least
    `LOOKUP_SETTLE` seconds after this run's last send of the learner: an earlier one
    that finds nothing is asked again then."""
    lookup = await ctx.lookups.find(job.badge_id, job.learner.email)
    if lookup.held is False and job.sent_at is not None:
        wait = job.sent_at + LOOKUP_SETTLE - anyio.current_time()
        if wait > 0:
            await ctx.client.sleep(wait)
            lookup = await ctx.lookups.find(job.badge_id, job.learner.email)
    return lookup


async def _send(ctx: Context, job: Job, flow: LearnerFlow) -> Finish | Send | Verify | Wait:
    """One issue call through the request path; until the badge is confirmed, one at a time."""
    badge = ctx.badges.setdefault(job.badge_id, Badge())
    if not badge.confirmed:
        async with badge.lock:
            if badge.refused is not None:
                # Refused to the learner before this one: not sent.
                return Finish(Status.FAILED, badge.refused_status, badge.refused)
            if not badge.confirmed:
                return await _exchange(ctx, job, flow, badge)
        # Confirmed while this learner waited: the others waiting go at once, not in turn.
    return await _exchange(ctx, job, flow, badge)


async def _exchange(
    ctx: Context, job: Job, flow: LearnerFlow, badge: Badge
) -> Finish | Send | Verify | Wait:
    client = ctx.client
    path = f"/v1/badge/{job.badge_id}/issue"
    retry = client.retries_for()
    try:
        return await _exchange_loop(ctx, job, flow, badge, path, retry)
    except (Stopping, StoppedError):
        if job.sends and not job.maybe_sent:
            # No send of this run can have been processed: the learner stands as before.
            ctx.journal.restore(job.badge_id, job.learner.key, job.entry)
            job.stored = job.entry is not None
        raise


async def _exchange_loop(
    ctx: Context, job: Job, flow: LearnerFlow, badge: Badge, path: str, retry: RequestRetry
) -> Finish | Send | Verify | Wait:
    client = ctx.client
    while True:
        # Everything durable is written before the slot is taken, so that the request
        # leaves the moment its slot comes: a commit between the two would make it late,
        # and a late request pushes every later one (the pacer keeps the gap after it).
        job.attempts += 1
        job.sends += 1
        ctx.journal.mark_sending(
            job.badge_id,
            job.learner.key,
            row=job.row.number,
            email=job.learner.email,
            attempts=job.attempts,
            # The row is stored with this run's first send; later sends need not encode it.
            fields=None if job.stored else job.row.fields,
        )
        job.stored = True
        # The send is on disk before the request leaves.
        await ctx.journal.committed()
        # The shared ledger too knows before the first send leaves that it may be
        # processed: should this run die, the next claimant asks the server first.
        # (After the journal: a ledger that says so implies a journal that does.) And
        # the claim is still this run's: not taken over while this run was held up.
        claimed = job.claimed and ctx.claims is not None
        if claimed and not await _still_claimed(ctx, job, first=job.sends == 1):
            return _claim_lost(ctx, job)
        try:
            ticket = await client.slot(again=retry.limited > 0)
        except BaseException as exc:
            # Stopped, cancelled or refused a login while waiting: the request has not
            # left. `_exchange` restores the journal entry after a stop; a cancellation
            # is put back here.
            job.attempts -= 1
            if not isinstance(exc, Stopping | StoppedError) and not job.maybe_sent:
                ctx.journal.restore(job.badge_id, job.learner.key, job.entry)
                job.stored = job.entry is not None
            raise
        if client.stopping.is_set():
            # Stopped as the slot came: the request has not left, and must not.
            job.attempts -= 1
            raise Stopping
        # The slot came long after the claim was last confirmed (a long wait, or the
        # process suspended): its lease may have lapsed, and another run taken over the
        # learner and sent it. Asked again, once: the slot goes unused if so.
        stale = claimed and _unconfirmed_for(ctx, job) > _CONFIRM_AFTER
        if stale and not await _still_claimed(ctx, job, first=False):
            return _claim_lost(ctx, job)
        outcome: Answer | NotSent
        job.on_wire = True
        job.sent_at = anyio.current_time()
        try:
            outcome = await client.send(ticket, "PUT", path, body=job.learner.payload())
        except NotSent as exc:
            outcome = exc
        except NoReply as exc:
            job.maybe_sent = True
            job.on_wire = False
            outage = client.note_unanswered(path, str(exc))
            return flow.no_answer(str(exc), outage=outage)
        # Answered, or known not to have left. (A cancellation while it was out leaves
        # `on_wire` set: see `settle`.)
        job.on_wire = False
        if isinstance(outcome, Answer) and outcome.status in (500, 502, 504):
            job.maybe_sent = True
            outage = client.note_unanswered(path, f"HTTP {outcome.status}: {outcome.detail}")
            return flow.answered(outcome.status, outcome.detail, outage=outage)
        if isinstance(outcome, Answer) and _not_the_assertion(outcome):
            # A 2xx that is not the assertion (a proxy's or a portal's page, a gateway's
            # JSON): it may have gone through or not, and when every issue call gets one,
            # that is an outage.
            job.maybe_sent = True
            why = f"HTTP {outcome.status} without the assertion: {outcome.detail}"
            outage = client.note_unanswered(path, why)
            return flow.answered(outcome.status, outcome.detail, outage=outage, assertion=False)
        if await client.settle(retry, ticket, outcome, path=path):
            continue
        assert isinstance(outcome, Answer)
        if 200 <= outcome.status < 300 and (other := _names_another(outcome, job)):
            job.maybe_sent = True
            return flow.answered(outcome.status, outcome.detail, other=other)
        if 200 <= outcome.status < 300:
            badge.confirmed = True
        body = outcome.body if isinstance(outcome.body, dict) else {}
        assertion = body.get("id")
        return flow.answered(
            outcome.status,
            outcome.detail,
            assertion_id=None if assertion is None else outcome.shown(assertion),
            badge_confirmed=badge.confirmed or badge.exists,
        )


#: The keys of which an issue call's 2xx body must carry one, as the assertion record the
#: API answers with does (`id`; the others in case a version names it otherwise). Not the
#: recipient's fields: a gateway that queues a request may echo them back.
_ASSERTION_KEYS = ("id", "assertion_id", "uuid")


def _not_the_assertion(answer: Answer) -> bool:
    """A 2xx that does not show the assertion record the API answers a success with: a
    page, nothing, JSON of another shape (`{"detail": "..."}`, `{}`, a list, an echo of
    the request), or a 202 (accepted, not done)."""
    if not 200 <= answer.status < 300:
        return False
    body = answer.body
    if answer.status == 202 or not isinstance(body, dict):
        return True
    return not any(_an_id(body.get(key)) for key in _ASSERTION_KEYS)


#: A claim confirmed longer ago than this share of its lease is confirmed again before a
#: send (renewals come every sixth of it: one missed is ordinary, three are not).
_CONFIRM_AFTER = 1 / 3

#: Why a learner whose claim another run took over was not sent by this run.
CLAIM_LOST = (
    "another run of the account took this learner over while this run was held up past "
    "its claim's lease (the process suspended, or the shared store emptied); not sent by "
    "this run: the other run settles it, and a rerun shows how"
)


async def _still_claimed(ctx: Context, job: Job, *, first: bool) -> bool:
    """Whether this run still holds the learner's claim (`sending` before its first send,
    which also notes the send), noting when it was confirmed."""
    assert ctx.claims is not None
    try:
        if first:
            ours = await ctx.claims.sending(job.badge_id, job.learner.key)
        else:
            ours = await ctx.claims.confirm(job.badge_id, job.learner.key)
    except StoppedError:
        job.attempts -= 1
        raise
    job.confirmed_at = time.monotonic()
    return ours


def _unconfirmed_for(ctx: Context, job: Job) -> float:
    """How long since the claim was last confirmed, as a share of its lease."""
    assert ctx.claims is not None
    return (time.monotonic() - job.confirmed_at) / ctx.claims.lease


def _claim_lost(ctx: Context, job: Job) -> Finish:
    """The claim is another run's now: this send does not leave, and this run writes
    nothing of the learner to the ledger (the other run settles it)."""
    job.attempts -= 1
    job.sends -= 1
    job.claimed = False
    if not job.maybe_sent:
        ctx.journal.restore(job.badge_id, job.learner.key, job.entry)
        job.stored = job.entry is not None
        return Finish(Status.NOT_ATTEMPTED, reason=CLAIM_LOST)
    return Finish(
        Status.UNCONFIRMED,
        reason=f"{CLAIM_LOST}; an earlier send of this run went unanswered",
    )


def _names_another(answer: Answer, job: Job) -> str | None:
    """What a 2xx's assertion names that this call did not ask for (another badge, another
    recipient's address), as text to show; None when it names this one, or says nothing.
    An address is compared as the learner's key is (case, Unicode forms, IDNA)."""
    body = answer.body if isinstance(answer.body, dict) else {}
    badge = body.get("badge_id")
    if not isinstance(badge, int | str) or isinstance(badge, bool):
        badge = None
    if badge is not None and str(badge).strip() not in ("", str(job.badge_id)):
        return f"badge {answer.shown(badge, 40)}"
    email = body.get("recipient_email")
    if not isinstance(email, str) or not email.strip() or not job.learner.email:
        return None
    if normalised_email(email) != job.learner.key:
        return f"another recipient ({answer.shown(email, 80)})"
    return None


def _an_id(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value > 0
    return isinstance(value, str) and bool(value.strip()) and value.strip() != "0"


def _cut_short(job: Job, why: str) -> Finish:
    if job.maybe_sent:
        return Finish(
            Status.UNCONFIRMED,
            reason=f"{why}; a send went unanswered: the next run asks the server first",
        )
    return Finish(Status.NOT_ATTEMPTED, reason=why)


def _record(ctx: Context, job: Job, finish: Finish) -> Outcome:
    """Write the final state to the journal and emit the outcome."""
    state = _STATES.get(finish.status)
    if state is not None and not (state is State.SENDING and not job.stored):
        ctx.journal.mark(
            job.badge_id,
            job.learner.key,
            state,
            row=job.row.number,
            email=job.learner.email,
            fields=None if job.stored else job.row.fields,
            http_status=finish.http_status,
            reason=finish.reason,
            assertion_id=finish.assertion_id,
            flags=",".join(finish.flags) or None,
        )
    elif state is None and job.sends and not job.maybe_sent:
        # Not attempted after all (a 401/403/404 stopped the run): every send of this run
        # was answered and refused, so the learner stands as before, not `sending`.
        ctx.journal.restore(job.badge_id, job.learner.key, job.entry)
    if job.claimed and ctx.claims is not None:
        job.claimed = False
        ending = _ENDINGS.get(finish.status, Ending.RELEASED)
        if job.maybe_sent and ending is Ending.RELEASED:
            ending = Ending.UNCONFIRMED  # the next claimant asks the server first
        ctx.claims.settle(job.badge_id, job.learner.key, ending, after=ctx.journal.committed)
    outcome = _outcome(
        job.row,
        job.badge_id,
        finish.status,
        attempts=job.attempts,
        http_status=finish.http_status,
        reason=finish.reason,
        assertion_id=finish.assertion_id,
        flags=finish.flags,
        queued=True,
    )
    ctx.emit(outcome)
    return outcome


def _flags(text: str | None) -> tuple[str, ...]:
    return tuple(flag for flag in (text or "").split(",") if flag)


def _outcome(row: Row, badge_id: int, status: Status, **kw: object) -> Outcome:
    learner = row.learner
    return Outcome(
        row=row.number,
        email=learner.email if learner else "",
        badge_id=badge_id,
        status=status,
        fields=dict(row.fields),
        **kw,  # type: ignore[arg-type]
    )
