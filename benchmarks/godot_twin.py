"""Reach's twin without an engine: the Godot game's observation and action spaces, in-process, no physics.

The engine-cost row (G2, benchmarks/godot.py) trains the same PPO on it and on ``--env godot``, so that the
difference is what the engine costs: Godot's physics and GDScript, the TCP round trips and the bridge.
Observations are drawn from a fixed pool (no arithmetic per step); an episode ends as Reach's do, truncated
after 150 steps or reached early (here with probability 1/60 per step, near a trained policy's episodes).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

OBS = 12  # the way to the goal (2), the velocity (2), eight raycasts: Reach's Box
ACTIONS = 5  # none, right, left, down, up
MAX_STEPS = 150


class TwinEnv(gym.Env):
    """Box(-5, 5, (12,)) observations, Discrete(5) actions, Reach's episode ends, nothing simulated."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self) -> None:
        self.observation_space = spaces.Box(-5.0, 5.0, (OBS,), np.float32)
        self.action_space = spaces.Discrete(ACTIONS)
        self._pool = np.zeros((64, OBS), dtype=np.float32)
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._pool = self.np_random.uniform(-1.0, 1.0, (64, OBS)).astype(np.float32)
        self._t = 0
        return self._pool[0], {}

    def step(self, action: Any):
        self._t += 1
        reached = self.np_random.random() < 1 / 60
        reward = 5.0 if reached else -0.01
        truncated = self._t >= MAX_STEPS and not reached
        info = {"is_success": reached} if reached or truncated else {}
        return self._pool[self._t % 64], reward, reached, truncated, info
