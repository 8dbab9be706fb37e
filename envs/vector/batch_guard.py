"""The Guard's checks once per vector step: N envs' observations and rewards validated in one batched pass.

Each env keeps its :class:`~envs.guard.Guard` (crash containment, reset retries, policies, faults, the latency
timer). :class:`BatchGuard` steps every Guard's adapter ahead (:meth:`Guard.prefetch
<envs.guard.Guard.prefetch>`, through the vector env's :meth:`~envs.vector.sync.SyncVectorEnv.run`, so in
threads for a :class:`~envs.vector.threads.ThreadVectorEnv`), tests the stacked observations and rewards at
once (:class:`~envs.value_checks.RowCheck`, :func:`~envs.value_checks.valid_rewards`) and vouches for the
valid envs; then the vector env steps each env's wrapper stack as usual, and each Guard returns its prefetched
transition (checked already, or, for the few envs not vouched for, checked alone with the usual policy). So
``truncate``/``clip``/``raise`` and ``bounds_policy`` act on the offending env only, and the wrappers above
the Guard (the observation adapter) see exactly what they saw before.

Batching applies to in-process envs (a :class:`~envs.vector.sync.SyncVectorEnv` directly below) whose stacks
between the vector env and the Guard pass actions through unchanged and step once (observation and reward
wrappers that do not override ``step``); with any other wrapper (``env.wrappers``), or envs in other
processes, each env keeps its own checks (:attr:`BatchGuard.active` is False).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import iterate

from envs.guard import Guard
from envs.value_checks import RowCheck, all_finite_floats, valid_rewards
from envs.vector.base import StepRows, batched, step_rows
from envs.vector.sync import SyncVectorEnv

PASS_THROUGH_STEPS = (gym.Wrapper.step, gym.ObservationWrapper.step, gym.RewardWrapper.step)
"""``step`` methods that hand the action down unchanged and step the env below once."""


def guard_below(env: gym.Env) -> Guard | None:
    """The Guard under ``env``'s pass-through wrappers; None if none, or another wrapper between."""
    e: Any = env
    while isinstance(e, gym.Wrapper):
        if isinstance(e, Guard):
            return e
        if type(e).step not in PASS_THROUGH_STEPS:
            return None
        e = e.env
    return None


class BatchGuard(gym.vector.VectorWrapper):
    """Batched validation around an in-process vector env (see the module docstring).

    Args:
        env: the vector env; batching needs a :class:`~envs.vector.sync.SyncVectorEnv` (or a subclass).
        enabled: False keeps the per-env checks (``train.batch_guard: false``).
    """

    def __init__(self, env: gym.vector.VectorEnv, enabled: bool = True) -> None:
        super().__init__(env)
        same_step = env.metadata.get("autoreset_mode") == AutoresetMode.SAME_STEP
        batchable = enabled and same_step and isinstance(env, SyncVectorEnv)
        guards = [guard_below(e) for e in env.envs] if batchable else []  # type: ignore[attr-defined]
        found = [g for g in guards if g is not None]
        self.guards: list[Guard] = found if found and len(found) == env.num_envs else []
        space = self.guards[0].observation_space if self.guards else None
        self.rows = RowCheck(space) if space is not None else None
        self.active = bool(self.rows is not None and self.rows.batchable
                           and all(g.observation_space == space for g in self.guards))
        self.vouched = 0
        """Transitions vouched for by the batch check so far (the others were checked per env)."""

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
                guards[i].vouch()
            self.vouched += len(idx)
            return
        ok = self.rows.valid(obs) & valid_rewards(rewards)
        for k in np.flatnonzero(ok):
            guards[idx[int(k)]].vouch()
        self.vouched += int(ok.sum())

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Step every adapter ahead and judge them at once, then step the wrapper stacks (or just step)."""
        return batched(self.step_rows(actions)) if self.active else self.env.step(actions)

    def step_rows(self, actions: Any) -> StepRows:
        """:meth:`step` with each env's info as it came (:class:`~envs.vector.base.StepRows`)."""
        if not self.active:
            return step_rows(self.env, actions)
        acts = list(iterate(self.action_space, actions))
        venv: Any = self.env
        venv.step_seats_ahead(acts)
        self.judge(venv.run(lambda i: self.guards[i].prefetch(acts[i])))
        return venv.step_here(acts)  # type: ignore[no-any-return]
