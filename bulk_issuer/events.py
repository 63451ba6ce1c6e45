"""The engine's events: typed, frozen records, and the sinks that receive them.

The engine emits every event to one `EventSink` (any callable taking an `Event`). The
structlog log, the command line's console and progress bar, and the results files are
each just a subscriber; a library user passes `on_event=` to get the same records.

Each event has a stable dotted `name` and flat `fields()`, as its structlog event.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import structlog

from .outcomes import EVENTS, HOLDS, Outcome, Summary

__all__ = [
    "ApiTrouble",
    "Event",
    "EventSink",
    "HoldersLoaded",
    "LogSink",
    "Logger",
    "LookupUnavailable",
    "RetryScheduled",
    "RunFinished",
    "RunStarted",
    "Waiting",
    "check_callback",
    "default_logger",
    "fan_out",
]


@dataclass(frozen=True, slots=True)
class RunStarted:
    """A run began."""

    source: str
    badge_id: int | None
    rate: str
    workers: int
    journal: str | None

    name = "run.started"
    level = "info"

    def fields(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RunFinished:
    """A run ended (finished, stopped or interrupted); `summary` has every count."""

    summary: Summary

    name = "run.finished"
    level = "info"

    def fields(self) -> dict[str, Any]:
        return self.summary.as_dict()


@dataclass(frozen=True, slots=True)
class RetryScheduled:
    """One learner's issue call will be sent again after `wait` seconds."""

    row: int
    email: str
    badge_id: int
    attempts: int
    http_status: int | None
    reason: str
    wait: float

    name = "badge.retry_scheduled"
    level = "info"

    def fields(self) -> dict[str, Any]:
        return {**asdict(self), "wait": round(self.wait, 3)}


@dataclass(frozen=True, slots=True)
class Waiting:
    """Every request waits: the server asked for a pause, or is unavailable."""

    seconds: float
    reason: str

    name = "run.waiting"
    level = "warning"

    def fields(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 3), "reason": self.reason}


@dataclass(frozen=True, slots=True)
class ApiTrouble:
    """The API stopped answering as it should (`recovered=False`), or answers again."""

    host: str
    reason: str
    recovered: bool

    name = "api.trouble"
    level = "warning"

    def fields(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class HoldersLoaded:
    """Who holds a badge was read; `complete` is False when the list could not be read whole."""

    badge_id: int
    holders: int
    complete: bool
    note: str | None = None

    name = "badge.holders_loaded"
    level = "info"

    def fields(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class LookupUnavailable:
    """The assertions list cannot be used to check learners (said once per run)."""

    reason: str
    http_status: int | None

    name = "lookup.unavailable"
    level = "warning"

    def fields(self) -> dict[str, Any]:
        return asdict(self)


Event = (
    Outcome
    | RunStarted
    | RunFinished
    | RetryScheduled
    | Waiting
    | ApiTrouble
    | HoldersLoaded
    | LookupUnavailable
)


class EventSink(Protocol):
    """Receives every event of a run, in order, on the run's event loop. Must not block.

    Any callable taking one `Event` is one: a function, a bound method, `list.append`.
    """

    def __call__(self, event: Event) -> None: ...


class Logger(Protocol):
    """A structlog-style logger, as `logger=` takes it: one method per level, called
    `logger.info("badge.issued", row=2, email=..., ...)` with the event's name and its flat
    fields. structlog's loggers are; a standard `logging.Logger` is accepted as well.
    """

    def debug(self, event: str, **fields: Any) -> Any:
        """Log a debug event."""

    def info(self, event: str, **fields: Any) -> Any:
        """Log an info event."""

    def warning(self, event: str, **fields: Any) -> Any:
        """Log a warning event."""

    def error(self, event: str, **fields: Any) -> Any:
        """Log an error event."""


def event_name(event: Event) -> str:
    """The stable dotted name of an event."""
    if isinstance(event, Outcome):
        return EVENTS[event.status]
    return event.name


def event_level(event: Event) -> str:
    """The log level of an event: warnings for learners not issued and for trouble."""
    if isinstance(event, Outcome):
        return "info" if event.status in HOLDS else "warning"
    return event.level


def event_fields(event: Event) -> dict[str, Any]:
    """The flat key/value fields of an event."""
    if isinstance(event, Outcome):
        return event.event()
    return event.fields()


class LogSink:
    """Writes each event to a structlog-style logger: `logger.<level>(name, **fields)`.

    A standard `logging.Logger` is accepted too: each event becomes one record, its
    message `name key=value ...`, its fields in the record's `bulk_issuer` attribute.
    """

    def __init__(self, logger: Logger | logging.Logger) -> None:
        self._logger = _StdlibAdapter(logger) if isinstance(logger, logging.Logger) else logger

    def __call__(self, event: Event) -> None:
        getattr(self._logger, event_level(event))(event_name(event), **event_fields(event))


_ASYNC_CALLBACK = (
    "{name} must be a plain function, called on the run's event loop: an async one's "
    "coroutines would never be awaited, and its events lost. To do async work with each "
    "event, put the event on an asyncio.Queue and consume the queue in a task of your own"
)


def check_callback(name: str, callback: object) -> None:
    """Refuse a callback whose events would be lost: an `async def` (or an object whose
    `__call__` is one), whose coroutines nobody awaits.

    Raises:
        TypeError: `callback` is a coroutine function.
    """
    call = getattr(callback, "__call__", None)  # noqa: B004  # an instance's async __call__
    if inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(call):
        raise TypeError(_ASYNC_CALLBACK.format(name=name))


def fan_out(sinks: Iterable[EventSink | Callable[[Event], None] | None]) -> EventSink:
    """One sink that hands each event to every one of `sinks`, in order.

    A sink that hands back an awaitable (a plain function that calls an async one) raises
    TypeError at the first event, which comes before anything is sent.
    """
    chosen: list[Callable[[Event], object]] = [sink for sink in sinks if sink is not None]

    def emit(event: Event) -> None:
        for sink in chosen:
            result = sink(event)
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()  # never to be awaited: no "never awaited" warning
                raise TypeError(_ASYNC_CALLBACK.format(name="an event callback"))

    return emit


def default_logger() -> Logger | None:
    """The library's logger when none is passed: silent unless the application set up logging.

    structlog's logger if structlog was configured; else the standard `bulk_issuer`
    logger if logging has a handler for it; else None (the library prints nothing).
    """
    if structlog.is_configured():
        logger: Logger = structlog.get_logger("bulk_issuer")
        return logger
    stdlib = logging.getLogger("bulk_issuer")
    if has_handlers(stdlib):
        return _StdlibAdapter(stdlib)
    return None


def has_handlers(logger: logging.Logger) -> bool:
    """Whether logging has a handler for `logger` other than a NullHandler (the package's
    own, which is there so that nothing is printed when the application set none)."""
    current: logging.Logger | None = logger
    while current is not None:
        if any(not isinstance(h, logging.NullHandler) for h in current.handlers):
            return True
        current = current.parent if current.propagate else None
    return False


class _StdlibAdapter:
    """Standard logging with a structlog-like call: `info("badge.issued", row=2, ...)`."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def _log(self, level: int, event: str, fields: dict[str, Any]) -> None:
        if self._logger.isEnabledFor(level):
            shown = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
            self._logger.log(level, "%s %s", event, shown, extra={"bulk_issuer": fields})

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, fields)
