"""A trial's training process: ``python -m train ARGS``, ended by SIGTERM when the study process dies.

The study starts each run as ``python -m agents.search.child PARENT_PID ARGS``; this sets the kernel's
parent-death signal (Linux ``prctl(PR_SET_PDEATHSIG, SIGTERM)``, which survives ``exec``) and replaces itself
with ``train.py``. A study killed with SIGKILL thus leaves no trainer behind: each writes ``final/`` (SIGTERM
is train.py's Ctrl-C) and exits, and ``--optimize --resume`` continues the trial from there.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str] | None = None) -> int:
    """Arm the parent-death signal, then exec ``train.py`` with the rest of ``argv``."""
    argv = sys.argv[1:] if argv is None else argv
    parent, rest = int(argv[0]), argv[1:]
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:  # the study died before the signal was armed
        return 1
    os.execv(sys.executable, [sys.executable, "-m", "train", *rest])
    return 1  # not reached: execv replaces this process


if __name__ == "__main__":
    sys.exit(main())
