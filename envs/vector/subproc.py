"""Envs in worker processes with a watchdog (``train.vec_env: subproc``): a dead or hung worker is replaced.

Gymnasium's ``AsyncVectorEnv`` (and SB3's ``SubprocVectorEnv``) end training when a worker dies and wait
forever on a hung one. Here each step polls every worker with a deadline. A worker that died (a segfault in an
in-process C library, SIGKILL) or missed the deadline is killed and respawned with a fresh env; that env's
transition ends as truncated with reward 0, a ``worker`` :class:`~envs.faults.Fault` under
``info[FAULT_KEY]`` (in ``infos["final_info"]``) and the last good observation as its ``final_obs``.
Respawns are budgeted; an env that gave up inside a worker (the bridge's ``RestartBudgetExhausted``, the
Guard's ``EnvGaveUp``) stops training with :class:`~envs.errors.EnvFailure`.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import CloudpickleWrapper, iterate

from envs.batching import stack
from envs.faults import FAULT_KEY, Fault, FaultKind
from envs.vector.base import Indices, VectorEnvBase, is_wrapped
from envs.vector.console import ConsoleRelay
from envs.vector.workers import DEAD, UnknownCommand, WorkerPool, how_it_went, serve


def _worker(remote: Any, fn_wrapper: CloudpickleWrapper, threads: int, streams: tuple[Any, Any]) -> None:
    """A worker process of :class:`SubprocVectorEnv`: one env, driven by (command, data) messages."""

    def build() -> tuple[Any, Callable[[str, Any], Any]]:
        env = fn_wrapper.fn()

        def handle(cmd: str, data: Any) -> Any:
            if cmd == "step":
                obs, reward, terminated, truncated, info = env.step(data)
                if not (terminated or truncated):
                    return obs, reward, terminated, truncated, info, None
                new_obs, reset_info = env.reset()
                return new_obs, reward, terminated, truncated, reset_info, (obs, info)
            if cmd == "reset":
                return env.reset(seed=data[0], **({"options": data[1]} if data[1] else {}))
            if cmd == "get_attr":
                return env.get_wrapper_attr(data)
            if cmd == "set_attr":
                setattr(env.unwrapped, data[0], data[1])
                return None
            if cmd == "call":
                return env.get_wrapper_attr(data[0])(*data[1], **data[2])
            if cmd == "is_wrapped":
                return is_wrapped(env, data)
            if cmd == "close":
                return env.close()
            raise UnknownCommand(cmd)

        return (env.observation_space, env.action_space), handle

    serve(remote, build, threads, streams)


class SubprocVectorEnv(WorkerPool, VectorEnvBase):
    """One env per worker process, with per-step deadlines and worker respawn.

    Args:
        env_fns: one zero-argument env constructor per worker (picklable by cloudpickle).
        start_method: ``forkserver``, ``spawn`` or ``fork``.
        step_timeout: seconds a worker may take for one step (or reset) before it counts as hung.
        max_restarts: respawns allowed over the whole run.
        threads: native threads (BLAS, OpenMP) each worker's pools may use (workers.limit_threads).
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], start_method: str = "forkserver",
                 step_timeout: float = 60.0, max_restarts: int = 100, threads: int = 1) -> None:
        self.env_fns, self.threads = list(env_fns), threads
        self.ctx: Any = mp.get_context(start_method)
        self.step_timeout, self.max_restarts = step_timeout, max_restarts
        self.restarts = 0
        self.console = ConsoleRelay()
        self.procs: list[Any] = [None] * len(self.env_fns)
        self.remotes: list[Any] = [None] * len(self.env_fns)
        for i in range(len(self.env_fns)):
            self._spawn(i)
        spaces = [self._started(i) for i in range(len(self.env_fns))]
        VectorEnvBase.__init__(self, len(self.env_fns), *spaces[0])
        self._last_obs: list[Any] = [None] * self.num_envs

    def _spawn(self, i: int) -> None:
        parent, child = self.ctx.Pipe()
        fn = CloudpickleWrapper(self.env_fns[i])
        streams = self._streams(i)
        proc = self.ctx.Process(target=_worker, args=(child, fn, self.threads, streams), daemon=True)
        proc.start()
        for end in (child, *streams):
            end.close()
        self.procs[i], self.remotes[i] = proc, parent

    def _replace(self, i: int, error: BaseException) -> Fault:
        exit_code = self._respawn(i, error)
        # no budget on the fault: worker respawns have their own (max_restarts), apart from the programs' one
        return Fault(FaultKind.WORKER, f"env worker {i} {how_it_went(error, exit_code)}",
                     restart=True, program=f"env worker {i}", exit_code=exit_code, restarts=self.restarts)

    def _fresh_obs(self, i: int) -> Any:
        self.remotes[i].send(("reset", (None, None)))
        obs, _ = self._answer(i, time.monotonic() + self.step_timeout)
        return obs

    def reset(self, *, seed: int | Sequence[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset every env (``seed``: one per env, or an int that env ``i`` gets plus ``i``)."""
        seeds = self._seeds(seed)
        for i, remote in enumerate(self.remotes):
            remote.send(("reset", (seeds[i], options)))
        obs: list[Any] = []
        infos: dict[str, Any] = {}
        for i in range(self.num_envs):
            o, info = self._answer(i, time.monotonic() + self.step_timeout)
            obs.append(o)
            infos = self._add_info(infos, info, i)
        self._last_obs = list(obs)
        return stack(self.single_observation_space, obs), infos

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Send each worker its action and collect every transition, replacing workers that died or hung."""
        for remote, action in zip(self.remotes, iterate(self.action_space, actions)):
            try:
                remote.send(("step", action))
            except (BrokenPipeError, ConnectionResetError, OSError):
                pass  # found dead below
        deadline = time.monotonic() + self.step_timeout
        results = []
        for i in range(self.num_envs):
            try:
                results.append(self._answer(i, deadline))
            except DEAD as e:
                final = (self._last_obs[i], {FAULT_KEY: self._replace(i, e)})
                results.append((self._fresh_obs(i), 0.0, False, True, {}, final))
                # no fresh deadline for the others: they got their actions with this one; waiting a new
                # step_timeout for each made N hung workers cost N timeouts
            self._last_obs[i] = results[-1][0]
        return self.collect(results)

    def _call(self, cmd: str, data: Any, indices: Indices) -> list[Any]:
        idx = self._indices(indices)
        for i in idx:
            self.remotes[i].send((cmd, data))
        out, error = [], None
        for i in idx:  # read every answer, so that none is left in a pipe for the next command
            try:
                out.append(self._answer(i, time.monotonic() + self.step_timeout))
            except RuntimeError as e:
                error = error or e
        if error is not None:
            raise error
        return out

    def call_at(self, indices: Indices, name: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Call method ``name`` of each env in ``indices`` (None: all) and return the results."""
        return self._call("call", (name, args, kwargs), indices)

    def get_attr_at(self, indices: Indices, name: str) -> list[Any]:
        """Attribute ``name`` of each env (found through its wrappers)."""
        return self._call("get_attr", name, indices)

    def set_attr_at(self, indices: Indices, name: str, value: Any) -> None:
        """Set attribute ``name`` on each env's innermost env."""
        self._call("set_attr", (name, value), indices)

    def is_wrapped_at(self, indices: Indices, wrapper_class: type) -> list[bool]:
        """Whether each env's stack holds ``wrapper_class``."""
        return self._call("is_wrapped", wrapper_class, indices)

    def close_extras(self, **kwargs: Any) -> None:
        """Close every env and stop the workers."""
        self._close_workers()
