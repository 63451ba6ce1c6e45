"""Credentials never show themselves; the token manager refreshes ahead, once for all."""

from __future__ import annotations

import base64
import json
import pickle

import anyio
import pytest

from bulk_issuer.auth import (
    PasswordAuth,
    PersonalAccessToken,
    Secret,
    TokenManager,
    token_lifetime,
)


def _jwt(claims: dict[str, object]) -> str:
    def part(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256'})}.{part(claims)}.c2ln"


def test_secrets_hide_in_repr_str_and_format() -> None:
    """Neither repr, str nor f-strings of credentials show the secret."""
    pat = PersonalAccessToken("pat-SECRET-123")
    login = PasswordAuth("admin@example.org", "hunter2-SECRET")
    for shown in (repr(pat), str(pat), f"{pat}", repr(login), str(login), f"{login!r}"):
        assert "SECRET" not in shown
    assert "admin@example.org" in repr(login)
    with pytest.raises(TypeError):
        pickle.dumps(Secret("x-SECRET"))


def test_a_pat_copied_with_a_line_break_is_trimmed_and_one_with_a_control_char_refused() -> None:
    """A Windows .env's carriage return or a copied newline around a PAT is dropped; a
    control character inside it (which no header can carry) is refused at once, without
    the token in the message; an empty one too."""
    assert PersonalAccessToken(" pat-SECRET-1\r\n").headers() == {"X-Access-Token": "pat-SECRET-1"}
    with pytest.raises(ValueError, match="control character") as caught:
        PersonalAccessToken("pat-\x00SECRET-1")
    assert "SECRET" not in str(caught.value)
    with pytest.raises(ValueError, match="non-empty"):
        PersonalAccessToken(" \r\n")


def test_pat_headers() -> None:
    """A PAT goes in X-Access-Token by default, in Authorization: Bearer by option."""
    assert PersonalAccessToken("t").headers() == {"X-Access-Token": "t"}
    assert PersonalAccessToken("t", header="bearer").headers() == {"Authorization": "Bearer t"}
    with pytest.raises(ValueError, match="header"):
        PersonalAccessToken("t", header="cookie")  # type: ignore[arg-type]


def test_jwt_lifetime() -> None:
    """exp - iat when both are there; None for opaque tokens and garbage."""
    assert token_lifetime(_jwt({"exp": 1000, "iat": 400}), now=300) == 600
    assert token_lifetime(_jwt({"exp": 1000, "iat": 400}), now=999) == 1
    assert token_lifetime(_jwt({"exp": 1010}), now=1000) == 10
    assert token_lifetime("opaque-token") is None
    assert token_lifetime("a.b.c") is None
    assert token_lifetime(_jwt({"sub": "x"})) is None
    deep = base64.urlsafe_b64encode(b"[" * 100_000).decode().rstrip("=")
    assert token_lifetime(f"h.{deep}.s") is None  # nested past Python's stack


class _Issuer:
    """A login endpoint stand-in that hands out JWTs of a fixed lifetime."""

    def __init__(self, lifetime: float) -> None:
        self.lifetime = lifetime
        self.calls = 0

    async def __call__(self, auth: PasswordAuth) -> Secret:
        self.calls += 1
        await anyio.sleep(0.05)
        return Secret(_jwt({"exp": 1000 + self.lifetime, "iat": 1000, "n": self.calls}))


@pytest.mark.looptime
async def test_refresh_is_single_flight() -> None:
    """Twenty workers needing a token at once cause one login."""
    login = _Issuer(600)
    tokens = TokenManager(PasswordAuth("u", "p"), login)

    async def worker() -> None:
        await tokens.ensure_fresh()
        assert tokens.current() is not None

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(worker)
    assert login.calls == 1


@pytest.mark.looptime
async def test_refreshes_ahead_of_expiry_and_never_sends_a_stale_token() -> None:
    """Over ten minutes of 2-second tokens, every token handed out has time left."""
    login = _Issuer(2.0)
    tokens = TokenManager(PasswordAuth("u", "p"), login)
    issued_at: dict[str, float] = {}
    for _ in range(1500):
        await tokens.ensure_fresh()
        current = tokens.current()
        assert current is not None
        token = current[0]["Authorization"]
        issued_at.setdefault(token, anyio.current_time())
        # The token was fetched no earlier than when it was first seen, minus the call.
        assert anyio.current_time() - issued_at[token] < 2.0 - 0.05
        await anyio.sleep(0.4)
    assert 250 < login.calls < 600


@pytest.mark.looptime
async def test_a_401_refresh_happens_once_for_everyone() -> None:
    """Workers reporting a 401 for the same token generation trigger one refresh."""
    login = _Issuer(600)
    tokens = TokenManager(PasswordAuth("u", "p"), login)
    await tokens.ensure_fresh()
    generation = tokens.generation
    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(tokens.refresh, generation)
    assert login.calls == 2


@pytest.mark.looptime
async def test_pat_is_never_refreshed() -> None:
    """A PAT makes no token call."""
    login = _Issuer(600)
    tokens = TokenManager(PersonalAccessToken("pat"), login)
    await tokens.ensure_fresh()
    await tokens.refresh(tokens.generation)
    assert tokens.current() == ({"X-Access-Token": "pat"}, 0)
    assert login.calls == 0


@pytest.mark.looptime
async def test_a_401_teaches_the_lifetime_of_opaque_tokens() -> None:
    """Opaque tokens that die young: after one 401, later tokens are refreshed before that age."""

    async def login(auth: PasswordAuth) -> Secret:
        await anyio.sleep(0.05)
        return Secret("opaque")

    tokens = TokenManager(PasswordAuth("u", "p"), login)
    await tokens.ensure_fresh()
    await anyio.sleep(10)  # the server says this 10-second-old token is dead
    await tokens.refresh(tokens.generation, rejected=True)
    born = {tokens.generation: anyio.current_time()}
    oldest = 0.0
    for _ in range(600):
        await tokens.ensure_fresh()
        current = tokens.current()
        assert current is not None
        born.setdefault(current[1], anyio.current_time())
        oldest = max(oldest, anyio.current_time() - born[current[1]])
        await anyio.sleep(0.1)
    assert oldest < 10 * 0.8
    assert tokens.refreshes > 60 / 8


@pytest.mark.looptime
async def test_a_token_is_dated_from_the_login_attempt_that_got_it() -> None:
    """A login that took 27 s of refused attempts (a rate-limited token endpoint) before
    the one that got a 30-second token: the token is fresh when it comes (dated from that
    attempt), not taken for 27 s old and refreshed at once (which the limiter refused
    again, for ever)."""
    tokens: TokenManager

    async def login(auth: PasswordAuth) -> Secret:
        await anyio.sleep(27)  # 429s, waits, retries
        tokens.attempting()
        await anyio.sleep(0.05)
        return Secret(_jwt({"exp": 1030, "iat": 1000}))

    tokens = TokenManager(PasswordAuth("u", "p"), login)
    await tokens.ensure_fresh()
    await anyio.sleep(10)
    assert tokens.current() is not None  # 10 s of 30 used, not 37
