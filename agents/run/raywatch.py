"""The private local Ray's undertaker: none of its processes outlives the trainer.

A trainer killed by SIGKILL (the kernel's OOM killer, ``kill -9``, a scheduler's time limit) cannot call
``ray.shutdown()``. Ray's GCS server and raylet then exit by themselves, but not all of what they started:
measured here, its dashboard agent and runtime-env agent (180 MB between them) stayed for good, re-parented to
init.

:func:`agents.run.localray.start` runs, in a session of its own so that a signal to the trainer's process
group does not reach it, ``python -I -S agents/run/raywatch.py GRACE LIFELINE_FD SESSION_DIR PID...``
(standard library only: it starts in milliseconds). It blocks on a pipe whose write end only the trainer
holds, closed by :func:`~agents.run.localray.shutdown` or by the kernel when the trainer dies. At end of file
it gives what is left of the session up to GRACE seconds to exit by itself, then SIGKILLs it. The session is
the processes ``ray.init`` started (their PIDs, checked against their start times so that a reused PID is
spared) and every process with a file open in the session's directory (each Ray process keeps its logs there
open), the trainer excepted. After a clean ``ray.shutdown()`` none is left, and it exits at once.
"""

from __future__ import annotations

import os
import signal
import sys
import time

STOPPED = b"stopped"
"""What :func:`agents.run.localray.shutdown` writes before it closes the pipe: Ray was stopped, not
abandoned."""


def start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (when it started, in clock ticks since boot); None once it has gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
    return fields[19] if len(fields) > 19 and fields[0] != "Z" else None


def holding(directory: str, spare: tuple[int, ...] = ()) -> list[int]:
    """Live processes with a file open in ``directory`` (every Ray process keeps its logs open in its
    session's ``logs/``; so does the driver), this one and ``spare`` left out."""
    prefix = directory.rstrip("/") + "/"
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in (os.getpid(), *spare):
            continue
        try:
            fds = os.listdir(f"/proc/{name}/fd")
        except OSError:  # gone, or not ours to read
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{name}/fd/{fd}").startswith(prefix):
                    found.append(int(name))
                    break
            except OSError:
                continue
    return [pid for pid in found if start_time(pid) is not None]


def session(directory: str, known: dict[int, str], trainer: int) -> list[int]:
    """What is left of the session: the known PIDs still the same processes, and those holding its files,
    but never the trainer (after a clean ``ray.shutdown()`` it still holds its own logs, and waits for this
    process)."""
    alive = {pid for pid, t in known.items() if start_time(pid) == t}
    return sorted((alive | set(holding(directory, (trainer,)))) - {trainer})


def main(argv: list[str]) -> None:
    grace, lifeline, directory = float(argv[0]), int(argv[1]), argv[2]
    known = {pid: t for pid in map(int, argv[3:]) if (t := start_time(pid)) is not None}
    trainer = os.getppid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C is the trainer's to handle
    stopped = False  # the trainer stopped its Ray (it writes STOPPED first), rather than dying
    while True:
        try:
            data = os.read(lifeline, 4096)
        except InterruptedError:
            continue
        except OSError:
            break
        if not data:
            break
        stopped = stopped or STOPPED in data
    deadline = time.monotonic() + grace
    while (left := session(directory, known, trainer)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if left:
        why = ("the local Ray stopped, but processes still held its session (an env's forks inside its env "
               "runners)" if stopped else "the trainer ended without stopping its local Ray")
        print(f"nondiff: {why}; killed {len(left)} of them (pids {', '.join(map(str, left))})",
              file=sys.stderr, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
