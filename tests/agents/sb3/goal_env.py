"""An env for the HER choice tests: a goal-conditioned Dict observation without ``compute_reward``."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class KeysOnlyReach(gym.Env):
    """A point that moves towards a goal on a plane; its observation has the three goal keys, but the env
    has no ``compute_reward``, so HER cannot relabel its transitions."""

    def __init__(self) -> None:
        box = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = gym.spaces.Dict({"observation": box, "achieved_goal": box,
                                                  "desired_goal": box})
        self.action_space = gym.spaces.Box(-0.1, 0.1, (2,), np.float32)
        self._pos = np.zeros(2, np.float32)
        self._goal = np.zeros(2, np.float32)

    def _obs(self) -> dict[str, np.ndarray]:
        return {"observation": self._pos.copy(), "achieved_goal": self._pos.copy(),
                "desired_goal": self._goal.copy()}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self._pos = np.zeros(2, np.float32)
        self._goal = self.np_random.uniform(-0.9, 0.9, 2).astype(np.float32)
        return self._obs(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        self._pos = np.clip(self._pos + np.asarray(action, np.float32), -1.0, 1.0)
        done = bool(np.linalg.norm(self._pos - self._goal) < 0.05)
        return self._obs(), 0.0 if done else -1.0, done, False, {"is_success": done}
