"""``train.vec_env: thread`` inside an RLlib env runner: the runner's sub-envs step concurrently, one thread each.

RLlib steps the envs of one env runner one after another (gymnasium's ``SyncVectorEnv``), so 32 envs whose
step waits 5 ms take 160 ms per vector step. :class:`ThreadVectorEnv` is that ``SyncVectorEnv`` with the
per-env reset-or-step of ``AutoresetMode.NEXT_STEP`` run on a thread pool: N waiting envs then take about one
wait per vector step (the same idea as agents/sb3/vecenv.py's ``ThreadVecEnv`` for SB3). RLlib builds it
through gymnasium's ``vector_entry_point`` (``gym_env_vectorize_mode="vector_entry_point"``), which hands the
env creator ``num_envs``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.vector.utils import concatenate, iterate

VECTORIZE_MODE = {"dummy": "sync", "subproc": "sync", "thread": "vector_entry_point"}
"""``train.vec_env`` → RLlib's ``gym_env_vectorize_mode``. ``subproc`` stays ``sync`` on RLlib, as before: the env
runners are processes already, and ``rllib.num_env_runners`` is how RLlib spreads envs over processes."""


class ThreadVectorEnv(SyncVectorEnv):
    """A ``SyncVectorEnv`` (NEXT_STEP autoreset) whose sub-envs reset and step in parallel threads.

    Args:
        env_fns: one callable per sub-env, each returning a new env.
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], **kwargs: Any) -> None:
        super().__init__(env_fns, **kwargs)
        if self.autoreset_mode != AutoresetMode.NEXT_STEP:
            raise ValueError(f"ThreadVectorEnv supports autoreset_mode NEXT_STEP only, got {self.autoreset_mode}")
        self._pool = ThreadPoolExecutor(max(1, len(self.envs)), thread_name_prefix="nondiff-env")

    def _one(self, i: int, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self._autoreset_envs[i]:
            obs, info = self.envs[i].reset()
            return obs, 0.0, False, False, info
        return self.envs[i].step(action)  # type: ignore[return-value]

    def step(self, actions: Any) -> Any:
        """Reset the envs that ended last step, step the others, all at once; batched as SyncVectorEnv does."""
        per_env = list(iterate(self.action_space, actions))
        results = list(self._pool.map(self._one, range(self.num_envs), per_env))
        infos: dict[str, Any] = {}
        for i, (obs, reward, terminated, truncated, info) in enumerate(results):
            self._env_obs[i] = obs
            self._rewards[i], self._terminations[i], self._truncations[i] = reward, terminated, truncated
            infos = self._add_info(infos, info, i)
        self._observations = concatenate(self.single_observation_space, self._env_obs, self._observations)
        self._autoreset_envs = np.logical_or(self._terminations, self._truncations)
        return (deepcopy(self._observations) if self.copy else self._observations, np.copy(self._rewards),
                np.copy(self._terminations), np.copy(self._truncations), infos)

    def close_extras(self, **kwargs: Any) -> None:
        """Close the envs, then the thread pool."""
        super().close_extras(**kwargs)
        self._pool.shutdown(wait=False)
