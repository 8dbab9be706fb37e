"""SB3 vector env over bridge programs that host K instances each (protocol 1.1) or connect to nondiff.

:class:`BridgeVecEnv` holds M programs (:class:`~envs.bridge.batch.BatchProgram`); program j's K_j
instances are envs ``offset_j … offset_j + K_j - 1``, so ``num_envs = Σ K_j`` (M × K when all declare the
same K). One vector step sends one batched ``step`` per program, the programs stepped concurrently (one
thread each; they run in parallel in their own processes), then one batched ``reset`` per program for its
finished instances.

What the per-env wrappers do for other envs is done here, per env, over the batched replies:

- the Guard's checks and policies (:func:`envs.guard.judge_step`, :func:`envs.guard.judge_reset`):
  ``env.nan_policy`` and ``env.bounds_policy`` (``truncate``/``clip``/``raise``), faults under
  ``info["nondiff_fault"]`` of the offending env only;
- ``info["nondiff_step_ms"]``: the program's round trip for the vector step, on each of its envs;
- SB3 ``Monitor``'s ``info["episode"]`` and ``env.max_episode_steps``.

A fault of a program (crash, hang, protocol breach, wrong K or shapes, ``error`` reply) truncates all its
K envs: the first carries the :class:`~envs.faults.Fault` (``restart=True``, the run-wide budget), the
others a copy with ``restart=False`` and ``shared=True``, so the run's restart budget is spent once and
``env/faults_by_kind`` counts the fault once (the copies count in ``env/envs_cut_by_program_faults``). The program is restarted
(spawned again, or, in connect mode, the next program that connects takes the slot) and all its
instances reset before the step returns.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from agents.errors import EnvFailure, UserError
from envs.bridge import listen as L
from envs.bridge.batch import BatchProgram
from envs.bridge.batchmsg import unstack
from envs.checks import RowCheck
from envs.errors import RestartBudgetExhausted, StartupError
from envs.faults import FAULT_KEY, LATENCY_KEY, RESET_FAULTS_KEY, Fault, add_fault
from envs.guard import judge_reset, judge_step, placeholder

FLAT_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


class BridgeVecEnv(VecEnv):
    """M bridge programs as one SB3 vector env of Σ K_j envs.

    Args:
        programs: started programs, all with the same spaces.
        nan_policy: ``truncate``, ``clip`` or ``raise`` (as the Guard's).
        max_episode_steps: truncate an episode after this many steps (None: the program decides).
        bounds_policy: ``clip``, ``truncate`` or ``raise`` for finite values past the bounds (as the Guard's).
    """

    def __init__(self, programs: Sequence[BatchProgram], nan_policy: str = "truncate",
                 max_episode_steps: int | None = None, bounds_policy: str = "clip") -> None:
        self.programs = list(programs)
        first = self.programs[0]
        for p in self.programs[1:]:
            if p.observation_space != first.observation_space or p.action_space != first.action_space:
                raise UserError(f"program {p.who!r} declares other spaces than {first.who!r}; every program of a run "
                                "must declare the same observation and action spaces")
        self.sizes = [p.num_instances for p in self.programs]
        self.offsets = [int(x) for x in np.cumsum([0, *self.sizes])]
        self.nan_policy, self.bounds_policy, self.max_episode_steps = nan_policy, bounds_policy, max_episode_steps
        n = self.offsets[-1]
        self.render_mode = None
        super().__init__(n, first.observation_space, first.action_space)
        space = self.observation_space
        self._last_obs = [placeholder(space) for _ in range(n)]
        self._obs = np.stack([np.asarray(o) for o in self._last_obs])
        self._ep_ret = np.zeros(n)
        self._ep_len = np.zeros(n, dtype=np.int64)
        self._t0 = time.time()
        self._actions: np.ndarray = np.zeros(0)
        self._pending: list[list[Fault]] = [[] for _ in range(n)]
        """Faults of the last :meth:`reset` per env, reported with the next step (as the Guard does)."""
        self._rows = RowCheck(space) if isinstance(space, spaces.Box) else None
        self._pool = ThreadPoolExecutor(len(self.programs), "nondiff-program") if len(self.programs) > 1 else None
        self._closed = False

    # -- helpers ------------------------------------------------------------------------------------------
    def _each(self, fn: Any) -> list[Any]:
        """``fn(j)`` for every program, concurrently; the first exception is re-raised."""
        try:
            if self._pool is None:
                return [fn(j) for j in range(len(self.programs))]
            return list(self._pool.map(fn, range(len(self.programs))))
        except RestartBudgetExhausted as e:
            raise EnvFailure(str(e)) from e

    def _reset_program(self, j: int, local: list[int], seeds: list[int | None] | None,
                       infos: list[dict[str, Any]]) -> list[int]:
        """Reset instances ``local`` of program j into the buffers; returns the instances actually reset."""
        p, lo = self.programs[j], self.offsets[j]
        obs, rinfos = p.reset_instances(local, seeds)
        if p.last_reset_all:  # the program was restarted: every instance starts over
            local = list(range(p.num_instances))
        for earlier in p._take_reset_faults():
            add_fault(infos[0], earlier, RESET_FAULTS_KEY)
        for pos, i in enumerate(local):
            e = lo + i
            o, fault = judge_reset(self.observation_space, unstack(self.observation_space, obs, pos), self._last_obs[e],
                                   self.nan_policy, self.bounds_policy, p.who)
            if fault is not None:
                add_fault(infos[i], fault, RESET_FAULTS_KEY)
            self.reset_infos[e] = rinfos[pos]
            self._last_obs[e] = o
            self._obs[e] = o
            self._ep_ret[e], self._ep_len[e] = 0.0, 0
        return local

    def _step_program(self, j: int) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray]:
        p, lo, k = self.programs[j], self.offsets[j], self.sizes[j]
        res = p.step_all(self._actions[lo:lo + k])
        infos: list[dict[str, Any]] = [{} for _ in range(k)]
        rews, dones = np.zeros(k, dtype=np.float32), np.zeros(k, dtype=bool)
        for i in range(k):
            if self._pending[lo + i]:
                for earlier in self._pending[lo + i]:
                    add_fault(infos[i], earlier, RESET_FAULTS_KEY)
                self._pending[lo + i] = []
        for earlier in res.reset_faults:
            add_fault(infos[0], earlier, RESET_FAULTS_KEY)
        ms = res.seconds * 1e3
        if res.result is None:  # the program's fault: all K envs end as truncated, one restart
            assert res.fault is not None
            for i in range(k):
                e = lo + i
                infos[i][LATENCY_KEY] = ms
                infos[i][FAULT_KEY] = res.fault if i == 0 else res.fault.merged(restart=False, budget=None, shared=True)
                infos[i]["TimeLimit.truncated"] = True
                infos[i]["terminal_observation"] = self._last_obs[e]
                infos[i]["episode"] = self._episode(e)
                dones[i] = True
            self._reset_program(j, list(range(k)), None, infos)
            return infos, rews, dones
        r = res.result
        # the batched Guard check: one pass over the stacked observations and rewards; only the rows it does not
        # vouch for go through the per-env check (the same policies and fault texts as the Guard's)
        ok = (self._rows.valid(r.obs) if self._rows is not None else np.zeros(k, dtype=bool)) & np.isfinite(r.rewards)
        term, trunc = r.terminated.copy(), r.truncated.copy()
        rews[:] = np.where(ok, r.rewards, 0.0)
        if ok.all():
            self._obs[lo:lo + k] = r.obs
        for row in np.flatnonzero(~ok):
            i = int(row)
            e = lo + i
            v = judge_step(self.observation_space, unstack(self.observation_space, r.obs, i), float(r.rewards[i]),
                           self._obs[e], self.nan_policy, self.bounds_policy, p.who)
            for fault in v.faults:
                add_fault(infos[i], fault)
            if v.cut:  # truncate: the last valid observation, reward 0
                term[i], trunc[i] = False, True
            rews[i], self._obs[e] = v.reward, v.obs
        if not ok.all():
            self._obs[lo:lo + k][ok] = r.obs[ok]
        self._ep_ret[lo:lo + k] += rews
        self._ep_len[lo:lo + k] += 1
        if self.max_episode_steps is not None:
            trunc |= self._ep_len[lo:lo + k] >= self.max_episode_steps
        dones[:] = term | trunc
        for i in range(k):
            info = r.infos[i]
            if infos[i]:  # faults found above
                info.update(infos[i])
            info[LATENCY_KEY] = ms
            info["TimeLimit.truncated"] = bool(trunc[i] and not term[i])
            infos[i] = info
        finished = [int(i) for i in np.flatnonzero(dones)]
        for i in finished:
            infos[i]["terminal_observation"] = self._obs[lo + i].copy()
            infos[i]["episode"] = self._episode(lo + i)
        if finished:
            reset = self._reset_program(j, finished, None, infos)
            for i in set(reset) - set(finished):  # a restart during the reset ended these episodes too
                infos[i].update({"TimeLimit.truncated": True, "terminal_observation": self._last_obs[lo + i]})
                dones[i] = True
        for i in range(k):
            self._last_obs[lo + i] = self._obs[lo + i]
        return infos, rews, dones

    def _episode(self, e: int) -> dict[str, Any]:
        return {"r": round(float(self._ep_ret[e]), 6), "l": int(self._ep_len[e]), "t": round(time.time() - self._t0, 6)}

    # -- VecEnv API ---------------------------------------------------------------------------------------
    def reset(self) -> Any:
        """Reset every instance of every program (with the seeds given to :meth:`seed`)."""
        def one(j: int) -> None:
            lo, k = self.offsets[j], self.sizes[j]
            infos: list[dict[str, Any]] = [{} for _ in range(k)]
            self._reset_program(j, list(range(k)), self._seeds[lo:lo + k], infos)
            for i, info in enumerate(infos):  # vector envs drop reset infos: the faults go with the next step
                self._pending[lo + i] = info.pop(RESET_FAULTS_KEY, [])
                self.reset_infos[lo + i] = info

        self._each(one)
        self._reset_seeds()
        self._reset_options()
        return self._obs.copy()

    def step_async(self, actions: np.ndarray) -> None:
        """Keep the actions for :meth:`step_wait`."""
        self._actions = np.asarray(actions)

    def step_wait(self) -> Any:
        """One batched step per program, concurrently, then batched resets of the finished instances."""
        out = self._each(self._step_program)
        infos = [info for part, _, _ in out for info in part]
        return (self._obs.copy(), np.concatenate([r for _, r, _ in out]), np.concatenate([d for _, _, d in out]),
                infos)

    def _program_of(self, e: int) -> BatchProgram:
        return self.programs[int(np.searchsorted(self.offsets, e, side="right")) - 1]

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        """An attribute of each env's program (``render_mode``: None)."""
        if attr_name == "render_mode":
            return [None for _ in self._get_indices(indices)]
        return [getattr(self._program_of(i), attr_name) for i in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        """Set an attribute on each env's program."""
        for i in self._get_indices(indices):
            setattr(self._program_of(i), attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any) -> list[Any]:
        """Call a method of each env's program."""
        return [getattr(self._program_of(i), method_name)(*method_args, **method_kwargs)
                for i in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: Any = None) -> list[bool]:
        """No env here is a Gymnasium wrapper stack."""
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Programs behind this vector env are not rendered."""
        return [None for _ in range(self.num_envs)]

    def close(self) -> None:
        """Close every program and stop listening; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for p in self.programs:
            p.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False)


def is_bridge(env_id: str | None) -> bool:
    """True when ``env_id`` is the bridge adapter (``process``)."""
    import envs

    try:
        return env_id is not None and envs.resolve(env_id).entry_point == "envs.bridge.process:ProcessEnv"
    except Exception:
        return False


def make_bridge_vec_env(cfg: Any, token: str | None, instances: int | None = None) -> BridgeVecEnv | None:
    """The vector env for K-instance programs (K > 1) or connect mode (``env.listen``); None otherwise.

    ``instances``: the ``num_instances`` the start-up probe read, if it ran in this process. Otherwise spawn
    mode starts one program to read it; with K = 1 and no ``env.listen`` it is closed again and the caller
    builds its usual vector env. ``train.num_envs`` envs need
    ``ceil(num_envs / K)`` programs (rounded up: the vector env has programs × K envs).

    Raises:
        UserError: a program cannot start as configured, nobody connected in time, the address is taken.
    """
    kwargs = {k: v for k, v in cfg.env.adapter_kwargs().items() if k not in ("render_mode",)}
    listen = kwargs.get("listen")
    if instances == 1 and listen is None:
        return None
    if token:
        kwargs["token"] = token
    timeout = float(kwargs.get("connect_timeout", 60.0))
    deadline = time.monotonic() + timeout
    programs: list[BatchProgram] = []
    try:
        if listen is not None:  # envs, not programs: the listener turns them into ceil(num_envs / K) programs
            L.listener(listen, token or "").expected = cfg.train.num_envs
        programs.append(BatchProgram(**kwargs))
        k = programs[0].num_instances
        if k == 1 and listen is None:
            programs[0].close()
            return None
        if cfg.env.wrappers or cfg.env.drop_keys or not isinstance(programs[0].observation_space, FLAT_SPACES):
            raise UserError(f"programs with num_instances > 1 or env.listen support Box, Discrete, MultiDiscrete and "
                            f"MultiBinary observations without env.wrappers/env.drop_keys; this one declares "
                            f"{programs[0].observation_space} (use a single-instance program for the rest)")
        n = math.ceil(cfg.train.num_envs / k)
        if n * k != cfg.train.num_envs:
            print(f"nondiff: train.num_envs={cfg.train.num_envs} with {k} instances per program: {n} program(s), "
                  f"{n * k} envs", flush=True)
        while len(programs) < n:
            if listen is not None:
                kwargs["connect_timeout"] = max(0.1, deadline - time.monotonic())
            programs.append(BatchProgram(expect=programs[0].spec_reply, **kwargs))
        return BridgeVecEnv(programs, cfg.env.nan_policy, cfg.env.max_episode_steps, cfg.env.bounds_policy)
    except StartupError as e:
        for p in programs:
            p.close()
        raise UserError(str(e)) from e
    except BaseException:
        for p in programs:
            p.close()
        raise
