"""Episode statistics around any vector env: each finished episode's return, length and time (SB3's Monitor
role)."""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np

from envs.vector.base import StepRows, add_info, step_rows


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
        for i, episode in self._tally(rewards, terminated | truncated):
            add_info(infos.setdefault("final_info", {}), {"episode": episode}, i, self.num_envs)
        return obs, rewards, terminated, truncated, infos

    def step_rows(self, actions: Any) -> StepRows:
        """:meth:`step` with each env's info as it came (:class:`~envs.vector.base.StepRows`); each ended
        episode's figures go into a copy of its last step's info."""
        rows = step_rows(self.env, actions)
        for i, episode in self._tally(rows.rewards, rows.terminated | rows.truncated):
            last_obs, last_info = rows.finals.get(i, (None, {}))
            rows.finals[i] = (last_obs, {**last_info, "episode": episode})
        return rows

    def _tally(self, rewards: np.ndarray, ended: np.ndarray) -> list[tuple[int, dict[str, Any]]]:
        """Add the step's rewards to each episode; the episodes that ended, with their figures."""
        for ep, reward in zip(self.rewards, rewards.tolist()):  # Python floats, as Monitor keeps them
            ep.append(reward)
        out = []
        for i in np.flatnonzero(ended).tolist():
            ep = self.rewards[i]
            out.append((i, {"r": round(sum(ep), 6), "l": len(ep), "t": round(time.time() - self.t_start, 6)}))
            self.rewards[i] = []
        return out

    def get_state(self, i: int) -> dict[str, Any]:
        """Env ``i``'s unfinished episode (JSON), in the form a checkpoint stores it."""
        return {"rewards": list(self.rewards[i]), "needs_reset": False}

    def set_state(self, i: int, state: dict[str, Any]) -> None:
        """Restore env ``i``'s unfinished episode from :meth:`get_state`'s form."""
        self.rewards[i] = [float(r) for r in state["rewards"]]
