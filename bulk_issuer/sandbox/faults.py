"""The unhappy answers: 429 with its headers, injected 5xx, dropped connections, scripted
answers, answers that trickle in one byte at a time and answers that never come."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from email.utils import formatdate
from http import HTTPStatus

from aiohttp import hdrs, web
from multidict import CIMultiDict

from bulk_issuer.sandbox.config import SandboxConfig, ScriptedAnswer

__all__ = [
    "DroppedResponse",
    "drop",
    "hang",
    "rate_limited",
    "scripted",
    "server_error",
    "trickle",
]

# How often a hung request looks whether its client has gone (seconds of loop time).
_HANG_POLL = 1.0

# What a client really gets: the app's own 500 is Starlette's plain text, and the 502/503/504
# come from a proxy in front of it as HTML, so a client must not assume a JSON error body.
_PROXY_PAGES = {
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
}


def server_error(status: int) -> web.Response:
    """A transient server error as the real stack would send it (500, 502, 503 or 504)."""
    if status == 500:
        return web.Response(status=500, text="Internal Server Error")
    title = f"{status} {_PROXY_PAGES[status]}"
    page = (
        f"<html><head><title>{title}</title></head>"
        f"<body><center><h1>{title}</h1></center></body></html>\n"
    )
    return web.Response(status=status, text=page, content_type="text/html")


class DroppedResponse(web.Response):
    """Returned after the connection was closed: aiohttp's write fails quietly, nothing is sent."""


def drop(request: web.Request) -> DroppedResponse:
    """Close the connection without an answer; the client sees a server disconnect."""
    if request.transport is not None:
        request.transport.close()
    # Returning (not raising) lets aiohttp notice the closed transport and log nothing: a
    # raised exception would be reported as an unhandled error with a traceback. 444 is
    # nginx's "closed without response", which is what an access log line should say.
    return DroppedResponse(status=444)


def _per(period: float) -> str:
    # The `limits` library's wording, as slowapi puts it in its 429 body: "5 per 2 second".
    if period >= 3600 and period % 3600 == 0:
        return f"{period / 3600:g} hour"
    if period >= 60 and period % 60 == 0:
        return f"{period / 60:g} minute"
    return f"{period:g} second"


def rate_limited(config: SandboxConfig, rate: tuple[int, float], wait: float) -> web.Response:
    """The 429 answer for ``rate``, telling the client to come back in ``wait`` seconds.

    Args:
        config: says how to tell (``retry_after``, ``ratelimit_headers``).
        rate: the limit in force, N requests per P seconds.
        wait: seconds until a request would be accepted.
    """
    limit, period = rate
    seconds = max(1, math.ceil(wait))
    # HTTP-dates have whole seconds: round up so a client waiting until then is not early.
    epoch = max(math.ceil(time.time() + wait), math.floor(time.time()) + 1)
    headers: dict[str, str] = {}
    if config.retry_after == "seconds":
        headers["Retry-After"] = str(seconds)
    elif config.retry_after == "date":
        headers["Retry-After"] = formatdate(epoch, usegmt=True)
    if config.ratelimit_headers:
        headers["RateLimit-Policy"] = f"{limit};w={period:g}"
        headers["RateLimit"] = f"limit={limit}, remaining=0, reset={seconds}"
        headers["X-RateLimit-Reset"] = str(epoch)
    return web.json_response(
        {"detail": f"Rate limit exceeded: {limit} per {_per(period)}"},
        status=429,
        headers=headers,
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def scripted(answer: ScriptedAnswer, committed: web.Response | None = None) -> web.Response:
    """The response ``answer`` describes.

    Args:
        answer: the scripted answer.
        committed: with ``answer.commit``, the issue call's own answer (the assertion),
            which a 2xx without a body of its own sends on with the scripted status.
    """
    status, body = answer.status, answer.body
    if body is None and committed is not None and 200 <= status < 300:
        committed.set_status(status)
        response = committed
    elif body is None and (status == 500 or status in _PROXY_PAGES):
        response = server_error(status)
    elif body is None and status in (204, 304):
        response = web.Response(status=status)
    else:
        if body is None:
            body = {"detail": _phrase(status)}
        if isinstance(body, bytes):
            data, media = body, "application/octet-stream"
        elif isinstance(body, str):
            data, media = body.encode(), "text/plain; charset=utf-8"
        else:
            data, media = json.dumps(body).encode(), "application/json; charset=utf-8"
        response = web.Response(status=status, body=data, headers={hdrs.CONTENT_TYPE: media})
    if answer.content_type is not None:
        response.headers[hdrs.CONTENT_TYPE] = answer.content_type
    # Sent as given, whatever the value: a scripted Retry-After: 3600 must reach the client.
    response.headers.update(answer.headers)
    return response


async def _stopped(stopping: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` or until ``stopping`` is set; True if it was."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stopping.wait()
    return stopping.is_set()


async def trickle(
    request: web.Request, response: web.StreamResponse, gap: float, stopping: asyncio.Event
) -> web.StreamResponse:
    """Send ``response``'s status and headers now, then its body one byte every ``gap`` seconds.

    The whole body arrives ``len(body) * gap`` seconds after the headers, with a correct
    Content-Length, like an overloaded proxy. If the client gives up the sending stops; if
    the sandbox stops, the connection is closed mid-body.
    """
    body = response.body if isinstance(response, web.Response) else None
    if not isinstance(body, bytes):
        return response
    headers = CIMultiDict(response.headers)
    headers.popall(hdrs.CONTENT_LENGTH, None)
    stream = web.StreamResponse(status=response.status, reason=response.reason, headers=headers)
    stream.content_length = len(body)
    # The client closing its end shows up as a failed write (aiohttp's
    # ClientConnectionResetError is a ConnectionResetError).
    with contextlib.suppress(ConnectionResetError):
        await stream.prepare(request)
        for index in range(len(body)):
            if await _stopped(stopping, gap):
                if request.transport is not None:
                    request.transport.close()
                break
            await stream.write(body[index : index + 1])
    return stream


async def hang(request: web.Request, stopping: asyncio.Event) -> DroppedResponse:
    """Never answer: hold the connection until the client gives up or the sandbox stops."""
    while not await _stopped(stopping, _HANG_POLL):
        transport = request.transport
        if transport is None or transport.is_closing():
            break
    return drop(request)
