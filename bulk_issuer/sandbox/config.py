"""The sandbox's switches: who may log in, which badges exist, the rate limit, the faults.

Every switch is off by default. The adversarial ones, for testing a client against a
server that misbehaves (each also a ``bulk-issuer sandbox`` option):

- ``scripted``: forced answers per endpoint (``ScriptedAnswer``): "the token endpoint
  answers 503 for 30 s", "the third issue call answers 429 with Retry-After: 3600",
  "issue, then answer 500 anyway".
- ``archived_badges``, ``conflict_on_held``: issue calls refused with a 409.
- ``lookup_shape``, ``lookup_max_size``, ``lookup_lag``: assertion lookups in odd shapes,
  smaller pages, or behind the writes.
- ``trickle``, ``hang``: answers that arrive one byte at a time, or never.
- ``echo_secrets``: error details that repeat the credential or login body received.
- ``badge_endpoint``: ``GET /v1/badge/{id}`` absent (404) or forbidden (403).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from bulk_issuer.sandbox.limits import MODELS, RateModelName

__all__ = [
    "FAULT_KINDS",
    "LOOKUP_SHAPES",
    "FaultKind",
    "LookupShape",
    "SandboxConfig",
    "ScriptedAnswer",
    "describe_rate",
]

FaultKind = Literal["token", "issue", "lookup", "badge", "any"]
"""Which requests a fault applies to: one endpoint, or ``any`` request under ``/v1``."""
FAULT_KINDS: tuple[FaultKind, ...] = ("token", "issue", "lookup", "badge", "any")

LookupShape = Literal[
    "items",
    "bare_list",
    "data",
    "results",
    "email_key",
    "html",
    "no_pages",
    "pages_na",
    "ignore_email_filter",
    "lagging_filter",
    "unfiltered_no_counts",
    "ignore_badge_filter",
    "lowercase_exact_filter",
]
LOOKUP_SHAPES: tuple[LookupShape, ...] = (
    "items",
    "bare_list",
    "data",
    "results",
    "email_key",
    "html",
    "no_pages",
    "pages_na",
    "ignore_email_filter",
    "lagging_filter",
    "unfiltered_no_counts",
    "ignore_badge_filter",
    "lowercase_exact_filter",
)

# The documented defaults (README): user demo@example.com / demo-password, PAT sandbox-demo-pat.
_DEMO_USER = "demo@example.com"
# Documented demo credentials of a local stand-in, not secrets.
_DEMO_PASSWORD = "demo-password"  # noqa: S105
_DEMO_PAT = "sandbox-demo-pat"


def _default_users() -> dict[str, str]:
    return {_DEMO_USER: _DEMO_PASSWORD}


def _default_badges() -> dict[int, str]:
    return {51: "Sandbox badge", 3425: "Digital badge basics"}


@dataclass(frozen=True, slots=True)
class ScriptedAnswer:
    """A forced answer to requests of one kind, in place of what the sandbox would say.

    Scripted answers are consulted in the order of ``SandboxConfig.scripted``, after the
    rate limit and before the random faults and authentication (so they work for the token
    endpoint too). The first one that takes a request answers it; one that is still
    skipping, used up or past its time lets the request go on to the next, and finally to
    the endpoint itself. Each counts only the requests that reach it, so
    ``[ScriptedAnswer("token", 503, times=2), ScriptedAnswer("token", 429, times=1)]``
    answers 503, 503, 429, then logs in normally. How often an answer was used is kept by
    the ``Sandbox``: put a new ``ScriptedAnswer`` in the list to start counting afresh.

    Args:
        kind: ``token``, ``issue``, ``lookup``, ``badge``, or ``any`` request under ``/v1``.
        status: the HTTP status to answer, 200-599.
        body: a dict, list or number is sent as JSON, a str as text, bytes as they are.
            None sends what the real stack would: the proxy's HTML page for 502/503/504,
            plain text for 500, nothing for 204/304, the assertion for a 2xx with
            ``commit``, else ``{"detail": "<reason phrase>"}``.
        headers: extra headers, such as ``{"Retry-After": "3600"}``; a ``Content-Type``
            here replaces the body's.
        content_type: the Content-Type to send instead of the body's, like ``text/html``.
        times: how many requests to answer; None answers every one.
        skip: let this many matching requests through first.
        for_seconds: answer only for this many seconds of loop time, counted from the
            first request it answered; None has no end.
        until_quiet: answer until a request comes this many seconds or more after the one
            before it (answered or not): a limiter that counts the requests it refuses, so
            that a client knocking more often than that is refused for ever. That request
            and every later one go through. None has no such end.
        commit: issue only. Run the issue call as usual (auth, validation, the assertion is
            created) and then answer ``status`` instead of the assertion, for "409 after
            issuing" or "500 after commit". When the call fails on its own (401, 422, ...)
            its own answer goes out, and the scripted one is used up all the same.
    """

    kind: FaultKind
    status: int
    body: object = None
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str | None = None
    times: int | None = None
    skip: int = 0
    for_seconds: float | None = None
    until_quiet: float | None = None
    commit: bool = False

    def __post_init__(self) -> None:
        """Reject answers the sandbox could not send, with a message that says why."""
        _one_of("ScriptedAnswer kind", self.kind, FAULT_KINDS)
        if isinstance(self.status, bool) or not isinstance(self.status, int):
            raise ValueError(f"ScriptedAnswer status must be an int like 503, got {self.status!r}")
        if not 200 <= self.status <= 599:
            raise ValueError(f"ScriptedAnswer status must be 200-599, got {self.status}")
        if self.times is not None and self.times < 1:
            raise ValueError(
                f"ScriptedAnswer times must be at least 1, or None for every request; "
                f"got {self.times}"
            )
        if self.skip < 0:
            raise ValueError(f"ScriptedAnswer skip must be 0 or more, got {self.skip}")
        if self.for_seconds is not None and not self.for_seconds > 0:
            raise ValueError(
                f"ScriptedAnswer for_seconds must be more than 0 seconds, or None; "
                f"got {self.for_seconds}"
            )
        if self.until_quiet is not None and not self.until_quiet > 0:
            raise ValueError(
                f"ScriptedAnswer until_quiet must be more than 0 seconds, or None; "
                f"got {self.until_quiet}"
            )
        if self.commit and self.kind != "issue":
            raise ValueError(
                f"ScriptedAnswer commit=True only makes sense for kind 'issue', got {self.kind!r}"
            )
        if not isinstance(self.body, str | bytes | None):
            try:
                json.dumps(self.body)
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"ScriptedAnswer body must be JSON-serialisable, str, bytes or None: {exc}"
                ) from None


@dataclass(slots=True)
class SandboxConfig:
    """How the sandbox behaves; mutable so a test can flip a switch mid-run.

    All durations are in seconds, all rates are probabilities in [0, 1]. Values are
    checked when the config is built; a switch flipped later is trusted.

    Attributes:
        users: username -> password accepted by ``POST /v1/token``.
        pats: Personal Access Tokens accepted on every authenticated endpoint.
        pat_header: where a PAT is accepted: ``X-Access-Token``, ``Authorization: Bearer``
            or both.
        token_ttl: how long a bearer token from ``/v1/token`` lives (loop time).
        jwt_tokens: tokens are JWTs with an ``exp`` claim; False makes them opaque strings.
        token_mode: the login body the token endpoint accepts: JSON, an OAuth2 password
            form, or both.
        badges: badge id -> name of the badges that exist and may be issued.
        forbidden_badges: badges that exist but answer 403 to this account.
        providers: provider ids that exist; an issue call naming another answers 404.
        undeliverable: email domains the server refuses with a 422 although their syntax is
            fine (the API wants "a deliverable address"; a client cannot know without DNS).
        rate: N requests per P seconds on every ``/v1`` request; None is unlimited.
        rate_model: how the limit is enforced (see ``bulk_issuer.sandbox.limits``).
        retry_after: how a 429 says when to come back: delta seconds, an HTTP-date, or not.
        ratelimit_headers: send ``RateLimit``, ``RateLimit-Policy`` and
            ``X-RateLimit-Limit/-Remaining/-Reset``: ``False`` never, ``True`` or ``"429"``
            on 429s only, ``"all"`` on every ``/v1`` answer (``sandbox.ratelimit_headers``).
        ratelimit_overstate: the headers' remaining count says this many more places than
            the limiter has: 1 is a server that writes its headers before it counts the
            request; more is a gateway whose count lags, or a lie.
        latency: (low, high) uniform random delay before a request is counted and handled,
            simulating network arrival jitter.
        fault_rate: chance an issue call answers a random 500/502/503/504, committing nothing.
        drop_before_rate: chance an issue call's connection is dropped, committing nothing.
        drop_after_rate: chance an issue call commits the assertion and then drops the
            connection before answering (the ambiguous case).
        token_fault_rate: chance the token endpoint answers 503.
        lookup: ``GET /v1/badge_assertion/`` works, answers 403, or answers 404.
        seed: random seed for reproducible latency and faults.
        scripted: forced answers per endpoint, consulted in order (see ``ScriptedAnswer``).
        archived_badges: badges whose issue calls answer ``409 {"detail": "Badge is
            archived"}`` without issuing; ``GET /v1/badge/{id}`` shows them as "Archived".
        conflict_on_held: an issue call for a learner (same badge, same email in any case)
            who already holds a non-revoked assertion answers ``409 {"detail": "Recipient
            already has this badge"}`` and creates nothing, as many real APIs do.
        lookup_shape: the shape of ``GET /v1/badge_assertion/``'s answer: ``items`` (the
            documented ``{"items", "page", "pages", "size", "total"}``), ``bare_list`` (a
            JSON list of the page's items), ``data`` or ``results`` (the items under that
            key), ``email_key`` (items carry the address as ``email``), ``html`` (a 200
            text/html maintenance page), ``no_pages`` (no ``pages`` key), ``pages_na``
            (``"pages": "n/a"``), ``ignore_email_filter`` (the ``recipient_email`` filter
            is ignored: every assertion of the badge comes back, paginated),
            ``lagging_filter`` (a lookup by address lists no items, though its ``total``
            and ``pages`` count the learner's assertions: an index that lags), or
            ``unfiltered_no_counts`` (the filter is ignored, and a page says only its
            items and its number: no ``size``, ``pages`` or ``total``), or
            ``ignore_badge_filter`` (the ``badge_id`` filter is ignored: the account's
            assertions of every badge come back, each naming its own ``badge_id``), or
            ``lowercase_exact_filter`` (addresses are kept in lower case and the
            ``recipient_email`` filter compares exactly, as SQL's ``=``: a mixed-case
            address finds nothing).
        lookup_max_size: the largest page a lookup answers, whatever size was asked for
            (the answer's ``size`` says so); None is the documented 100.
        lookup_lag: seconds an assertion takes to show in lookups after it was made (a
            read replica or a search index behind the writes); 0 shows it at once.
        trickle: kind -> seconds between bytes: the request is handled (committed) first,
            then the status and headers go out at once and the body one byte at a time.
            Every answer to that kind trickles, errors and 429s included.
        hang: kinds whose requests are handled (an issue call IS committed) and then never
            answered, whatever the answer would have been; the connection stays open until
            the client gives up or the sandbox stops (then it is closed).
        freeze: ``(at, seconds)``: the server stops taking requests in for ``seconds``,
            ``at`` seconds after the first ``/v1`` request reached it (a stalled process,
            a stuck proxy). A request that reaches it meanwhile waits, uncounted and
            unanswered, until the freeze ends; then all of them are counted (and limited)
            at once, as a server that wakes takes in what queued up. None: never.
        echo_secrets: a 401 names the credential it received (``Not authenticated: token
            <value> is not valid``) and a failed login repeats the request body, so a
            client can prove it masks secrets a server echoes.
        badge_endpoint: ``GET /v1/badge/{id}`` works, answers 404 ``Not Found`` for every
            id (an API without that endpoint), or answers 403.
    """

    users: dict[str, str] = field(default_factory=_default_users)
    pats: frozenset[str] = frozenset({_DEMO_PAT})
    pat_header: Literal["x-access-token", "bearer", "both"] = "both"
    token_ttl: float = 600.0
    jwt_tokens: bool = True
    token_mode: Literal["json", "form", "both"] = "both"  # noqa: S105  (a mode, not a secret)
    badges: dict[int, str] = field(default_factory=_default_badges)
    forbidden_badges: frozenset[int] = frozenset({403})
    providers: frozenset[int] = frozenset({1})
    undeliverable: frozenset[str] = frozenset({"no-mail.example.com"})
    rate: tuple[int, float] | None = (5, 2.0)
    rate_model: RateModelName = "fixed"
    retry_after: Literal["seconds", "date", "none"] = "seconds"
    ratelimit_headers: bool | Literal["429", "all"] = False
    ratelimit_overstate: int = 0
    latency: tuple[float, float] = (0.0, 0.0)
    fault_rate: float = 0.0
    drop_before_rate: float = 0.0
    drop_after_rate: float = 0.0
    token_fault_rate: float = 0.0
    lookup: Literal["ok", "forbidden", "missing"] = "ok"
    seed: int | None = None
    scripted: list[ScriptedAnswer] = field(default_factory=list)
    archived_badges: frozenset[int] = frozenset()
    conflict_on_held: bool = False
    lookup_shape: LookupShape = "items"
    lookup_max_size: int | None = None
    lookup_lag: float = 0.0
    trickle: dict[str, float] = field(default_factory=dict)
    hang: frozenset[str] = frozenset()
    freeze: tuple[float, float] | None = None
    echo_secrets: bool = False
    badge_endpoint: Literal["ok", "missing", "forbidden"] = "ok"

    def __post_init__(self) -> None:
        """Reject values the sandbox could not honour, with a message that says why."""
        _one_of("pat_header", self.pat_header, ("x-access-token", "bearer", "both"))
        _one_of("token_mode", self.token_mode, ("json", "form", "both"))
        _one_of("rate_model", self.rate_model, tuple(MODELS))
        _one_of("retry_after", self.retry_after, ("seconds", "date", "none"))
        if isinstance(self.ratelimit_overstate, bool) or not isinstance(
            self.ratelimit_overstate, int
        ):
            raise ValueError(
                f"ratelimit_overstate must be a whole number, got {self.ratelimit_overstate!r}"
            )
        if self.ratelimit_overstate < 0:
            raise ValueError(
                f"ratelimit_overstate must be 0 or more, got {self.ratelimit_overstate}"
            )
        _one_of("lookup", self.lookup, ("ok", "forbidden", "missing"))
        _one_of("lookup_shape", self.lookup_shape, LOOKUP_SHAPES)
        _one_of("badge_endpoint", self.badge_endpoint, ("ok", "missing", "forbidden"))
        if not self.token_ttl > 0:
            raise ValueError(f"token_ttl must be more than 0 seconds, got {self.token_ttl}")
        if self.rate is not None:
            limit, period = self.rate
            if limit < 1 or not period > 0:
                raise ValueError(
                    f"rate must be (N requests >= 1, P seconds > 0) or None, got {self.rate}"
                )
        low, high = self.latency
        if not 0 <= low <= high:
            raise ValueError(f"latency must be (low, high) with 0 <= low <= high, got {low, high}")
        for name in ("fault_rate", "drop_before_rate", "drop_after_rate", "token_fault_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a probability between 0 and 1, got {value}")
        for answer in self.scripted:
            if not isinstance(answer, ScriptedAnswer):
                raise ValueError(f"scripted must hold ScriptedAnswer items, got {answer!r}")
        if not (self.lookup_lag >= 0 and math.isfinite(self.lookup_lag)):
            raise ValueError(f"lookup_lag is a number of seconds, got {self.lookup_lag}")
        if self.lookup_max_size is not None and self.lookup_max_size < 1:
            raise ValueError(
                f"lookup_max_size must be at least 1, or None; got {self.lookup_max_size}"
            )
        for kind, gap in self.trickle.items():
            _one_of("a trickle kind", kind, FAULT_KINDS)
            if not gap > 0:
                raise ValueError(f"trickle[{kind!r}] must be more than 0 seconds, got {gap}")
        for kind in self.hang:
            _one_of("a hang kind", kind, FAULT_KINDS)
        if self.freeze is not None:
            at, seconds = self.freeze
            if not (at >= 0 and seconds > 0):
                raise ValueError(
                    f"freeze must be (at >= 0, seconds > 0) or None, got {self.freeze}"
                )


def _one_of(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def describe_rate(rate: tuple[int, float] | None) -> str:
    """Write a rate the way the command line takes it: ``5/2s``, ``150/1m``, ``5/500ms``."""
    if rate is None:
        return "unlimited"
    limit, period = rate
    if period >= 60 and period % 60 == 0:
        return f"{limit}/{period / 60:g}m"
    if period < 1:
        return f"{limit}/{period * 1000:g}ms"
    return f"{limit}/{period:g}s"
