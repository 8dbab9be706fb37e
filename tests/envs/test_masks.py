"""envs/masks.py: where a mask is found, and ActionMasks' answers, on real Gymnasium envs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from envs.errors import InvalidOutputError
from envs.masks import ActionMasks, MaskSource, find_source, mask_size


class _InfoMask(gym.Env):
    """MultiDiscrete([2, 3]) whose info carries a mask that the test sets."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = gym.spaces.MultiDiscrete([2, 3])
        self.mask: object = np.ones(5, dtype=np.int8)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {"action_mask": self.mask}

    def step(self, action):
        return np.zeros(1, np.float32), 0.0, False, False, {"action_mask": self.mask}


def test_sources_are_found_in_the_order_method_info_obs():
    env = _InfoMask()
    assert find_source(env) is None  # the info source shows only in a reset's info
    _, info = env.reset()
    assert find_source(env, info) is MaskSource.INFO
    assert find_source(gym.make("CartPole-v1"), {}) is None
    assert mask_size(env.action_space) == 5 and mask_size(gym.spaces.Box(0, 1, (2,))) is None


def test_the_mask_follows_each_reset_and_step_and_an_empty_one_allows_everything():
    inner = _InfoMask()
    env = ActionMasks(inner, "info")
    inner.mask = np.array([1, 0, 0, 1, 1], np.int8)
    env.reset(seed=0)
    assert env.action_masks().tolist() == [True, False, False, True, True]
    inner.mask = np.array([0, 1, 1, 0, 0], np.int8)
    env.step(env.action_space.sample())
    assert env.action_masks().tolist() == [False, True, True, False, False]
    inner.mask = np.zeros(5, np.int8)
    env.step(env.action_space.sample())
    assert env.action_masks().all()


def test_a_missing_or_misshapen_mask_is_an_invalid_output():
    inner = _InfoMask()
    env = ActionMasks(inner, "info")
    with pytest.raises(InvalidOutputError, match="gave no action mask by its info"):
        env.action_masks()  # before any reset
    inner.mask = np.ones(4)
    env.reset()
    with pytest.raises(InvalidOutputError, match=r"expected 5 entries \(one per action\), got shape \(4,\)"):
        env.action_masks()
    with pytest.raises(ValueError, match="need a Discrete or MultiDiscrete action space"):
        ActionMasks(gym.make("Pendulum-v1"), "method")
