"""What every benchmark shares: the report shape, tables, the machine, cohorts, server counts.

All durations are in seconds.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bulk_issuer import FatalError, Summary, issue_badges
from bulk_issuer.auth import Auth
from bulk_issuer.sandbox import RequestRecord, Sandbox
from bulk_issuer.sandbox.limits import max_in_window

__all__ = [
    "BADGE",
    "DEMO_PASSWORD",
    "DEMO_PAT",
    "DEMO_USER",
    "RESULTS",
    "Report",
    "ServerCounts",
    "Silent",
    "cohort",
    "counted",
    "machine",
    "markdown_table",
    "payload",
    "run_engine",
    "server_counts",
    "write_json",
]

#: The sandbox's documented demo credentials and badge (README), not secrets.
DEMO_USER = "demo@example.com"
DEMO_PASSWORD = "demo-password"
DEMO_PAT = "sandbox-demo-pat"
BADGE = 51

RESULTS = Path(__file__).resolve().parent / "results"

# A cell such as 50/50, 96.4%, 1,234, 0.52x, 61 MB, 23.1 s or 3 (9%): right-aligned.
_NUMERIC = re.compile(r"[-+]?[0-9][0-9.,]*(?:/[0-9]+|%|x| MB| s| ms)?(?: \([0-9.]+%\))?")


class Silent:
    """A logger that drops every event: the engine's per-learner lines would drown the tables."""

    def debug(self, event: str, **fields: Any) -> None:
        """Drop a debug event."""

    def info(self, event: str, **fields: Any) -> None:
        """Drop an info event."""

    def warning(self, event: str, **fields: Any) -> None:
        """Drop a warning event."""

    def error(self, event: str, **fields: Any) -> None:
        """Drop an error event."""


@dataclass(slots=True)
class Report:
    """One benchmark's outcome: a table for people, notes, and data for the JSON file.

    Args:
        name: the benchmark's short name (`--only NAME`, `results/NAME.json`).
        title: one line saying what was measured.
        headers: the table's column names.
        rows: the table's cells, already formatted.
        notes: lines printed under the table (setup, caveats, what the target was).
        data: everything measured, for `results/NAME.json`.
    """

    name: str
    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        """The rows as a Markdown table."""
        return markdown_table(self.headers, self.rows)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table padded so that it also reads as plain text.

    A column whose cells all look numeric is right-aligned (`---:`), the others left.
    """
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    numeric = [
        all(_looks_numeric(row[i]) for row in rows) and bool(rows) for i in range(len(headers))
    ]

    def line(cells: Sequence[str]) -> str:
        padded = (
            c.rjust(w) if right else c.ljust(w)
            for c, w, right in zip(cells, widths, numeric, strict=True)
        )
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            "-" * (w + 1) + ":" if right else "-" * (w + 2)
            for w, right in zip(widths, numeric, strict=True)
        )
        + "|"
    )
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def _looks_numeric(cell: str) -> bool:
    return cell in ("", "-") or _NUMERIC.fullmatch(cell) is not None


def machine() -> dict[str, Any]:
    """The CPU model, core count, Python and OS the numbers were taken on."""
    model = platform.processor() or "unknown"
    try:
        for text in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if text.startswith("model name"):
                model = text.partition(":")[2].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "os": f"{platform.system()} {platform.release()}",
    }


def write_json(report: Report, extra: dict[str, Any]) -> Path:
    """Write `report` (and `extra`, e.g. the machine) to `results/<name>.json`."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{report.name}.json"
    body = {"name": report.name, "title": report.title, **extra, **report.data}
    path.write_text(json.dumps(body, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def cohort(size: int, tag: str) -> list[dict[str, str]]:
    """`size` distinct learners as dict rows; `tag` keeps cohorts of different runs apart."""
    return [
        {
            "first_name": f"Ada{i}",
            "last_name": f"Lovelace-{tag}",
            "email": f"learner{i}.{tag}@example.com",
        }
        for i in range(size)
    ]


def payload(learner: dict[str, str]) -> dict[str, str]:
    """The body the issuing guide sends for one learner."""
    return {
        "recipient_firstname": learner["first_name"],
        "recipient_lastname": learner["last_name"],
        "recipient_email": learner["email"],
    }


@dataclass(frozen=True, slots=True)
class ServerCounts:
    """What the sandbox saw of one client's run, judged on the server side.

    Attributes:
        issued_once: learners of the cohort holding the badge exactly once.
        duplicates: assertions beyond the first, over all learners.
        rejected_429: requests answered 429.
        rejected_401: requests answered 401.
        requests: /v1 requests that arrived, of any endpoint (429s included).
        rate_all: arrivals per second from the first to the last, over the budget.
        rate_accepted: the same for arrivals not answered 429.
        most_in_window: the most arrivals in any window of the limit's period.
        closest: the shortest time over which `N + 1` arrivals came (below the period:
            the limit was exceeded somewhere), with those arrivals in seconds from the first.
        span: seconds from the first arrival to the last.
    """

    issued_once: int
    duplicates: int
    rejected_429: int
    rejected_401: int
    requests: int
    rate_all: float
    rate_accepted: float
    most_in_window: int
    closest: tuple[float, list[float]] | None
    span: float

    def as_dict(self) -> dict[str, Any]:
        """Plain values for JSON."""
        return {name: getattr(self, name) for name in self.__slots__}


def counted(sandbox: Sandbox) -> list[RequestRecord]:
    """The requests `sandbox`'s limit counted: every /v1 request, whatever its endpoint.

    A command-line run's badge check counts too: leaving it out made a share depend on
    whether another run's check fell inside this span or before it.
    """
    return [r for r in sandbox.requests if r.path == "/v1" or r.path.startswith("/v1/")]


def server_counts(
    sandbox: Sandbox, emails: Iterable[str], budget: tuple[int, float]
) -> ServerCounts:
    """Count `sandbox`'s view of a run over `emails`, against the `(N, P)` budget."""
    limit, period = budget
    per_second = limit / period
    records = counted(sandbox)
    arrivals = [r.arrived_at for r in records]
    accepted = [r.arrived_at for r in records if r.status != 429]
    return ServerCounts(
        issued_once=sum(1 for e in emails if sandbox.issued_count(BADGE, e) == 1),
        duplicates=sum(n - 1 for n in sandbox.duplicates().values()),
        rejected_429=sandbox.rejected_429,
        rejected_401=sum(1 for r in records if r.status == 401),
        requests=len(records),
        rate_all=_rate(arrivals) / per_second,
        rate_accepted=_rate(accepted) / per_second,
        most_in_window=max_in_window(arrivals, period),
        closest=_closest(arrivals, limit + 1),
        span=arrivals[-1] - arrivals[0] if arrivals else 0.0,
    )


def _rate(times: list[float]) -> float:
    """Arrivals per second between the first and the last (n - 1 gaps)."""
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])


async def run_engine(
    learners: Sequence[dict[str, str]], *, base_url: str, auth: Auth, **options: Any
) -> tuple[Summary, str | None]:
    """Run `issue_badges` silently; a fatal stop is returned as its message, not raised.

    Args:
        learners: dict rows.
        base_url: the sandbox's URL.
        auth: the credentials.
        **options: anything `issue_badges` takes (rate, workers, journal, ...).
    """
    try:
        summary = await issue_badges(
            learners, badge_id=BADGE, auth=auth, base_url=base_url, logger=Silent(), **options
        )
    except FatalError as exc:
        return exc.summary or Summary(), str(exc)
    return summary, None


def _closest(times: list[float], count: int) -> tuple[float, list[float]] | None:
    """The shortest span of `count` consecutive `times`, and those times from the first one."""
    if len(times) < count:
        return None
    start = min(range(len(times) - count + 1), key=lambda i: times[i + count - 1] - times[i])
    window = times[start : start + count]
    return window[-1] - window[0], [round(t - times[0], 4) for t in window]
