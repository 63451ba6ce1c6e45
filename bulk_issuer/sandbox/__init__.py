"""A faithful, strict local stand-in for the Navigatr API, to rehearse a run against.

``run_sandbox`` serves it on a real loopback socket; the ``Sandbox`` it yields records
every request and every assertion, so tests can assert what a client really did.
Defaults: user ``demo@example.com`` (password in the README), PAT ``sandbox-demo-pat``,
badges 51 and 3425, a fixed-window limit of 5 requests per 2 seconds.

``SandboxConfig`` holds every switch, flippable mid-run through ``sandbox.config``: the
rate limit, authentication, random faults, and an adversarial server for testing a
client's defences: ``ScriptedAnswer``s per endpoint, 409 refusals, odd lookup shapes,
answers that trickle or hang, secrets echoed in errors (see ``config.py``).
"""

from __future__ import annotations

from bulk_issuer.sandbox.config import SandboxConfig, ScriptedAnswer
from bulk_issuer.sandbox.server import build_app, run_sandbox
from bulk_issuer.sandbox.state import DROPPED, RequestRecord, Sandbox

__all__ = [
    "DROPPED",
    "RequestRecord",
    "Sandbox",
    "SandboxConfig",
    "ScriptedAnswer",
    "build_app",
    "run_sandbox",
]
