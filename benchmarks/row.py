"""One benchmark row as a typed record, from the function that measures it to docs/benchmarks.json."""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Required, TypedDict

QUIET_LOAD = 1.5
"""A figure taken at a higher 1-minute load average is marked "to be re-run on a quiet machine"."""


class Text(TypedDict, total=False):
    """A row's words, written from its data by a text function (benchmarks/texts.py, texts_extra.py)."""

    figure: Required[str]
    details: Required[str]
    command: str


@dataclass
class Row:
    """A goal row (P1–P7) or a reported row (ENV, MEM) of docs/benchmarks.md."""

    title: str
    """What is measured, one line."""
    goal: str
    """The goal as the issue states it, or "— (reported)"."""
    met: bool | None
    """Whether the goal was met; None where there is no numeric goal."""
    value: float | None
    """The headline figure, in ``unit``."""
    unit: str
    """The unit of ``value``."""
    figure: str
    """The summary table's figure cell (markdown)."""
    details: str
    """The row's section in docs/benchmarks.md (markdown)."""
    command: str = ""
    """The command that re-measures the row; the harness fills in ``python -m benchmarks --only ID``."""
    data: dict[str, Any] = field(default_factory=dict)
    """Everything measured; the figure and details are rewritten from it (``--render-only``)."""
    quick: bool = False
    """Taken in ``--quick`` mode: the figures mean nothing."""
    loadavg_at_start: float | None = None
    """The 1-minute load average when the row started."""
    duration_s: float | None = None
    """How long the row took."""
    measured_at: str | None = None
    """When the row started, UTC."""
    error: str | None = None
    """Why the row failed to run; None when it ran."""
    history: list[str] = field(default_factory=list)
    """Earlier figures of this row kept beside the current one (markdown paragraphs)."""

    @classmethod
    def failed(cls, rid: str, error: BaseException) -> Row:
        """A row that says the benchmark failed, and why."""
        return cls(title=rid, goal="", met=False, value=None, unit="", figure="failed", details="",
                   error=f"{type(error).__name__}: {error}")

    def stamp(self, quick: bool, load: float, started: datetime.datetime, duration_s: float) -> None:
        """Record how and when the row was taken."""
        self.quick, self.loadavg_at_start, self.duration_s = quick, round(load, 2), round(duration_s, 1)
        self.measured_at = started.strftime("%Y-%m-%d %H:%M UTC")

    def to_json(self) -> dict[str, Any]:
        """The row as docs/benchmarks.json stores it (no ``error`` or ``history`` key when there is none)."""
        out = asdict(self)
        for key in ("error", "history"):
            if not out[key]:
                del out[key]
        return out


Shared = dict[str, dict[str, Any]]
"""Measurements one row leaves for another in the same run (``--quick`` reuses runs, not repeats them)."""

Bench = Callable[[bool, Shared], Row]
"""A row's measurement: ``(quick, shared) -> Row``."""


def load1() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]
