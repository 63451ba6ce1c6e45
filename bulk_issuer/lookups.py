"""Asking the server who holds a badge: `GET /v1/badge_assertion/`.

Used twice: once per badge at start, to skip learners who already hold it, and before
re-sending a learner whose earlier send went unanswered.

Only an answer of the documented shape (`{"items": [...], "page", "pages", "size",
"total"}`, each item with its `recipient_email`) proves anything. An item that shows the
learner holding the badge proves "held" wherever it is found. "Not held" (and a holders
list called complete) takes more, by one rule for every list read (`_Paging`): every page
readable, the list read to an end the server itself states (its `total` and `pages`
covered, or, when it gives neither, an empty page), and every count it gives agreeing
with the others and with what was read: no page larger than its size, no page short of
it but the last, `pages` that fit `total`, a `total` that neither shrinks nor is passed,
no page past `pages`. A server that serves smaller pages than asked, saying so or not, is
asked for pages of that size from then on, so that its pages start where they should.
The lookup by address proves "not held" only when it is, by that rule, and really
filtered by the address (the API reference warns that the filter is admin-only and may be
ignored); an answer holding other learners' assertions sends every later check to the
whole list. Anything less is "cannot tell" (`Lookup(held=None)`), never "not held".
"""

from __future__ import annotations

import re
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


@dataclass(slots=True)
class _Paging:
    """Where the reading of one list stands, and the one rule for where it ends.

    Fed each page in turn (`after`), it says whether to read the next and, once it ends,
    whether the list was read whole (`doubt` is None) or why not. Reading goes on past a
    doubt while the list's counts (or, without counts, its pages) say there is more, so that
    every holder it shows is found; a doubt only stops it being called complete.
    """

    #: The page to ask for next, and its size.
    number: int = 1
    size: int = _PAGE
    #: Items read so far, repeats included.
    seen: int = 0
    #: The page size the server serves, as page 1 showed it (stated, or counted).
    served: int | None = None
    #: The latest `total` and `pages` stated.
    total: int | None = None
    pages: int | None = None
    #: The last page read held fewer items than a page: it should have been the last.
    short: bool = False
    #: The first reason the list cannot be called complete.
    doubt: str | None = None
    #: How the end was told, when it was not by the list's counts.
    note: str | None = None
    #: (email, assertion id) of every item read: a page that brings nothing new means the
    #: server ignores `page` (it would otherwise "cover" the total with repeats, or never end).
    known: set[tuple[str, str | None]] = field(default_factory=set)

    def after(self, page: _Page) -> bool:
        """Take in page `number`; True when the reading ends there (see `doubt`)."""
        number, count = self.number, len(page.items)
        items = {(key, assertion_id) for key, assertion_id, _ in page.items}
        if number > 1 and items and items <= self.known:
            return self._end(f"page {number} repeats earlier assertions: the list ignores paging")
        self.known |= items
        if self.served is None:
            # A server that serves fewer than asked may not say so: the items count then.
            self.served = page.page_size or count or self.size
        served = self.served
        if page.page_size is not None and page.page_size != served:
            self._doubt(f"page {number} says pages of {page.page_size}, page 1 of {served}")
        if count > served:
            self._doubt(f"page {number} holds {count} assertions, more than its size {served}")
        if count and self.short:
            self._doubt(f"page {number} holds assertions after a short page {number - 1}")
        if page.total is not None:
            if self.total is not None and page.total < self.total:
                self._doubt(f"the list said {self.total} assertions, then {page.total}")
            self.total = page.total
        if page.pages is not None:
            self.pages = page.pages
        total, pages = self.total, self.pages
        if (
            total is not None
            and pages is not None
            and pages != -(-total // served)
            and (total or pages > 1)  # an empty list may count its one empty page, or none
        ):
            self._doubt(f"the list says {total} assertions in {pages} pages of {served}")
        self.seen += count
        if not count:
            if total is not None and self.seen < total:
                return self._end(
                    f"the list says {total} assertions but page {number} was empty "
                    f"after {self.seen}"
                )
            if pages is not None and pages >= max(number, 2):
                return self._end(f"the list says {pages} pages but page {number} was empty")
            if self.short and total is None and pages is None:
                self.note = "the list gives no total: read until a short page, then an empty one"
            return True
        if total is not None and self.seen > total:
            self._doubt(f"the list says {total} assertions but {self.seen} were read")
        if pages is not None and number > pages:
            self._doubt(f"page {number} holds assertions but the list says {pages} pages")
        if total is not None or pages is not None:
            more = (total is not None and self.seen < total) or (
                pages is not None and number < pages
            )
            if not more:
                return True
        self.short = count < served
        if number >= _MAX_PAGES:
            return self._end(f"more than {_MAX_PAGES} pages: not believed")
        self.number += 1
        self.size = min(served, _PAGE)
        return False

    def _doubt(self, why: str) -> None:
        if self.doubt is None:
            self.doubt = why

    def _end(self, why: str) -> bool:
        self._doubt(why)
        return True


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
        return await self._read(badge_id)

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
            doubt: str | None = None
            for spelling in _spellings(email):
                holders = await self._read(badge_id, spelling)
                if key in holders.held:
                    return Lookup(True, holders.held[key])
                if self._unfiltered:
                    break
                if not holders.complete and doubt is None:
                    doubt = holders.note or "the assertions list could not be read whole"
            else:
                return Lookup(False) if doubt is None else Lookup(None, why=doubt)
        # The filter is ignored (seen now or before): only the whole list can tell.
        holders = await self._read(badge_id)
        if key in holders.held:
            return Lookup(True, holders.held[key])
        if holders.complete:
            return Lookup(False)
        return Lookup(None, why=holders.note or "the assertions list could not be read whole")

    async def _read(self, badge_id: int, email: str | None = None) -> Holders:
        """Who holds the badge, the list paged through as far as `_Paging` allows.

        With `email`, only that learner's assertions are asked for, and the reading stops
        at the first that holds the badge, or at the first answer holding other learners'
        assertions: the filter is ignored (`_unfiltered`), and that answer proves nothing.
        """
        holders = Holders()
        if self.unavailable is not None:
            holders.note = self.unavailable
            return holders
        key = normalised_email(email) if email else None
        paging = _Paging()
        while True:
            params: dict[str, str | int] = {
                "badge_id": badge_id,
                "page": paging.number,
                "size": paging.size,
            }
            if email:
                params["recipient_email"] = email
            answer = await self._get(params)
            if isinstance(answer, str):
                holders.note = answer
                return holders
            page = _read_page(answer, badge_id)
            if isinstance(page, str):
                holders.note = f"page {paging.number}: {page}"
                return holders
            # An item showing the badge held proves it, whatever the rest of the list says.
            for other, assertion_id, holds in page.items:
                if holds and other:
                    holders.held.setdefault(other, assertion_id)
            if key is not None:
                if key in holders.held:
                    return holders
                if any(other != key for other, _, _ in page.items):
                    self._unfiltered = True
                    return holders
            if paging.after(page):
                holders.complete = paging.doubt is None
                holders.note = paging.doubt or paging.note
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


def _read_page(answer: Answer, badge_id: int) -> _Page | str:
    """The page in the documented shape, or why it is not one.

    An item naming another badge (a server that ignores the `badge_id` filter lists the
    account's assertions of every badge) counts for the paging but holds nothing of ours;
    an item naming none is taken as the filtered badge's.
    """
    body: Any = answer.body
    if isinstance(body, str):
        shown = answer.detail if "<" in body else answer.shown(body, 60)
        return f"the assertions list answered with text, not JSON ({shown!r})"
    if not isinstance(body, dict):
        return f"the assertions list answered a JSON {type(body).__name__}, not an object"
    items = body.get("items")
    if not isinstance(items, list):
        keys = answer.shown(", ".join(sorted(str(k) for k in body)[:8]))
        return f"the assertions list has no 'items' list (keys: {keys})"
    read: list[tuple[str, str | None, bool]] = []
    for item in items:
        if not isinstance(item, dict) or "recipient_email" not in item:
            return "an item of the assertions list has no recipient_email"
        email = item.get("recipient_email")
        badge = _badge_of(item)
        if badge == _UNREADABLE:
            shown = answer.shown(repr(item.get("badge_id")), 40)
            return f"an item of the assertions list has a badge_id that is not a number ({shown})"
        status = str(item.get("status") or "").lower()
        held_id = item.get("id")
        read.append(
            (
                normalised_email(email) if isinstance(email, str) and email.strip() else "",
                None if held_id is None else answer.shown(held_id),
                status not in _NOT_HELD and badge in (None, badge_id),
            )
        )
    return _Page(
        read, _count(body.get("size")), _count(body.get("pages")), _count(body.get("total"))
    )


def _spellings(email: str) -> list[str]:
    """The spellings of an address the filter is asked for, each until one finds it: as
    typed, as the learner's key (lower case), and with only the domain lower-cased. A
    server may store an address in any of them and compare exactly (SQL's `=`); "not
    held" needs every one of them to say so."""
    typed = email.strip()
    local, at, domain = typed.rpartition("@")
    forms = [typed, normalised_email(typed), f"{local}{at}{domain.lower()}" if at else typed]
    return list(dict.fromkeys(forms))


_UNREADABLE = -1


def _badge_of(item: dict[str, Any]) -> int | None:
    """The badge an item names (None: it names none), or `_UNREADABLE`."""
    value = item.get("badge_id")
    if value is None:
        return None
    if isinstance(value, str) and re.fullmatch(r"\s*\d{1,15}\s*", value):
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return _UNREADABLE


def _count(value: object) -> int | None:
    """A non-negative whole number, or None for anything else ("n/a", 2.5, True, -1)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None
