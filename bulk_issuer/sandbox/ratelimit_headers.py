"""The rate-limit headers the sandbox can send, as servers in front of a FastAPI app do.

Two families, both sent: the IETF draft's ``RateLimit-Policy: 5;w=2`` and
``RateLimit: limit=5, remaining=3, reset=1`` (reset in whole seconds, rounded up), and the
``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (an epoch
timestamp in whole seconds, rounded up) that slowapi and most gateways send. The
``ratelimit_headers`` switch of the config says where: ``False`` nowhere, ``True`` or
``"429"`` on 429 answers only, ``"all"`` on every ``/v1`` answer.
"""

from __future__ import annotations

import asyncio
import math
import time

from aiohttp import web

from bulk_issuer.sandbox.faults import DroppedResponse
from bulk_issuer.sandbox.limits import RateLimitModel
from bulk_issuer.sandbox.state import Sandbox

__all__ = ["add_ratelimit_headers", "ratelimit_headers"]


def ratelimit_headers(
    limiter: RateLimitModel, now: float, *, wall: float | None = None, overstate: int = 0
) -> dict[str, str]:
    """The headers describing ``limiter``'s state at loop time ``now``.

    Args:
        limiter: the rate limit model in force.
        now: the loop time the answer leaves at.
        wall: the wall-clock time as a Unix timestamp, for the epoch reset; default now.
        overstate: claim this many more remaining places than there are.
    """
    remaining = limiter.remaining(now)
    # Full: the reset is when a request will be accepted again, as a 429's Retry-After.
    reset = limiter.retry_after(now) if remaining == 0 else limiter.reset(now)
    epoch = math.ceil((time.time() if wall is None else wall) + reset)
    said = min(remaining + overstate, limiter.limit)
    return {
        "RateLimit-Policy": f"{limiter.limit};w={limiter.period:g}",
        "RateLimit": f"limit={limiter.limit}, remaining={said}, reset={math.ceil(reset)}",
        "X-RateLimit-Limit": str(limiter.limit),
        "X-RateLimit-Remaining": str(said),
        "X-RateLimit-Reset": str(epoch),
    }


def add_ratelimit_headers(sandbox: Sandbox, response: web.StreamResponse) -> None:
    """Add the headers to ``response`` if the sandbox's switch says so for this answer."""
    mode = sandbox.config.ratelimit_headers
    if not mode or isinstance(response, DroppedResponse) or response.prepared:
        return
    if mode != "all" and response.status != 429:
        return
    limiter = sandbox.limiter()
    if limiter is None:
        return
    now = asyncio.get_running_loop().time()
    overstate = sandbox.config.ratelimit_overstate
    response.headers.update(ratelimit_headers(limiter, now, overstate=overstate))
