"""The console of a study: a progress bar over its trials with the best score so far on a terminal, one line
per finished trial either way (the lines alone when the output is a file or a pipe)."""

from __future__ import annotations

import sys
from typing import Any


class TrialBar:
    """``[done/trials]`` lines, and on a terminal a rich bar under them: trials done of the study's,
    the best score and its trial, elapsed time and the time left at the pace so far."""

    def __init__(self, total: int, done: int, best: str, force_terminal: bool | None = None) -> None:
        self._bar: Any = None
        if force_terminal or (force_terminal is None and sys.stdout.isatty()):
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            console = Console(force_terminal=True) if force_terminal else None
            self._bar = Progress(TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[best]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                 TimeRemainingColumn(), console=console, transient=False)
            self._task = self._bar.add_task("trials", total=total, completed=done, best=best)
            self._bar.start()

    def say(self, line: str, done: int, best: str) -> None:
        """Print a finished trial's line (above the bar) and move the bar to ``done`` trials."""
        if self._bar is None:
            print(line, flush=True)
            return
        self._bar.console.print(line, markup=False, highlight=False)
        self._bar.update(self._task, completed=done, best=best)

    def close(self) -> None:
        """Stop the bar (its last state stays on the screen)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
