"""What the sandbox knows and remembers: its config, tokens, assertions and every request.

Tests assert properties on a ``Sandbox`` after a run: how many assertions each learner
got (the real API has no idempotency, so a double issue shows up here), how many requests
arrived in any window, how many 429s were answered.
"""

from __future__ import annotations

import bisect
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from aiohttp import web

from bulk_issuer.sandbox.config import SandboxConfig
from bulk_issuer.sandbox.limits import RateLimitModel, make_limiter
from bulk_issuer.sandbox.tokens import TokenStore

__all__ = ["DROPPED", "SANDBOX_KEY", "RequestKind", "RequestRecord", "Sandbox"]

RequestKind = Literal["token", "issue", "lookup", "other"]

DROPPED = 0
"""The ``status`` of a request whose connection was dropped without an answer."""


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request that reached the server.

    Attributes:
        arrived_at: loop time when it was counted, after the simulated latency.
        method: the HTTP method.
        path: the URL path, without the query.
        status: the status answered, or ``DROPPED`` (0) when the connection was dropped.
        kind: ``token``, ``issue``, ``lookup`` or ``other``.
    """

    arrived_at: float
    method: str
    path: str
    status: int
    kind: RequestKind


class Sandbox:
    """The sandbox's state, shared by the aiohttp app and inspected by tests.

    Attributes:
        config: the switches; may be changed while serving.
        url: base URL such as ``http://127.0.0.1:54321`` once serving.
        requests: every request that reached the server, in order of arrival.
        assertions: every badge assertion ever created, duplicates and preloads included.
        rejected_429: how many 429s were answered.
        token_calls: how many requests reached the token endpoint.
    """

    def __init__(self, config: SandboxConfig | None = None) -> None:
        """Start empty, with ``config`` or the defaults."""
        self.config = config if config is not None else SandboxConfig()
        self.url = ""
        self.requests: list[RequestRecord] = []
        self.assertions: list[dict[str, Any]] = []
        self.rejected_429 = 0
        self.token_calls = 0
        self.tokens = TokenStore()
        self.random = random.Random(self.config.seed)
        self._preloaded = 0
        self._limiter: RateLimitModel | None = None
        self._limiter_spec: tuple[tuple[int, float] | None, str] | None = None

    # -- for tests -------------------------------------------------------------------------

    def issued_count(self, badge_id: int, email: str) -> int:
        """How many assertions of ``badge_id`` name ``email`` (case-insensitive)."""
        wanted = email.casefold()
        return sum(
            1
            for a in self.assertions
            if a["badge_id"] == badge_id and (a.get("recipient_email") or "").casefold() == wanted
        )

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
        return assertion


SANDBOX_KEY = web.AppKey("sandbox", Sandbox)
"""Where the app keeps its ``Sandbox``: ``request.app[SANDBOX_KEY]``."""
