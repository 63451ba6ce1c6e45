"""Credentials: a Personal Access Token or a password login, and the token manager.

All durations are in seconds, on the running event loop's clock.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Literal, TypeAlias

import anyio

from .errors import CredentialsRejected

__all__ = [
    "Auth",
    "CredentialsRejected",
    "PasswordAuth",
    "PersonalAccessToken",
    "Secret",
    "TokenManager",
    "sendable",
]

#: The documented minimum lifetime of a login token, assumed when the token says nothing.
DEFAULT_TOKEN_LIFETIME = 300.0

PatHeader: TypeAlias = Literal["x-access-token", "bearer"]


class Secret:
    """A string that never shows itself: not in repr, str, f-strings, logs or tracebacks.

    Args:
        value: the secret.

    Raises:
        ValueError: the value is empty or not a string.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ValueError("a credential must be a non-empty string")
        self._value = value

    def reveal(self) -> str:
        """The value itself, for the one place that sends it.

        Returns:
            The secret, in clear.
        """
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def sendable(credential: str) -> bool:
    """Whether a token can go in an HTTP header: no control character (CR, LF, NUL...),
    and no lone surrogate (half of a character, which no encoding can write)."""
    if _CONTROL.search(credential) is not None:
        return False
    try:
        credential.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class PersonalAccessToken:
    """A Personal Access Token: sent as is with every call, never exchanged.

    Args:
        token: the token from Navigatr's User Settings.
        header: `"x-access-token"` (current docs) or `"bearer"` (`Authorization: Bearer`,
            the previous docs).

    Surrounding whitespace is dropped (a line break copied with it, a Windows `.env`'s
    carriage return).

    Raises:
        ValueError: the token is empty or holds a control character (no header can carry
            it), or the header is neither of those.
    """

    __slots__ = ("header", "token")

    def __init__(self, token: str | Secret, *, header: PatHeader = "x-access-token") -> None:
        if header not in ("x-access-token", "bearer"):
            raise ValueError(f"header must be 'x-access-token' or 'bearer', got {header!r}")
        value = (token.reveal() if isinstance(token, Secret) else token).strip()
        self.token = Secret(value)
        if not sendable(value):
            raise ValueError(
                "the Personal Access Token holds a control character (or an unpaired "
                "surrogate), which no header can "
                "carry: copy it again from Navigatr's User Settings"
            )
        self.header: PatHeader = header

    def headers(self) -> dict[str, str]:
        """The header that carries the token.

        Returns:
            Its name and value.
        """
        if self.header == "bearer":
            return {"Authorization": f"Bearer {self.token.reveal()}"}
        return {"X-Access-Token": self.token.reveal()}

    def __repr__(self) -> str:
        return f"PersonalAccessToken(token=Secret('********'), header={self.header!r})"


class PasswordAuth:
    """A username and password, exchanged at `POST /v1/token` for short-lived tokens.

    Args:
        username: the Navigatr login, usually an email address.
        password: its password (kept as a `Secret`).

    Raises:
        ValueError: the username or the password is empty.
    """

    __slots__ = ("password", "username")

    def __init__(self, username: str, password: str | Secret) -> None:
        if not username:
            raise ValueError("the username must not be empty")
        self.username = username
        self.password = password if isinstance(password, Secret) else Secret(password)

    def __repr__(self) -> str:
        return f"PasswordAuth(username={self.username!r}, password=Secret('********'))"


Auth: TypeAlias = PersonalAccessToken | PasswordAuth

#: Logs in once: returns the access token, or raises CredentialsRejected.
Login: TypeAlias = Callable[[PasswordAuth], Awaitable[Secret]]


def token_lifetime(token: str, *, now: float | None = None) -> float | None:
    """How long a JWT says it lives, from its `exp` (and `iat`) claims; None if it is no JWT.

    The signature is not checked: the server checks it, we only schedule a refresh.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
        exp = float(claims["exp"])
    except (binascii.Error, ValueError, KeyError, TypeError, RecursionError):
        return None
    # exp - iat is immune to a skewed clock, exp - now to whole-second rounding of the
    # claims; the shorter of the two that makes sense is the safe one.
    iat = claims.get("iat")
    by_clock = exp - (time.time() if now is None else now)
    by_claims = exp - float(iat) if isinstance(iat, int | float) else None
    candidates = [x for x in (by_clock, by_claims) if x is not None and x > 0]
    return min(candidates) if candidates else None


class TokenManager:
    """Holds a valid credential for every worker, refreshing it once for all of them.

    A login token is refreshed when a quarter of its life (at most 30 s, at least `lead`)
    is left, so that a request paced and sent now still arrives before it expires; a 401
    refreshes it at once. Refreshes are single-flight: workers that need one at the same
    moment share it.

    Args:
        auth: the credentials.
        login: the call that exchanges a password for a token.
        lead: seconds a refresh needs at least (a pacer slot and a round trip).
    """

    def __init__(self, auth: Auth, login: Login, *, lead: float = 1.0) -> None:
        self._auth = auth
        self._login = login
        self._lead = lead
        self._lock = anyio.Lock()
        self._token: Secret | None = None
        #: Every secret this manager has held: masked wherever text is written.
        self._known: list[Secret] = [
            auth.token if isinstance(auth, PersonalAccessToken) else auth.password
        ]
        self._fetched_at = 0.0
        #: When the login's latest attempt left (`attempting`): its token's age counts
        #: from there, not from before the 429s and retries the login took.
        self._attempt_at: float | None = None
        self._expires_at = -float("inf")
        self._lifetime = 0.0
        # What 401s taught about tokens that do not say how long they live.
        self._observed_lifetime: float | None = None
        self.generation = 0
        self.refreshes = 0

    def secrets(self) -> list[str]:
        """The values to mask in anything written: the credential and recent login tokens."""
        return [secret.reveal() for secret in self._known]

    @property
    def refreshable(self) -> bool:
        """Whether a new credential can be had (a PAT cannot be refreshed)."""
        return isinstance(self._auth, PasswordAuth)

    def _remaining(self) -> float:
        return self._expires_at - anyio.current_time()

    def _needs_refresh(self) -> bool:
        if not isinstance(self._auth, PasswordAuth):
            return False
        ahead = min(30.0, max(self._lifetime / 4, min(self._lead, self._lifetime / 2)))
        return self._token is None or self._remaining() < ahead

    async def ensure_fresh(self) -> None:
        """Refresh the token now if it is missing or close to expiry."""
        if self._needs_refresh():
            await self.refresh(self.generation)

    async def refresh(self, seen: int, *, rejected: bool = False) -> None:
        """Get a new token, unless another worker already replaced generation `seen`.

        Args:
            seen: the generation the caller used.
            rejected: the server answered 401 to it: if it died younger than we assumed,
                assume that shorter life (less 20%) for every later token.
        """
        async with self._lock:
            if self.generation != seen or not isinstance(self._auth, PasswordAuth):
                return
            started = anyio.current_time()
            if rejected and self._token is not None:
                age = started - self._fetched_at
                if age < self._lifetime:
                    self._observed_lifetime = max(age * 0.8, 1.0)
            self._attempt_at = None
            token = await self._login(self._auth)
            if self._attempt_at is not None:
                started = max(started, self._attempt_at)
            said = token_lifetime(token.reveal())
            lifetime = said or DEFAULT_TOKEN_LIFETIME
            if said is None and self._observed_lifetime is not None:
                # Only a token that does not say how long it lives is assumed to live as
                # long as the one a 401 cut short; a JWT's own `exp` is believed.
                lifetime = min(lifetime, self._observed_lifetime)
            self._fetched_at = started
            self._token, self._lifetime = token, lifetime
            self._known.append(token)
            del self._known[1:-8]  # the credential and the last few tokens
            # Counted from when the request left: the server's clock started no earlier.
            self._expires_at = started + lifetime
            self.generation += 1
            self.refreshes += 1

    def attempting(self) -> None:
        """Note that a login attempt leaves now (the login calls it before each one): a
        token that took a minute of 429s to get is not a minute old when it comes."""
        self._attempt_at = anyio.current_time()

    def outlived(self, generation: int) -> bool:
        """Whether a request sent with token `generation`, refused (401) now, may have
        reached the server after that token expired: the token has been replaced since, or
        the answer came in the second half of its assumed life or later. That life is
        learned from 401s whose own answers may have been held up, so it may be up to
        about twice the true one; only a token refused in the first half of it was
        surely refused while alive (refused credentials, not expiry)."""
        if generation != self.generation:
            return True
        return anyio.current_time() - self._fetched_at >= self._lifetime / 2

    def current(self, *, strict: bool = True) -> tuple[dict[str, str], int] | None:
        """Headers for a request leaving now, with their generation.

        Args:
            strict: None when the token is about to expire (our estimate errs early);
                otherwise the newest token whatever its age, and the server decides.
        """
        if isinstance(self._auth, PersonalAccessToken):
            return self._auth.headers(), self.generation
        if self._token is None:
            return None
        if strict and self._remaining() < min(5.0, self._lifetime / 10):
            return None
        return {"Authorization": f"Bearer {self._token.reveal()}"}, self.generation
