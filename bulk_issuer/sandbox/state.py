"""What the sandbox knows and remembers: its config, tokens, assertions and every request.

Tests assert properties on a ``Sandbox`` after a run: how many assertions each learner
got (the real API has no idempotency, so a double issue shows up here), how many requests
arrived in any window, how many 429s were answered.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from aiohttp import web

from bulk_issuer.sandbox.config import SandboxConfig, ScriptedAnswer
from bulk_issuer.sandbox.limits import RateLimitModel, make_limiter
from bulk_issuer.sandbox.tokens import TokenStore

__all__ = ["DROPPED", "SANDBOX_KEY", "RequestKind", "RequestRecord", "Sandbox"]

RequestKind = Literal["token", "issue", "lookup", "badge", "other"]

DROPPED = 0
"""The ``status`` of a request that got no answer: its connection was dropped, or it hangs."""


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request that reached the server.

    Attributes:
        arrived_at: loop time when it was counted, after the simulated latency.
        method: the HTTP method.
        path: the URL path, without the query.
        status: the status answered, or ``DROPPED`` (0) when no answer was sent: the
            connection was dropped, or the request hangs (``config.hang``). A trickled
            answer is recorded with its status when its headers go out, before its body.
        kind: ``token``, ``issue``, ``lookup``, ``badge`` (``GET /v1/badge/{id}``) or
            ``other``.
    """

    arrived_at: float
    method: str
    path: str
    status: int
    kind: RequestKind


@dataclass(slots=True)
class _ScriptUse:
    """How far one scripted answer has got: requests seen, answered, when it began."""

    answer: ScriptedAnswer  # held so that its id() cannot be reused while it is counted
    seen: int = 0
    answered: int = 0
    started: float | None = None
    last: float | None = None  # when the last request reached it
    quiet: bool = False  # `until_quiet` ended it


class Sandbox:
    """The sandbox's state, shared by the aiohttp app and inspected by tests.

    Attributes:
        config: the switches; may be changed while serving.
        url: base URL such as ``http://127.0.0.1:54321`` once serving.
        requests: every request that reached the server, in order of arrival.
        assertions: every badge assertion ever created, duplicates and preloads included.
        rejected_429: how many 429s the rate limit answered (scripted 429s are not counted;
            they are in ``requests``).
        token_calls: how many requests reached the token endpoint.
        stopping: set when the server begins to shut down; hung and trickling answers
            then close their connections instead of holding the shutdown up.
    """

    def __init__(self, config: SandboxConfig | None = None) -> None:
        """Start empty, with ``config`` or the defaults."""
        self.config = config if config is not None else SandboxConfig()
        self.url = ""
        self.requests: list[RequestRecord] = []
        self.assertions: list[dict[str, Any]] = []
        #: Loop time each assertion was made, by id (for ``config.lookup_lag``).
        self.made_at: dict[int, float] = {}
        self.rejected_429 = 0
        self.token_calls = 0
        self.tokens = TokenStore()
        self.random = random.Random(self.config.seed)
        self.stopping = asyncio.Event()
        self._preloaded = 0
        #: When the first ``/v1`` request reached the server (``config.freeze`` counts
        #: from it), on the loop's clock.
        self.first_at: float | None = None
        self._script_uses: dict[int, _ScriptUse] = {}
        self._limiter: RateLimitModel | None = None
        self._limiter_spec: tuple[tuple[int, float] | None, str] | None = None

    # -- for tests -------------------------------------------------------------------------

    def issued_count(self, badge_id: int, email: str) -> int:
        """How many assertions of ``badge_id`` name ``email`` (case-insensitive)."""
        return len(self._held(badge_id, email))

    def holds(self, badge_id: int, email: str) -> bool:
        """Whether ``email`` (any case) holds a non-revoked assertion of ``badge_id``."""
        return any(a["status"] != "Revoked" for a in self._held(badge_id, email))

    def _held(self, badge_id: int, email: str) -> list[dict[str, Any]]:
        wanted = email.casefold()
        return [
            a
            for a in self.assertions
            if a["badge_id"] == badge_id and (a.get("recipient_email") or "").casefold() == wanted
        ]

    def duplicates(self) -> dict[tuple[int, str], int]:
        """(badge id, lower-cased email) -> count, for learners holding a badge more than once."""
        counts = Counter(
            (a["badge_id"], email.casefold())
            for a in self.assertions
            if (email := a.get("recipient_email"))
        )
        return {key: n for key, n in counts.items() if n > 1}

    def preload(self, badge_id: int, emails: Iterable[str]) -> None:
        """Record learners who already hold ``badge_id``, as if issued earlier in the web UI."""
        for email in emails:
            local = email.partition("@")[0]
            self.add_assertion(
                badge_id,
                {
                    "recipient_firstname": local.split(".")[0].title() or "Learner",
                    "recipient_lastname": None,
                    "recipient_email": email,
                },
                status="Claimed",
            )
            self._preloaded += 1

    @property
    def issued_by_api(self) -> int:
        """Assertions created through the API (all of ``assertions`` less the preloaded)."""
        return len(self.assertions) - self._preloaded

    # -- for the app -----------------------------------------------------------------------

    def limiter(self) -> RateLimitModel | None:
        """The rate limit model in force; rebuilt (empty) if the config's rate was changed."""
        spec = (self.config.rate, self.config.rate_model)
        if spec != self._limiter_spec:
            self._limiter_spec = spec
            rate = self.config.rate
            self._limiter = None if rate is None else make_limiter(spec[1], *rate)
        return self._limiter

    def scripted_answer(self, kind: RequestKind, now: float) -> ScriptedAnswer | None:
        """The scripted answer that takes a ``kind`` request arriving at loop time ``now``.

        Counts the request against every answer it reaches (see ``ScriptedAnswer``).
        """
        for answer in self.config.scripted:
            if answer.kind not in ("any", kind):
                continue
            use = self._script_uses.get(id(answer))
            if use is None:
                use = self._script_uses[id(answer)] = _ScriptUse(answer)
            if answer.times is not None and use.answered >= answer.times:
                continue
            if (
                answer.for_seconds is not None
                and use.started is not None
                and now >= use.started + answer.for_seconds
            ):
                continue
            if answer.until_quiet is not None and not use.quiet:
                use.quiet = use.last is not None and now - use.last >= answer.until_quiet
                use.last = now
            if use.quiet:
                continue
            use.seen += 1
            if use.seen <= answer.skip:
                continue
            if use.started is None:
                use.started = now
            use.answered += 1
            return answer
        return None

    def chance(self, probability: float) -> bool:
        """True with ``probability``, from the seeded random source."""
        # Draw nothing for 0 so that switching faults off keeps a seed's latencies the same.
        return probability > 0 and self.random.random() < probability

    def record(self, entry: RequestRecord) -> None:
        """Remember a finished request, keeping ``requests`` in order of arrival."""
        bisect.insort(self.requests, entry, key=lambda r: r.arrived_at)

    def add_assertion(
        self, badge_id: int, fields: dict[str, Any], *, status: str = "Pending"
    ) -> dict[str, Any]:
        """Create an assertion from validated ``fields``; unknown fields pass through."""
        number = len(self.assertions) + 1
        assertion: dict[str, Any] = {
            "id": number,
            "badge_id": badge_id,
            "badge_name": self.config.badges.get(badge_id, ""),
            "recipient_firstname": fields.get("recipient_firstname"),
            "recipient_lastname": fields.get("recipient_lastname"),
            "recipient_email": fields.get("recipient_email"),
            "status": status,
            "issue_date": fields.get("issue_date") or date.today().isoformat(),
            "url": f"{self.url}/award/{number}",
        }
        for key, value in fields.items():
            assertion.setdefault(key, value)
        self.assertions.append(assertion)
        with contextlib.suppress(RuntimeError):  # made outside a loop (preload): long ago
            self.made_at[number] = asyncio.get_running_loop().time()
        return assertion


SANDBOX_KEY = web.AppKey("sandbox", Sandbox)
"""Where the app keeps its ``Sandbox``: ``request.app[SANDBOX_KEY]``."""
