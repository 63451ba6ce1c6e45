"""Bearer tokens handed out by the sandbox's ``POST /v1/token``, and their expiry.

Expiry is decided on the event loop clock so tests under ``looptime`` can let a token
expire without waiting. A JWT's ``exp`` claim is wall-clock epoch seconds (what a client
decoding it compares against), floored so that it never promises more than the server
grants.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Literal

__all__ = ["TokenState", "TokenStore"]

TokenState = Literal["valid", "expired", "unknown"]


@dataclass(frozen=True, slots=True)
class _Grant:
    username: str
    expires_at: float  # loop time


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class TokenStore:
    """Mints tokens and remembers them, expired ones too, so a stale token says so."""

    def __init__(self) -> None:
        """Start with no tokens and a fresh signing key."""
        self._key = secrets.token_bytes(32)
        self._grants: dict[str, _Grant] = {}

    def mint(self, username: str, *, now: float, ttl: float, jwt: bool) -> str:
        """A new token for ``username`` valid for ``ttl`` seconds from loop time ``now``."""
        token = self._jwt(username, ttl) if jwt else secrets.token_urlsafe(32)
        self._grants[token] = _Grant(username, now + ttl)
        return token

    def issued(self) -> list[str]:
        """Every token handed out so far (tests look for them in a client's output)."""
        return list(self._grants)

    def check(self, token: str, *, now: float) -> tuple[TokenState, str | None]:
        """Whether ``token`` is valid at loop time ``now``, and whose it is."""
        grant = self._grants.get(token)
        if grant is None:
            return "unknown", None
        if now >= grant.expires_at:
            return "expired", grant.username
        return "valid", grant.username

    def _jwt(self, username: str, ttl: float) -> str:
        # Wall-clock time is right here: exp is read by clients as a Unix timestamp.
        issued = time.time()
        header = {"alg": "HS256", "typ": "JWT"}
        claims = {
            "sub": username,
            "iat": int(issued),
            "exp": int(issued + ttl),
            "jti": secrets.token_hex(8),
        }
        signing_input = ".".join(
            _b64(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        signature = hmac.new(self._key, signing_input.encode("ascii"), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(signature)}"
