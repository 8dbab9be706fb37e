"""The process-wide stop switch: a signal handler asks, every wait in envs/ ends within about a second.

The trainer calls :func:`request_stop` on SIGINT/SIGTERM; the bridge's waits (and the vector envs' waits on
their workers) call :func:`check_stop` between slices of at most 0.25 s and raise
:class:`~envs.errors.StopRequested`, which unwinds like Ctrl-C.
"""

from __future__ import annotations

import math
import threading
import time

from envs.errors import StopRequested

__all__ = ["STOP_GRACE", "check_stop", "clear_stop", "request_stop"]

STOP_GRACE = 1.0
"""Seconds a wait may still last after :func:`request_stop`: a reply already on its way is still read."""
_stop = threading.Event()
_stop_at = [math.inf]


def request_stop() -> None:
    """Make every wait in this process end within :data:`STOP_GRACE` + 0.25 s with :class:`StopRequested`.

    Safe to call from a signal handler.
    """
    if not _stop.is_set():
        _stop_at[0] = time.monotonic()
        _stop.set()


def clear_stop() -> None:
    """Undo :func:`request_stop` (for a process that goes on using the bridge, e.g. tests)."""
    _stop.clear()
    _stop_at[0] = math.inf


def check_stop() -> None:
    """Raise :class:`StopRequested` when a stop was requested more than :data:`STOP_GRACE` seconds ago."""
    if _stop.is_set() and time.monotonic() - _stop_at[0] >= STOP_GRACE:
        raise StopRequested("stop requested: the bridge stopped waiting")
