"""Progress on long work, on a terminal only: compile passes, profile micro-benchmarks, frames of a run.

Every bar is a rich Progress (transient: it leaves no trace once done) on
the console the CLI prints to. `progress_console` decides whether there is
one: never with --quiet, never when that console is not a terminal (piped or
redirected output stays as it was, for scripts that read it).
"""

from __future__ import annotations

from types import TracebackType
from typing import Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


def progress_console(console: Console, quiet: bool = False) -> Console | None:
    """`console` when progress may be drawn on it, else None."""
    return None if quiet or not console.is_terminal else console


def spinner(console: Console) -> Progress:
    """A line with a spinner, a description and the time elapsed (work of unknown length)."""
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                    transient=True)


class Counter:
    """A bar counting `total` steps (benchmarks, frames); does nothing without a console."""

    def __init__(self, console: Console | None, description: str, total: int | None) -> None:
        self.progress = None if console is None else Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=True)
        self.task = None if self.progress is None else self.progress.add_task(description, total=total)

    def __enter__(self) -> "Counter":
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, kind: Optional[type], value: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        if self.progress is not None:
            self.progress.stop()

    def advance(self, steps: int = 1) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, advance=steps)

    def show(self, done: int, total: int, description: str) -> None:
        """Set where the work stands: `done` of `total`, and what it is doing now."""
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=done, total=total, description=description)
