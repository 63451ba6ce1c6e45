"""What a person sees of an `issue` run: messages, the progress bar, the summary, results files."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .outcomes import Outcome, Status, Summary, flag_notes
from .readers import Dialect
from .results import FailuresWriter, SuccessWriter

__all__ = ["Console", "EventLog", "ResultFiles"]


class ResultFiles:
    """The failures and success files of an `issue` run, opened when first needed."""

    def __init__(
        self,
        dialect: Dialect,
        source: str,
        *,
        failures: str | None,
        successes: str | None,
        dry_run: bool,
    ) -> None:
        self._dialect = dialect
        self._failures_path = Path(failures) if failures else None
        if self._failures_path is None and source != "-" and not dry_run:
            # The rows not issued always land in a file an administrator can fix and rerun.
            self._failures_path = Path(source).with_name(Path(source).stem + ".failures.csv")
        self._successes_path = Path(successes) if successes else None
        self._failures: FailuresWriter | None = None
        self._successes: SuccessWriter | None = None
        self._explicit_failures = bool(failures)
        self.failed = 0

    def write(self, outcome: Outcome) -> None:
        if outcome.status in (Status.FAILED, Status.INVALID) and self._failures_path:
            if self._failures is None:
                self._failures = FailuresWriter(self._failures_path, self._dialect)
            self._failures.write_fields(outcome.row, outcome.fields, outcome.reason or "")
            self.failed += 1
        elif outcome.status is Status.ISSUED and self._successes_path:
            if self._successes is None:
                self._successes = SuccessWriter(self._successes_path)
            self._successes.write(
                outcome.row, outcome.email, outcome.assertion_id, flag_notes(outcome.flags)
            )

    def close(self) -> None:
        if self._failures is not None:
            self._failures.close()
        elif self._explicit_failures and self._failures_path is not None:
            # Asked for, and nothing failed: an empty file with the header says so.
            FailuresWriter(self._failures_path, self._dialect).close()
        if self._successes is not None:
            self._successes.close()

    def paths(self) -> Iterator[str]:
        if self.failed and self._failures_path:
            yield (
                f"Rows not issued ({self.failed}): {self._failures_path}"
                " (fix them and feed the file back)"
            )
        if self._successes is not None:
            yield f"Issued: {self._successes_path}"


class EventLog:
    """The engine's logger: JSON lines to `--log`, and a human line per event with `-v`."""

    def __init__(self, json_log: Any, console: Console) -> None:
        self._json = json_log
        self._console = console

    def _event(self, level: str, event: str, **fields: Any) -> None:
        if self._json is not None:
            getattr(self._json, level)(event, **fields)
        self._console.event(level, event, fields)

    def debug(self, event: str, **fields: Any) -> None:
        self._event("debug", event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self._event("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._event("warning", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self._event("error", event, **fields)


class Console:
    """What a person sees: problems as they happen, a progress bar on a terminal, the summary."""

    def __init__(self, *, quiet: bool, verbose: int) -> None:
        from rich.console import Console

        self.quiet = quiet
        self.verbose = verbose
        self.err = Console(file=sys.stderr, highlight=False, soft_wrap=True)
        self.out = Console(file=sys.stdout, highlight=False, soft_wrap=True)
        self._progress: Any = None
        self._task: Any = None
        self._retries = 0

    def say(self, text: str) -> None:
        if not self.quiet:
            self._print(text)

    def note(self, text: str) -> None:
        if not self.quiet:
            self._print(f"note: {text}")

    def error(self, text: str) -> None:
        self._print(f"bulk-issuer: {text}")

    def _print(self, text: str) -> None:
        target = self._progress.console if self._progress is not None else self.err
        target.print(text, markup=False)

    def outcome(self, outcome: Outcome) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)
        if outcome.status in (Status.FAILED, Status.INVALID):
            label = "invalid" if outcome.status is Status.INVALID else "failed"
            who = f" {outcome.email}" if outcome.email else ""
            self.error(f"row {outcome.row}{who}: {label}: {outcome.reason}")
        elif self.verbose and not self.quiet:
            extra = f" ({outcome.reason})" if outcome.reason else ""
            self._print(f"row {outcome.row} {outcome.email}: {outcome.status}{extra}")

    def event(self, level: str, event: str, fields: dict[str, Any]) -> None:
        if event == "badge.retry_scheduled":
            self._retries += 1
            if self._progress is not None:
                self._progress.update(self._task, retries=self._retries)
            if self.verbose and not self.quiet:
                self._print(
                    f"row {fields.get('row')} {fields.get('email')}: retry in {fields.get('wait')}s"
                    f" ({fields.get('reason')})"
                )
        elif event in ("lookup.unavailable", "lookup.failed") and not self.quiet:
            self._print(
                f"warning: cannot look up issued badges ({fields.get('reason')}); "
                "unanswered requests will be re-sent without checking"
            )
        elif self.verbose >= 2 and not self.quiet and not event.startswith(("badge.", "learner.")):
            shown = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
            self._print(f"{event} {shown}")

    @contextlib.contextmanager
    def progress(self, total: int | None) -> Iterator[None]:
        if self.quiet or not self.err.is_terminal:
            yield
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            Task,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class RateColumn(ProgressColumn):
            """Learners per second, once there is a rate to show."""

            def render(self, task: Task) -> Text:
                speed = task.finished_speed or task.speed
                return Text(f"{speed:.2f}/s" if speed else "-/s")

        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("retries {task.fields[retries]}"),
            console=self.err,
            transient=False,
        ) as progress:
            self._progress = progress
            self._task = progress.add_task("issuing", total=total, retries=0)
            try:
                yield
            finally:
                self._progress = None

    def summary(
        self, summary: Summary, badge_id: int | None, source: str, *, dry_run: bool
    ) -> None:
        lines = [
            f"{'Dry run' if dry_run else 'Badge'} {badge_id if badge_id else '(per row)'}: {source}"
        ]
        rows = (
            [("would issue", summary.issued)]
            if dry_run
            else [("issued", summary.issued), ("already held", summary.already_held)]
        )
        rows += [("skipped", summary.skipped)]
        rows += [] if dry_run else [("failed", summary.failed)]
        rows += [("invalid", summary.invalid)]
        notes = {
            "skipped": "done by an earlier run",
            "already held": "issued before, not sent again",
        }
        for label, count in rows:
            note = f"  ({notes[label]})" if count and label in notes else ""
            lines.append(f"  {label:<13}{count:>7}{note}")
        if not dry_run:
            lines.append(
                f"  time {summary.elapsed:.1f}s, {summary.rate:.2f} badges/s, "
                f"{summary.requests} requests ({summary.token_calls} token), "
                f"{summary.retries} retries, {summary.rate_limited} rate-limited"
            )
        if summary.stopped:
            lines.append(f"  stopped early: {summary.stopped}")
        self.out.print("\n".join(lines), markup=False)
