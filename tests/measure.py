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
    """Peak resident set of the child's own program, in MiB: its ``VmHWM`` as it exits. (``wait4``'s
    ``ru_maxrss`` is not that: a child started from this process by vfork and exec carries this process's
    peak into it, so it grew with every test the pytest worker had run; it is the fallback when the child was
    killed before it could report.)"""
    seconds: float


_BOOT = ("import atexit, runpy, sys\n"
         "hwm = sys.argv.pop(1)\n"
         "def report():\n"
         "    with open('/proc/self/status') as f, open(hwm, 'w') as out:\n"
         "        out.write(next(line for line in f if line.startswith('VmHWM:')).split()[1])\n"
         "atexit.register(report)\n"
         "sys.argv = sys.argv[1:]\n"
         "runpy.run_path(sys.argv[0], run_name='__main__')\n")
"""Runs the script as ``python script`` would, and writes its peak resident set (kB) to a file at exit."""


def run_measured(script: str, *args: str, timeout: float = 120) -> Measured:
    """``python script args`` from the repository root; the child is reaped with ``os.wait4``, and reports
    its own peak resident set as it exits."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            tempfile.NamedTemporaryFile("r") as hwm:
        t = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-c", _BOOT, hwm.name, str(ROOT / script), *args], cwd=ROOT,
                                stdout=out, stderr=err, env={**os.environ, "PYTHONUNBUFFERED": "1"})
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
        reported = hwm.read().strip()
        peak_kib = int(reported) if reported else usage.ru_maxrss
        return Measured(proc.returncode, out.read(), err.read(), peak_kib / 1024, seconds)


def one_line(stderr: str) -> str:
    """The one error line on stderr (log warnings aside); fails on a traceback or several lines."""
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("WARNING ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]
