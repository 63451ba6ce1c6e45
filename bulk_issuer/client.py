"""The HTTP calls to Navigatr: one paced, authenticated request at a time."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from .auth import Auth, CredentialsRejected, PasswordAuth, Secret, TokenManager
from .pacing import Pacer
from .retry import RetryPolicy, retry_after

__all__ = ["DEFAULT_BASE_URL", "Answer", "NavigatrClient", "TransportError", "check_base_url"]

DEFAULT_BASE_URL = "https://api.navigatr.app"

#: Network time only: waiting for a free pooled connection is bounded by the worker count.
_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=30)


_HTML_TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_HTML_TAG = re.compile(r"<[^>]*>")


class TransportError(Exception):
    """No answer arrived: refused, timed out or dropped. The request may have been processed."""


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer: status, parsed body (JSON or text) and headers."""

    status: int
    body: Any
    headers: Mapping[str, str] = field(repr=False)

    @property
    def detail(self) -> str:
        """The server's explanation: FastAPI's `detail` (a string or a validation list)."""
        detail = self.body.get("detail") if isinstance(self.body, dict) else self.body
        if isinstance(detail, list):
            parts = []
            for item in detail:
                if isinstance(item, dict):
                    loc = [str(p) for p in item.get("loc", []) if p != "body"]
                    where = ".".join(loc)
                    parts.append(
                        f"{where}: {item.get('msg', '')}" if where else str(item.get("msg"))
                    )
                else:
                    parts.append(str(item))
            return "; ".join(parts)
        text = "" if detail is None else str(detail)
        if "<" in text and ">" in text:
            # A proxy's HTML error page: its title says it, the markup does not.
            title = _HTML_TITLE.search(text)
            text = title.group(1) if title else _HTML_TAG.sub(" ", text)
        text = " ".join(text.split())
        return text[:300] or f"HTTP {self.status}"


def check_base_url(url: str) -> str:
    """Validate the API's base URL and return it without a trailing slash or `/v1`.

    Plain `http://` is allowed only for loopback hosts (the sandbox): anything else would
    send credentials in clear text.

    Raises:
        ValueError: not an http(s) URL, or plain http to a non-loopback host.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"the base URL must look like https://api.navigatr.app, got {url!r}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError(
            f"refusing plain http:// to {parts.hostname}: credentials would travel "
            "unencrypted. Use https://, or http:// only for a local sandbox (127.0.0.1)"
        )
    base = url.strip().rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_session(connections: int, pacer: Pacer) -> aiohttp.ClientSession:
    """One session for a whole run, with a pool sized to the workers.

    aiohttp re-sends an idempotent request (PUT included) by itself when a pooled connection
    drops: an attempt the pacer and the journal would never see, and possibly a badge
    issued twice. The engine owns every attempt, so that is switched off. The pacer hears
    when each request's headers actually leave, to keep the spacing on the wire.
    """

    async def headers_sent(*_: object) -> None:
        pacer.note_sent()

    tracing = aiohttp.TraceConfig()
    tracing.on_request_headers_sent.append(headers_sent)
    # Tracing costs every request a few awaits: worth it only when there is a pace to keep.
    traces = [tracing] if pacer.rate is not None else []
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=_TIMEOUT,
        raise_for_status=False,
        trace_configs=traces,
    )
    session._retry_connection = False
    return session


def _dumps(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class NavigatrClient:
    """Paced, authenticated calls to the Navigatr API; one wire request per `_send`.

    Args:
        session: the run's one aiohttp session.
        base_url: checked by `check_base_url`.
        pacer: every request, token calls included, takes a slot from it.
        auth: the credentials.
        policy: retries for the token call.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        pacer: Pacer,
        auth: Auth,
        *,
        policy: RetryPolicy | None = None,
    ) -> None:
        self._session = session
        self._base = check_base_url(base_url)
        self.pacer = pacer
        self.tokens = TokenManager(auth, self._login, lead=pacer.gap + 0.5)
        self._policy = policy or RetryPolicy()
        self._token_form: bool | None = None
        self.requests = 0
        self.token_calls = 0

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, object] | None = None,
        params: Mapping[str, str | int] | None = None,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> Answer:
        """One authenticated call; on a 401 with a login token, refresh it and send once more.

        Args:
            before_send: awaited right before each request leaves (to journal the attempt).

        Raises:
            TransportError: no answer.
            CredentialsRejected: the token endpoint refused the login.
        """
        answer: Answer | None = None
        for _ in range(2):
            headers, generation = await self._auth_headers()
            if before_send is not None:
                await before_send()
            answer = await self._send(method, path, headers=headers, json_body=body, params=params)
            if answer.status != 401 or not self.tokens.refreshable:
                return answer
            await self.tokens.refresh(generation, rejected=True)
        assert answer is not None
        return answer

    async def _auth_headers(self) -> tuple[dict[str, str], int]:
        # Refresh first (its call takes a slot of its own, ahead of the queue), then wait
        # for this request's slot, then read the token. A token that went stale while this
        # request queued costs the slot: sending later than the slot would break the spacing.
        # After a few tries the newest token goes anyway: a 401 still refreshes and resends.
        urgent = False
        for attempt in range(3):
            await self.tokens.ensure_fresh()
            await self.pacer.acquire(urgent=urgent)
            current = self.tokens.current(strict=attempt < 2)
            if current is not None:
                return current
            urgent = True
        raise CredentialsRejected("no login token could be had")  # pragma: no cover

    async def _send(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        json_body: Mapping[str, object] | None = None,
        form: Mapping[str, str] | None = None,
        params: Mapping[str, str | int] | None = None,
    ) -> Answer:
        """Send one request that has its pacer slot already."""
        self.requests += 1
        data: bytes | Mapping[str, str] | None = form
        if json_body is not None:
            # Encoded here, once, rather than through aiohttp's JSON payload machinery.
            data = _dumps(json_body).encode("utf-8")
            headers = {**(headers or {}), "Content-Type": "application/json"}
        try:
            async with self._session.request(
                method,
                self._base + path,
                headers=headers,
                data=data,
                params=params,
                allow_redirects=False,
            ) as response:
                raw = await response.read()
                return Answer(response.status, _parse(raw, response.content_type), response.headers)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransportError(_describe(exc)) from None

    async def _login(self, auth: PasswordAuth) -> Secret:
        """Exchange the password for a token, retrying what can be retried.

        JSON first, as the guide shows; on 415/422 the OAuth2 password form that the
        official Moodle plugin sends, remembered for later refreshes.
        """
        failures = 0
        while True:
            form = bool(self._token_form)
            credentials = {"username": auth.username, "password": auth.password.reveal()}
            await self.pacer.acquire(urgent=True)
            self.token_calls += 1
            answer: Answer | None
            try:
                answer = await self._send(
                    "POST",
                    "/v1/token",
                    json_body=None if form else credentials,
                    form=credentials if form else None,
                )
            except TransportError as exc:
                answer, problem = None, str(exc)
            if answer is not None:
                problem = f"HTTP {answer.status}"
                token = answer.body.get("access_token") if isinstance(answer.body, dict) else None
                if answer.status == 200 and isinstance(token, str) and token:
                    self._token_form = form
                    return Secret(token)
                if answer.status in (415, 422) and self._token_form is None:
                    self._token_form = True
                    continue
                if answer.status == 429:
                    self.pacer.rate_limited_for(retry_after(answer.headers))
                    continue
                if answer.status < 500:
                    raise CredentialsRejected(
                        f"the token endpoint refused the login for {auth.username!r}: "
                        f"{answer.detail if answer.status != 200 else 'no access_token in answer'}"
                        f" (HTTP {answer.status}). Check NAVIGATR_USER and NAVIGATR_PASS"
                    )
            failures += 1
            if failures >= self._policy.attempts:
                raise CredentialsRejected(
                    f"could not get a login token after {failures} tries: {problem}"
                )
            await asyncio.sleep(self._policy.backoff(failures))


def _parse(raw: bytes, content_type: str) -> Any:
    text = raw.decode("utf-8", "replace")
    if "json" in content_type or text[:1] in ("{", "["):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out waiting for the answer"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection before answering"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}"
    # Exception texts from aiohttp name the URL and the error, never our headers.
    return f"{type(exc).__name__}: {exc}"[:200]
