"""What a person sees of an `issue` run: messages, the progress bar, the plan and the summary.

The `Console` is one subscriber of the engine's events (events.py); the results files
(results.py) and the `--log` file are others.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

from .events import (
    ApiTrouble,
    Event,
    HoldersLoaded,
    LookupUnavailable,
    RetryScheduled,
    RunFinished,
    RunStarted,
    Waiting,
)
from .outcomes import Outcome, Status, Summary

__all__ = ["Console", "plural"]


def plural(count: int, word: str, many: str | None = None) -> str:
    """`1 request`, `2 requests`."""
    return f"{count} {word if count == 1 else (many or word + 's')}"


#: The summary's lines: label, Summary field, note shown when the count is not zero.
_LINES = (
    ("issued", "issued", None),
    ("already held", "already_held", "held the badge before; not sent again"),
    ("done earlier", "skipped", "issued or found by an earlier run"),
    ("failed", "failed", "see the reasons above and the failures file"),
    ("invalid", "invalid", "fix the rows and feed the failures file back"),
    ("unconfirmed", "unconfirmed", "no answer said if it was issued; rerun to ask the server"),
    ("not attempted", "not_attempted", "rerun the same command to send them"),
)

#: The notes that name a failures file, for a run that wrote none.
_WITHOUT_FAILURES_FILE = {
    "failed": "see the reasons above",
    "invalid": "fix the rows and run them again (--failures writes them to a file)",
}


class Console:
    """Problems as they happen, a progress bar on a terminal, the plan and the summary.

    Args:
        quiet: only errors and the summary.
        verbose: 1 every outcome and retry; 2 every event.
        mask: hides secrets in anything printed (a second lock: the client masks what
            servers echo, and no secret is put into a message).
    """

    def __init__(
        self, *, quiet: bool, verbose: int, mask: Callable[[str], str] = lambda text: text
    ) -> None:
        from rich.console import Console as RichConsole

        self.quiet = quiet
        self.verbose = verbose
        self._mask = mask
        self.err = RichConsole(file=sys.stderr, highlight=False, soft_wrap=True)
        self.out = RichConsole(file=sys.stdout, highlight=False, soft_wrap=True)
        self._progress: Any = None
        self._task: Any = None
        self._retries = 0
        self._troubles: set[str] = set()

    def say(self, text: str) -> None:
        if not self.quiet:
            self._print(text)

    def note(self, text: str) -> None:
        if not self.quiet:
            self._print(f"note: {text}")

    def warn(self, text: str) -> None:
        if not self.quiet:
            self._print(f"warning: {text}")

    def error(self, text: str) -> None:
        self._print(f"bulk-issuer: {text}")

    def _print(self, text: str) -> None:
        target = self._progress.console if self._progress is not None else self.err
        target.print(self._mask(text), markup=False)

    # -- events ---------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        if isinstance(event, Outcome):
            self._outcome(event)
        elif isinstance(event, RetryScheduled):
            self._retries += 1
            if self._progress is not None:
                self._progress.update(self._task, retries=self._retries)
            if self.verbose and not self.quiet:
                self._print(
                    f"row {event.row} {event.email}: retry in {event.wait:.1f}s ({event.reason})"
                )
        elif isinstance(event, Waiting):
            self.warn(f"waiting {event.seconds:.0f}s: {event.reason}")
        elif isinstance(event, ApiTrouble):
            if event.recovered:
                if self._troubles:
                    self._troubles.clear()
                    self.say(f"{event.host}: {event.reason}")
            elif event.reason not in self._troubles:
                # Once per kind of trouble, not once per request.
                self._troubles.add(event.reason)
                self.warn(f"{event.host}: {event.reason}; waiting it out")
        elif isinstance(event, LookupUnavailable):
            self.warn(
                f"cannot look up issued badges ({event.reason}); a learner whose send goes "
                "unanswered is reported unconfirmed, not sent again (--resend-unconfirmed "
                "sends it anyway)"
            )
        elif isinstance(event, HoldersLoaded):
            if not event.complete:
                self.warn(
                    f"the list of who holds badge {event.badge_id} could not be read whole "
                    f"({event.note}); {plural(event.holders, 'holder')} read"
                )
            elif event.note and self.verbose:
                self.note(f"badge {event.badge_id} holders: {event.note}")
        elif isinstance(event, RunStarted | RunFinished) and self.verbose >= 2 and not self.quiet:
            shown = " ".join(f"{k}={v}" for k, v in event.fields().items() if v is not None)
            self._print(f"{event.name} {shown}")

    def _outcome(self, outcome: Outcome) -> None:
        if self._progress is not None and outcome.queued:
            self._progress.advance(self._task)
        if outcome.status in (Status.FAILED, Status.INVALID, Status.UNCONFIRMED):
            who = f" {outcome.email}" if outcome.email else ""
            self.error(f"row {outcome.row}{who}: {outcome.status}: {outcome.reason}")
        elif self.verbose and not self.quiet:
            extra = f" ({outcome.reason})" if outcome.reason else ""
            self._print(f"row {outcome.row} {outcome.email}: {outcome.status}{extra}")

    # -- the progress bar -----------------------------------------------------------------

    @contextlib.contextmanager
    def progress(self, total: int | None) -> Iterator[None]:
        """A progress bar over the learners that need a request (on a terminal only)."""
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

    # -- plan and summary -----------------------------------------------------------------

    def summary(
        self, summary: Summary, title: str, *, dry_run: bool, failures_file: bool = True
    ) -> None:
        """The counts, one line each; every input row is in exactly one of them.

        Args:
            failures_file: whether the rows not issued were written to a failures file
                (standard input without --failures has none to feed back).
        """
        lines = [title]
        for label, name, note in _LINES:
            count = getattr(summary, name)
            if not failures_file and name in _WITHOUT_FAILURES_FILE:
                note = _WITHOUT_FAILURES_FILE[name]
            if dry_run and name == "not_attempted":
                label, note = "would issue", None
            if dry_run and name == "failed" and count:
                # The rows of a row's own badge that the API refused: they would fail.
                label, note = "would fail", "of a refused badge: see the reasons above"
            elif dry_run and name in ("issued", "failed", "unconfirmed"):
                continue
            shown = f"  ({note})" if count and note else ""
            lines.append(f"  {label:<14}{count:>7}{shown}")
        lines.append(f"  {'rows':<14}{summary.total:>7}")
        if not dry_run:
            lines.append(
                f"  time {summary.elapsed:.1f}s, {summary.rate:.2f} badges/s, "
                f"{plural(summary.requests, 'request')} "
                f"({summary.token_calls} token), {plural(summary.retries, 'retry', 'retries')}, "
                f"{summary.rate_limited} rate-limited"
            )
        if summary.stopped:
            lines.append(f"  stopped early: {summary.stopped}")
        self.out.print(self._mask("\n".join(lines)), markup=False)
