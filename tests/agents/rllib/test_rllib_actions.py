"""agents/rllib/actions.py: the actions ``predict`` reads off the module's outputs, per action space."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.rllib.actions import pick
from envs.errors import UserError


def test_multidiscrete_reads_one_block_of_logits_per_part():
    space = gym.spaces.MultiDiscrete([3, 2], start=[1, -1])
    logits = torch.tensor([[0.0, 5.0, 0.0, 2.0, 1.0], [9.0, 0.0, 0.0, 0.0, 3.0]])
    actions = pick(space, logits, deterministic=True, squashed=False)
    assert actions.tolist() == [[2, -1], [1, 0]] and actions.dtype == space.dtype
    torch.manual_seed(0)
    sampled = pick(space, torch.zeros(500, 5), deterministic=False, squashed=False)
    assert all(space.contains(a) for a in sampled)
    assert set(sampled[:, 0].tolist()) == {1, 2, 3} and set(sampled[:, 1].tolist()) == {-1, 0}


def test_discrete_and_box_as_before():
    assert pick(gym.spaces.Discrete(3, start=2), torch.tensor([[0.0, 1.0, 0.5]]), True, False).tolist() == [3]
    box = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    out = pick(box, torch.tensor([[3.0, -0.5, 0.0, 0.0]]), True, False)  # means, then log-stds
    assert out.tolist() == [[1.0, -0.5]] and out.dtype == np.float32  # clipped onto the bounds
    assert pick(box, torch.tensor([[0.0, 0.0, 0.0, 0.0]]), True, True).tolist() == [[0.0, 0.0]]  # tanh(0)


def test_any_other_space_is_one_line():
    with pytest.raises(UserError, match=r"action space MultiBinary\(3\) is not supported"):
        pick(gym.spaces.MultiBinary(3), torch.zeros(1, 3), True, False)
