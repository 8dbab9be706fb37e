"""Channel-last images turned channel-first for a whole batch, for vector envs whose envs have no wrapper
stack of their own (K-instance bridge programs): the batch form of the observation adapter's transposition
(:class:`envs.wrappers.ObservationAdapter`), so that training sees the layout evaluation sees."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import batch_space

from envs.vector.base import StepRows, step_rows
from envs.wrappers import channel_last, transposed


class ChannelsFirst(gym.vector.VectorWrapper):
    """(N, H, W, C) images → (N, C, H, W): a Box image or a Dict's image keys, ``final_obs`` included.

    Args:
        env: the vector env; :func:`channels_first` wraps it only when it has a channel-last image.
    """

    def __init__(self, env: gym.vector.VectorEnv) -> None:
        super().__init__(env)
        single = env.single_observation_space
        if isinstance(single, spaces.Dict):
            self._keys = [k for k, s in single.spaces.items() if channel_last(s)]
            new: spaces.Space = spaces.Dict({k: transposed(s) if k in self._keys else s
                                             for k, s in single.spaces.items()})
        else:
            self._keys = [""]
            new = transposed(single)
        self.single_observation_space = new
        self.observation_space = batch_space(new, env.num_envs)

    def _move(self, obs: Any, axes: tuple[int, ...]) -> Any:
        if "" in self._keys:
            return np.ascontiguousarray(np.transpose(obs, axes))
        return {k: np.ascontiguousarray(np.transpose(v, axes)) if k in self._keys else v
                for k, v in obs.items()}

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset, with the images channel-first."""
        obs, infos = self.env.reset(seed=seed, options=options)
        return self._move(obs, (0, 3, 1, 2)), infos

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Step, with the images (and the finished envs' last ones) channel-first."""
        obs, rewards, terminated, truncated, infos = self.env.step(actions)
        if "final_obs" in infos:
            final, mask = infos["final_obs"], infos.get("_final_obs")
            for i in range(len(final)):
                if mask is None or mask[i]:
                    final[i] = self._move(final[i], (2, 0, 1))
        return self._move(obs, (0, 3, 1, 2)), rewards, terminated, truncated, infos

    def step_rows(self, actions: Any) -> StepRows:
        """:meth:`step` with each env's info as it came (:class:`~envs.vector.base.StepRows`)."""
        rows = step_rows(self.env, actions)
        for i, (last_obs, last_info) in rows.finals.items():
            rows.finals[i] = (None if last_obs is None else self._move(last_obs, (2, 0, 1)), last_info)
        return rows._replace(obs=self._move(rows.obs, (0, 3, 1, 2)))


def channels_first(env: gym.vector.VectorEnv) -> gym.vector.VectorEnv:
    """``env`` in :class:`ChannelsFirst` when its observations hold a channel-last image, else unchanged."""
    single = env.single_observation_space
    parts = single.spaces.values() if isinstance(single, spaces.Dict) else [single]
    return ChannelsFirst(env) if any(channel_last(s) for s in parts) else env
