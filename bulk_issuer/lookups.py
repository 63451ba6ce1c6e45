"""Asking the server who holds a badge: `GET /v1/badge_assertion/`.

Used twice: once per badge at start, to skip learners who already hold it, and before
re-sending a learner whose earlier attempt went unanswered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from .client import Answer, NavigatrClient, TransportError
from .retry import RetryPolicy, retry_after

__all__ = ["AssertionLookup", "LookupRefused"]

#: Assertion statuses that do not mean the learner holds the badge.
_NOT_HELD = frozenset({"revoked"})

#: The page size the API allows at most.
_PAGE = 100


class LookupRefused(Exception):
    """The credentials were refused (401) while looking up assertions."""


class AssertionLookup:
    """The assertions list of the run's badges, read with retries, paced like every call.

    If the list answers 403 or 404, that is said once (`lookup.unavailable`) and every
    later question answers "cannot tell".

    Args:
        client: the run's API client.
        policy: retry budget and backoff.
        log: where `lookup.unavailable` and `lookup.failed` go.
        sleep: waits `seconds` unless the run is stopping (then returns False).
    """

    def __init__(
        self,
        client: NavigatrClient,
        policy: RetryPolicy,
        log: Any,
        sleep: Callable[[float], Awaitable[bool]],
    ) -> None:
        self._client = client
        self._policy = policy
        self._log = log
        self._sleep = sleep
        #: Why the list cannot be read, once known.
        self.unavailable: str | None = None

    async def holders(self, badge_id: int) -> dict[str, str | None]:
        """Everyone who holds the badge now: normalised email -> assertion id.

        Empty when the list cannot be read (the run then says so once and goes on).
        """
        held: dict[str, str | None] = {}
        page, pages = 1, 1
        while page <= pages:
            answer = await self._get(
                {"badge_id": badge_id, "page": page, "size": _PAGE}, purpose="list holders"
            )
            if answer is None:
                return held
            held.update(_holders(answer))
            body = answer.body if isinstance(answer.body, dict) else {}
            pages = int(body.get("pages") or 1)
            page += 1
        self._log.info("badge.holders_loaded", badge_id=badge_id, holders=len(held))
        return held

    async def find(self, badge_id: int, email: str, key: str) -> tuple[bool | None, str | None]:
        """Whether the learner holds the badge (an earlier, unanswered attempt issued it).

        Returns:
            (True, assertion id) if so, (False, None) if not, (None, None) if the server
            cannot be asked (no lookup endpoint, or a learner known only by recipient_id).
        """
        if not email:
            return None, None
        answer = await self._get(
            {"badge_id": badge_id, "recipient_email": email, "page": 1, "size": _PAGE},
            purpose="verify",
        )
        if answer is None:
            return None, None
        held = dict(_holders(answer))
        if key in held:
            return True, held[key]
        return False, None

    async def _get(self, params: Mapping[str, str | int], *, purpose: str) -> Answer | None:
        """One page of the list, retried; None when it cannot be had."""
        if self.unavailable is not None:
            return None
        failures = limited = 0
        while True:
            try:
                answer = await self._client.request("GET", "/v1/badge_assertion/", params=params)
            except TransportError as exc:
                problem = str(exc)
            else:
                if answer.status == 200:
                    return answer
                if answer.status == 401:
                    raise LookupRefused(
                        f"the server refused the credentials (HTTP 401): {answer.detail}"
                    )
                if answer.status in (403, 404):
                    self.unavailable = f"HTTP {answer.status}: {answer.detail}"
                    self._log.warning(
                        "lookup.unavailable",
                        http_status=answer.status,
                        reason=answer.detail,
                        purpose=purpose,
                    )
                    return None
                problem = f"HTTP {answer.status}: {answer.detail}"
                if answer.status == 429 and limited < self._policy.rate_limited_attempts:
                    limited += 1
                    self._client.pacer.rate_limited_for(retry_after(answer.headers))
                    continue
            failures += 1
            if failures >= self._policy.attempts:
                self._log.warning("lookup.failed", reason=problem, purpose=purpose)
                return None
            if not await self._sleep(self._policy.backoff(failures)):
                return None


def _holders(answer: Answer) -> Iterator[tuple[str, str | None]]:
    """(normalised email, assertion id) of each assertion listed that holds the badge."""
    body = answer.body if isinstance(answer.body, dict) else {}
    for item in body.get("items") or []:
        if not isinstance(item, dict):
            continue
        email = item.get("recipient_email")
        status = str(item.get("status", "")).lower()
        if isinstance(email, str) and email.strip() and status not in _NOT_HELD:
            held_id = item.get("id")
            yield email.strip().lower(), None if held_id is None else str(held_id)
