"""``train.vec_env: threadproc``: envs whose step waits, spread over threads in several worker processes.

One :class:`~envs.vector.threads.ThreadVectorEnv`, under the batched Guard, runs in each of ``workers``
processes, over an even slice of the envs. A thread per env overlaps the waits; a process per slice gives
each slice its own GIL, so the Python around the steps (the Guard, the batched checks) runs on several cores
at once instead of one.

The watchdog is :class:`~envs.vector.subproc.SubprocVectorEnv`'s: each step polls every worker with a deadline
(``train.worker_timeout``); a worker that died, hung or raised is killed and respawned with fresh envs
(``train.max_worker_restarts`` respawns in all), and each of its envs' transitions ends truncated, reward 0,
with a ``worker`` :class:`~envs.faults.Fault` (``restart=True`` on the first only: one respawn) and the last
good observation as its ``final_obs``. Infos (faults, ``nondiff_step_ms`` latencies) come back per env, as
from the other vector envs, so health metrics stay exact.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import CloudpickleWrapper

from envs.faults import FAULT_KEY, Fault, FaultKind
from envs.vector.base import Indices, VectorEnvBase, add_info, unbatch_info
from envs.vector.console import ConsoleRelay
from envs.vector.workers import DEAD, UnknownCommand, WorkerPool, how_it_went, serve


def _group_worker(remote: Any, fns: CloudpickleWrapper, batch_guard: bool, threads: int,
                  streams: tuple[Any, Any]) -> None:
    """A worker process: a ThreadVectorEnv over its slice of envs, driven by (command, data) messages."""

    def build() -> tuple[Any, Callable[[str, Any], Any]]:
        from envs.vector.batch_guard import BatchGuard
        from envs.vector.threads import ThreadVectorEnv

        venv = BatchGuard(ThreadVectorEnv(fns.fn), batch_guard)  # type: ignore[arg-type]  # fn: the list
        base: Any = venv.unwrapped

        def handle(cmd: str, data: Any) -> Any:
            if cmd == "step":
                return venv.step(data)
            if cmd == "reset":
                return venv.reset(seed=data[0], options=data[1])
            if cmd == "get_attr":
                return base.get_attr_at(data[1], data[0])
            if cmd == "set_attr":
                return base.set_attr_at(data[1], data[0], data[2])
            if cmd == "call":
                return base.call_at(data[1], data[0], *data[2], **data[3])
            if cmd == "is_wrapped":
                return base.is_wrapped_at(data[1], data[0])
            if cmd == "close":
                return venv.close()
            raise UnknownCommand(cmd)

        return (base.single_observation_space, base.single_action_space), handle

    serve(remote, build, threads, streams)


def _concat(parts: Sequence[Any], space: gym.Space) -> Any:
    """The workers' stacked observations joined along the env axis (Dict spaces key by key)."""
    if isinstance(space, gym.spaces.Dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in space.spaces}
    return np.concatenate(parts)


def _row(obs: Any, j: int) -> Any:
    return {k: v[j] for k, v in obs.items()} if isinstance(obs, dict) else obs[j]


class ThreadProcVectorEnv(WorkerPool, VectorEnvBase):
    """Worker processes, each stepping its slice of the envs with threads; a dead or hung worker is replaced.

    Args:
        env_fns: one zero-argument env constructor per env (picklable by cloudpickle).
        workers: worker processes (at most ``len(env_fns)``); env ``i`` lives in worker ``i * workers // n``.
        start_method: ``forkserver``, ``spawn`` or ``fork``.
        step_timeout: seconds a worker may take for one vector step (or reset) before it counts as hung.
        max_restarts: worker respawns allowed over the whole run.
        batch_guard: check each worker's envs in one batched pass (envs/vector/batch_guard.py).
        threads: native threads (BLAS, OpenMP) each worker's pools may use (workers.limit_threads).
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], workers: int = 2,
                 start_method: str = "forkserver", step_timeout: float = 60.0, max_restarts: int = 100,
                 batch_guard: bool = True, threads: int = 1) -> None:
        n = len(env_fns)
        if n < 1 or workers < 1:
            raise ValueError(f"ThreadProcVectorEnv needs at least one env and one worker, "
                             f"got {n} and {workers}")
        workers = min(workers, n)
        bounds = [w * n // workers for w in range(workers + 1)]
        self.slices = [range(bounds[w], bounds[w + 1]) for w in range(workers)]
        self.env_fns, self.batch_guard, self.threads = list(env_fns), batch_guard, threads
        self.ctx: Any = mp.get_context(start_method)
        self.step_timeout, self.max_restarts = step_timeout, max_restarts
        self.restarts = 0
        self.console = ConsoleRelay()
        self.procs: list[Any] = [None] * workers
        self.remotes: list[Any] = [None] * workers
        for w in range(workers):
            self._spawn(w)
        spaces = [self._started(w) for w in range(workers)]
        VectorEnvBase.__init__(self, n, *spaces[0])
        self._last_parts: list[Any] = [None] * workers  # each worker's latest stacked observations

    def _spawn(self, w: int) -> None:
        parent, child = self.ctx.Pipe()
        fns = CloudpickleWrapper([self.env_fns[i] for i in self.slices[w]])  # type: ignore[arg-type]
        streams = self._streams(w)
        proc = self.ctx.Process(target=_group_worker, args=(child, fns, self.batch_guard, self.threads,
                                                            streams), daemon=True)
        proc.start()
        for end in (child, *streams):
            end.close()
        self.procs[w], self.remotes[w] = proc, parent

    def _replace(self, w: int, error: BaseException) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Respawn worker ``w``; its envs' transitions end truncated with a ``worker`` fault, on fresh
        observations."""
        exit_code = self._respawn(w, error)
        k = len(self.slices[w])
        self.remotes[w].send(("reset", ([None] * k, None)))
        obs, _ = self._answer(w, time.monotonic() + self.step_timeout)
        fault = Fault(FaultKind.WORKER,
                      f"env worker {w} ({k} envs) {how_it_went(error, exit_code)}",
                      restart=True, program=f"env worker {w}", exit_code=exit_code, restarts=self.restarts)
        last, infos = self._last_parts[w], {}  # type: ignore[var-annotated]
        for j in range(k):
            final = {FAULT_KEY: fault if j == 0 else fault.merged(restart=False)}
            infos = add_info(infos, {"final_obs": None if last is None else _row(last, j),
                                     "final_info": final}, j, k)
        return obs, np.zeros(k), np.zeros(k, dtype=bool), np.ones(k, dtype=bool), infos

    def _gather(self, answers: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
        """The workers' batches, in env order: observations, then each array, then the infos."""
        infos: dict[str, Any] = {}
        for sl, part in zip(self.slices, answers):
            for j, i in enumerate(sl):
                infos = add_info(infos, unbatch_info(part[-1], j), i, self.num_envs)
        arrays = [np.concatenate([a[k] for a in answers]) for k in range(1, len(answers[0]) - 1)]
        return (_concat([a[0] for a in answers], self.single_observation_space), *arrays, infos)

    def reset(self, *, seed: int | Sequence[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset every env (``seed``: one per env, or an int that env ``i`` gets plus ``i``)."""
        seeds = self._seeds(seed)
        for w, sl in enumerate(self.slices):
            self.remotes[w].send(("reset", ([seeds[i] for i in sl], options)))
        answers = [self._answer(w, time.monotonic() + self.step_timeout) for w in range(len(self.slices))]
        self._last_parts = [a[0] for a in answers]
        return self._gather(answers)  # type: ignore[return-value]

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Send each worker the actions of its envs; collect every worker's transitions, replacing workers
        that died or hung."""
        for w, sl in enumerate(self.slices):
            try:
                self.remotes[w].send(("step", actions[sl.start:sl.stop]))
            except (BrokenPipeError, ConnectionResetError, OSError):
                pass  # found dead below
        deadline = time.monotonic() + self.step_timeout
        answers = []
        for w in range(len(self.slices)):
            try:
                answers.append(self._answer(w, deadline))
            except DEAD as e:
                answers.append(self._replace(w, e))
                # no fresh deadline for the others: they got their actions with this one; waiting a new
                # step_timeout for each made N hung workers cost N timeouts
            self._last_parts[w] = answers[-1][0]
        obs, rewards, terminated, truncated, infos = self._gather(answers)
        return obs, rewards.astype(np.float64), terminated.astype(bool), truncated.astype(bool), infos

    def _call(self, cmd: str, data: tuple[Any, ...], indices: Indices) -> list[Any]:
        idx = self._indices(indices)
        asked = [(w, [i - sl.start for i in idx if i in sl]) for w, sl in enumerate(self.slices)]
        asked = [(w, local) for w, local in asked if local]
        for w, local in asked:
            self.remotes[w].send((cmd, (data[0], local, *data[1:])))
        out: dict[int, Any] = {}
        error = None
        for w, local in asked:  # read every answer, so that none is left in a pipe for the next command
            try:
                for i, value in zip(local, self._answer(w, time.monotonic() + self.step_timeout)
                                    or [None] * len(local)):
                    out[self.slices[w].start + i] = value
            except RuntimeError as e:
                error = error or e
        if error is not None:
            raise error
        return [out[i] for i in idx]

    def call_at(self, indices: Indices, name: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Call method ``name`` of each env in ``indices`` (None: all) and return the results."""
        return self._call("call", (name, args, kwargs), indices)

    def get_attr_at(self, indices: Indices, name: str) -> list[Any]:
        """Attribute ``name`` of each env (found through its wrappers)."""
        return self._call("get_attr", (name,), indices)

    def set_attr_at(self, indices: Indices, name: str, value: Any) -> None:
        """Set attribute ``name`` on each env's innermost env."""
        self._call("set_attr", (name, value), indices)

    def is_wrapped_at(self, indices: Indices, wrapper_class: type) -> list[bool]:
        """Whether each env's stack holds ``wrapper_class``."""
        return self._call("is_wrapped", (wrapper_class,), indices)

    def close_extras(self, **kwargs: Any) -> None:
        """Close every env and stop the workers."""
        self._close_workers()
