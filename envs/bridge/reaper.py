"""Supervisor of one bridge program: runs it as its child and leaves no descendant of it alive.

``envs.bridge.process`` starts every program as
``python -I -S envs/bridge/reaper.py GRACE LIFELINE_FD -- ARGV...``. The supervisor (standard library only,
so it starts in a few milliseconds):

- becomes a child subreaper (``PR_SET_CHILD_SUBREAPER``): every orphaned descendant of the program,
  ``setsid()`` or double-forked ones included, is re-parented to it, so it can always find them in /proc;
- runs the program with its own stdin, stdout and stderr (the trainer's pipes), in its process group,
  then points its own stdin/stdout at /dev/null so that the program's exit is seen as end of stream;
- runs it under Linux's ``SCHED_BATCH`` policy where the system allows (else as it is): a program woken by
  the trainer's request then waits for a free core instead of preempting the trainer in the middle of its
  sends, so that every program's request goes out before any of them runs (lock-step, several programs);
  the program and every thread and child it starts inherit the policy; its nice value is unchanged;
- watches the *lifeline*, the read end of a pipe whose write end only the trainer process holds: when
  the trainer dies, even by SIGKILL, the pipe reads end-of-file (``PR_SET_PDEATHSIG`` is not used: it
  follows the spawning *thread*, not the process);
- on SIGTERM/SIGHUP/SIGINT or a dead trainer: SIGTERM to the innermost descendants first (those with no
  child of their own), so that a wrapper such as ``xvfb-run`` or a shell script sees its program end and
  tidies up (xvfb-run stops its X server, which removes its lock, and deletes its temp dir); up to GRACE / 2
  seconds for the program to exit, then SIGTERM to every descendant, up to GRACE in all for every one of
  them to exit, then SIGKILL to whatever is left; when the program exits by itself: SIGKILL to any
  descendant it left. Then it exits the way the program did (same code, or killed by the same signal).
- gives the program a temp dir of its own: ``TMPDIR`` names a fresh directory inside the trainer's temp dir,
  removed with everything in it once the program and its descendants are gone, so a program stopped before
  its own cleanup (Blender's ``blender_*`` session dir, a killed ``xvfb-run``'s auth dir) leaves nothing.

If the program cannot be executed it prints one line starting ``nondiff reaper:`` and exits 127
(not found) or 126 (not executable).
"""

from __future__ import annotations

import errno
import glob
import os
import select
import shutil
import signal
import sys
import tempfile
import time

PR_SET_CHILD_SUBREAPER = 36
REAPER_TAG = "nondiff reaper:"
PRIVATE_PREFIX = "nondiff-program-"
"""A program's private temp dir is ``PRIVATE_PREFIX<supervisor pid>-<random>`` in the trainer's temp dir."""
_lifeline: tuple[int, int, int] | None = None  # (pid that made it, read fd, write fd)


# -- trainer side -------------------------------------------------------------------------------------------
def lifeline() -> int:
    """The read end of this process's lifeline pipe, to pass to every supervisor it starts."""
    global _lifeline
    if _lifeline is None or _lifeline[0] != os.getpid():  # a forked child needs its own
        r, w = os.pipe()
        _lifeline = (os.getpid(), r, w)
    return _lifeline[1]


def command(argv: list[str], grace: float, lifeline_fd: int) -> list[str]:
    """The command line that runs ``argv`` under a supervisor."""
    return [sys.executable, "-I", "-S", os.path.abspath(__file__), repr(float(grace)), str(lifeline_fd), "--",
            *argv]


def tidy(pid: int) -> None:
    """Remove the private temp dir of the supervisor ``pid``, which has exited and been waited for, in case
    it was killed before it could (SIGKILL, or stopped then killed: ``python -m envs check``'s hang check)."""
    for path in glob.glob(os.path.join(tempfile.gettempdir(), f"{PRIVATE_PREFIX}{pid}-*")):
        shutil.rmtree(path, ignore_errors=True)


def _children() -> dict[int, list[int]]:
    """Every live (non-zombie) process's children, by parent pid, read from /proc."""
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != b"Z":
            kids.setdefault(int(fields[1]), []).append(int(name))
    return kids


def descendants(root: int, leaves_only: bool = False) -> list[int]:
    """Every live (non-zombie) descendant of ``root``, read from /proc (``leaves_only``: those with no live
    child of their own)."""
    kids = _children()
    out, todo = [], [root]
    while todo:
        for child in kids.get(todo.pop(), ()):
            if not leaves_only or child not in kids:
                out.append(child)
            todo.append(child)
    return out


# -- supervisor side ----------------------------------------------------------------------------------------
def _signal_all(sig: int, leaves_only: bool = False) -> int:
    pids = descendants(os.getpid(), leaves_only)
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    return len(pids)


def _reap(main: int, status: list[int]) -> bool:
    """Reap every exited child; record the program's status; True when no child is left."""
    while True:
        try:
            pid, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid == 0:
            return False
        if pid == main:
            status.append(st)


def _wait(main: int, status: list[int], wake: int, until: float) -> None:
    """Reap children until the program has exited or ``until`` (monotonic) has passed."""
    while not status and time.monotonic() < until:
        select.select([wake], [], [], 0.02)
        _reap(main, status)


def _batch_policy() -> None:
    """Put this supervisor, and so the program it starts (the policy is inherited), under ``SCHED_BATCH``
    where the system has it and lets it be set; otherwise leave the policy as it is."""
    batch = getattr(os, "SCHED_BATCH", None)
    if batch is not None:
        try:
            os.sched_setscheduler(0, batch, os.sched_param(0))
        except OSError:
            pass


def _exit_like(status: int) -> None:
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        os._exit(code)
    sig = -code
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # die by the same signal without a core file
    signal.set_wakeup_fd(-1)
    if sig not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
    os._exit(128 + sig)


def main(argv: list[str]) -> None:
    """Run the program in ``argv`` (``GRACE LIFELINE_FD -- PROGRAM ARGS...``) as described above."""
    grace, life, prog = float(argv[0]), int(argv[1]), argv[3:]
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    stop = []
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, lambda s, f: stop.append(s))
    signal.signal(signal.SIGCHLD, lambda s, f: None)  # only to wake the select
    _batch_policy()
    defaults = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGCHLD, signal.SIGPIPE, signal.SIGXFSZ)
    try:
        private: str | None = tempfile.mkdtemp(prefix=f"{PRIVATE_PREFIX}{os.getpid()}-")
    except OSError:  # no writable temp dir at all: the program finds that out itself, as without nondiff
        private = None
    env = {**os.environ, "TMPDIR": private} if private else os.environ
    try:
        main_pid = os.posix_spawnp(prog[0], prog, env, setsigdef=defaults)
    except OSError as e:
        if private:
            os.rmdir(private)
        print(f"{REAPER_TAG} cannot run {prog[0]!r}: {e.strerror}", file=sys.stderr, flush=True)
        os._exit(127 if e.errno == errno.ENOENT else 126)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    status: list[int] = []
    watched = [wake_r] + ([life] if life >= 0 else [])
    while not status and not stop:
        ready = select.select(watched, [], [], 5.0)[0]
        if wake_r in ready:
            while True:
                try:
                    if not os.read(wake_r, 512):
                        break
                except BlockingIOError:
                    break
        if life in ready and not os.read(life, 1):
            break  # the trainer is gone
        _reap(main_pid, status)
    if not status:  # asked to stop, or orphaned: ask nicely first, innermost processes first
        deadline = time.monotonic() + grace
        _signal_all(signal.SIGTERM, leaves_only=True)  # a wrapper (xvfb-run, a script) sees its child end
        _wait(main_pid, status, wake_r, min(deadline, time.monotonic() + grace / 2))  # and tidies up
        _signal_all(signal.SIGTERM)  # then everyone; then up to GRACE for all of them to exit
        while time.monotonic() < deadline:
            _reap(main_pid, status)
            if status and not descendants(os.getpid()):
                break
            select.select([wake_r], [], [], 0.02)
    for _ in range(1000):
        alive = _signal_all(signal.SIGKILL)
        if _reap(main_pid, status) and not alive:
            break
        time.sleep(0.002)
    if private:
        shutil.rmtree(private, ignore_errors=True)
    _exit_like(status[0] if status else 9)


if __name__ == "__main__":
    main(sys.argv[1:])
