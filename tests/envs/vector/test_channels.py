"""envs/vector/channels.py: a batch's channel-last images turned channel-first, the finished envs' too."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.vector.channels import ChannelsFirst, channels_first
from envs.vector.sync import SyncVectorEnv


class Picture(gym.Env):
    """A Dict of a 4×6×3 image whose pixels count the steps, and a vector; ends after two steps."""

    observation_space = spaces.Dict({"image": spaces.Box(0, 255, (4, 6, 3), np.uint8),
                                     "state": spaces.Box(-1.0, 1.0, (2,), np.float32)})
    action_space = spaces.Discrete(2)

    def _obs(self) -> dict:
        image = np.zeros((4, 6, 3), np.uint8)
        image[..., 0] = self.t  # channel 0 carries the step, so a transposition is visible
        return {"image": image, "state": np.zeros(2, np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), 0.0, self.t >= 2, False, {}


def test_images_and_final_observations_turn_channel_first():
    venv = channels_first(SyncVectorEnv([Picture, Picture]))
    assert isinstance(venv, ChannelsFirst)
    assert venv.single_observation_space["image"].shape == (3, 4, 6)
    assert venv.observation_space["image"].shape == (2, 3, 4, 6)
    obs, _ = venv.reset(seed=0)
    assert obs["image"].shape == (2, 3, 4, 6) and obs["state"].shape == (2, 2)
    venv.step(np.zeros(2, np.int64))
    obs, _, terminated, _, infos = venv.step(np.zeros(2, np.int64))
    assert terminated.all() and obs["image"].shape == (2, 3, 4, 6)
    final = infos["final_obs"][0]["image"]
    assert final.shape == (3, 4, 6) and (final[0] == 2).all() and (final[1:] == 0).all()
    assert venv.single_observation_space.contains({k: v[0] for k, v in obs.items()})
    venv.close()


def test_a_vector_env_without_images_is_left_as_it_is():
    venv = SyncVectorEnv([lambda: gym.make("CartPole-v1")])
    assert channels_first(venv) is venv
    venv.close()
