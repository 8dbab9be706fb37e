"""A trial's training process: ``python -m train ARGS`` under a guard that ends it with the study.

The study starts each run as ``python -m agents.search.child PARENT_PID ARGS``. The guard arms the
kernel's parent-death signal (Linux ``prctl(PR_SET_PDEATHSIG, SIGTERM)``), starts ``train.py`` and hands it
exactly one SIGTERM (train.py's Ctrl-C: it writes ``final/`` and exits), whoever asked: the study on Ctrl-C
or a prune, or the kernel when the study dies, even by SIGKILL. One, because a second signal makes
train.py stop without its checkpoint, and the kernel may send the parent-death signal more than once
(once per dying thread of a multi-threaded parent). ``--optimize --resume`` then continues from there.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str] | None = None) -> int:
    """Arm the parent-death signal, run ``train.py`` with the rest of ``argv``, return its exit code."""
    argv = sys.argv[1:] if argv is None else argv
    parent, rest = int(argv[0]), argv[1:]
    asked: list[int] = []
    proc: subprocess.Popen[bytes] | None = None

    def on_signal(signum: int, frame: object) -> None:
        if not asked and proc is not None:
            proc.send_signal(signal.SIGTERM)
        asked.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent or asked:  # the study died, or stopped, before the run started
        return 1
    proc = subprocess.Popen([sys.executable, "-m", "train", *rest])
    if asked:  # a signal between the check and the start
        proc.send_signal(signal.SIGTERM)
    code = proc.wait()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
