"""The sandbox's switches: who may log in, which badges exist, the rate limit, the faults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from bulk_issuer.sandbox.limits import MODELS, RateModelName

__all__ = ["SandboxConfig", "describe_rate"]

# The documented defaults (README): user demo@example.com / demo-password, PAT sandbox-demo-pat.
_DEMO_USER = "demo@example.com"
# Documented demo credentials of a local stand-in, not secrets.
_DEMO_PASSWORD = "demo-password"  # noqa: S105
_DEMO_PAT = "sandbox-demo-pat"


def _default_users() -> dict[str, str]:
    return {_DEMO_USER: _DEMO_PASSWORD}


def _default_badges() -> dict[int, str]:
    return {51: "Sandbox badge", 3425: "Digital badge basics"}


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
        ratelimit_headers: also send ``RateLimit``, ``RateLimit-Policy`` and
            ``X-RateLimit-Reset`` on 429s.
        latency: (low, high) uniform random delay before a request is counted and handled,
            simulating network arrival jitter.
        fault_rate: chance an issue call answers a random 500/502/503/504, committing nothing.
        drop_before_rate: chance an issue call's connection is dropped, committing nothing.
        drop_after_rate: chance an issue call commits the assertion and then drops the
            connection before answering (the ambiguous case).
        token_fault_rate: chance the token endpoint answers 503.
        lookup: ``GET /v1/badge_assertion/`` works, answers 403, or answers 404.
        seed: random seed for reproducible latency and faults.
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
    ratelimit_headers: bool = False
    latency: tuple[float, float] = (0.0, 0.0)
    fault_rate: float = 0.0
    drop_before_rate: float = 0.0
    drop_after_rate: float = 0.0
    token_fault_rate: float = 0.0
    lookup: Literal["ok", "forbidden", "missing"] = "ok"
    seed: int | None = None

    def __post_init__(self) -> None:
        """Reject values the sandbox could not honour, with a message that says why."""
        _one_of("pat_header", self.pat_header, ("x-access-token", "bearer", "both"))
        _one_of("token_mode", self.token_mode, ("json", "form", "both"))
        _one_of("rate_model", self.rate_model, tuple(MODELS))
        _one_of("retry_after", self.retry_after, ("seconds", "date", "none"))
        _one_of("lookup", self.lookup, ("ok", "forbidden", "missing"))
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


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
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
