"""Retries: what each answer means, how long to wait, and what the server asked for."""

from __future__ import annotations

import enum
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

__all__ = ["RetryPolicy", "Verdict", "classify", "retry_after"]


class Verdict(enum.Enum):
    """What an answer to an issue call means for that learner."""

    ISSUED = "issued"
    #: Not processed; send again after a wait (429, 503).
    RETRY = "retry"
    #: Maybe processed: ask the server before sending again (timeouts, drops, 500/502/504).
    AMBIGUOUS = "ambiguous"
    #: This learner's request was refused; sending it again would not help (400, 422, ...).
    FAILED = "failed"
    #: Credentials refused (401): refresh once, then stop the run.
    UNAUTHORIZED = "unauthorized"
    #: The badge is unknown or not ours (403, 404): stop the run.
    FATAL = "fatal"
    #: The server says the learner holds the badge already (409).
    HELD = "held"


def classify(status: int | None) -> Verdict:
    """Classify an issue call's HTTP status; `None` means no answer arrived."""
    if status is None or status in (500, 502, 504):
        return Verdict.AMBIGUOUS
    if 200 <= status < 300:
        return Verdict.ISSUED
    if status == 429 or status >= 500:
        return Verdict.RETRY
    if status == 401:
        return Verdict.UNAUTHORIZED
    if status in (403, 404):
        return Verdict.FATAL
    if status == 409:
        return Verdict.HELD
    return Verdict.FAILED


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped exponential backoff with full jitter.

    All durations are in seconds.

    Args:
        attempts: sends per learner before it is recorded as failed (429s not counted).
        base: the first backoff's upper bound.
        cap: no backoff is longer than this.
        rate_limited_attempts: how many 429s one learner may draw before it fails.
    """

    attempts: int = 6
    base: float = 1.0
    cap: float = 30.0
    rate_limited_attempts: int = 30

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if self.base < 0 or self.cap < 0:
            raise ValueError("backoff durations must not be negative")

    def backoff(self, failures: int, rng: random.Random | None = None) -> float:
        """The wait after the `failures`-th failed attempt (1-based)."""
        ceiling = min(self.cap, self.base * 2 ** max(failures - 1, 0))
        return (rng or random).uniform(0, ceiling)


_SECONDS = re.compile(r"^\s*\d+(\.\d+)?\s*$")
_RATELIMIT_RESET = re.compile(r"(?:^|[,;\s])(?:reset|r)\s*=\s*(\d+(?:\.\d+)?)")


def retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """The seconds a rate-limited or unavailable server asked the client to wait, if it said.

    Reads `Retry-After` (delta-seconds or an HTTP-date), then the IETF draft `RateLimit`
    header (`reset=`), then `X-RateLimit-Reset` (delta-seconds, or an epoch timestamp).

    Args:
        headers: the answer's headers (a case-insensitive mapping, as aiohttp gives).
        now: the wall-clock time as a Unix timestamp, for dates; defaults to `time.time()`.
    """
    wall = time.time() if now is None else now
    value = headers.get("Retry-After")
    if value:
        if _SECONDS.match(value):
            return float(value)
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            when = None
        if when is not None and when.tzinfo is not None:
            return max(when.timestamp() - wall, 0.0)
    draft = headers.get("RateLimit")
    if draft and (match := _RATELIMIT_RESET.search(draft.lower())):
        return float(match.group(1))
    reset = headers.get("X-RateLimit-Reset")
    if reset and _SECONDS.match(reset):
        seconds = float(reset)
        # Some servers send a duration, others an epoch timestamp; a duration is never a
        # billion seconds long.
        return max(seconds - wall, 0.0) if seconds > 1e9 else seconds
    return None
