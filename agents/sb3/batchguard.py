"""The Guard's checks once per vector step: N envs' observations and rewards validated in one batched pass.

Each env keeps its :class:`~envs.guard.Guard` (crash containment, reset retries, policies, faults, the
latency timer). :class:`BatchGuard` steps every Guard's adapter ahead (:meth:`Guard.prefetch
<envs.guard.Guard.prefetch>`), tests the stacked observations and rewards at once
(:class:`~envs.checks.RowCheck`, :func:`~envs.checks.valid_rewards`) and vouches for the valid envs; then
the vector env steps each env's wrapper stack as usual, and each Guard returns its prefetched transition
(checked already, or, for the few envs not vouched for, checked alone with the usual policy). So
``truncate``/``clip``/``raise`` and ``bounds_policy`` act on the offending env only, and the wrappers above
the Guard (Monitor, the observation adapter) see exactly what they saw before.

Batching applies when every env's stack between the vector env and its Guard passes actions through
unchanged and steps once (SB3's ``Monitor``, observation and reward wrappers that do not override ``step``);
a stack with any other wrapper (``env.wrappers``) keeps the per-env checks (:attr:`BatchGuard.active` is False).
:class:`GuardedDummyVecEnv` is ``train.vec_env: dummy`` with it; ``ThreadVecEnv`` uses it too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from envs.checks import RowCheck, all_finite_floats, valid_rewards
from envs.guard import Guard

PASS_THROUGH_STEPS = (gym.Wrapper.step, gym.ObservationWrapper.step, gym.RewardWrapper.step, Monitor.step)
"""``step`` methods that hand the action down unchanged and step the env below once."""


def guard_below(env: gym.Env) -> Guard | None:
    """The Guard under ``env``'s pass-through wrappers; None when there is none or another wrapper is in between."""
    e: Any = env
    while isinstance(e, gym.Wrapper):
        if isinstance(e, Guard):
            return e
        if type(e).step not in PASS_THROUGH_STEPS:
            return None
        e = e.env
    return None


class BatchGuard:
    """Batched validation for N in-process envs (see the module docstring).

    Args:
        envs: the envs of the vector env, each the top of its wrapper stack.
        enabled: False keeps the per-env checks (``train.batch_guard: false``).
    """

    def __init__(self, envs: Sequence[gym.Env], enabled: bool = True) -> None:
        guards = [guard_below(e) for e in envs] if enabled else []
        found = [g for g in guards if g is not None]
        self.guards: list[Guard] = found if found and len(found) == len(envs) else []
        space = self.guards[0].observation_space if self.guards else None
        self.rows = RowCheck(space) if space is not None else None
        self.active = bool(self.rows is not None and self.rows.batchable
                           and all(g.observation_space == space for g in self.guards))
        self.vouched = 0
        """Transitions vouched for by the batch check so far (the others were checked per env)."""

    def prefetch_one(self, i: int, action: Any) -> tuple[Any, Any] | None:
        """Step env ``i``'s adapter ahead (thread-safe per env)."""
        return self.guards[i].prefetch(action)

    def judge(self, raw: Sequence[tuple[Any, Any] | None], indices: Sequence[int] | None = None) -> None:
        """Check the prefetched observations and rewards of the envs ``indices`` (default: all) at once and
        vouch for the valid ones; ``raw[k]`` belongs to env ``indices[k]`` (None: its adapter raised)."""
        assert self.rows is not None
        idx: Sequence[int] = range(len(raw)) if indices is None else indices
        if None in raw:
            live = [k for k, r in enumerate(raw) if r is not None]
            raw, idx = [raw[k] for k in live], [idx[k] for k in live]
            if not raw:
                return
        obs, rewards, guards = [r[0] for r in raw], [r[1] for r in raw], self.guards  # type: ignore[index]
        if self.rows.all_valid(obs) and all_finite_floats(rewards):  # the common case: one test each
            for i in idx:
                guards[i]._vouched = True
            self.vouched += len(idx)
            return
        ok = self.rows.valid(obs) & valid_rewards(rewards)
        for k in np.flatnonzero(ok):
            guards[idx[int(k)]]._vouched = True
        self.vouched += int(ok.sum())

    def prefetch(self, actions: Sequence[Any]) -> None:
        """Step every adapter ahead, one after another, and judge them all."""
        self.judge([g.prefetch(a) for g, a in zip(self.guards, actions)])


class GuardedDummyVecEnv(DummyVecEnv):
    """SB3's DummyVecEnv with :class:`BatchGuard`: same transitions, auto-reset and infos, one check per step.

    The infos are returned as a new list of the step's dicts (each env's wrappers build a new dict per
    step, so SB3's deep copy of them only costs time).

    Args:
        env_fns: one zero-argument env constructor per env.
        batch_guard: False keeps the per-env checks.
    """

    def __init__(self, env_fns: list[Callable[[], gym.Env]], batch_guard: bool = True) -> None:
        super().__init__(env_fns)
        self.batch = BatchGuard(self.envs, batch_guard)

    def step_wait(self) -> Any:
        """Step every env (prefetched and checked at once when batching is active), auto-resetting finished ones."""
        actions = [self.actions[i] for i in range(self.num_envs)]
        if self.batch.active:
            self.batch.prefetch(actions)
        for i, env in enumerate(self.envs):
            obs, self.buf_rews[i], terminated, truncated, info = env.step(actions[i])
            self.buf_dones[i] = done = terminated or truncated
            info["TimeLimit.truncated"] = truncated and not terminated
            if done:
                info["terminal_observation"] = obs
                obs, self.reset_infos[i] = env.reset()
            self.buf_infos[i] = info
            self._save_obs(i, obs)
        return self._obs_from_buf(), np.copy(self.buf_rews), np.copy(self.buf_dones), list(self.buf_infos)
