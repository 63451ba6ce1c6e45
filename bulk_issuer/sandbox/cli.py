"""The ``bulk-issuer sandbox`` command: its options, and serving until stopped."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import signal
import sys
from collections.abc import Callable
from typing import cast

from aiohttp.log import access_logger

from bulk_issuer.sandbox.config import SandboxConfig, describe_rate
from bulk_issuer.sandbox.limits import MODELS, RateModelName
from bulk_issuer.sandbox.server import run_sandbox
from bulk_issuer.sandbox.state import Sandbox

__all__ = ["add_arguments", "config_from_args", "parse_latency", "parse_rate", "serve_forever"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(ms|s|m|h)?\s*")
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*")


def parse_rate(text: str) -> tuple[int, float] | None:
    """Read ``N/P`` like ``5/2s``, ``50/1s``, ``150/1m``, ``10/500ms`` (or ``none``).

    A bare period is in seconds (``5/2``); a bare unit means one of it (``5/s``).
    """
    if text.strip().lower() in ("none", "off", "unlimited"):
        return None
    match = _RATE.fullmatch(text)
    if not match:
        raise argparse.ArgumentTypeError(
            f"a rate is N/P like 5/2s, 150/1m or 10/500ms (or none), got {text!r}"
        )
    count, amount, unit = match.groups()
    period = float(amount or 1) * _UNITS[unit or "s"]
    if int(count) < 1 or period <= 0:
        raise argparse.ArgumentTypeError(
            f"a rate needs N >= 1 and a period above 0, like 5/2s; got {text!r}"
        )
    return int(count), period


def _duration(text: str, unit: str | None) -> float:
    match = _DURATION.fullmatch(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r}")
    amount, own_unit = match.groups()
    return float(amount) * _UNITS[own_unit or unit or "s"]


def parse_latency(text: str) -> tuple[float, float]:
    """Read ``LOW-HIGH`` like ``0.03-0.09`` (seconds) or ``30-90ms``, or one fixed value."""
    low_text, _, high_text = text.partition("-")
    # A unit written once at the end applies to both ends: 30-90ms.
    tail = _DURATION.fullmatch(high_text or low_text)
    unit = tail.group(2) if tail else None
    try:
        low = _duration(low_text, unit)
        high = _duration(high_text, unit) if high_text else low
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"latency is LOW-HIGH like 0.03-0.09 (seconds) or 30-90ms, got {text!r}"
        ) from None
    if low > high:
        raise argparse.ArgumentTypeError(f"latency LOW must not exceed HIGH, got {text!r}")
    return low, high


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a probability between 0 and 1, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = _duration(text, "s")
    except argparse.ArgumentTypeError:
        value = 0.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"a positive number of seconds, got {text!r}")
    return value


def _badge(text: str) -> tuple[int, str]:
    number, _, name = text.partition("=")
    if not number.strip().isdigit():
        raise argparse.ArgumentTypeError(f"a badge is ID or ID=NAME like 51=Sandbox, got {text!r}")
    return int(number), name.strip() or f"Sandbox badge {int(number)}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the sandbox's options to ``parser`` (the ``bulk-issuer sandbox`` subcommand)."""
    defaults = SandboxConfig()
    net = parser.add_argument_group("serving")
    net.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    net.add_argument("--port", type=int, default=8765, help="port to bind, 0 = any free one")
    net.add_argument(
        "--access-log", action="store_true", help="log every request to stderr (aiohttp.access)"
    )

    limit = parser.add_argument_group("rate limit")
    limit.add_argument(
        "--rate",
        type=parse_rate,
        default=defaults.rate,
        metavar="N/P",
        help="requests per period, like 5/2s, 150/1m, or none (default 5/2s)",
    )
    limit.add_argument(
        "--model",
        choices=list(MODELS),
        default=defaults.rate_model,
        help="how the limit is enforced (default fixed window)",
    )
    limit.add_argument(
        "--retry-after",
        choices=["seconds", "date", "none"],
        default=defaults.retry_after,
        help="how a 429 says when to come back (default seconds)",
    )
    limit.add_argument(
        "--ratelimit-headers",
        action="store_true",
        help="also send RateLimit, RateLimit-Policy and X-RateLimit-Reset on 429s",
    )

    auth = parser.add_argument_group("authentication")
    auth.add_argument(
        "--token-ttl",
        type=_seconds,
        default=defaults.token_ttl,
        metavar="SECONDS",
        help="lifetime of a token from /v1/token (default 600)",
    )
    auth.add_argument("--opaque-tokens", action="store_true", help="opaque tokens instead of JWTs")
    auth.add_argument(
        "--token-mode",
        choices=["json", "form", "both"],
        default=defaults.token_mode,
        help="login bodies /v1/token accepts (default both)",
    )
    auth.add_argument(
        "--pat-header",
        choices=["x-access-token", "bearer", "both"],
        default=defaults.pat_header,
        help="where a Personal Access Token is accepted (default both)",
    )

    data = parser.add_argument_group("badges and lookups")
    data.add_argument(
        "--badge",
        type=_badge,
        action="append",
        metavar="ID[=NAME]",
        help="add a badge that may be issued (default 51 and 3425 exist)",
    )
    data.add_argument(
        "--lookup",
        choices=["ok", "forbidden", "missing"],
        default=defaults.lookup,
        help="GET /v1/badge_assertion/ works, answers 403, or 404 (default ok)",
    )

    faults = parser.add_argument_group("faults (probabilities 0-1)")
    faults.add_argument(
        "--latency",
        type=parse_latency,
        default=defaults.latency,
        metavar="LOW-HIGH",
        help="random arrival delay, like 0.03-0.09 or 30-90ms (default none)",
    )
    faults.add_argument(
        "--fault-rate",
        type=_probability,
        default=0.0,
        metavar="P",
        help="issue calls answering 5xx",
    )
    faults.add_argument(
        "--drop-before-rate",
        type=_probability,
        default=0.0,
        metavar="P",
        help="issue calls dropped with nothing issued",
    )
    faults.add_argument(
        "--drop-after-rate",
        type=_probability,
        default=0.0,
        metavar="P",
        help="issue calls dropped after the badge was issued",
    )
    faults.add_argument(
        "--token-fault-rate",
        type=_probability,
        default=0.0,
        metavar="P",
        help="token calls answering 503",
    )
    faults.add_argument("--seed", type=int, default=None, help="random seed for faults and latency")


def config_from_args(ns: argparse.Namespace) -> SandboxConfig:
    """The ``SandboxConfig`` the parsed options describe."""
    config = SandboxConfig(
        rate=ns.rate,
        rate_model=cast(RateModelName, ns.model),
        retry_after=ns.retry_after,
        ratelimit_headers=ns.ratelimit_headers,
        token_ttl=ns.token_ttl,
        jwt_tokens=not ns.opaque_tokens,
        token_mode=ns.token_mode,
        pat_header=ns.pat_header,
        lookup=ns.lookup,
        latency=ns.latency,
        fault_rate=ns.fault_rate,
        drop_before_rate=ns.drop_before_rate,
        drop_after_rate=ns.drop_after_rate,
        token_fault_rate=ns.token_fault_rate,
        seed=ns.seed,
    )
    for badge_id, name in ns.badge or ():
        config.badges[badge_id] = name
    return config


def describe(config: SandboxConfig) -> str:
    """A short account of the switches that matter, for the listening line."""
    parts = [
        f"rate {describe_rate(config.rate)}"
        + (f" {config.rate_model}" if config.rate is not None else ""),
        f"token ttl {config.token_ttl:g}s",
    ]
    low, high = config.latency
    if high > 0:
        parts.append(f"latency {low * 1000:g}-{high * 1000:g}ms")
    for name in ("fault_rate", "drop_before_rate", "drop_after_rate", "token_fault_rate"):
        if value := getattr(config, name):
            parts.append(f"{name.removesuffix('_rate').replace('_', ' ')} {value:.0%}")
    return ", ".join(parts)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def tally(sandbox: Sandbox) -> str:
    """One line of what happened: issued, duplicates, 429s, token calls."""
    extra = sum(n - 1 for n in sandbox.duplicates().values())
    return (
        f"sandbox stopped: {sandbox.issued_by_api} issued, {_count(extra, 'duplicate')}, "
        f"{sandbox.rejected_429} answered 429, {_count(sandbox.token_calls, 'token call')}"
    )


async def serve_forever(
    config: SandboxConfig,
    host: str,
    port: int,
    ready: Callable[[Sandbox], None] | None = None,
    *,
    access_log: bool = False,
) -> None:
    """Serve until cancelled (Ctrl-C) or sent SIGTERM; say where, and at the end what happened.

    Args:
        config: the switches.
        host: the address to bind.
        port: the port to bind; 0 picks a free one.
        ready: called with the running sandbox once it listens.
        access_log: log every request to stderr.
    """
    if access_log and not access_logger.handlers:
        # Nothing else configures logging for this command; without a handler the lines vanish.
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_logger.addHandler(handler)
        access_logger.setLevel(logging.INFO)
    async with run_sandbox(config, host=host, port=port, access_log=access_log) as sandbox:
        print(f"sandbox listening on {sandbox.url} ({describe(config)})", file=sys.stderr)
        if ready is not None:
            ready(sandbox)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # SIGTERM (how `make demo` stops it) ends the run as cleanly as Ctrl-C does.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGTERM, stop.set)
        try:
            await stop.wait()
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGTERM)
            print(tally(sandbox), file=sys.stderr)
