"""The unhappy answers: 429 with its headers, injected 5xx, dropped connections."""

from __future__ import annotations

import math
import time
from email.utils import formatdate

from aiohttp import web

from bulk_issuer.sandbox.config import SandboxConfig

__all__ = ["DroppedResponse", "drop", "rate_limited", "server_error"]

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
