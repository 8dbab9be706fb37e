"""Template for a nondiff adapter: copy this file, rename the class, fill in the three TODOs.

Register it with ``envs.register("myenv", "my_module:MyEnv")`` (or a ``nondiff.envs`` entry point in your
pyproject.toml), then run ``python -m envs check myenv`` and ``python train.py --env myenv``.
See docs/adapters.md.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class MyEnv(gym.Env):
    """One episode of your software: what is observed, what is controlled, what is scored."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, *, render_mode: str | None = None, difficulty: float = 1.0) -> None:
        # TODO 1: start or connect to your software here (import its bindings inside this module).
        self.render_mode = render_mode
        self.difficulty = difficulty
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self._state = np.zeros(4)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode; draw every random number from ``self.np_random``."""
        super().reset(seed=seed)
        # TODO 2: reset your software to a (seeded) initial state.
        self._state = self.np_random.normal(size=4) * self.difficulty
        return self._state.astype(np.float32), {}

    def step(self, action):
        """Apply ``action``; return (obs, reward, terminated, truncated, info)."""
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        # TODO 3: send the action to your software, read back its state and score it.
        self._state[:2] += 0.1 * action
        distance = float(np.linalg.norm(self._state[:2] - self._state[2:]))
        success = distance < 0.1
        return self._state.astype(np.float32), -distance, success, False, {"is_success": success}

    def render(self):
        """An RGB frame when ``render_mode == "rgb_array"``."""
        if self.render_mode == "rgb_array":
            return np.zeros((64, 64, 3), dtype=np.uint8)
        return None

    def close(self) -> None:
        """Stop or disconnect from your software; safe to call twice."""
