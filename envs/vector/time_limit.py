"""``env.max_episode_steps`` around a vector env that resets some of its envs on request (``reset_mask``)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from envs.vector.base import restart


class TimeLimit(gym.vector.VectorWrapper):
    """Truncates each env's episode after ``max_episode_steps`` steps, as Gymnasium's ``TimeLimit`` does one
    env's.

    The vector env below must reset finished envs in the same step and reset the envs of
    ``options["reset_mask"]`` alone (as ALE's vector env does); an env cut here is reset that way, its last
    observation and step info becoming ``final_obs``/``final_info``.

    Args:
        env: the vector env.
        max_episode_steps: steps after which an episode is truncated.
    """

    def __init__(self, env: gym.vector.VectorEnv, max_episode_steps: int) -> None:
        super().__init__(env)
        self.max_episode_steps = max_episode_steps
        self.lengths = np.zeros(self.num_envs, dtype=np.int64)

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset the envs (all, or those of ``options["reset_mask"]``) and their step counts."""
        mask = (options or {}).get("reset_mask")
        self.lengths[slice(None) if mask is None else mask] = 0
        return self.env.reset(seed=seed, options=options)

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Step, and truncate (and reset) the envs whose episode reached the limit."""
        obs, rewards, terminated, truncated, infos = self.env.step(actions)
        skipped = getattr(self.env.unwrapped, "skipped", None)  # envs left out of the step (next_step.py)
        self.lengths += 1 if skipped is None else ~skipped
        ended = terminated | truncated
        limit = self.lengths >= self.max_episode_steps
        truncated, late = truncated | limit, limit & ~ended
        self.lengths[ended] = 0
        if late.any():
            obs, infos = restart(self.env, obs, infos, late)
            self.lengths[late] = 0
        return obs, rewards, terminated, truncated, infos
