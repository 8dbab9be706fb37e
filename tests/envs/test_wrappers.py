"""envs/wrappers.py: the line that says how a Dict observation is flattened for the rllib backend."""

from __future__ import annotations

import logging

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from envs import wrappers


class DictEnv(gym.Env):
    def __init__(self, parts: dict[str, spaces.Space]) -> None:
        self.observation_space, self.action_space = spaces.Dict(parts), spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}


@pytest.mark.parametrize(("parts", "grid_note"), [
    ({"board": spaces.Box(0, 1, (6, 7, 2), np.int8), "action_mask": spaces.MultiBinary(7)}, True),
    ({"position": spaces.Box(-1.0, 1.0, (3,), np.float32), "mode": spaces.Discrete(4)}, False),
])
def test_the_flattening_line_names_rank3_parts_only_where_there_are_some(parts, grid_note, caplog,
                                                                         monkeypatch):
    monkeypatch.setattr(wrappers, "_told", set())
    with caplog.at_level(logging.WARNING, logger=wrappers.__name__):
        env = wrappers.adapt_observations(DictEnv(parts), channels_first=False, flat=True)
    line = caplog.records[-1].getMessage()
    assert line.startswith(f"observation keys {', '.join(sorted(parts))} flattened into one float32 vector")
    assert ("its rank-3 parts (board) reach RLlib's default MLP as pixels unless agent.extractor: board_cnn"
            in line) is grid_note, line
    assert env.observation_space.shape == (sum(int(np.prod(gym.spaces.flatdim(s))) for s in parts.values()),)


def test_a_discrete_observation_is_one_hot_for_rllib():
    """RLlib's default models take a Box: FrozenLake's Discrete(16) position failed inside the env runner
    ("IndexError: list index out of range", exit 1) before it was one-hot encoded here."""
    env = wrappers.adapt_observations(gym.make("FrozenLake-v1"), channels_first=False, flat=True)
    assert env.observation_space == spaces.Box(0.0, 1.0, (16,), np.float32)
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.sum() == 1.0 and obs[0] == 1.0  # the start square, one-hot
    plain = gym.make("FrozenLake-v1")  # SB3 encodes it itself
    assert wrappers.adapt_observations(plain, channels_first=False, flat=False) is plain


class IntBoxEnv(DictEnv):
    def __init__(self) -> None:
        self.observation_space, self.action_space = spaces.Box(0, 9, (5,), np.int64), spaces.Discrete(2)


def test_an_integer_box_observation_reaches_rllib_as_float32():
    """An int64 Box reached RLlib's MLP as a Long tensor: its env runners died on every sample."""
    env = wrappers.adapt_observations(IntBoxEnv(), channels_first=False, flat=True)
    assert env.observation_space.dtype == np.float32 and env.observation_space.shape == (5,)
    assert env.reset(seed=0)[0].dtype == np.float32
