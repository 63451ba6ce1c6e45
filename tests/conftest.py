"""Shared fixtures: structlog reset, and the window-counting helper the pacing tests assert with."""

from __future__ import annotations

import asyncio
import inspect
import warnings
from collections.abc import Iterator, Sequence

import pytest
import structlog


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """Each test starts with structlog's default configuration."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _close_stray_event_loop(request: pytest.FixtureRequest) -> Iterator[None]:
    """Close the loop looptime's plugin makes a sync test create (via get_event_loop)."""
    yield
    if inspect.iscoroutinefunction(request.function):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            loop = asyncio.get_event_loop_policy().get_event_loop()
        except RuntimeError:
            return
    if not loop.is_running():
        loop.close()
        asyncio.set_event_loop(None)


def most_in_window(times: Sequence[float], period: float) -> int:
    """The most events that fall in any closed window of `period` seconds."""
    ordered = sorted(times)
    most, start = 0, 0
    for end, t in enumerate(ordered):
        while t - ordered[start] > period:
            start += 1
        most = max(most, end - start + 1)
    return most
