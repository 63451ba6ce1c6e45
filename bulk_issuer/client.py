"""The HTTP calls to Navigatr: one request path for logins, lookups and issue calls.

Every request takes the same steps: a pacer slot (`slot`), one exchange with a deadline
for the whole of it (`send`), then the retry decision on the reply (`settle`, which
refreshes the token on a 401, pauses every sender on a 429, backs off on a 503 or a
connection that never opened, with one stop-aware sleep). `request` runs those steps in a
loop for the calls that are safe to repeat (logins, lookups, badge checks); the engine
runs them itself for issue calls, because it must journal each send before it leaves.

The client also keeps the API's health: when no reply worth having has come for longer
than the policy allows (or the host never answered at all), it stops the run with an
`UnavailableError` naming the host and the error, instead of retrying for ever.
"""

from __future__ import annotations

import asyncio
import functools
import html
import ipaddress
import json
import math
import re
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

import aiohttp
import anyio

from .auth import Auth, PasswordAuth, Secret, TokenManager, sendable
from .errors import CredentialsRejected, UnavailableError
from .events import ApiTrouble, Event, Waiting
from .pacing import Pacer
from .retry import Again, Deliver, Refresh, RequestRetry, RetryPolicy, TooLong, retry_after

__all__ = [
    "DEFAULT_BASE_URL",
    "Answer",
    "NavigatrClient",
    "NoReply",
    "NotSent",
    "Stopping",
    "Ticket",
    "TransportError",
    "check_base_url",
    "mask",
    "new_session",
]

DEFAULT_BASE_URL = "https://api.navigatr.app"

#: Network time only; the whole exchange has its own deadline (`RetryPolicy.deadline`).
_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=30)

#: The most of a reply body read: an answer is a few hundred bytes; a page of 100
#: assertions some tens of kilobytes.
_MAX_BODY = 4 << 20

#: A wait this long is shown to the operator at the default verbosity.
_LONG_WAIT = 10.0

_TITLE_OPEN = re.compile("<title>", re.IGNORECASE)
_TITLE_CLOSE = re.compile("</title>", re.IGNORECASE)
# A tag, up to the next `<` at most: each character is scanned once, whatever the page
# (`<[^>]*>` rescans the rest of the page from every `<` with no `>` after it).
_HTML_TAG = re.compile(r"<[^<>]*>")


class TransportError(Exception):
    """No answer arrived."""


class NotSent(TransportError):
    """The request never left: the connection could not be opened (refused, DNS, TLS)."""


class NoReply(TransportError):
    """The request left but no whole answer came (timeout, dropped): it may have been processed."""


class _Unanswered(NotSent):
    """A request that is safe to repeat left but went unanswered (a timeout, a dropped
    connection): retried as if never sent, but the host was reached, so this is an outage,
    not an unreachable address."""


class Stopping(Exception):
    """The run is stopping: the request was not sent (it waited for a slot or a retry)."""


def _as_is(text: str) -> str:
    return text


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer: status, parsed body (JSON or text) and headers.

    The body is as the server sent it (a secret it echoes included): read it to decide,
    never to write out; `detail` and `shown` are the texts to write.

    Args:
        hide: masks the secrets the client knows; `detail` passes its text through it
            last, after every step that could change how a secret is spelled.
    """

    status: int
    body: Any = field(repr=False)
    headers: Mapping[str, str] = field(repr=False)
    hide: Callable[[str], str] = field(default=_as_is, repr=False, compare=False)

    @property
    def detail(self) -> str:
        """The server's explanation, secrets masked: FastAPI's `detail` (a string or a
        validation list), or the body. Whatever the JSON's shape, one line of at most 300
        characters."""
        detail = self.body.get("detail") if isinstance(self.body, dict) else self.body
        if isinstance(detail, list):
            problems = (_problem(item) for item in detail[:_MOST_PROBLEMS])
            text = "; ".join(problem for problem in problems if problem)
        else:
            # Masked before the tidying too: dropping a tag can split a secret apart.
            text = self.hide(_text(detail))
            if "<" in text and ">" in text:
                # A proxy's HTML error page: its title says it, the markup does not; its
                # entities are read (a secret it echoes may be spelled with any).
                title = _title(text)
                text = html.unescape(title if title is not None else _HTML_TAG.sub(" ", text))
        # Collapsing whitespace and dropping tags can join a secret's pieces: masked after.
        text = self.hide(" ".join(text.split()))
        return text[:_DETAIL_LENGTH] or f"HTTP {self.status}"

    def shown(self, value: object, length: int | None = None) -> str:
        """A value of the body as text to write out (a message, the journal, a results
        file): secrets masked before it is cut to `length` characters (200 by default)."""
        return self.hide(_text(value))[: length or _SHOWN_LENGTH]


#: The most of a server's explanation kept for messages, outcomes and the journal.
_DETAIL_LENGTH = 300
#: The most of any other value of an answer written out (an assertion's id, a name).
_SHOWN_LENGTH = 200

#: The most entries of a validation list read, and of one entry's `loc`: enough to say
#: what is wrong, and a bound on the work for a list of a million.
_MOST_PROBLEMS = 20
_MOST_PLACES = 10


def _problem(item: object) -> str:
    """One entry of a validation list, `where: what` as FastAPI writes it, else as JSON."""
    if not isinstance(item, dict):
        return _text(item)
    loc = item.get("loc")
    places = loc[:_MOST_PLACES] if isinstance(loc, list) else [] if loc is None else [loc]
    where = ".".join(_text(place) for place in places if place != "body")
    what = _text(item["msg"]) if "msg" in item else _text(item)
    return f"{where}: {what}" if where else what


def _title(page: str) -> str | None:
    """The text of an HTML page's first `<title>`, if it has one: found by two scans (one
    pattern for both would rescan the page from each `<title>` it holds)."""
    start = _TITLE_OPEN.search(page)
    end = _TITLE_CLOSE.search(page, start.end()) if start else None
    return page[start.end() : end.start()] if start and end else None


def _text(value: object) -> str:
    """A decoded JSON value as text: a string as it is, null as nothing, else as JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    try:
        return _dumps(value)[: 4 * _DETAIL_LENGTH]
    except (ValueError, TypeError, RecursionError):  # RecursionError: nested very deep
        return f"a JSON {type(value).__name__}"


@dataclass(frozen=True, slots=True)
class Ticket:
    """A pacer slot taken and the credential to send with it."""

    headers: Mapping[str, str] = field(repr=False)
    generation: int = 0


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


def server_of(base_url: str) -> str:
    """The API a base URL names, in one spelling: scheme, host and port (the default
    one written out), path without a trailing slash; no user, query nor fragment.

    A journal records it, so that the same server is known however the URL is typed
    (`HTTPS://API.navigatr.app/` is `https://api.navigatr.app:443`) and another is told.
    """
    parts = urlsplit(check_base_url(base_url))
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{host}:{port}{parts.path.rstrip('/')}"


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


class _Health:
    """Whether each endpoint answers: since when it has not, and whether the host ever did.

    An endpoint is in an outage once it has failed `_OUTAGE_STREAK` times in a row (every
    sender sees it, not one learner's bad luck); while it is, a request's own retry budget
    is not spent, and the client's outage limit decides when the run stops.
    """

    def __init__(self) -> None:
        self.ever_reached = False
        self.down_since: dict[str, float] = {}
        self.streak: dict[str, int] = {}
        self._said: set[str] = set()

    def good(self, kind: str) -> bool:
        """A reply worth having came; True when that ends an outage that was said."""
        self.ever_reached = True
        self.streak.pop(kind, None)
        self.down_since.pop(kind, None)
        if kind in self._said:
            self._said.discard(kind)
            return True
        return False

    def bad(self, kind: str, now: float, *, reached: bool) -> bool:
        """A failure; True when it makes the spell of trouble an outage, to be said (one
        learner's 500 between good answers is that learner's, retried, not news)."""
        self.ever_reached = self.ever_reached or reached
        self.streak[kind] = self.streak.get(kind, 0) + 1
        self.down_since.setdefault(kind, now)
        if self.in_outage(kind) and kind not in self._said:
            self._said.add(kind)
            return True
        return False

    def in_outage(self, kind: str) -> bool:
        return self.streak.get(kind, 0) >= _OUTAGE_STREAK


#: Failures in a row, from any sender, that make an endpoint's trouble an outage.
_OUTAGE_STREAK = 3

#: What each endpoint is called in messages.
_KIND_NAMES = {
    "token": "token endpoint",
    "lookup": "assertions list",
    "issue": "issue endpoint",
    "other": "API",
}


def _kind(path: str) -> str:
    if path.startswith("/v1/token"):
        return "token"
    if path.startswith("/v1/badge_assertion"):
        return "lookup"
    if path.endswith("/issue"):
        return "issue"
    return "other"


class NavigatrClient:
    """Paced, authenticated calls to the Navigatr API, on one request path.

    Args:
        session: the run's one aiohttp session.
        base_url: checked by `check_base_url`.
        pacer: every request, token calls included, takes a slot from it.
        auth: the credentials.
        policy: retries, deadlines and how long an outage is ridden out.
        emit: where waits and API trouble are reported.
        stopping: set when the run is asked to stop: nothing waiting for a slot or a
            retry leaves after that.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        pacer: Pacer,
        auth: Auth,
        *,
        policy: RetryPolicy | None = None,
        emit: Callable[[Event], None] | None = None,
        stopping: anyio.Event | None = None,
    ) -> None:
        self._session = session
        self._base = check_base_url(base_url)
        self.host = urlsplit(self._base).netloc
        self.pacer = pacer
        self.tokens = TokenManager(auth, self._login, lead=pacer.gap + 0.5)
        self.policy = policy or RetryPolicy()
        self._emit = emit or (lambda _event: None)
        self.stopping = stopping or anyio.Event()
        self._token_form: bool | None = None
        self._health = _Health()
        self._timeout = aiohttp.ClientTimeout(
            total=self.policy.deadline, sock_connect=10, sock_read=30
        )
        self._waiting: set[anyio.CancelScope] = set()
        self.requests = 0
        self.token_calls = 0
        self.retries = 0

    # -- the steps ---------------------------------------------------------------------

    async def slot(self, *, login: bool = False, again: bool = False) -> Ticket:
        """Wait for a pacer slot and a valid credential.

        Args:
            login: the slot is for the token call (ahead of every other request).
            again: the request was rate-limited before: it goes ahead of fresh requests,
                so that the same requests do not lose every round after a pause.

        Raises:
            Stopping: the run is stopping; nothing may leave now.
            CredentialsRejected: the login was refused.
            UnavailableError: the token endpoint stayed unavailable.
        """
        if login:
            await self._acquire(urgent=True)
            return Ticket({})
        # Refresh first (its call takes a slot of its own, ahead of the queue), then wait
        # for this request's slot, then read the token. A token that went stale while this
        # request queued costs the slot: sending later than the slot would break the spacing.
        # After a few tries the newest token goes anyway: a 401 still refreshes and resends.
        urgent = again
        for attempt in range(3):
            await self.tokens.ensure_fresh()
            await self._acquire(urgent=urgent)
            current = self.tokens.current(strict=attempt < 2)
            if current is not None:
                return Ticket(*current)
            # The slot goes unused: the pacer must not count it as a request that may
            # still arrive while this one waits for the refresh (whose login needs a slot).
            self._slot_unused()
            urgent = True
        raise CredentialsRejected("no login token could be had")  # pragma: no cover

    async def _acquire(self, *, urgent: bool) -> None:
        if self.stopping.is_set():
            raise Stopping
        if self.pacer.rate is None and not self.pacer.paused:
            # No pace and no pause to wait for: the slot comes at once, nothing to cancel.
            await self.pacer.acquire(urgent=urgent)
            if self.stopping.is_set():
                raise Stopping
            return
        # A stop while waiting for the slot (a pace, a 429's pause) cancels the wait: the
        # request does not leave.
        with anyio.CancelScope() as scope:
            self._waiting.add(scope)
            try:
                await self.pacer.acquire(urgent=urgent)
            finally:
                self._waiting.discard(scope)
        if scope.cancelled_caught or self.stopping.is_set():
            self._slot_unused()
            raise Stopping

    def _slot_unused(self) -> None:
        """Tell the pacer that the slot just taken sends nothing."""
        ended = getattr(self.pacer, "note_ended", None)
        if ended is not None:
            ended()

    def hide(self, text: str) -> str:
        """`text` with every secret the token manager knows masked (see `mask`)."""
        return mask(text, self.tokens.secrets())

    def stop(self) -> None:
        """Stop: nothing waiting for a slot or a retry leaves after this."""
        self.stopping.set()
        for scope in list(self._waiting):
            scope.cancel()

    async def send(
        self,
        ticket: Ticket,
        method: str,
        path: str,
        *,
        body: Mapping[str, object] | None = None,
        form: Mapping[str, str] | None = None,
        params: Mapping[str, str | int] | None = None,
    ) -> Answer:
        """One exchange, within the policy's deadline for the whole of it.

        Raises:
            NotSent: the connection could not be opened; nothing was sent.
            NoReply: no whole answer came in time; the request may have been processed.
        """
        self.requests += 1
        headers: dict[str, str] = dict(ticket.headers)
        data: bytes | Mapping[str, str] | None = form
        if body is not None:
            # Encoded here, once, rather than through aiohttp's JSON payload machinery.
            data = _dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        answered = False
        try:
            try:
                # aiohttp's `total` covers the whole exchange, the body included; it would also
                # count waiting for a pooled connection, but the pool is larger than the number
                # of requests the workers can have at once, so no request waits for one.
                async with self._session.request(
                    method,
                    self._base + path,
                    headers=headers,
                    data=data,
                    params=params,
                    allow_redirects=False,
                    timeout=self._timeout,
                ) as response:
                    raw = await _read_body(response)
                    body = _parse(raw.decode("utf-8", "replace"))
                    answer = Answer(response.status, body, response.headers, self.hide)
            except aiohttp.ConnectionTimeoutError as exc:
                raise NotSent(f"timed out connecting to {self.host}: {_short(exc)}") from None
            except aiohttp.ServerTimeoutError:
                # `sock_read`: silence, which ends an exchange before its deadline does.
                raise NoReply(
                    f"the server sent nothing for {self._timeout.sock_read:g}s (the longest one "
                    "request waits for the next byte of its answer)"
                ) from None
            except TimeoutError:
                raise NoReply(
                    f"no whole answer within {self.policy.deadline:g}s "
                    "(the deadline for one request)"
                ) from None
            except (aiohttp.ClientConnectorError, aiohttp.ClientSSLError) as exc:
                raise NotSent(self.hide(_describe_connect(exc, self.host))) from None
            except (aiohttp.ClientError, OSError, ssl.SSLError) as exc:
                # aiohttp's texts may quote what a server sent (a header's first hundred bytes).
                raise NoReply(self.hide(_describe(exc))) from None
            answered = True
        finally:
            if not answered:
                # No answer (nor any of it) came back: the pacer learns when the request
                # ended, its latest possible arrival; else its place in the window rule
                # would count as taken for good.
                self._slot_unused()
        observe = getattr(self.pacer, "observe", None)
        if observe is not None:
            detail = answer.detail if answer.status == 429 else None
            if _kind(path) == "token":
                # The token endpoint may have a limit of its own (one login per few
                # seconds): its 429s and headers say nothing of the pace of the rest.
                observe(answer.status, answer.headers, detail, shared=False)
            else:
                observe(answer.status, answer.headers, detail)
        return answer

    async def settle(
        self, retry: RequestRetry, ticket: Ticket, outcome: Answer | NotSent, *, path: str
    ) -> bool:
        """Act on a reply's retry decision; True to send again, False to hand it over.

        Raises:
            UnavailableError: the API has been unavailable too long, never answered, or
                asked for a longer wait than the policy honours.
            Stopping: the run is stopping.
        """
        answer = outcome if isinstance(outcome, Answer) else None
        status = answer.status if answer is not None else None
        hint = (
            retry_after(answer.headers, quota=answer.status == 429)
            if answer is not None and answer.status >= 300
            else None
        )
        kind = _kind(path)
        self._health_after(
            kind,
            answer,
            None if answer is not None else str(outcome),
            reached=isinstance(outcome, _Unanswered),
        )
        step = retry.step(
            status,
            hint=hint,
            outage=self._health.in_outage(kind),
            outlived=status == 401 and self.tokens.outlived(ticket.generation),
        )
        if isinstance(step, Deliver):
            if answer is None:
                raise UnavailableError(
                    f"cannot connect to the {_KIND_NAMES[kind]} at {self.host}: {outcome}; "
                    "rerun the same command later to resume",
                    host=self.host,
                )
            return False
        self.retries += 1
        if isinstance(step, Refresh):
            await self.tokens.refresh(ticket.generation, rejected=True)
            return True
        if isinstance(step, TooLong):
            raise UnavailableError(
                f"the server at {self.host} asked to wait {_duration(step.wait)} "
                f"({step.why}), longer than the {_duration(self.policy.max_wait)} this run "
                f"waits; rerun the same command after {_wall_clock_after(step.wait)}",
                host=self.host,
                retry_after=step.wait,
            )
        assert isinstance(step, Again)
        if step.rate_limited and kind == "token":
            # A login refused for its own endpoint's limit waits alone (its Retry-After, or
            # a window's pause that grows like a backoff, so it does not knock again at
            # once): the other requests go on at the pace, with the token they hold. Taught
            # to the pacer, one login per 4 s slowed every issue call to that for the rest
            # of a run; were the limit truly shared, the issue calls' own 429s teach it.
            limit = self.pacer.limit
            window = limit.period if limit is not None else 1.0
            wait = hint if hint is not None else max(window, self.policy.backoff(retry.limited))
            self.pacer.rate_limited += 1
            if wait >= _LONG_WAIT:
                self._emit(Waiting(wait, f"the server rate-limited a login ({step.why})"))
            await self.sleep(wait)
            return True
        if step.rate_limited:
            pause = self._rate_limited(hint, step.streak)
            if pause >= _LONG_WAIT:
                self._emit(Waiting(pause, f"the server rate-limited a request ({step.why})"))
            return True
        wait = self._within_limit(kind, step.wait)
        if wait >= _LONG_WAIT:
            self._emit(Waiting(wait, f"{self.host}: {step.why}"))
        if hint is not None:
            # The server said when to come back: nobody should knock before then.
            self.pacer.pause(hint)
        await self.sleep(wait)
        return True

    def _rate_limited(self, hint: float | None, streak: int) -> float:
        """Pause every sender for a 429: what it asks (the pacer decides that: its hint,
        else one window), longer for each 429 in a row to the same request, so that a
        limiter counting the requests it refuses is escaped (`RetryPolicy.rate_limited_wait`).

        Returns:
            The pause, in seconds.
        """
        asked = self.pacer.rate_limited_for(hint)
        pause = self.policy.rate_limited_wait(asked, streak)
        if pause > asked:
            self.pacer.pause(pause)
        return pause

    def _within_limit(self, kind: str, wait: float) -> float:
        """`wait`, cut so that the next try comes no later than the end of what the policy
        rides out: a long backoff must not carry the run past the time it should stop."""
        since = self._health.down_since.get(kind)
        if since is None:
            return wait
        limit = self.policy.outage
        if not self._health.ever_reached:
            limit = min(limit, self.policy.unreachable)
        return min(wait, max(since + limit - anyio.current_time(), 0.0))

    def note_unanswered(self, path: str, why: str) -> bool:
        """An issue call went unanswered or drew a 500/502/504: count it against its health.

        Returns:
            Whether the endpoint is in an outage (every sender fails, not just this one).

        Raises:
            UnavailableError: the outage has lasted longer than the policy rides out.
        """
        kind = _kind(path)
        self._health_after(kind, None, why, reached=True)
        return self._health.in_outage(kind)

    def _health_after(
        self, kind: str, answer: Answer | None, problem: str | None, *, reached: bool = False
    ) -> None:
        now = anyio.current_time()
        if answer is not None and answer.status not in (429, 500, 502, 503, 504):
            if self._health.good(kind):
                self._emit(ApiTrouble(self.host, f"the {_KIND_NAMES[kind]} answers again", True))
            return
        reason = f"HTTP {answer.status}: {answer.detail}" if answer is not None else problem or ""
        if self._health.bad(kind, now, reached=reached or answer is not None):
            self._emit(ApiTrouble(self.host, f"{_KIND_NAMES[kind]}: {reason}", recovered=False))
        down_for = now - self._health.down_since.get(kind, now)
        if not self._health.ever_reached and down_for >= self.policy.unreachable:
            raise UnavailableError(
                f"cannot reach the API at {self.host}: {reason}. Nothing was issued. "
                "Check the address (--base-url or NAVIGATR_BASE_URL), the network, and any "
                "proxy or firewall, then rerun the same command",
                host=self.host,
            )
        if down_for >= self.policy.outage:
            raise UnavailableError(
                f"the {_KIND_NAMES[kind]} at {self.host} has been unavailable for "
                f"{down_for:.0f}s ({reason}); rerun the same command later to resume",
                host=self.host,
            )

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds`, unless the run is asked to stop.

        Raises:
            Stopping: the run is stopping.
        """
        if seconds > 0:
            with anyio.move_on_after(seconds):
                await self.stopping.wait()
        if self.stopping.is_set():
            raise Stopping

    # -- whole requests ------------------------------------------------------------------

    def retries_for(self, *, login: bool = False) -> RequestRetry:
        """A fresh retry state for one request."""
        return RequestRetry(self.policy, refreshable=self.tokens.refreshable and not login)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: Mapping[str, object] | None = None,
    ) -> Answer:
        """A request that is safe to repeat, on the request path, until it has an answer.

        An unanswered send or a 500/502/504 is sent again too (it changes nothing on the
        server). Not for issue calls.

        Raises:
            UnavailableError, CredentialsRejected, Stopping: as `slot` and `settle`.
        """
        retry = self.retries_for()
        while True:
            ticket = await self.slot(again=retry.limited > 0)
            outcome: Answer | NotSent
            try:
                outcome = await self.send(ticket, method, path, params=params, body=body)
            except NotSent as exc:
                outcome = exc
            except NoReply as exc:
                outcome = _Unanswered(str(exc))  # safe to repeat: the same as never sent
            if isinstance(outcome, Answer) and outcome.status in (500, 502, 504):
                outcome = _as_unavailable(outcome)
            if not await self.settle(retry, ticket, outcome, path=path):
                assert isinstance(outcome, Answer)
                return outcome

    async def _login(self, auth: PasswordAuth) -> Secret:
        """Exchange the password for a token on the request path.

        JSON first, as the guide shows; on 415/422 the OAuth2 password form that the
        official Moodle plugin sends, remembered for later refreshes.

        Raises:
            CredentialsRejected: the token endpoint refused the login.
            UnavailableError: it stayed unavailable, or rate-limited without end.
        """
        retry = self.retries_for(login=True)
        while True:
            form = bool(self._token_form)
            credentials = {"username": auth.username, "password": auth.password.reveal()}
            ticket = await self.slot(login=True)
            self.tokens.attempting()
            self.token_calls += 1
            outcome: Answer | NotSent
            try:
                outcome = await self.send(
                    ticket,
                    "POST",
                    "/v1/token",
                    body=None if form else credentials,
                    form=credentials if form else None,
                )
            except NotSent as exc:
                outcome = exc
            except NoReply as exc:
                outcome = _Unanswered(str(exc))  # a login changes nothing: safe to repeat
            if isinstance(outcome, Answer) and outcome.status in (500, 502, 504):
                outcome = _as_unavailable(outcome)
            if await self.settle(retry, ticket, outcome, path="/v1/token"):
                continue
            assert isinstance(outcome, Answer)
            answer = outcome
            token = answer.body.get("access_token") if isinstance(answer.body, dict) else None
            if 200 <= answer.status < 300 and isinstance(token, str) and token:
                if not sendable(token):
                    raise UnavailableError(
                        f"the token endpoint at {self.host} answered a token that no header "
                        "can carry (a control character, or an unpaired surrogate); check the "
                        "API's address (--base-url or NAVIGATR_BASE_URL), or rerun later",
                        host=self.host,
                    )
                self._token_form = form
                return Secret(token)
            if answer.status in (415, 422) and self._token_form is None:
                self._token_form = True
                continue
            if answer.status in (429, 503):
                raise UnavailableError(
                    f"the token endpoint at {self.host} kept answering HTTP {answer.status}; "
                    "rerun later",
                    host=self.host,
                )
            problem = "no access_token in its answer" if answer.status < 300 else answer.detail
            raise CredentialsRejected(
                f"the token endpoint refused the login for {auth.username!r}: {problem} "
                f"(HTTP {answer.status}). Check NAVIGATR_USER and NAVIGATR_PASS"
            )


async def _read_body(response: aiohttp.ClientResponse) -> bytes:
    """The whole body, up to `_MAX_BODY` bytes.

    `StreamReader.read(n)` returns what has arrived so far, not n bytes: a body split over
    several packets (a page of the assertions list, a slow server) would be cut short.
    """
    raw = bytearray()
    while len(raw) < _MAX_BODY:
        chunk = await response.content.read(_MAX_BODY - len(raw))
        if not chunk:
            break
        raw += chunk
    return bytes(raw)


def _as_unavailable(answer: Answer) -> Answer:
    """A 5xx to a request that is safe to repeat: retried like a 503."""
    return Answer(503, answer.body, answer.headers, answer.hide)


def _parse(text: str) -> Any:
    """The body: JSON if it parses, else the text, as the server sent it.

    Nothing in it is masked: what the run decides by (an assertion's address, a login's
    token, a list's items) must be what the server said, and a secret as short as a word
    of it would otherwise rewrite it (`example` in every `@example.org`). What is written
    out of it is masked where it is taken: `Answer.detail`, and `Answer.shown` for any
    other value.
    """
    if text.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: nested past Python's stack
            return text
    return text


#: A secret at least this long is also masked where an echo cut it short (a server that
#: quotes a header's first hundred bytes): from its first this many characters to the end
#: of the word.
_ECHOED_PREFIX = 12


def mask(text: str, secrets: list[str]) -> str:
    """`text` with every secret replaced by asterisks (a server may echo what it was sent).

    Each secret is masked as it is, JSON-escaped (Python's, PHP's `\\/`, Go's `\\u0026`,
    every character as `\\uXXXX`), HTML-escaped and form-encoded: the ways an echo of a
    request body or header can spell it. A long one (a PAT, a password, a login token) is
    masked cut short too, from its first characters to the end of the word: a server, or
    aiohttp's own message about a header too long, may quote only its start. (A JWT's
    start is the same for every token: text that holds another one loses it too, which
    errs the safe way.)
    """
    for secret in secrets:
        for form in _spellings(secret):
            if form in text:
                text = text.replace(form, "********")
        if len(secret) >= _ECHOED_PREFIX and secret[:_ECHOED_PREFIX] in text:
            text = _cut_short(secret).sub("********", text)
    return text


@functools.lru_cache(maxsize=64)
def _cut_short(secret: str) -> re.Pattern[str]:
    return re.compile(re.escape(secret[:_ECHOED_PREFIX]) + r"\S*")


@functools.lru_cache(maxsize=64)
def _spellings(secret: str) -> tuple[str, ...]:
    if not secret:
        return ()
    escaped = {json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    escaped |= {form.replace("/", "\\/") for form in escaped}  # PHP's json_encode
    escaped |= {_go_escaped(form) for form in escaped}  # Go's encoding/json
    # Every character escaped, as a JSON string of UTF-16 units.
    units = secret.encode("utf-16-be", "surrogatepass")
    every = "".join(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2))
    forms = {
        secret,
        *escaped,
        every,
        html.escape(secret),
        html.escape(secret, quote=False),
        *(_entities(secret, style) for style in _ENTITY_STYLES),
        # A lone surrogate (a token a server made up) is spelled as its UTF-8 bytes would be.
        quote_plus(secret, errors="surrogatepass"),
        quote(secret, safe="", errors="surrogatepass"),
    }
    return tuple(sorted(forms, key=len, reverse=True))


#: How HTML templates spell the five characters they escape: Python's own (above), and
#: markupsafe's (Jinja2), PHP's and XML's.
_ENTITY_STYLES: tuple[dict[str, str], ...] = (
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&#34;", "'": "&#39;"},
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#039;"},
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;"},
    {"&": "&#38;", "<": "&#60;", ">": "&#62;", '"': "&#34;", "'": "&#39;"},
)


def _entities(text: str, style: dict[str, str]) -> str:
    return "".join(style.get(char, char) for char in text)


def _go_escaped(text: str) -> str:
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _wall_clock_after(seconds: float) -> str:
    """The time of day `seconds` from now, in UTC, for "rerun after ..."."""
    try:
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(time.time() + seconds))
    except (OverflowError, OSError, ValueError):
        return "the time the server gave"


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "for ever"
    if seconds >= 7 * 86400:
        # A server asking for weeks (or 10^100 seconds) is not counted out to the hour.
        return f"{seconds / 86400:.0f} days" if seconds < 366 * 86400 else "more than a year"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120 and seconds % 60 == 0:
        return f"{seconds / 60:.0f} min"
    # Not rounded: 120.5 s shown as 120 s (or 2 min) would read as within a 2 min cap.
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def _describe_connect(exc: BaseException, host: str) -> str:
    text = str(exc)
    if isinstance(exc, aiohttp.ClientSSLError | aiohttp.ClientConnectorCertificateError):
        return f"TLS error talking to {host}: {_short(exc)}"
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, OSError) and isinstance(os_error, socket.gaierror):
        return f"cannot resolve the host name {host!r} (DNS): {os_error.strerror or os_error}"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return f"cannot resolve the host name {host!r} (DNS)"
    if isinstance(os_error, ConnectionRefusedError) or "refused" in text.lower():
        return f"connection refused by {host} (nothing listens there)"
    return f"cannot connect to {host}: {_short(exc)}"


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out waiting for the answer"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection before answering"
    # Exception texts from aiohttp name the URL and the error, never our headers.
    return _short(exc)
