"""``train.vec_env: threadproc``: envs whose step waits, spread over threads in several worker processes.

One :class:`~agents.sb3.vecenv.ThreadVecEnv` runs in each of ``workers`` processes, over an even slice of the
envs. A thread per env overlaps the waits; a process per slice gives each slice its own GIL, so the Python
around the steps (the Guard, Monitor, the batched checks) runs on several cores at once instead of one.

The watchdog is :class:`~agents.sb3.vecenv.ResilientVecEnv`'s: each ``step_wait`` polls every worker with a
deadline (``train.worker_timeout``); a worker that died, hung or raised is killed and respawned with fresh envs
(``train.max_worker_restarts`` respawns in all), and each of its envs' transitions ends truncated, reward 0,
with a ``worker`` :class:`~envs.faults.Fault` (``restart=True`` on the first only: one respawn) and the last
good observation as ``terminal_observation``. Infos (faults, ``nondiff_step_ms`` latencies, Monitor's episodes)
come back per env, as from the other vector envs, so health metrics stay exact.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import CloudpickleWrapper, VecEnv

from agents.sb3.workers import DEAD, UnknownCommand, WorkerPool, serve, why
from envs.faults import FAULT_KEY, Fault, FaultKind


def _group_worker(remote: Any, fns: CloudpickleWrapper, batch_guard: bool) -> None:
    """A worker process: one ThreadVecEnv over its slice of envs, driven by (command, data) messages."""

    def build() -> tuple[Any, Callable[[str, Any], Any]]:
        from agents.sb3.vecenv import ThreadVecEnv

        venv = ThreadVecEnv(fns.var, batch_guard=batch_guard)

        def handle(cmd: str, data: Any) -> Any:
            if cmd == "step":
                venv.step_async(data)
                obs, rews, dones, infos = venv.step_wait()
                fresh = {int(j): venv.reset_infos[j] for j in np.flatnonzero(dones)}  # the others did not change
                return obs, rews, dones, infos, fresh
            if cmd == "reset":
                venv._seeds, venv._options = list(data[0]), list(data[1])
                return venv.reset(), list(venv.reset_infos)
            if cmd in ("get_attr", "set_attr", "env_method", "env_is_wrapped"):
                name, args, kwargs = data
                return getattr(venv, cmd)(name, *args, **kwargs)
            if cmd == "render":
                return venv.get_images()
            if cmd == "close":
                return venv.close()
            raise UnknownCommand(cmd)

        return (venv.observation_space, venv.action_space), handle

    serve(remote, build)


def _concat(parts: Sequence[Any], space: gym.Space) -> Any:
    """The workers' stacked observations joined along the env axis (Dict spaces key by key)."""
    if isinstance(space, gym.spaces.Dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in space.spaces}
    return np.concatenate(parts)


def _row(obs: Any, j: int) -> Any:
    return {k: v[j] for k, v in obs.items()} if isinstance(obs, dict) else obs[j]


class ThreadProcVecEnv(WorkerPool, VecEnv):
    """Worker processes, each stepping its slice of the envs with threads; a dead or hung worker is replaced.

    Args:
        env_fns: one zero-argument env constructor per env (picklable by cloudpickle).
        workers: worker processes (at most ``len(env_fns)``); env ``i`` lives in worker ``i * workers // n``.
        start_method: ``forkserver``, ``spawn`` or ``fork``.
        step_timeout: seconds a worker may take for one vector step (or reset) before it counts as hung.
        max_restarts: worker respawns allowed over the whole run.
        batch_guard: check each worker's envs in one batched pass (agents/sb3/batchguard.py).
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], workers: int = 2, start_method: str = "forkserver",
                 step_timeout: float = 60.0, max_restarts: int = 100, batch_guard: bool = True) -> None:
        n = len(env_fns)
        if n < 1 or workers < 1:
            raise ValueError(f"ThreadProcVecEnv needs at least one env and one worker, got {n} and {workers}")
        workers = min(workers, n)
        bounds = [w * n // workers for w in range(workers + 1)]
        self.slices = [range(bounds[w], bounds[w + 1]) for w in range(workers)]
        self.env_fns, self.batch_guard = list(env_fns), batch_guard
        self.ctx: Any = mp.get_context(start_method)
        self.step_timeout, self.max_restarts = step_timeout, max_restarts
        self.restarts = 0
        self.procs: list[Any] = [None] * workers
        self.remotes: list[Any] = [None] * workers
        for w in range(workers):
            self._spawn(w)
        spaces = [self._started(w) for w in range(workers)]
        super().__init__(n, *spaces[0])
        self._last_parts: list[Any] = [None] * workers  # each worker's latest stacked observations
        self.closed = False

    # -- workers ---------------------------------------------------------------------------------------------
    def _spawn(self, w: int) -> None:
        parent, child = self.ctx.Pipe()
        fns = CloudpickleWrapper([self.env_fns[i] for i in self.slices[w]])
        proc = self.ctx.Process(target=_group_worker, args=(child, fns, self.batch_guard), daemon=True)
        proc.start()
        child.close()
        self.procs[w], self.remotes[w] = proc, parent

    def _replace(self, w: int, error: BaseException) -> tuple[Any, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """Respawn worker ``w``; its envs' transitions end truncated with a ``worker`` fault, on fresh observations."""
        exit_code = self._respawn(w, error)
        detail = str(error) or type(error).__name__
        self.remotes[w].send(("reset", ([None] * len(self.slices[w]), [{}] * len(self.slices[w]))))
        obs, _ = self._answer(w, time.monotonic() + self.step_timeout)
        fault = Fault(FaultKind.WORKER, f"env worker {w} ({len(self.slices[w])} envs) {why(error)}: {detail}",
                      restart=True, program=f"env worker {w}", exit_code=exit_code, restarts=self.restarts)
        last = self._last_parts[w]
        infos = [{FAULT_KEY: fault if j == 0 else fault.merged(restart=False), "TimeLimit.truncated": True,
                  "terminal_observation": None if last is None else _row(last, j)} for j in range(len(self.slices[w]))]
        k = len(self.slices[w])
        return obs, np.zeros(k, dtype=np.float32), np.ones(k, dtype=bool), infos

    # -- VecEnv API ------------------------------------------------------------------------------------------
    def reset(self) -> Any:
        """Reset every env (with the seeds and options given beforehand)."""
        for w, sl in enumerate(self.slices):
            self.remotes[w].send(("reset", ([self._seeds[i] for i in sl], [self._options[i] for i in sl])))
        parts = []
        for w, sl in enumerate(self.slices):
            obs, infos = self._answer(w, time.monotonic() + self.step_timeout)
            parts.append(obs)
            self._last_parts[w] = obs
            for j, i in enumerate(sl):
                self.reset_infos[i] = infos[j]
        self._reset_seeds()
        self._reset_options()
        return _concat(parts, self.observation_space)

    def step_async(self, actions: np.ndarray) -> None:
        """Send each worker the actions of its envs."""
        for w, sl in enumerate(self.slices):
            try:
                self.remotes[w].send(("step", actions[sl.start:sl.stop]))
            except (BrokenPipeError, ConnectionResetError, OSError):
                pass  # found dead in step_wait

    def step_wait(self) -> Any:
        """Collect every worker's transitions, replacing workers that died or hung."""
        deadline = time.monotonic() + self.step_timeout
        parts, rews, dones, infos = [], [], [], []
        for w, sl in enumerate(self.slices):
            try:
                obs, r, d, info, fresh = self._answer(w, deadline)
                for j, reset_info in fresh.items():
                    self.reset_infos[sl.start + j] = reset_info
            except DEAD as e:
                obs, r, d, info = self._replace(w, e)
                deadline = time.monotonic() + self.step_timeout
            parts.append(obs)
            rews.append(r)
            dones.append(d)
            infos.extend(info)
            self._last_parts[w] = obs
        return (_concat(parts, self.observation_space), np.concatenate(rews).astype(np.float32),
                np.concatenate(dones), infos)

    def _call(self, cmd: str, name: Any, args: tuple[Any, ...], kwargs: dict[str, Any], indices: Any) -> list[Any]:
        idx = self._get_indices(indices)
        asked = [(w, [i - sl.start for i in idx if i in sl]) for w, sl in enumerate(self.slices)]
        asked = [(w, local) for w, local in asked if local]
        for w, local in asked:
            self.remotes[w].send((cmd, (name, args, {**kwargs, "indices": local})))
        out: dict[int, Any] = {}
        error = None
        for w, local in asked:  # read every answer, so that none is left in a pipe for the next command
            try:
                for i, value in zip(local, self._answer(w, time.monotonic() + self.step_timeout)):
                    out[self.slices[w].start + i] = value
            except RuntimeError as e:
                error = error or e
        if error is not None:
            raise error
        return [out[i] for i in idx]

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        """An attribute of each env."""
        return self._call("get_attr", attr_name, (), {}, indices)

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        """Set an attribute on each env."""
        self._call("set_attr", attr_name, (value,), {}, indices)

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any) -> list[Any]:
        """Call a method of each env."""
        return self._call("env_method", method_name, method_args, method_kwargs, indices)

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: Any = None) -> list[bool]:
        """Whether each env is wrapped in ``wrapper_class``."""
        return self._call("env_is_wrapped", wrapper_class, (), {}, indices)

    def get_images(self) -> Sequence[np.ndarray | None]:
        """One frame per env."""
        frames: list[Any] = []
        for w in range(len(self.slices)):
            self.remotes[w].send(("render", None))
            frames.extend(self._answer(w, time.monotonic() + self.step_timeout))
        return frames

    def close(self) -> None:
        """Close every env and stop the workers."""
        if self.closed:
            return
        self._close_workers()
        self.closed = True

