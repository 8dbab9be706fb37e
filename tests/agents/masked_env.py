"""Envs with action masks, one per way of giving them, that count the illegal actions they are sent.

Each step a random non-empty subset of the 5 actions is legal; a legal action earns 1, an illegal one 0 and
is counted. ``info["episode_metrics"]["illegal"]`` reports an episode's count (evaluate.py averages it), and
with ``count_file`` every env appends ``<steps> <illegal>`` to that file when it is closed (training envs,
in this process or a worker's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

N = 5


def read_counts(path: Path) -> tuple[int, int]:
    """The steps and illegal actions that every closed env appended to ``count_file``, summed."""
    rows = [tuple(int(x) for x in line.split()) for line in path.read_text().splitlines()]
    return sum(r[0] for r in rows), sum(r[1] for r in rows)


class _Masked(gym.Env):
    """The shared game: 20 steps, observations are the legal set as floats."""

    def __init__(self, count_file: str | None = None, episode_steps: int = 20) -> None:
        self.observation_space: spaces.Space = spaces.Box(0.0, 1.0, (N,), np.float32)
        self.action_space = spaces.Discrete(N)
        self.count_file, self.episode_steps = count_file, episode_steps
        self.steps = self.illegal = self._ep_illegal = self._t = 0
        self._legal = np.ones(N, dtype=bool)
        self._closed = False

    def _draw(self) -> None:
        self._legal = self.np_random.random(N) < 0.4
        if not self._legal.any():
            self._legal[self.np_random.integers(N)] = True

    def _obs(self) -> Any:
        return self._legal.astype(np.float32)

    def _info(self) -> dict[str, Any]:
        return {}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self._t = self._ep_illegal = 0
        self._draw()
        return self._obs(), self._info()

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        legal = bool(self._legal[int(action)])
        self.steps += 1
        self._t += 1
        if not legal:
            self.illegal += 1
            self._ep_illegal += 1
        self._draw()
        info = self._info()
        done = self._t >= self.episode_steps
        if done:
            info["episode_metrics"] = {"illegal": float(self._ep_illegal)}
        return self._obs(), float(legal), done, False, info

    def close(self) -> None:
        if self.count_file and not self._closed:
            with Path(self.count_file).open("a") as f:
                f.write(f"{self.steps} {self.illegal}\n")
        self._closed = True


class MethodMaskEnv(_Masked):
    """Gives its mask by ``action_masks()`` (sb3-contrib's convention)."""

    def action_masks(self) -> np.ndarray:
        """The legal actions now."""
        return self._legal.copy()


class InfoMaskEnv(_Masked):
    """Gives its mask in ``info["action_mask"]`` (as 0/1 integers)."""

    def _info(self) -> dict[str, Any]:
        return {"action_mask": self._legal.astype(np.int8)}


class ObsMaskEnv(_Masked):
    """Gives its mask as a Dict observation's ``action_mask`` key (PettingZoo classic's convention)."""

    def __init__(self, count_file: str | None = None, episode_steps: int = 20) -> None:
        super().__init__(count_file, episode_steps)
        self.observation_space = spaces.Dict({"observation": spaces.Box(0.0, 1.0, (N,), np.float32),
                                              "action_mask": spaces.Box(0, 1, (N,), np.int8)})

    def _obs(self) -> Any:
        return {"observation": self._legal.astype(np.float32), "action_mask": self._legal.astype(np.int8)}


class WrongSizeMaskEnv(_Masked):
    """Gives a mask with one entry too many."""

    def action_masks(self) -> np.ndarray:
        """Six entries for five actions."""
        return np.ones(N + 1, dtype=bool)


class StatefulInfoMaskEnv(InfoMaskEnv):
    """InfoMaskEnv with ``get_state()``/``set_state()``, as nondiff's own adapters offer for exact resume."""

    def get_state(self) -> dict[str, Any]:
        """The episode's position (JSON)."""
        return {"t": self._t, "legal": self._legal.tolist(), "ep_illegal": self._ep_illegal}

    def set_state(self, state: dict[str, Any]) -> None:
        """Go back to a position :meth:`get_state` gave."""
        self._t, self._ep_illegal = int(state["t"]), int(state["ep_illegal"])
        self._legal = np.array(state["legal"], dtype=bool)
