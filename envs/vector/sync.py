"""In-process envs stepped one after another (``train.vec_env: dummy``): Gymnasium's ``SyncVectorEnv``
role."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import iterate

from envs.batching import stack
from envs.selfplay import SeatEnv, step_ahead
from envs.vector.base import Indices, StepRows, Transition, VectorEnvBase, batched, is_wrapped


class SyncVectorEnv(VectorEnvBase):
    """``num_envs`` envs in this process, each the top of its wrapper stack, stepped in turn.

    The envs stay reachable (:attr:`envs`), so that a checkpoint can read their state and the batched Guard
    (:class:`~envs.vector.batch_guard.BatchGuard`) can step their adapters ahead. :meth:`run` is how work
    reaches the envs; :class:`~envs.vector.threads.ThreadVectorEnv` overrides it to run each env's part in
    its own thread.

    Args:
        env_fns: one zero-argument constructor per env.
        autoreset_mode: ``SAME_STEP`` (nondiff's, SB3's), or ``NEXT_STEP`` (Gymnasium's default, which RLlib's
            env runners expect: an env that finished is reset by the next step, which returns its reset
            observation with reward 0).
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]],
                 autoreset_mode: AutoresetMode = AutoresetMode.SAME_STEP) -> None:
        if autoreset_mode not in (AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP):
            raise ValueError(f"autoreset_mode SAME_STEP or NEXT_STEP, got {autoreset_mode}")
        self.envs: list[gym.Env] = [fn() for fn in env_fns]
        first = self.envs[0]
        super().__init__(len(self.envs), first.observation_space, first.action_space)
        self.metadata = {**self.metadata, "autoreset_mode": autoreset_mode}
        self.render_mode = first.render_mode
        self._next_step = autoreset_mode == AutoresetMode.NEXT_STEP
        self._ended = np.zeros(self.num_envs, dtype=bool)  # NEXT_STEP: the envs the next step resets
        self._seats = any(isinstance(e.unwrapped, SeatEnv) for e in self.envs)  # self-play seats, if any
        self.pooled_calls = 0
        """Pooled opponent calls so far (:meth:`step_seats_ahead`)."""

    def run(self, job: Callable[[int], Any], indices: Indices = None) -> list[Any]:
        """``job(i)`` for every env index in ``indices`` (None: all), in order; their results."""
        return [job(i) for i in self._indices(indices)]

    def _step_one(self, i: int, action: Any) -> Transition:
        env = self.envs[i]
        if self._next_step and self._ended[i]:
            obs, info = env.reset()
            return obs, 0.0, False, False, info, None
        obs, reward, terminated, truncated, info = env.step(action)
        if self._next_step or not (terminated or truncated):
            return obs, reward, terminated, truncated, info, None
        new_obs, reset_info = env.reset()
        return new_obs, reward, terminated, truncated, reset_info, (obs, info)

    def _reset_one(self, i: int, seed: int | None,
                   options: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
        return self.envs[i].reset(seed=seed, **({"options": options} if options else {}))

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Step every env (through :meth:`run`), resetting those that finished in the same step."""
        return batched(self.step_rows(actions))

    def step_rows(self, actions: Any) -> StepRows:
        """:meth:`step` with each env's info as it came (:class:`~envs.vector.base.StepRows`)."""
        acts = list(iterate(self.action_space, actions))
        self.step_seats_ahead(acts)
        out = self.collect_rows(self.run(lambda i: self._step_one(i, acts[i])))
        self._ended = out.terminated | out.truncated
        return out

    def step_seats_ahead(self, acts: list[Any]) -> None:
        """Step the self-play seats that pool their opponents' moves (``selfplay.pool_moves``) ahead, all at
        once (envs/selfplay.py :func:`~envs.selfplay.step_ahead`), before their wrappers step them."""
        if not self._seats:
            return
        ahead = [(seat, acts[i]) for i, e in enumerate(self.envs)  # the seats as they are now (a restart)
                 if isinstance(seat := e.unwrapped, SeatEnv) and seat.pooled
                 and not (self._next_step and self._ended[i])]
        if ahead:
            self.pooled_calls += step_ahead(ahead)

    def step_here(self, acts: list[Any]) -> StepRows:
        """Step env ``i`` with ``acts[i]``: what the batched Guard calls once the adapters have stepped ahead
        with these very action objects (here as :meth:`step` does)."""
        return self.collect_rows([self._step_one(i, a) for i, a in enumerate(acts)])

    def reset(self, *, seed: int | Sequence[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset every env (``seed``: one per env, or an int that env ``i`` gets plus ``i``)."""
        seeds = self._seeds(seed)
        self._ended[:] = False
        answers = self.run(lambda i: self._reset_one(i, seeds[i], options))
        infos: dict[str, Any] = {}
        for i, (_, info) in enumerate(answers):
            infos = self._add_info(infos, info, i)
        return stack(self.single_observation_space, [a[0] for a in answers]), infos

    def call_at(self, indices: Indices, name: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Call method ``name`` of each env in ``indices`` (found through its wrappers)."""
        return [self.envs[i].get_wrapper_attr(name)(*args, **kwargs) for i in self._indices(indices)]

    def get_attr_at(self, indices: Indices, name: str) -> list[Any]:
        """Attribute ``name`` of each env (found through its wrappers)."""
        return [self.envs[i].get_wrapper_attr(name) for i in self._indices(indices)]

    def set_attr_at(self, indices: Indices, name: str, value: Any) -> None:
        """Set attribute ``name`` on each env's innermost env."""
        for i in self._indices(indices):
            setattr(self.envs[i].unwrapped, name, value)

    def is_wrapped_at(self, indices: Indices, wrapper_class: type) -> list[bool]:
        """Whether each env's stack holds ``wrapper_class``."""
        return [is_wrapped(self.envs[i], wrapper_class) for i in self._indices(indices)]

    def close_extras(self, **kwargs: Any) -> None:
        """Close every env."""
        for env in self.envs:
            env.close()
