"""In-process envs stepped concurrently, one long-lived thread each (``train.vec_env: thread``)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
from gymnasium.vector import AutoresetMode

from envs.vector.base import Indices, StepRows
from envs.vector.sync import SyncVectorEnv

log = logging.getLogger(__name__)


class ThreadVectorEnv(SyncVectorEnv):
    """:class:`~envs.vector.sync.SyncVectorEnv` whose envs step concurrently, one long-lived thread per env.

    While one env waits (``time.sleep``, a socket, a pipe, a C call that releases the GIL) the others run,
    so N envs that each wait L seconds per step take about L per vector step instead of N × L. The Python
    around each step still runs one thread at a time (the GIL), so CPU-bound envs gain nothing; use the sync
    or subprocess vector env for those. The envs live in this process, so adapters with ``get_state()`` keep
    exact resume. An exception raised by an env is re-raised by ``step`` once every thread is done. Under the
    batched Guard the threads only step the adapters; the wrapper stacks above the Guards step in this thread
    (:meth:`step_here`), and only resets go back to the threads.

    Args:
        env_fns: one zero-argument constructor per env.
        autoreset_mode: as :class:`~envs.vector.sync.SyncVectorEnv`'s (RLlib's env runners: ``NEXT_STEP``).
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]],
                 autoreset_mode: AutoresetMode = AutoresetMode.SAME_STEP) -> None:
        super().__init__(env_fns, autoreset_mode)
        self._jobs: list[queue.SimpleQueue[Callable[[], None] | None]] = [
            queue.SimpleQueue() for _ in self.envs]
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._pending = 0
        self._threads = [threading.Thread(target=self._loop, args=(i,), daemon=True, name=f"nondiff-env-{i}")
                         for i in range(self.num_envs)]
        for t in self._threads:
            t.start()

    def _loop(self, i: int) -> None:
        jobs = self._jobs[i]
        while True:
            job = jobs.get()
            if job is None:
                return
            job()
            with self._lock:
                self._pending -= 1
                if self._pending == 0:
                    self._done.set()

    def run(self, job: Callable[[int], Any], indices: Indices = None) -> list[Any]:
        """``job(i)`` for every env index in ``indices`` (None: all), concurrently; their results in order.

        Raises:
            BaseException: the first error a job raised, once every job is done.
        """
        idx = list(self._indices(indices))
        if not idx:
            return []
        results: list[Any] = [None] * len(idx)
        errors: list[BaseException] = []

        def one(k: int, i: int) -> Callable[[], None]:
            def call() -> None:
                try:
                    results[k] = job(i)
                except BaseException as e:  # handed to the main thread, which re-raises it
                    with self._lock:
                        errors.append(e)
            return call

        self._done.clear()
        self._pending = len(idx)
        for k, i in enumerate(idx):
            self._jobs[i].put(one(k, i))
        self._done.wait()
        if errors:
            raise errors[0]
        return results

    def step_here(self, acts: list[Any]) -> StepRows:
        """Step every env's wrapper stack in this thread (env ``i`` with ``acts[i]``), and reset the finished
        ones in their threads.

        What the batched Guard calls once the adapters have stepped ahead: the stacks only return what was
        prefetched, and only resets still wait on an env.
        """
        results: list[list[Any]] = []
        for i, env in enumerate(self.envs):
            obs, reward, terminated, truncated, info = env.step(acts[i])
            results.append([obs, reward, terminated, truncated, info, None])
        finished = [i for i, r in enumerate(results) if r[2] or r[3]]
        for i, (obs, info) in zip(finished, self.run(lambda i: self.envs[i].reset(), finished)):
            results[i][5] = (results[i][0], results[i][4])
            results[i][0], results[i][4] = obs, info
        return self.collect_rows([tuple(r) for r in results])  # type: ignore[misc]

    def close_extras(self, **kwargs: Any) -> None:
        """Stop the threads and close every env whose thread ended within 2 s in all; an env whose thread is
        still in a call (a step that never returns) is left to end with the process, not closed under it."""
        for jobs in self._jobs:
            jobs.put(None)
        deadline = time.monotonic() + 2.0
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        hung = [i for i, t in enumerate(self._threads) if t.is_alive()]
        if hung:
            log.warning("env(s) %s still in a call after 2 s: not closed", hung)
        for i, env in enumerate(self.envs):
            if i not in hung:
                env.close()
