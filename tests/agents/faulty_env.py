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


class FlakyCartPole(CartPoleEnv):
    """CartPole whose every ``raise_every``-th step raises (a C extension that throws now and then).

    Args:
        raise_every: the period, in steps over the env's lifetime.
        reset_fails_after: every reset after this many raises (a device that went away); None: never.
    """

    def __init__(self, raise_every: int = 40, reset_fails_after: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.raise_every, self.reset_fails_after = raise_every, reset_fails_after
        self._steps = self._resets = 0

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        self._resets += 1
        if self.reset_fails_after is not None and self._resets > self.reset_fails_after:
            raise ConnectionError("motor controller unreachable")
        return super().reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        self._steps += 1
        if self._steps % self.raise_every == 0:
            raise FloatingPointError("solver diverged")
        return super().step(action)
