"""The memory watch: a run about to be killed for memory stops first, with a checkpoint.

An env that keeps memory it does not need (in the trainer itself, or in a worker or program the trainer
started) grows until the kernel's OOM killer SIGKILLs the largest process, usually the trainer. Nothing can be
saved after a SIGKILL: the run loses everything since its last periodic checkpoint, and the console says only
"Killed". The bounds checked before a big allocation (:mod:`agents.run.memory`) cannot see such a leak.

:class:`MemoryWatch` looks at most once every :data:`CHECK_EVERY_S` seconds, from the per-step
:meth:`~agents.run.session.Session.tick` and after each iteration of the loop:

- **The machine's floor.** When the memory the machine (or its cgroup) still has falls under :func:`floor`,
  and the trainer's process tree (the trainer, its env workers and programs, a local Ray's processes) holds at
  least :data:`GREW` more than at the watch's first look, the run stops with
  :class:`~envs.errors.MemoryExhausted`, an :class:`~envs.errors.EnvFailure`: ``final/`` is written, then one
  line with the growth per env step, exit 1. When the memory went to other processes, one warning (repeated
  at most every :data:`WARN_EVERY_S`), and training goes on.
- **``train.max_memory_gb``**, when set: the trainer's process tree may hold at most that much (each
  process's proportional share of shared pages, so that forked workers' common pages count once).

Remote Ray workers on other nodes are not watched here; Ray's own memory monitor guards those.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents.run.memory import human, machine_memory
from envs.errors import MemoryExhausted

log = logging.getLogger(__name__)

CHECK_EVERY_S = 1.0
"""Seconds between two looks at the machine's free memory (one read of /proc/meminfo, ~30 µs)."""
TREE_EVERY_S = 2.0
"""Seconds between two sums over the trainer's process tree when ``train.max_memory_gb`` is set (~2 ms)."""
FLOOR_SHARE, FLOOR_MIN, FLOOR_MAX = 0.05, 256 << 20, 2 << 30
"""The machine's floor: 5% of its memory, at least 256 MiB and at most 2 GiB."""
GREW = 256 << 20
"""How much more the trainer's process tree must hold than at the first look for the floor to stop the run:
less, and the memory went to other processes."""
WARN_EVERY_S = 60.0
"""Seconds between two warnings that the machine is under its floor because of other processes."""


def floor(total: int) -> int:
    """The free memory under which the watch acts, for a machine of ``total`` bytes."""
    return min(max(int(total * FLOOR_SHARE), FLOOR_MIN), FLOOR_MAX)


def available() -> int | None:
    """Bytes the machine can still give: ``MemAvailable``, or less where a cgroup's limit is closer.

    None where neither can be read (not Linux): the floor is then not watched.
    """
    free: int | None = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    try:  # cgroup v2; "max" (no limit) fails int() and leaves the machine's figure
        limit = int(Path("/sys/fs/cgroup/memory.max").read_text())
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        free = limit - used if free is None else min(free, limit - used)
    except (OSError, ValueError):
        pass
    return free


def tree_bytes() -> int:
    """Bytes the trainer and every process below it hold: each one's proportional set size (``Pss`` of
    /proc/PID/smaps_rollup) where the kernel gives it, else its resident set."""
    import psutil

    me = psutil.Process()
    try:
        procs = [me, *me.children(recursive=True)]
    except psutil.Error:
        procs = [me]
    total = 0
    for p in procs:
        total += _pss(p.pid) or _rss(p)
    return total


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _rss(p: Any) -> int:
    """``p``'s resident set (a ``psutil.Process``); 0 once it has gone."""
    import psutil

    try:
        return int(p.memory_info().rss)
    except psutil.Error:  # it exited between the listing and now
        return 0


class MemoryWatch:
    """Stops a run whose processes are about to exhaust the machine's memory (module docstring).

    Args:
        limit_gb: ``train.max_memory_gb``, or None for the machine's floor alone.
        say: prints one line on the console (above the progress bar).
        free: reads the bytes the machine can still give (:func:`available`; tests pass their own).
        tree: reads the bytes the trainer's process tree holds (:func:`tree_bytes`; tests pass their own).
    """

    def __init__(self, limit_gb: float | None, say: Callable[[str], None], *,
                 free: Callable[[], int | None] = available, tree: Callable[[], int] = tree_bytes,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = None if limit_gb is None else int(limit_gb * (1 << 30))
        self.say, self._free, self._tree, self._clock = say, free, tree, clock
        self.total, _ = machine_memory()
        self.floor = floor(self.total)
        self._base: tuple[int, int] | None = None  # (step, tree bytes) at the first look
        self._last = self._last_tree = self._last_warn = float("-inf")
        self.free_bytes: int | None = None
        """The machine's free memory at the last look (``health/free_memory_gb``)."""

    def look(self, step: int) -> None:
        """Check the floor (and the limit) if a look is due.

        Raises:
            MemoryExhausted: the machine is under its floor and the trainer's processes grew, or they hold
                more than ``train.max_memory_gb``.
        """
        now = self._clock()
        if now - self._last < CHECK_EVERY_S:
            return
        self._last = now
        if self._base is None:
            self._base = (step, self._tree())
        self.free_bytes = free = self._free()
        if self.limit is not None and now - self._last_tree >= TREE_EVERY_S:
            self._last_tree = now
            held = self._tree()
            if held > self.limit:
                over = f"over train.max_memory_gb={self.limit / (1 << 30):g}"
                if held - self._base[1] < GREW:  # it began there: the limit is too low, nothing leaks
                    raise MemoryExhausted(f"memory: the trainer and its processes hold {human(held)} at step "
                                          f"{step:,}, {over} since training began; raise it above "
                                          f"{human(held)}")
                raise MemoryExhausted(f"memory: the trainer and its processes hold {human(held)}, {over}; "
                                      f"{self._growth(step, held)}")
        if free is None or free >= self.floor:
            return
        held = self._tree()
        if held - self._base[1] >= GREW:
            raise MemoryExhausted(f"memory: the machine has {human(free)} of {human(self.total)} left (the "
                                  f"floor is {human(self.floor)}), and {self._growth(step, held)}")
        if now - self._last_warn >= WARN_EVERY_S:
            self._last_warn = now
            self.say(f"warning: the machine has {human(free)} of {human(self.total)} left, held by other "
                     f"processes (the trainer's hold {human(held)}); training goes on, but the kernel may "
                     f"kill the largest process if it runs out")

    def _growth(self, step: int, held: int) -> str:
        base_step, base = self._base or (step, held)
        per = (held - base) / max(step - base_step, 1)
        return (f"the trainer's processes grew from {human(base)} at step {base_step:,} to {human(held)} at "
                f"step {step:,} (about {human(max(per, 0))} per env step): something in them keeps memory: "
                f"an env, a program it runs, or a replay buffer as it fills")

    def metrics(self) -> dict[str, float]:
        """``health/free_memory_gb`` as of the last look (nothing new is measured)."""
        return {} if self.free_bytes is None else {"health/free_memory_gb": self.free_bytes / (1 << 30)}
