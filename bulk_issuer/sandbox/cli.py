"""The ``bulk-issuer sandbox`` command: its options, and serving until stopped.

``bulk-issuer sandbox`` serves a local stand-in for the Navigatr API (user
``demo@example.com``, PAT ``sandbox-demo-pat``, badges 51 and 3425, 5 requests per 2 s)
until Ctrl-C or SIGTERM, then says what happened. Its options set a ``SandboxConfig``:
the rate limit and how a 429 says so, authentication, and faults. Beside the random
faults (``--fault-rate``, ``--drop-after-rate``, ...) it can play an adversarial server:

- ``--script KIND:STATUS[:SECONDS]`` (repeatable): requests of KIND (token, issue,
  lookup, badge or any) answer STATUS, for SECONDS from the first one or for good;
  ``--script-header 'Retry-After: 3600'`` (repeatable) and ``--script-body TEXT`` (JSON
  when it parses as an object or list, HTML when it starts with ``<``, else plain text)
  apply to every scripted answer. ``--script token:503:30`` is a login outage of 30 s;
  ``--script issue:429 --script-header 'Retry-After: 3600'`` a quota used up for an hour.
- ``--archived-badge ID`` (issue answers 409 "Badge is archived"), ``--conflict-on-held``
  (issuing to a learner who holds the badge answers 409 and creates nothing).
- ``--lookup-shape SHAPE`` (the assertion lookup answers in another shape: bare_list,
  data, results, email_key, html, no_pages, pages_na, ignore_email_filter,
  lagging_filter, unfiltered_no_counts, ignore_badge_filter,
  lowercase_exact_filter) and
  ``--lookup-max-size N`` (pages never larger than N, whatever was asked), and
  ``--lookup-lag SECONDS`` (an assertion shows in lookups only that long after it was made).
- ``--trickle KIND:SECONDS`` (the answer's body one byte every SECONDS) and
  ``--hang KIND`` (handled, committed, never answered), both repeatable.
- ``--freeze AT:SECONDS`` (AT seconds after the first request, the server takes nothing
  in for SECONDS, then everything that queued up at once).
- ``--echo-secrets`` (401s repeat the credential, failed logins the body received) and
  ``--badge-endpoint missing|forbidden`` (``GET /v1/badge/{id}`` answers 404 or 403).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import signal
import sys
from collections.abc import Callable
from typing import cast

from aiohttp.log import access_logger

from bulk_issuer.sandbox.config import (
    FAULT_KINDS,
    LOOKUP_SHAPES,
    FaultKind,
    SandboxConfig,
    ScriptedAnswer,
    describe_rate,
)
from bulk_issuer.sandbox.limits import MODELS, RateModelName
from bulk_issuer.sandbox.server import run_sandbox
from bulk_issuer.sandbox.state import Sandbox

__all__ = [
    "add_arguments",
    "config_from_args",
    "parse_freeze",
    "parse_latency",
    "parse_rate",
    "parse_script",
    "parse_trickle",
    "serve_forever",
]

_EXAMPLES = """\
examples:
  bulk-issuer sandbox --latency 30-90ms --token-ttl 10   # a realistic rehearsal
  bulk-issuer sandbox --script token:503:30             # logins fail for 30 s
  bulk-issuer sandbox --script issue:429 --script-header 'Retry-After: 3600'
  bulk-issuer sandbox --lookup-shape bare_list --lookup-max-size 10
  bulk-issuer sandbox --trickle issue:0.05 --hang lookup --echo-secrets
"""
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


def _kind(text: str, what: str = "KIND") -> FaultKind:
    for kind in FAULT_KINDS:
        if text.strip().lower() == kind:
            return kind
    raise argparse.ArgumentTypeError(f"{what} is one of {', '.join(FAULT_KINDS)}; got {text!r}")


def parse_script(text: str) -> tuple[FaultKind, int, float | None]:
    """Read ``KIND:STATUS[:SECONDS]`` like ``token:429``, ``token:503:30``, ``issue:500:1.5``."""
    parts = text.split(":")
    example = "a scripted answer is KIND:STATUS[:SECONDS] like token:503:30"
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"{example}, got {text!r}")
    kind = _kind(parts[0], "a scripted answer's KIND")
    status_text = parts[1].strip()
    if not status_text.isdigit() or not 200 <= int(status_text) <= 599:
        raise argparse.ArgumentTypeError(f"{example} (STATUS 200-599), got {text!r}")
    seconds = _seconds(parts[2]) if len(parts) == 3 else None
    return kind, int(status_text), seconds


def parse_trickle(text: str) -> tuple[FaultKind, float]:
    """Read ``KIND:SECONDS`` like ``issue:0.5`` or ``lookup:200ms`` (seconds between bytes)."""
    kind_text, sep, gap_text = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"a trickle is KIND:SECONDS like issue:0.5, got {text!r}")
    return _kind(kind_text, "a trickle's KIND"), _seconds(gap_text)


def parse_freeze(text: str) -> tuple[float, float]:
    """Read ``AT:SECONDS`` like ``6:3`` (a 3-second freeze 6 s after the first request)."""
    at_text, sep, seconds_text = text.partition(":")
    try:
        at, seconds = _duration(at_text, "s"), _duration(seconds_text, "s")
    except argparse.ArgumentTypeError:
        at = seconds = -1.0
    if not sep or at < 0 or not seconds > 0:
        raise argparse.ArgumentTypeError(
            f"a freeze is AT:SECONDS like 6:3 (SECONDS more than 0), got {text!r}"
        )
    return at, seconds


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or any(c.isspace() for c in name.strip()):
        raise argparse.ArgumentTypeError(
            f"a header is 'NAME: VALUE' like 'Retry-After: 3600', got {text!r}"
        )
    return name.strip(), value.strip()


def _script_body(text: str) -> tuple[object, str | None]:
    """The body and content type ``--script-body`` means: JSON, HTML or plain text."""
    with contextlib.suppress(ValueError):
        data = json.loads(text)
        if isinstance(data, dict | list):
            return data, None
    return text, "text/html; charset=utf-8" if text.lstrip().startswith("<") else None


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a whole number of at least 1, got {text!r}")
    return int(text)


def _non_negative_int(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"a whole number, 0 or more, got {text!r}")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the sandbox's options to ``parser`` (the ``bulk-issuer sandbox`` subcommand)."""
    defaults = SandboxConfig()
    if parser.epilog is None:
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        parser.epilog = _EXAMPLES
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
        nargs="?",
        const="429",
        default=False,
        # "off" is False, so that `if config.ratelimit_headers` still reads as before.
        type=lambda mode: False if mode == "off" else mode,
        choices=[False, "429", "all"],
        metavar="{off,429,all}",
        help="send RateLimit, RateLimit-Policy and X-RateLimit-* headers: on 429s (the flag "
        "alone, or 429) or on every /v1 answer (all); default off",
    )
    limit.add_argument(
        "--ratelimit-overstate",
        type=_non_negative_int,
        default=defaults.ratelimit_overstate,
        metavar="N",
        help="the headers' remaining count claims N more places than there are (1: headers "
        "written before the request is counted; more: a lagging gateway); default 0",
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

    rogue = parser.add_argument_group(
        "adversarial server", "KIND is token, issue, lookup, badge, or any (every /v1 request)"
    )
    rogue.add_argument(
        "--script",
        type=parse_script,
        action="append",
        metavar="KIND:STATUS[:SECONDS]",
        help="requests of KIND answer STATUS (for SECONDS from the first), before auth; "
        "like token:429 or token:503:30; repeatable, the first that applies answers",
    )
    rogue.add_argument(
        "--script-header",
        type=_header,
        action="append",
        metavar="'NAME: VALUE'",
        help="a header on every scripted answer, like 'Retry-After: 3600'; repeatable",
    )
    rogue.add_argument(
        "--script-body",
        type=_script_body,
        metavar="TEXT",
        help="the body of every scripted answer: JSON if it parses as an object or list, "
        "HTML if it starts with <, else plain text (default: what the real stack sends)",
    )
    rogue.add_argument(
        "--archived-badge",
        type=_positive_int,
        action="append",
        metavar="ID",
        help="issuing this badge answers 409 Badge is archived; repeatable",
    )
    rogue.add_argument(
        "--conflict-on-held",
        action="store_true",
        help="issuing to a learner who already holds the badge answers 409, creating nothing",
    )
    rogue.add_argument(
        "--lookup-shape",
        choices=LOOKUP_SHAPES,
        default=defaults.lookup_shape,
        metavar="SHAPE",
        help="the shape of GET /v1/badge_assertion/'s answer: "
        + ", ".join(LOOKUP_SHAPES)
        + " (default items, as documented)",
    )
    rogue.add_argument(
        "--lookup-max-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help="lookups answer at most N items a page, whatever size was asked for",
    )
    rogue.add_argument(
        "--lookup-lag",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="an assertion shows in lookups only SECONDS after it was made (a lagging index)",
    )
    rogue.add_argument(
        "--trickle",
        type=parse_trickle,
        action="append",
        metavar="KIND:SECONDS",
        help="answers to KIND send their body one byte every SECONDS; repeatable",
    )
    rogue.add_argument(
        "--hang",
        type=_kind,
        action="append",
        metavar="KIND",
        help="requests of KIND are handled (issued) and never answered; repeatable",
    )
    rogue.add_argument(
        "--freeze",
        type=parse_freeze,
        default=None,
        metavar="AT:SECONDS",
        help="AT seconds after the first request, take nothing in for SECONDS; then "
        "count and answer everything that queued up at once",
    )
    rogue.add_argument(
        "--echo-secrets",
        action="store_true",
        help="401s repeat the credential received, failed logins the request body",
    )
    rogue.add_argument(
        "--badge-endpoint",
        choices=["ok", "missing", "forbidden"],
        default=defaults.badge_endpoint,
        help="GET /v1/badge/{id} works, answers 404 for every id, or 403 (default ok)",
    )


def config_from_args(ns: argparse.Namespace) -> SandboxConfig:
    """The ``SandboxConfig`` the parsed options describe."""
    config = SandboxConfig(
        rate=ns.rate,
        rate_model=cast(RateModelName, ns.model),
        retry_after=ns.retry_after,
        ratelimit_headers=ns.ratelimit_headers,
        ratelimit_overstate=ns.ratelimit_overstate,
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
        archived_badges=frozenset(ns.archived_badge or ()),
        conflict_on_held=ns.conflict_on_held,
        lookup_shape=ns.lookup_shape,
        lookup_max_size=ns.lookup_max_size,
        lookup_lag=ns.lookup_lag,
        trickle=dict(ns.trickle or ()),
        hang=frozenset(ns.hang or ()),
        freeze=ns.freeze,
        echo_secrets=ns.echo_secrets,
        badge_endpoint=ns.badge_endpoint,
    )
    for badge_id, name in ns.badge or ():
        config.badges[badge_id] = name
    headers = dict(ns.script_header or ())
    body, content_type = ns.script_body if ns.script_body is not None else (None, None)
    if not ns.script and (headers or ns.script_body is not None):
        raise ValueError("--script-header and --script-body shape --script answers; add a --script")
    config.scripted = [
        ScriptedAnswer(
            kind,
            status,
            body=body,
            headers=dict(headers),
            content_type=content_type,
            for_seconds=seconds,
        )
        for kind, status, seconds in ns.script or ()
    ]
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
    for answer in config.scripted:
        lasting = f" for {answer.for_seconds:g}s" if answer.for_seconds is not None else ""
        parts.append(f"{answer.kind} answers {answer.status}{lasting}")
    if config.archived_badges:
        parts.append("archived " + " ".join(map(str, sorted(config.archived_badges))))
    if config.conflict_on_held:
        parts.append("409 when held")
    if config.lookup_shape != "items":
        parts.append(f"lookup shape {config.lookup_shape}")
    if config.lookup_max_size is not None:
        parts.append(f"lookup pages of {config.lookup_max_size} at most")
    parts.extend(f"{kind} trickles {gap:g}s/byte" for kind, gap in config.trickle.items())
    parts.extend(f"{kind} hangs" for kind in sorted(config.hang))
    if config.freeze is not None:
        parts.append(f"frozen for {config.freeze[1]:g}s at {config.freeze[0]:g}s")
    if config.echo_secrets:
        parts.append("echoes secrets")
    if config.badge_endpoint != "ok":
        parts.append(f"badge endpoint {config.badge_endpoint}")
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
