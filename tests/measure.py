"""Run a CLI as a real child process and measure it: exit code, stderr, peak RSS of that child, wall time."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

from conftest import ROOT


@dataclass(frozen=True)
class Measured:
    """What :func:`run_measured` saw."""

    returncode: int
    stdout: str
    stderr: str
    max_rss_mib: float
    """Peak resident set of the child (``wait4``'s ``ru_maxrss``), in MiB."""
    seconds: float


def run_measured(script: str, *args: str, timeout: float = 120) -> Measured:
    """``python script args`` from the repository root; the child is reaped with ``os.wait4`` for
    its rusage."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t = time.monotonic()
        proc = subprocess.Popen([sys.executable, str(ROOT / script), *args], cwd=ROOT, stdout=out, stderr=err,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped: keep Popen from waiting again
        seconds = time.monotonic() - t
        out.seek(0)
        err.seek(0)
        return Measured(proc.returncode, out.read(), err.read(), usage.ru_maxrss / 1024, seconds)


def one_line(stderr: str) -> str:
    """The one error line on stderr (log warnings aside); fails on a traceback or several lines."""
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("WARNING ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]
