"""The sandbox's aiohttp app: routes, the request pipeline, and serving on a real socket.

Every request under ``/v1`` goes through the same steps, in this order:
arrival latency -> rate limit (429) -> scripted answers -> random faults ->
authentication (401) -> handler -> delivery (at once, trickled, or never: ``hang``).
Each one is recorded on the ``Sandbox`` with the loop time it was counted at: with the
status sent (a trickled answer as soon as its headers go out), or ``DROPPED`` when no
answer is sent (a dropped connection, a hung request).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web
from aiohttp.log import access_logger

from bulk_issuer.sandbox import handlers
from bulk_issuer.sandbox.config import SandboxConfig
from bulk_issuer.sandbox.faults import (
    DroppedResponse,
    drop,
    hang,
    rate_limited,
    scripted,
    server_error,
    trickle,
)
from bulk_issuer.sandbox.state import DROPPED, SANDBOX_KEY, RequestKind, RequestRecord, Sandbox
from bulk_issuer.sandbox.validation import ApiError

__all__ = ["build_app", "run_sandbox"]

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Routes that answer without a credential: logging in, and FastAPI's slash redirect (which
# happens in routing, before any dependency runs).
_PUBLIC = frozenset({"token", "lookup-redirect"})
_KINDS: dict[str | None, RequestKind] = {
    "token": "token",
    "issue": "issue",
    "lookup": "lookup",
    "badge": "badge",
}
_TRANSIENT = (500, 502, 503, 504)


def _is_api(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


@web.middleware
async def _pipeline(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Run one request through latency, rate limit, faults and auth; record and deliver it."""
    sandbox = request.app[SANDBOX_KEY]
    if not sandbox.url:
        # Served by something other than run_sandbox (aiohttp's TestServer, say).
        sandbox.url = str(request.url.origin())
    matched = request.match_info.http_exception is None
    route = request.match_info.route.name if matched else None
    kind = _KINDS.get(route, "other")
    api = _is_api(request.path)

    low, high = sandbox.config.latency
    if api and high > 0:
        # Network arrival jitter: requests sent in one order may be counted in another.
        await asyncio.sleep(sandbox.random.uniform(low, high))
    arrived = asyncio.get_running_loop().time()
    if api:
        arrived = await _thawed(sandbox, arrived)
    if kind == "token":
        sandbox.token_calls += 1

    try:
        response = await _answer(
            sandbox, request, handler, route=route, kind=kind, api=api, now=arrived
        )
    except ApiError as error:
        response = error.response()
    except web.HTTPException as exc:
        # aiohttp's own 404/405 (no such route, wrong method): FastAPI answers them in JSON.
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        response = web.json_response({"detail": exc.reason}, status=exc.status, headers=headers)
    if api and sandbox.config.ratelimit_headers:
        from bulk_issuer.sandbox.ratelimit_headers import add_ratelimit_headers

        add_ratelimit_headers(sandbox, response)

    config = sandbox.config
    hung = api and ("any" in config.hang or kind in config.hang)
    status = DROPPED if hung or isinstance(response, DroppedResponse) else response.status
    sandbox.record(RequestRecord(arrived, request.method, request.path, status, kind))
    if isinstance(response, DroppedResponse):
        return response
    if hung:
        return await hang(request, sandbox.stopping)
    gap = config.trickle.get(kind, config.trickle.get("any")) if api else None
    if gap is not None:
        return await trickle(request, response, gap, sandbox.stopping)
    return response


async def _thawed(sandbox: Sandbox, arrived: float) -> float:
    """Hold a request that reaches a frozen server (``config.freeze``) until it wakes.

    Returns:
        When the server takes the request in: when it reached it, or the freeze's end.
    """
    if sandbox.first_at is None:
        sandbox.first_at = arrived
    while sandbox.config.freeze is not None and not sandbox.stopping.is_set():
        at, seconds = sandbox.config.freeze
        start = sandbox.first_at + at
        if not start <= arrived < start + seconds:
            break
        # Looked at again after the sleep: the freeze may have been changed meanwhile.
        await asyncio.sleep(start + seconds - arrived)
        arrived = asyncio.get_running_loop().time()
    return arrived


async def _answer(
    sandbox: Sandbox,
    request: web.Request,
    handler: _Handler,
    *,
    route: str | None,
    kind: RequestKind,
    api: bool,
    now: float,
) -> web.StreamResponse:
    """The steps after arrival: rate limit, scripted answers, faults, auth, the endpoint."""
    config = sandbox.config
    limiter = sandbox.limiter()
    # Every /v1 request counts, errors and unknown paths included, as with slowapi's default.
    if api and limiter is not None and config.rate is not None and not limiter.hit(now):
        sandbox.rejected_429 += 1
        return rate_limited(config, config.rate, limiter.retry_after(now))
    script = sandbox.scripted_answer(kind, now) if api else None
    if script is not None and not script.commit:
        return scripted(script)
    if route is None:
        return await handler(request)  # raises aiohttp's 404/405

    if route == "token" and sandbox.chance(config.token_fault_rate):
        return server_error(503)
    if route == "issue":
        if sandbox.chance(config.drop_before_rate):
            return drop(request)
        if sandbox.chance(config.fault_rate):
            return server_error(sandbox.random.choice(_TRANSIENT))
    if route not in _PUBLIC:
        handlers.authenticate(sandbox, request)
    response = await handler(request)
    if script is not None and response.status == 200 and isinstance(response, web.Response):
        # commit: the issue call went through and the assertion exists; say otherwise.
        return scripted(script, committed=response)
    return response


def build_app(sandbox: Sandbox) -> web.Application:
    """The aiohttp application serving ``sandbox``'s Navigatr stand-in."""
    app = web.Application(middlewares=[_pipeline])
    app[SANDBOX_KEY] = sandbox

    async def stopping(_: web.Application) -> None:
        # Hung and trickling answers hold their connections until this; without it the
        # runner would wait its whole shutdown_timeout for them, then cancel them.
        sandbox.stopping.set()

    app.on_shutdown.append(stopping)
    router = app.router
    router.add_post("/v1/token", handlers.token, name="token")
    router.add_put("/v1/badge/{badge_id}/issue", handlers.issue, name="issue")
    router.add_get("/v1/badge/{badge_id}", handlers.badge, name="badge", allow_head=False)
    router.add_get("/v1/badge_assertion/", handlers.lookup, name="lookup", allow_head=False)
    router.add_get(
        "/v1/badge_assertion", handlers.add_slash, name="lookup-redirect", allow_head=False
    )
    router.add_get(
        "/v1/user_detail/{user_id}", handlers.user_detail, name="user-detail", allow_head=False
    )
    return app


@asynccontextmanager
async def run_sandbox(
    config: SandboxConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    access_log: bool = False,
) -> AsyncIterator[Sandbox]:
    """Serve a sandbox on a real socket for the duration of the ``async with`` block.

    Args:
        config: the switches; the defaults if None.
        host: the address to bind.
        port: the port to bind; 0 picks a free one, reported in ``sandbox.url``.
        access_log: log every request through ``aiohttp.access`` (off: tests stay quiet).
    """
    sandbox = Sandbox(config)
    runner = web.AppRunner(
        build_app(sandbox),
        handle_signals=False,
        access_log=access_logger if access_log else None,
        # A request still sleeping its simulated latency is not worth waiting long for.
        shutdown_timeout=1.0,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = runner.addresses[0][1]
        shown_host = f"[{host}]" if ":" in host else host
        sandbox.url = f"http://{shown_host}:{bound_port}"
        yield sandbox
    finally:
        await runner.cleanup()
