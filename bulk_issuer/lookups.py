"""Asking the server who holds a badge: `GET /v1/badge_assertion/`.

Used twice: once per badge at start, to skip learners who already hold it, and before
re-sending a learner whose earlier send went unanswered.

Only an answer of the documented shape (`{"items": [...], "page", "pages", "size",
"total"}`, each item with its `recipient_email`) proves anything. The lookup by address
proves "not held" only when the answer is readable and really filtered by the address
(the API reference warns that the filter is admin-only and may be ignored); otherwise the
whole list is paged through, and if that cannot be read whole either, the answer is
"cannot tell" (`Lookup(held=None)`), never "not held".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .client import Answer, NavigatrClient
from .errors import CredentialsRejected
from .events import Event, LookupUnavailable
from .flow import Lookup
from .learners import normalised_email

__all__ = ["AssertionLookup", "Holders"]

_PATH = "/v1/badge_assertion/"

#: Assertion statuses that do not mean the learner holds the badge.
_NOT_HELD = frozenset({"revoked"})

#: The page size the API allows at most.
_PAGE = 100

#: No badge has more holders than this many pages; past it the answers are not believed.
_MAX_PAGES = 20_000


@dataclass(slots=True)
class Holders:
    """Who holds a badge, as far as the list could be read.

    Attributes:
        held: normalised email -> assertion id (None when the item had none).
        complete: the whole list was read; False means learners missing from `held` may
            still hold the badge.
        note: why it is incomplete, or how the end of the list was told.
    """

    held: dict[str, str | None] = field(default_factory=dict)
    complete: bool = False
    note: str | None = None


@dataclass(frozen=True, slots=True)
class _Page:
    items: list[tuple[str, str | None, bool]]  # (normalised email, assertion id, holds it)
    page_size: int | None
    pages: int | None
    total: int | None


class AssertionLookup:
    """The assertions list of the run's badges, read on the client's request path.

    If the list answers 403 or 404, that is said once (`LookupUnavailable`) and every
    later question answers "cannot tell" at once.

    Args:
        client: the run's API client.
        emit: where `LookupUnavailable` goes.
    """

    def __init__(self, client: NavigatrClient, emit: Callable[[Event], None]) -> None:
        self._client = client
        self._emit = emit
        #: Why the list cannot be used, once known.
        self.unavailable: str | None = None
        #: The server ignores the address filter: every check reads the whole list.
        self._unfiltered = False

    async def holders(self, badge_id: int) -> Holders:
        """Everyone who holds the badge now, as far as the list can be read."""
        return await self._read_all(badge_id)

    async def find(self, badge_id: int, email: str) -> Lookup:
        """Whether the learner with `email` holds the badge (an unanswered send issued it).

        Raises:
            CredentialsRejected: the credentials were refused.
            UnavailableError: the list stayed unavailable (the run stops).
            Stopping: the run is stopping.
        """
        if not email:
            return Lookup(None, why="the learner has no email to look up")
        if self.unavailable is not None:
            return Lookup(None, why=self.unavailable)
        key = normalised_email(email)
        if not self._unfiltered:
            answer = await self._get(
                {"badge_id": badge_id, "recipient_email": email, "page": 1, "size": _PAGE}
            )
            if isinstance(answer, str):
                return Lookup(None, why=answer)
            page = _read_page(answer)
            if isinstance(page, str):
                return Lookup(None, why=page)
            for other, assertion_id, holds in page.items:
                if other == key and holds:
                    return Lookup(True, assertion_id)
            if all(other == key for other, _, _ in page.items):
                return Lookup(False)
            # Assertions of other learners: the filter was ignored. Read the whole list.
            self._unfiltered = True
        holders = await self._read_all(badge_id)
        if key in holders.held:
            return Lookup(True, holders.held[key])
        if holders.complete:
            return Lookup(False)
        return Lookup(None, why=holders.note or "the assertions list could not be read whole")

    async def _read_all(self, badge_id: int) -> Holders:
        holders = Holders()
        if self.unavailable is not None:
            holders.note = self.unavailable
            return holders
        seen = 0
        # (email, assertion id) of every item read: a page that brings nothing new means the
        # server ignores `page` (it would otherwise "cover" the total with repeats, or never end).
        known: set[tuple[str, str | None]] = set()
        for number in range(1, _MAX_PAGES + 1):
            answer = await self._get({"badge_id": badge_id, "page": number, "size": _PAGE})
            if isinstance(answer, str):
                holders.note = answer
                return holders
            page = _read_page(answer)
            if isinstance(page, str):
                holders.note = f"page {number}: {page}"
                return holders
            items = {(key, assertion_id) for key, assertion_id, _ in page.items}
            if number > 1 and items and items <= known:
                holders.note = f"page {number} repeats earlier assertions: the list ignores paging"
                return holders
            known |= items
            for key, assertion_id, holds in page.items:
                if holds and key:
                    holders.held.setdefault(key, assertion_id)
            seen += len(page.items)
            size = page.page_size or _PAGE
            if not page.items:
                if page.total is not None and seen < page.total:
                    holders.note = (
                        f"the list says {page.total} assertions but page {number} was empty "
                        f"after {seen}"
                    )
                    return holders
                break
            more_by_pages = page.pages is not None and number < page.pages
            more_by_total = page.total is not None and seen < page.total
            if page.pages is None and page.total is None:
                if len(page.items) < size:
                    holders.note = "the list gives no total: read until a short page"
                    break
                continue
            if not (more_by_pages or more_by_total):
                break
        else:
            holders.note = f"more than {_MAX_PAGES} pages: not believed"
            return holders
        holders.complete = True
        return holders

    async def _get(self, params: dict[str, str | int]) -> Answer | str:
        """One page of the list; the reason it cannot be had, as a string, otherwise."""
        answer = await self._client.request("GET", _PATH, params=params)
        if answer.status == 200:
            return answer
        if answer.status == 401:
            raise CredentialsRejected(
                f"the server refused the credentials (HTTP 401): {answer.detail}"
            )
        reason = f"the assertions list answered HTTP {answer.status}: {answer.detail}"
        if answer.status in (403, 404, 405, 410):
            # Not for this account, or not there: it will not change during the run.
            self.unavailable = reason
            self._emit(LookupUnavailable(reason, answer.status))
        return reason


def _read_page(answer: Answer) -> _Page | str:
    """The page in the documented shape, or why it is not one."""
    body: Any = answer.body
    if isinstance(body, str):
        shown = answer.detail if "<" in body else body[:60]
        return f"the assertions list answered with text, not JSON ({shown!r})"
    if not isinstance(body, dict):
        return f"the assertions list answered a JSON {type(body).__name__}, not an object"
    items = body.get("items")
    if not isinstance(items, list):
        keys = ", ".join(sorted(str(k) for k in body)[:8])
        return f"the assertions list has no 'items' list (keys: {keys})"
    read: list[tuple[str, str | None, bool]] = []
    for item in items:
        if not isinstance(item, dict) or "recipient_email" not in item:
            return "an item of the assertions list has no recipient_email"
        email = item.get("recipient_email")
        status = str(item.get("status") or "").lower()
        held_id = item.get("id")
        read.append(
            (
                normalised_email(email) if isinstance(email, str) and email.strip() else "",
                None if held_id is None else str(held_id),
                status not in _NOT_HELD,
            )
        )
    return _Page(
        read, _count(body.get("size")), _count(body.get("pages")), _count(body.get("total"))
    )


def _count(value: object) -> int | None:
    """A non-negative whole number, or None for anything else ("n/a", 2.5, True, -1)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None
