"""The clients a developer writes from the issuing guide, to measure the engine against.

They are deliberately ordinary: one `aiohttp.ClientSession` with its defaults, a login
token fetched with `POST /v1/token` (JSON, as the guide shows), a PUT per learner, and
at most a 1 s sleep on a 429 and a new token on a 401. Nothing here is the engine's code.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from benchmarks._common import BADGE, DEMO_PASSWORD, DEMO_USER, payload

__all__ = ["Tally", "guide_loop", "naive_async"]

#: Sends per learner before the naive script gives up on it (keeps every loop bounded).
MAX_ATTEMPTS = 10
#: Generous: nothing in these benchmarks takes more than a second to answer.
_TIMEOUT = aiohttp.ClientTimeout(total=30)


@dataclass(slots=True)
class Tally:
    """What a naive client saw of its own run (the server's view is counted separately)."""

    ok: int = 0
    rejected_429: int = 0
    rejected_401: int = 0
    other: int = 0
    token_calls: int = 0
    elapsed: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain values for JSON."""
        return {name: getattr(self, name) for name in self.__slots__}


async def _fetch_token(
    session: aiohttp.ClientSession,
    base: str,
    tally: Tally,
    *,
    retry_429: bool,
    limiter: Any = None,
) -> str:
    """Log in as the guide shows; on a 429 sleep 1 s and try again, if this client retries.

    With a `limiter`, the login waits for it like any other call: the charitable reading
    of a script written with the rate limit in mind (the login counts against it too).
    """
    for _ in range(MAX_ATTEMPTS):
        tally.token_calls += 1
        async with contextlib.AsyncExitStack() as stack:
            if limiter is not None:
                await stack.enter_async_context(limiter)
            async with session.post(
                f"{base}/v1/token", json={"username": DEMO_USER, "password": DEMO_PASSWORD}
            ) as response:
                body = await response.json(content_type=None)
                status = response.status
        if status == 200:
            return str(body["access_token"])
        if status == 429 and retry_429:
            tally.rejected_429 += 1
            await asyncio.sleep(1.0)
            continue
        raise RuntimeError(f"the naive client's login failed with HTTP {status}: {body}")
    raise RuntimeError(f"the naive client's login was rate limited {MAX_ATTEMPTS} times")


async def _put(
    session: aiohttp.ClientSession, base: str, token: str, learner: dict[str, str]
) -> int:
    async with session.put(
        f"{base}/v1/badge/{BADGE}/issue",
        json=payload(learner),
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        await response.read()
        return response.status


async def naive_async(
    base: str,
    learners: Sequence[dict[str, str]],
    *,
    limiter: Any,
    workers: int,
    retry_429: bool,
    refresh_401: bool,
) -> Tally:
    """`workers` tasks share one learner iterator and send each call inside `async with limiter`.

    Args:
        base: the sandbox's URL.
        learners: dict rows with first_name, last_name and email.
        limiter: an `aiolimiter.AsyncLimiter` (or anything usable as `async with`).
        workers: concurrent tasks.
        retry_429: sleep 1 s and send again after a 429 (else the learner is lost).
        refresh_401: log in again after a 401 and send again (else the learner is lost).
    """
    tally = Tally()
    started = time.perf_counter()
    async with aiohttp.ClientSession(timeout=_TIMEOUT) as session:
        token = [await _fetch_token(session, base, tally, retry_429=retry_429, limiter=limiter)]
        refreshing = asyncio.Lock()
        pending = iter(learners)

        async def refresh(used: str) -> None:
            # One new token for every worker that saw the old one refused.
            async with refreshing:
                if token[0] == used:
                    token[0] = await _fetch_token(
                        session, base, tally, retry_429=retry_429, limiter=limiter
                    )

        async def work() -> None:
            for learner in pending:
                for _ in range(MAX_ATTEMPTS):
                    used = token[0]
                    async with limiter:
                        status = await _put(session, base, used, learner)
                    if status == 200:
                        tally.ok += 1
                        break
                    if status == 429:
                        tally.rejected_429 += 1
                        if not retry_429:
                            break
                        await asyncio.sleep(1.0)
                    elif status == 401:
                        tally.rejected_401 += 1
                        if not refresh_401:
                            break
                        await refresh(used)
                    else:
                        tally.other += 1
                        break

        await asyncio.gather(*(work() for _ in range(workers)))
    tally.elapsed = time.perf_counter() - started
    return tally


async def guide_loop(base: str, learners: Sequence[dict[str, str]], *, pause: float) -> Tally:
    """The issuing guide's script in aiohttp: a token once, then one PUT after another.

    No pacing, no retry, no refresh; `pause` seconds of sleep after each call (the guide's
    loop with `time.sleep(0.4)` added, as a developer who read the limit would).
    """
    tally = Tally()
    started = time.perf_counter()
    async with aiohttp.ClientSession(timeout=_TIMEOUT) as session:
        token = await _fetch_token(session, base, tally, retry_429=False)
        for learner in learners:
            status = await _put(session, base, token, learner)
            if status == 200:
                tally.ok += 1
            elif status == 429:
                tally.rejected_429 += 1
            elif status == 401:
                tally.rejected_401 += 1
            else:
                tally.other += 1
            if pause:
                await asyncio.sleep(pause)
    tally.elapsed = time.perf_counter() - started
    return tally
