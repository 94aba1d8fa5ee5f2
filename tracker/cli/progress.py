"""Progress of long commands: rich's bar on a terminal, plain lines on stderr elsewhere."""

from __future__ import annotations

import time
from collections.abc import Callable

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

# Where there is no terminal, a progress line at most this often (and one at the end).
PROGRESS_EVERY_SECONDS = 10.0


class LineProgress:
    """Progress as plain lines on stderr where output is no terminal: rich's bar then draws
    only its final state, so a replay of hours under cron, CI, `| tee` or `kubectl exec`
    without -t showed nothing until it ended (found in review). The same calls as rich's."""

    def __init__(self, every: float = PROGRESS_EVERY_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._every, self._clock = every, clock
        self._description = ""
        self._done: float = 0
        self._total: float | None = None
        self._started = self._last = clock()

    def __enter__(self) -> LineProgress:
        self._started = self._last = self._clock()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._description:
            self._line()

    def add_task(self, description: str, total: float | None = None) -> TaskID:
        self._description, self._total = description, total
        return TaskID(0)

    def update(self, task_id: TaskID, *, completed: float, total: float | None) -> None:
        self._done, self._total = completed, total
        self._maybe_line()

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        self._done += advance
        self._maybe_line()

    def _maybe_line(self) -> None:
        now = self._clock()
        if now - self._last >= self._every:
            self._last = now
            self._line()

    def _line(self) -> None:
        of = f"/{_count(self._total)}" if self._total is not None else ""
        elapsed = self._clock() - self._started
        typer.echo(f"{self._description}: {_count(self._done)}{of} ({elapsed:.0f} s)", err=True)


def _count(value: float) -> str:
    # Whole counts as integers: `:g` wrote 1234567 as 1.23457e+06, and a replay past a
    # million messages looked frozen (found in review).
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def progress_bar() -> Progress | LineProgress:
    """A bar with the count and the time elapsed, or LineProgress where there is no terminal."""
    if not Console().is_terminal:
        return LineProgress()
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn())  # fmt: skip
