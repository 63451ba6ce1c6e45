"""The one-call entry points: `issue_badges` (async) and `issue_badges_sync`."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from .auth import Auth
from .client import DEFAULT_BASE_URL
from .cohort import LearnerInput
from .coordination import Coordinator
from .engine import BadgeIssuer
from .events import Event, Logger
from .journal import Journal
from .outcomes import Outcome, Summary
from .pacing import DEFAULT_MARGIN, DEFAULT_RATE, Rate
from .readers import ReadOptions
from .retry import RetryPolicy

__all__ = ["issue_badges", "issue_badges_sync"]


async def issue_badges(
    learners: LearnerInput,
    *,
    badge_id: int | None,
    auth: Auth,
    base_url: str = DEFAULT_BASE_URL,
    rate: str | Rate | None = DEFAULT_RATE,
    journal: str | os.PathLike[str] | Journal | None = None,
    workers: int | None = None,
    policy: RetryPolicy | None = None,
    allow_duplicates: bool = False,
    on_event: Callable[[Event], None] | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    logger: Logger | logging.Logger | None = None,
    read_options: ReadOptions | None = None,
    margin: float = DEFAULT_MARGIN,
    coordinator: str | Coordinator | None = None,
) -> Summary:
    """Issue `badge_id` to every learner and return the counts.

    Args:
        learners: a CSV, JSON Lines or workbook path, or an (async) iterable of `Learner`
            or dict rows (with any of the column names the README lists).
        badge_id: the badge, the number in its URL; a row's own `badge_id` wins.
        auth: `PersonalAccessToken(...)` or `PasswordAuth(user, password)`.
        base_url: the API root.
        rate: the server's budget, like `"5/2s"`; None for no pacing.
        journal: an SQLite path (or an open `Journal`) that makes a rerun resume; None
            keeps the state in memory for this call only.
        workers: concurrent learners; the default suits the rate.
        policy: retries, deadlines, how long an outage is ridden out.
        allow_duplicates: do not look up who already holds the badge.
        on_event: called with every typed event (`bulk_issuer.events`); a plain function,
            not an async one (refused with a TypeError).
        on_outcome: called with each learner's `Outcome`.
        logger: a structlog-style logger, or a standard `logging.Logger`; by default the
            library prints nothing unless the application configured structlog or logging.
        read_options: how to read files (delimiter, encoding, column map, sheet, ...).
        margin: seconds of network jitter the pacer leaves in every window.
        coordinator: where the account's budget and claims are shared: None (every run
            on this machine, the default), `"redis://HOST:PORT/DB"` (every host) or
            `"memory"` (this call only); see `BadgeIssuer`.

    Returns:
        The counts: every row is in exactly one of issued, already_held, skipped, failed,
        invalid, unconfirmed, not_attempted.

    Raises:
        FatalError: the credentials or the badge were refused; `.summary` has the counts.
        UnavailableError: the API could not be reached or stayed unavailable; `.summary`
            has the counts; a rerun with the same journal resumes.
        InputError: the input cannot be read.
        JournalError: the journal is in use by another run, or is not a journal.
    """
    async with BadgeIssuer(
        auth=auth,
        base_url=base_url,
        rate=rate,
        journal=journal,
        workers=workers,
        policy=policy,
        allow_duplicates=allow_duplicates,
        on_event=on_event,
        on_outcome=on_outcome,
        logger=logger,
        read_options=read_options,
        margin=margin,
        coordinator=coordinator,
    ) as issuer:
        return await issuer.run(learners, badge_id=badge_id)


def issue_badges_sync(
    learners: LearnerInput,
    *,
    badge_id: int | None,
    auth: Auth,
    base_url: str = DEFAULT_BASE_URL,
    rate: str | Rate | None = DEFAULT_RATE,
    journal: str | os.PathLike[str] | Journal | None = None,
    workers: int | None = None,
    policy: RetryPolicy | None = None,
    allow_duplicates: bool = False,
    on_event: Callable[[Event], None] | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    logger: Logger | logging.Logger | None = None,
    read_options: ReadOptions | None = None,
    margin: float = DEFAULT_MARGIN,
    coordinator: str | Coordinator | None = None,
) -> Summary:
    """`issue_badges` for synchronous code: a script, a notebook, a framework's sync view.

    Takes the same arguments and returns the same summary. From a plain script it runs its
    own event loop; called where an event loop is already running in this thread (a
    notebook, an async framework calling sync code), it runs the issuing in a thread of
    its own with its own loop and waits for it, so it never deadlocks that loop (which is
    blocked meanwhile: in async code, `await issue_badges(...)` instead). Callbacks
    (`on_event`, `on_outcome`) then run on that thread.

    Args:
        learners: a CSV, JSON Lines or workbook path, or an (async) iterable of `Learner`
            or dict rows (with any of the column names the README lists).
        badge_id: the badge, the number in its URL; a row's own `badge_id` wins.
        auth: `PersonalAccessToken(...)` or `PasswordAuth(user, password)`.
        base_url: the API root.
        rate: the server's budget, like `"5/2s"`; None for no pacing.
        journal: an SQLite path (or an open `Journal`) that makes a rerun resume; None
            keeps the state in memory for this call only.
        workers: concurrent learners; the default suits the rate.
        policy: retries, deadlines, how long an outage is ridden out.
        allow_duplicates: do not look up who already holds the badge.
        on_event: called with every typed event (`bulk_issuer.events`); a plain function,
            not an async one (refused with a TypeError).
        on_outcome: called with each learner's `Outcome`.
        logger: a structlog-style logger, or a standard `logging.Logger`; by default the
            library prints nothing unless the application configured structlog or logging.
        read_options: how to read files (delimiter, encoding, column map, sheet, ...).
        margin: seconds of network jitter the pacer leaves in every window.
        coordinator: where the account's budget and claims are shared: None (every run
            on this machine, the default), `"redis://HOST:PORT/DB"` (every host) or
            `"memory"` (this call only); see `BadgeIssuer`.

    Returns:
        The counts: every row is in exactly one of issued, already_held, skipped, failed,
        invalid, unconfirmed, not_attempted.

    Raises:
        FatalError: the credentials or the badge were refused; `.summary` has the counts.
        UnavailableError: the API could not be reached or stayed unavailable; `.summary`
            has the counts; a rerun with the same journal resumes.
        InputError: the input cannot be read.
        JournalError: the journal is in use by another run, or is not a journal.
    """
    call = issue_badges(
        learners,
        badge_id=badge_id,
        auth=auth,
        base_url=base_url,
        rate=rate,
        journal=journal,
        workers=workers,
        policy=policy,
        allow_duplicates=allow_duplicates,
        on_event=on_event,
        on_outcome=on_outcome,
        logger=logger,
        read_options=read_options,
        margin=margin,
        coordinator=coordinator,
    )
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(call)
    return _in_thread(call)


def _in_thread(call: Any) -> Summary:
    box: dict[str, Any] = {}
    context = contextvars.copy_context()

    def run() -> None:
        try:
            box["result"] = context.run(asyncio.run, call)
        except BaseException as exc:  # handed to the caller's thread as it is
            box["error"] = exc

    thread = threading.Thread(target=run, name="bulk-issuer", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    result: Summary = box["result"]
    return result
