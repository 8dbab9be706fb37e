"""Envs for the fault-visibility tests: CartPole that returns NaN observations now and then."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv


class NanCartPole(CartPoleEnv):
    """CartPole whose every ``nan_every``-th step returns a NaN velocity (a solver that blew up).

    Args:
        nan_every: the period, in steps over the env's lifetime.
    """

    def __init__(self, nan_every: int = 50, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.nan_every, self._steps = nan_every, 0

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = super().step(action)
        self._steps += 1
        if self._steps % self.nan_every == 0:
            obs = np.array(obs, dtype=np.float32)
            obs[1] = np.nan
        return obs, reward, terminated, truncated, info
