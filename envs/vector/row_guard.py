"""The Guard's checks over a vector env whose envs have no Guard of their own (ALE's vector env, bridge
programs).

:class:`RowGuard` tests each step's observations (the finished envs' last ones) and rewards at once
(:class:`~envs.value_checks.RowCheck`, :func:`~envs.value_checks.valid_rewards`); a row they do not vouch for
goes through the Guard's own decision (:func:`envs.guard.judge_step`, and :func:`~envs.guard.judge_reset` for
the observations that start an episode) with ``env.nan_policy`` and ``env.bounds_policy``, its fault under
``info["nondiff_fault"]`` of that env's step only. An env cut short by ``truncate`` ends truncated, with the
last valid observation and reward 0, and is reset through ``options["reset_mask"]``, which the vector env
below must honour. Where the per-env :class:`~envs.vector.batch_guard.BatchGuard` relies on each env's Guard,
this wrapper is the Guard.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from envs.batching import stack
from envs.faults import FAULT_KEY, RESET_FAULTS_KEY, add_fault
from envs.guard import judge_reset, judge_step
from envs.value_checks import RowCheck, valid_rewards
from envs.vector.base import add_info, restart, row, set_row, unbatch_info


class RowGuard(gym.vector.VectorWrapper):
    """The Guard's checks and policies, once per vector step over the batch (see the module docstring).

    Args:
        env: the vector env (same-step auto-reset, ``options["reset_mask"]`` honoured).
        nan_policy: ``truncate``, ``clip`` or ``raise`` (as the Guard's).
        bounds_policy: ``clip``, ``truncate`` or ``raise`` for finite values past the bounds.
        program: who the faults name.

    Raises:
        ValueError: the observation space cannot be checked as a batch.
    """

    def __init__(self, env: gym.vector.VectorEnv, nan_policy: str = "truncate", bounds_policy: str = "clip",
                 program: str | None = None) -> None:
        super().__init__(env)
        self.space = env.single_observation_space
        self.rows = RowCheck(self.space)
        if not self.rows.batchable:
            raise ValueError(f"the Guard cannot check observations of {self.space} as a batch")
        self.nan_policy, self.bounds_policy, self.program = nan_policy, bounds_policy, program
        self._obs: Any = None
        """The observations last handed up: what a row that cannot be repaired falls back to."""
        self._pending: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        """Faults of the last reset per env, reported with its next step (as the Guard does)."""

    def _valid(self, batch: Any) -> np.ndarray:
        """Which rows of a batch are certainly valid (a Box batch checked stacked, others row by row)."""
        return self.rows.valid(batch if isinstance(batch, np.ndarray) else
                               [row(batch, i) for i in range(self.num_envs)])

    def _fallback(self, i: int) -> Any:
        return row(self._obs, i) if self._obs is not None else None

    def validate(self, last: Any, rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
                 infos: list[dict[str, Any]]) -> np.ndarray:
        """The Guard's checks over one step's transitions; rows not vouched for get the Guard's decision.

        Repairs ``last`` and ``rewards`` in place, records faults in ``infos[i]`` (env ``i``'s step info) and
        returns the envs cut short by ``truncate`` (their observation is the last valid one, their reward 0,
        ``truncated`` set and ``terminated`` cleared, as the Guard returns them).
        """
        ok = self._valid(last) & valid_rewards(rewards)
        cut = np.zeros(len(ok), dtype=bool)
        for i in np.flatnonzero(~ok).tolist():
            v = judge_step(self.space, row(last, i), float(rewards[i]), self._fallback(i), self.nan_policy,
                           self.bounds_policy, self.program)
            for fault in v.faults:
                add_fault(infos[i], fault)
            set_row(last, i, v.obs)
            rewards[i] = v.reward
            if v.cut:
                terminated[i], truncated[i], cut[i] = False, True, True
        return cut

    def _check_starts(self, obs: Any, mask: np.ndarray, infos: list[dict[str, Any]],
                      key: str = RESET_FAULTS_KEY) -> None:
        """The observations that start an episode (envs in ``mask``), checked as the Guard checks a reset."""
        for i in np.flatnonzero(mask & ~self._valid(obs)).tolist():
            o, fault = judge_reset(self.space, row(obs, i), self._fallback(i), self.nan_policy,
                                   self.bounds_policy, self.program)
            set_row(obs, i, o)
            if fault is not None:
                add_fault(infos[i], fault, key)

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset (all envs, or those of ``options["reset_mask"]``), checking the observations that start the
        episodes; their faults are reported with each env's next step, as the Guard reports them."""
        obs, infos = self.env.reset(seed=seed, options=options)
        mask = (options or {}).get("reset_mask")
        mask = np.ones(self.num_envs, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        self._check_starts(obs, mask, self._pending)
        if self._obs is None or mask.all():
            self._obs = _copy(obs)
        else:
            for i in np.flatnonzero(mask).tolist():
                set_row(self._obs, i, row(obs, i))
        return obs, infos

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Step, check the batch, cut and reset the envs the policy truncates, check the new episodes'
        starts."""
        obs, rewards, terminated, truncated, infos = self.env.step(actions)
        ended = terminated | truncated
        final: Any = infos.get("final_obs")
        last = obs if not ended.any() else stack(self.space, [final[i] if ended[i] else row(obs, i)
                                                               for i in range(self.num_envs)])
        found, self._pending = self._pending, [{} for _ in range(self.num_envs)]
        if not (self._valid(last).all() and valid_rewards(rewards).all()):
            terminated, truncated = terminated.copy(), truncated.copy()
            cut = self.validate(last, rewards, terminated, truncated, found)
            for i in range(self.num_envs):
                if ended[i]:
                    final[i] = row(last, i)
                elif last is not obs:
                    set_row(obs, i, row(last, i))
            again = cut & ~ended
            if again.any():  # the policy ended these episodes: the env below starts new ones
                obs, infos = restart(self.env, obs, infos, again)
                ended = ended | again
        if ended.any():
            self._check_starts(obs, ended, found, RESET_FAULTS_KEY)
        for i, info in enumerate(found):
            if info:
                target = infos["final_info"] if ended[i] else infos
                step_info = unbatch_info(target, i)
                for key in (RESET_FAULTS_KEY, FAULT_KEY):
                    for fault in _many(info.get(key)):
                        add_fault(step_info, fault, key)
                add_info(target, step_info, i, self.num_envs)
        self._obs = _copy(obs)
        return obs, rewards, terminated, truncated, infos


def _copy(obs: Any) -> Any:
    return {k: _copy(v) for k, v in obs.items()} if isinstance(obs, dict) else np.array(obs, copy=True)


def _many(value: Any) -> list[Any]:
    return [] if value is None else list(value) if isinstance(value, list | tuple) else [value]
