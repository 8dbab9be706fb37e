"""Processes the envs started and left running: found as a run ends, stopped, named (train.py, evaluate.py).

An env's ``step()`` may start a process and never wait for it (``subprocess.Popen(["sleep", "1000"])``), or
daemonise one by a double fork. Without this module such processes outlive the trainer, and a Python fork
keeps the trainer's signal handlers, so SIGTERM does not end it.

:class:`Sweeper` makes the trainer a child subreaper (Linux ``PR_SET_CHILD_SUBREAPER``) for the run: an
orphaned descendant is re-parented to the trainer instead of init, so a daemon's double fork, ``sh -c 'x &'``
and the children of a worker process that was killed or closed all stay its descendants. When the run ends,
every live descendant that was not there at the start and is not nondiff's own gets SIGTERM, then SIGKILL
after :data:`GRACE` seconds (at once for a fork of the trainer itself, which runs its SIGTERM handler). A
worker process killed mid-run has its descendants stopped the same way right after
(``envs.vector.workers.WorkerPool._kill``).

nondiff's own, never signalled:

- bridge supervisors (``envs/bridge/reaper.py``), the helper scripts the caller names (the private Ray's
  undertaker), and everything under them: each stops what it started itself;
- multiprocessing's forkserver and resource tracker, and its live processes (the vector envs' workers);
- Ray's processes: those run from the installed ``ray`` package (gcs_server, raylet, the dashboard, the
  workers) or titled ``ray::`` (a worker once it runs a task), when Ray is imported in this process. An
  env's fork inside an env runner keeps that title: Ray (which stops a worker's children as it exits) and
  the private Ray's undertaker (agents/run/raywatch.py) end those.

Zombies: an orphan that exits becomes a zombie child of its subreaper, which must reap it. The trainer cannot
tell an adopted orphan from a child it forked itself (an env's ``Popen``, a bridge supervisor), whose exit
status its owner reads with ``waitpid`` (reaping it first would report exit code 0 for a crash), so it reaps
none during the run. Instead a thread counts its zombie children every :data:`WATCH_EVERY` seconds; past
:data:`MAX_ZOMBIES` (an env that orphans a process per step) the trainer stops adopting, with one warning, and
init reaps the later ones. The processes it stops at the end are reaped.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
GRACE = 2.0
"""Seconds between SIGTERM and SIGKILL for a process left running."""
MAX_ZOMBIES = 256
"""Zombie children past which the trainer stops adopting orphans (each one holds a process id)."""
WATCH_EVERY = 5.0
"""Seconds between two counts of zombie children."""
SHOWN = 5
"""Processes named in the report line; the rest are counted."""
REAPER = str(Path(__file__).resolve().parent / "bridge" / "reaper.py")
"""The bridge's supervisor script: a process that runs it, and its subtree, are nondiff's."""


@dataclass(frozen=True)
class Proc:
    """One process, as /proc shows it."""

    pid: int
    ppid: int
    state: str
    start: int
    """Start time in clock ticks since boot: with ``pid``, names the process even after its id is reused."""
    argv: tuple[str, ...]

    @property
    def command(self) -> str:
        """The command line, shortened to 60 characters."""
        text = " ".join(self.argv) or "?"
        return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Leftover:
    """A process the envs left running, and how it ended."""

    pid: int
    command: str
    killed: bool
    """Ended by SIGKILL: it outlived SIGTERM's grace, or was a fork of this process."""

    def __str__(self) -> str:
        return f"pid {self.pid} {self.command!r}"


def _read(pid: int) -> Proc | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = tuple(a.decode(errors="replace") for a in f.read().split(b"\0") if a)
    except (OSError, IndexError):
        return None
    return Proc(pid, int(fields[1]), fields[0].decode(), int(fields[19]), argv)


def table() -> dict[int, Proc]:
    """Every process this user can read, by pid (none where there is no /proc)."""
    out: dict[int, Proc] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if name.isdigit() and (proc := _read(int(name))) is not None:
            out[proc.pid] = proc
    return out


def _prctl(option: int, arg: int = 0) -> int:
    """``prctl(option, arg)``; -1 where it fails (not Linux, or refused)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if option == PR_GET_CHILD_SUBREAPER:
            out = ctypes.c_int(0)
            return -1 if libc.prctl(option, ctypes.byref(out), 0, 0, 0) != 0 else out.value
        return int(libc.prctl(option, arg, 0, 0, 0))
    except (OSError, AttributeError):
        return -1


def _multiprocessing_pids() -> set[int]:
    """multiprocessing's forkserver, resource tracker and live processes in this process (never imported)."""
    mp = sys.modules.get("multiprocessing")
    if mp is None:
        return set()
    pids = {p.pid for p in mp.active_children() if p.pid is not None}
    for module, holder, attr in (("multiprocessing.forkserver", "_forkserver", "_forkserver_pid"),
                                 ("multiprocessing.resource_tracker", "_resource_tracker", "_pid")):
        pid = getattr(getattr(sys.modules.get(module), holder, None), attr, None)
        if isinstance(pid, int):
            pids.add(pid)
    return pids


def _ray_dir() -> tuple[str, ...] | None:
    """The imported ray package's folder, as imported and resolved (Ray names its programs by the latter)."""
    ray = sys.modules.get("ray")
    path = getattr(ray, "__file__", None)
    if not isinstance(path, str):
        return None
    folder = os.path.dirname(path)
    return tuple({folder + os.sep, os.path.realpath(folder) + os.sep})


def is_ray(proc: Proc, ray_dir: tuple[str, ...] | None) -> bool:
    """A process of Ray's: run from the ray package, or titled ``ray::`` (a worker running a task)."""
    if ray_dir is None or not proc.argv:
        return False
    return proc.argv[0].startswith("ray::") or any(a.startswith(ray_dir) for a in proc.argv)


def _runs(proc: Proc, scripts: set[str]) -> bool:
    """Whether ``proc`` runs one of ``scripts`` (real paths) with Python (``python [-I -S] SCRIPT``)."""
    return any(a.endswith(".py") and os.path.realpath(a) in scripts for a in proc.argv[1:4])


def leftovers(root: int, before: set[tuple[int, int]], procs: dict[int, Proc], own: Iterable[str] = ()
              ) -> list[Proc]:
    """The live descendants of ``root`` that nondiff does not manage and that were not in ``before``
    (``(pid, start)`` pairs): the subtrees of bridge supervisors and of processes running the scripts
    ``own`` are skipped, multiprocessing's and Ray's processes are kept (their descendants are not)."""
    scripts = {os.path.realpath(s) for s in (REAPER, *own)}
    kids: dict[int, list[Proc]] = {}
    for p in procs.values():
        kids.setdefault(p.ppid, []).append(p)
    managed, ray_dir = _multiprocessing_pids(), _ray_dir()
    out, todo = [], [root]
    while todo:
        for child in kids.get(todo.pop(), ()):
            if _runs(child, scripts):
                continue  # a supervisor of nondiff's: it stops what it started itself
            todo.append(child.pid)
            if child.state in "ZX" or (child.pid, child.start) in before or child.pid in managed:
                continue
            if not child.argv:  # exiting (its memory, command line included, already released)
                continue
            if not is_ray(child, ray_dir):
                out.append(child)
    return out


def descendants(root: int) -> set[tuple[int, int]]:
    """``(pid, start)`` of every descendant of ``root`` now."""
    procs = table()
    kids: dict[int, list[Proc]] = {}
    for p in procs.values():
        kids.setdefault(p.ppid, []).append(p)
    out, todo = set(), [root]
    while todo:
        for child in kids.get(todo.pop(), ()):
            out.add((child.pid, child.start))
            todo.append(child.pid)
    return out


def _gone(proc: Proc) -> bool:
    now = _read(proc.pid)
    return now is None or now.start != proc.start or now.state in "ZX"


def stop(procs: Iterable[Proc], grace: float = GRACE) -> list[Leftover]:
    """SIGTERM (and SIGCONT, for a stopped one) to each process, SIGKILL to those alive after ``grace``
    seconds, and at once to a fork of this process (a Python fork runs this process's signal handlers); the
    ones that were children of this process are reaped. Returns what was stopped."""
    procs = [p for p in procs if not _gone(p)]
    me = _read(os.getpid())
    killed = {p.pid for p in procs if me is not None and p.argv == me.argv}  # forks of this very process
    for p in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if p.pid in killed:  # it runs this process's signal handlers: SIGTERM would ask it to checkpoint
                os.kill(p.pid, signal.SIGKILL)
                continue
            os.kill(p.pid, signal.SIGTERM)
            os.kill(p.pid, signal.SIGCONT)
    deadline = time.monotonic() + grace
    try:
        while time.monotonic() < deadline and not all(_gone(p) for p in procs):
            time.sleep(0.02)
    finally:  # a Ctrl-C while waiting: straight to SIGKILL
        for p in procs:
            if not _gone(p):
                killed.add(p.pid)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(p.pid, signal.SIGKILL)
        until = time.monotonic() + 1.0
        while time.monotonic() < until and not all(_gone(p) for p in procs):
            time.sleep(0.01)
        for p in procs:
            if p.ppid == os.getpid():
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(p.pid, os.WNOHANG)
    return [Leftover(p.pid, p.command, p.pid in killed) for p in procs]


def zombie_children() -> int:
    """How many zombie children this process's main thread has (where orphans are re-parented)."""
    pid = os.getpid()
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(k) for k in f.read().split()]
    except OSError:
        return 0
    return sum(1 for k in kids if (p := _read(k)) is not None and p.state == "Z")


class Sweeper:
    """Adopt the envs' orphans for a run, then stop what they left running (see the module docstring).

    Args:
        say: where the warning that adoption stopped goes (a console line).
        adopt: become a child subreaper (else only the processes still under this one are found).
        own: scripts of nondiff's own helpers (e.g. the private Ray's undertaker): processes that run one are
            left alone, with their descendants, as bridge supervisors are.
    """

    def __init__(self, say: Callable[[str], None] = log.warning, adopt: bool = True,
                 own: Iterable[str] = ()) -> None:
        self.pid, self.say, self.own = os.getpid(), say, tuple(own)
        self.before = descendants(self.pid)
        self.adopting = adopt and _prctl(PR_GET_CHILD_SUBREAPER) == 0 \
            and _prctl(PR_SET_CHILD_SUBREAPER, 1) == 0
        self._done = threading.Event()
        self._watch: threading.Thread | None = None
        if self.adopting:
            self._watch = threading.Thread(target=self._count_zombies, daemon=True, name="nondiff-orphans")
            self._watch.start()

    def _count_zombies(self) -> None:
        while not self._done.wait(WATCH_EVERY):
            zombies = zombie_children()
            if zombies > MAX_ZOMBIES:
                self._unadopt()
                self.say(f"warning: the env leaves orphaned processes behind faster than they can be kept "
                         f"({zombies} exited ones held); the processes it starts from now on are no longer "
                         "stopped when the run ends")
                return

    def _unadopt(self) -> None:
        if self.adopting:
            _prctl(PR_SET_CHILD_SUBREAPER, 0)
            self.adopting = False

    def sweep(self, grace: float = GRACE) -> list[Leftover]:
        """Stop the processes the envs left running, stop adopting, and return them."""
        self._done.set()
        try:
            if os.getpid() != self.pid:  # a forked copy of the trainer (an env's fork) is not the trainer
                return []
            return stop(leftovers(self.pid, self.before, table(), self.own), grace)
        finally:
            self._unadopt()


def report(left: list[Leftover], who: str = "the env") -> str:
    """The console line for the processes :meth:`Sweeper.sweep` stopped."""
    named = ", ".join(str(p) for p in left[:SHOWN]) + (f", and {len(left) - SHOWN} more" if len(left) > SHOWN
                                                       else "")
    killed = sum(p.killed for p in left)
    how = f" ({killed} with SIGKILL)" if killed else ""
    return (f"warning: {who} left {len(left)} process{'es' if len(left) != 1 else ''} running ({named}); "
            f"stopped {'them' if len(left) != 1 else 'it'}{how}")
