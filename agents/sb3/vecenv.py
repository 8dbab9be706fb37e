"""Vector envs beyond SB3's: a subprocess one that survives its workers, and a thread one for waiting envs.

:class:`ResilientVecEnv`: a dead or hung worker is replaced, not fatal.

SB3's SubprocVecEnv ends training when a worker dies (ConnectionResetError/EOFError) and waits forever
on a hung one. Here each ``step_wait`` polls every worker with a deadline. A worker that died (a segfault
in an in-process C library, SIGKILL) or missed the deadline is killed and respawned with a fresh env;
that env's transition ends as truncated with a ``worker`` :class:`~envs.faults.Fault` under
``info[FAULT_KEY]`` and the last good observation as ``terminal_observation``. Respawns are budgeted; an
env that gave up inside a worker (the bridge's ``RestartBudgetExhausted``, the Guard's
:class:`~envs.faults.EnvGaveUp`) stops training with :class:`~agents.errors.EnvFailure`.

:class:`ThreadVecEnv`: in-process envs, each stepped by its own thread, for envs whose step mostly waits
(a remote robot, a network service, a renderer in another process) and releases the GIL while it waits.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv
from stable_baselines3.common.vec_env.base_vec_env import CloudpickleWrapper, VecEnv
from stable_baselines3.common.vec_env.subproc_vec_env import _stack_obs

from agents.sb3.batchguard import BatchGuard
from agents.sb3.workers import DEAD, UnknownCommand, WorkerPool, serve, why
from envs.faults import FAULT_KEY, Fault, FaultKind


def _worker(remote: Any, fn_wrapper: CloudpickleWrapper) -> None:
    """A worker process of :class:`ResilientVecEnv`: one env, driven by (command, data) messages."""

    def build() -> tuple[Any, Callable[[str, Any], Any]]:
        env = fn_wrapper.var()

        def handle(cmd: str, data: Any) -> Any:
            if cmd == "step":
                obs, reward, terminated, truncated, info = env.step(data)
                done = terminated or truncated
                info["TimeLimit.truncated"] = truncated and not terminated
                reset_info: dict[str, Any] = {}
                if done:
                    info["terminal_observation"] = obs
                    obs, reset_info = env.reset()
                return obs, reward, done, info, reset_info
            if cmd == "reset":
                return env.reset(seed=data[0], **({"options": data[1]} if data[1] else {}))
            if cmd == "render":
                return env.render()
            if cmd == "get_attr":
                return env.get_wrapper_attr(data)
            if cmd == "set_attr":
                setattr(env.unwrapped, data[0], data[1])
                return None
            if cmd == "env_method":
                return env.get_wrapper_attr(data[0])(*data[1], **data[2])
            if cmd == "is_wrapped":
                from stable_baselines3.common.env_util import is_wrapped

                return is_wrapped(env, data)
            if cmd == "close":
                return env.close()
            raise UnknownCommand(cmd)

        return (env.observation_space, env.action_space), handle

    serve(remote, build)


class ResilientVecEnv(WorkerPool, VecEnv):
    """Subprocess vector env with per-step deadlines and worker respawn.

    Args:
        env_fns: one zero-argument env constructor per worker (picklable by cloudpickle).
        start_method: ``forkserver``, ``spawn`` or ``fork``.
        step_timeout: seconds a worker may take for one step (or reset) before it counts as hung.
        max_restarts: respawns allowed over the whole run.
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], start_method: str = "forkserver",
                 step_timeout: float = 60.0, max_restarts: int = 100) -> None:
        self.env_fns = list(env_fns)
        self.ctx: Any = mp.get_context(start_method)
        self.step_timeout, self.max_restarts = step_timeout, max_restarts
        self.restarts = 0
        self.procs: list[Any] = [None] * len(self.env_fns)
        self.remotes: list[Any] = [None] * len(self.env_fns)
        for i in range(len(self.env_fns)):
            self._spawn(i)
        spaces = [self._started(i) for i in range(len(self.env_fns))]
        super().__init__(len(self.env_fns), *spaces[0])
        self._last_obs: list[Any] = [None] * self.num_envs
        self.closed = False

    def _spawn(self, i: int) -> None:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_worker, args=(child, CloudpickleWrapper(self.env_fns[i])), daemon=True)
        proc.start()
        child.close()
        self.procs[i], self.remotes[i] = proc, parent

    def _replace(self, i: int, error: BaseException) -> Fault:
        exit_code = self._respawn(i, error)
        # no budget on the fault: worker respawns have their own (max_restarts), apart from the programs' one
        return Fault(FaultKind.WORKER, f"env worker {i} {why(error)}: {str(error) or type(error).__name__}",
                     restart=True, program=f"env worker {i}", exit_code=exit_code, restarts=self.restarts)

    def _fresh_obs(self, i: int) -> Any:
        self.remotes[i].send(("reset", (None, None)))
        obs, _ = self._answer(i, time.monotonic() + self.step_timeout)
        return obs

    # -- VecEnv API -------------------------------------------------------------------------------------
    def reset(self) -> Any:
        """Reset every env (with the seeds given to :meth:`seed`)."""
        for i, remote in enumerate(self.remotes):
            remote.send(("reset", (self._seeds[i], self._options[i])))
        obs = []
        for i in range(self.num_envs):
            o, self.reset_infos[i] = self._answer(i, time.monotonic() + self.step_timeout)
            obs.append(o)
        self._reset_seeds()
        self._reset_options()
        self._last_obs = list(obs)
        return _stack_obs(obs, self.observation_space)

    def step_async(self, actions: np.ndarray) -> None:
        """Send one action to each worker."""
        for i, remote in enumerate(self.remotes):
            try:
                remote.send(("step", actions[i]))
            except (BrokenPipeError, ConnectionResetError, OSError):
                pass  # found dead in step_wait

    def step_wait(self) -> Any:
        """Collect every worker's transition, replacing workers that died or hung."""
        deadline = time.monotonic() + self.step_timeout
        obs, rews, dones, infos = [], [], [], []
        for i in range(self.num_envs):
            try:
                o, r, d, info, self.reset_infos[i] = self._answer(i, deadline)
            except DEAD as e:
                info = {FAULT_KEY: self._replace(i, e), "TimeLimit.truncated": True,
                        "terminal_observation": self._last_obs[i]}
                o, r, d = self._fresh_obs(i), 0.0, True
                deadline = time.monotonic() + self.step_timeout
            obs.append(o)
            rews.append(r)
            dones.append(d)
            infos.append(info)
            self._last_obs[i] = o
        return _stack_obs(obs, self.observation_space), np.array(rews, dtype=np.float32), np.array(dones), infos

    def _call(self, cmd: str, data: Any, indices: Any) -> list[Any]:
        idx = self._get_indices(indices)
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

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        """An attribute of each env."""
        return self._call("get_attr", attr_name, indices)

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        """Set an attribute on each env."""
        self._call("set_attr", (attr_name, value), indices)

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any) -> list[Any]:
        """Call a method of each env."""
        return self._call("env_method", (method_name, method_args, method_kwargs), indices)

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: Any = None) -> list[bool]:
        """Whether each env is wrapped in ``wrapper_class``."""
        return self._call("is_wrapped", wrapper_class, indices)

    def get_images(self) -> Sequence[np.ndarray | None]:
        """One frame per env."""
        return self._call("render", None, None)

    def close(self) -> None:
        """Close every env and stop the workers."""
        if self.closed:
            return
        self._close_workers()
        self.closed = True


class ThreadVecEnv(DummyVecEnv):
    """DummyVecEnv whose envs step concurrently, one long-lived thread per env.

    While one env waits (``time.sleep``, a socket, a pipe, a C call that releases the GIL) the others run,
    so N envs that each wait L seconds per step take about L per vector step instead of N × L. The Python
    around each step still runs one thread at a time (the GIL), so CPU-bound envs gain nothing; use
    ``dummy`` or ``subproc`` for those. The envs live in this process, as with DummyVecEnv, so adapters
    with ``get_state()`` keep exact resume. An exception raised by an env is re-raised by ``step``. With a
    :class:`~agents.sb3.batchguard.BatchGuard` the threads only step the adapters; the checks run once over
    the batch and the cheap wrappers above the Guards in this thread; only resets go back to the threads.

    Args:
        env_fns: one zero-argument env constructor per env.
        batch_guard: False keeps the per-env checks.
    """

    def __init__(self, env_fns: list[Callable[[], gym.Env]], batch_guard: bool = True) -> None:
        super().__init__(env_fns)
        self.batch = BatchGuard(self.envs, batch_guard)
        self._raw: list[Any] = [None] * self.num_envs
        self._acts: list[Any] = []
        self._jobs: list[queue.SimpleQueue[Callable[[int], None] | None]] = [queue.SimpleQueue() for _ in self.envs]
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._pending = 0
        self._errors: list[BaseException] = []
        self._threads = [threading.Thread(target=self._loop, args=(i,), daemon=True, name=f"nondiff-env-{i}")
                         for i in range(self.num_envs)]
        for t in self._threads:
            t.start()
        self._closed = False

    def _loop(self, i: int) -> None:
        jobs = self._jobs[i]
        while True:
            job = jobs.get()
            if job is None:
                return
            try:
                job(i)
            except BaseException as e:  # handed to the main thread, which re-raises it
                with self._lock:
                    self._errors.append(e)
            with self._lock:
                self._pending -= 1
                if self._pending == 0:
                    self._done.set()

    def _run(self, job: Callable[[int], None], indices: Sequence[int] | None = None) -> None:
        """Run ``job(i)`` for every env index (or those in ``indices``) concurrently and wait for all of them."""
        idx = range(self.num_envs) if indices is None else indices
        if not idx:
            return
        self._done.clear()
        self._errors = []
        self._pending = len(idx)
        for i in idx:
            self._jobs[i].put(job)
        self._done.wait()
        if self._errors:
            raise self._errors[0]

    def _step_one(self, i: int) -> None:
        obs, self.buf_rews[i], terminated, truncated, info = self.envs[i].step(self.actions[i])
        self.buf_dones[i] = terminated or truncated
        info["TimeLimit.truncated"] = truncated and not terminated
        if self.buf_dones[i]:
            info["terminal_observation"] = obs
            obs, self.reset_infos[i] = self.envs[i].reset()
        self.buf_infos[i] = info
        self._save_obs(i, obs)

    def _reset_one(self, i: int) -> None:
        options = {"options": self._options[i]} if self._options[i] else {}
        obs, self.reset_infos[i] = self.envs[i].reset(seed=self._seeds[i], **options)
        self._save_obs(i, obs)

    def _prefetch_one(self, i: int) -> None:
        self._raw[i] = self.batch.prefetch_one(i, self._acts[i])

    def _reset_after(self, i: int) -> None:
        obs, self.reset_infos[i] = self.envs[i].reset()
        self._save_obs(i, obs)

    def step_wait(self) -> Any:
        """Step every env concurrently (auto-resetting finished ones, as DummyVecEnv does)."""
        if not self.batch.active:
            self._run(self._step_one)
            return self._obs_from_buf(), np.copy(self.buf_rews), np.copy(self.buf_dones), list(self.buf_infos)
        self._acts = [self.actions[i] for i in range(self.num_envs)]
        self._run(self._prefetch_one)
        self.batch.judge(self._raw)
        finished = []
        for i, env in enumerate(self.envs):
            obs, self.buf_rews[i], terminated, truncated, info = env.step(self._acts[i])
            self.buf_dones[i] = done = terminated or truncated
            info["TimeLimit.truncated"] = truncated and not terminated
            self.buf_infos[i] = info
            if done:
                info["terminal_observation"] = obs
                finished.append(i)
            else:
                self._save_obs(i, obs)
        self._run(self._reset_after, finished)
        return self._obs_from_buf(), np.copy(self.buf_rews), np.copy(self.buf_dones), list(self.buf_infos)

    def reset(self) -> Any:
        """Reset every env concurrently (with the seeds and options given beforehand)."""
        self._run(self._reset_one)
        self._reset_seeds()
        self._reset_options()
        return self._obs_from_buf()

    def close(self) -> None:
        """Stop the threads and close every env; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        for jobs in self._jobs:
            jobs.put(None)
        for t in self._threads:
            t.join(5)
        super().close()
