"""Episode statistics around any vector env: each finished episode's return, length and time (SB3's Monitor
role)."""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np

from envs.vector.base import add_info


class EpisodeStatistics(gym.vector.VectorWrapper):
    """Adds ``{"r": return, "l": length, "t": seconds since start}`` as ``"episode"`` to the final step's
    info.

    The figures are SB3 ``Monitor``'s exactly: the return is the sum of the episode's rewards as Python
    floats, rounded to 6 places, and ``t`` counts from this wrapper's construction. The vector env below must
    reset finished envs in the same step (``AutoresetMode.SAME_STEP``): the entry goes to
    ``infos["final_info"]``, the finished step's part. :meth:`get_state`/:meth:`set_state` carry an unfinished
    episode's rewards across a checkpoint.

    Args:
        env: the vector env.
    """

    def __init__(self, env: gym.vector.VectorEnv) -> None:
        super().__init__(env)
        self.t_start = time.time()
        self.rewards: list[list[float]] = [[] for _ in range(self.num_envs)]

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset every env and start every episode's tally afresh."""
        self.rewards = [[] for _ in range(self.num_envs)]
        return self.env.reset(seed=seed, options=options)

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Step, and report each episode that ended."""
        obs, rewards, terminated, truncated, infos = self.env.step(actions)
        for ep, reward in zip(self.rewards, rewards.tolist()):  # Python floats, as Monitor keeps them
            ep.append(reward)
        for i in np.flatnonzero(terminated | truncated).tolist():
            ep = self.rewards[i]
            episode = {"r": round(sum(ep), 6), "l": len(ep), "t": round(time.time() - self.t_start, 6)}
            add_info(infos.setdefault("final_info", {}), {"episode": episode}, i, self.num_envs)
            self.rewards[i] = []
        return obs, rewards, terminated, truncated, infos

    def get_state(self, i: int) -> dict[str, Any]:
        """Env ``i``'s unfinished episode (JSON), in the form a checkpoint stores it."""
        return {"rewards": list(self.rewards[i]), "needs_reset": False}

    def set_state(self, i: int, state: dict[str, Any]) -> None:
        """Restore env ``i``'s unfinished episode from :meth:`get_state`'s form."""
        self.rewards[i] = [float(r) for r in state["rewards"]]
