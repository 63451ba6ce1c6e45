"""The runs of this process whose claim ledgers are live.

A claim says which process holds it. Another process's claim is judged by whether that
process is still alive; a claim of this process's own, by whether the run that took it
is still here: a call cancelled while its claim was being written, or closed before its
settlements were, leaves one behind, and a later run of the same process must not wait
out its lease for it.
"""

from __future__ import annotations

__all__ = ["alive_here", "ended", "started"]

_LIVE: set[str] = set()


def started(run_id: str) -> None:
    """A ledger of this process began taking claims as `run_id`."""
    _LIVE.add(run_id)


def ended(run_id: str) -> None:
    """That ledger stopped: its claims left behind belong to nobody alive."""
    _LIVE.discard(run_id)


def alive_here(run_id: str) -> bool:
    """Whether `run_id` is a live run of this process."""
    return run_id in _LIVE
