"""A checkpoint's policy tensors that do not fit the policy are refused in one line that names them: the
missing, the unexpected and the misshapen ones, the first few of each (torch's own message is several lines,
and its first says only "Error(s) in loading state_dict")."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.policies import ActorCriticPolicy

from agents.run.tensorcheck import load_policy_state
from envs.errors import CheckpointError

PATH = Path("run/final/model.safetensors")


def policy() -> ActorCriticPolicy:
    return ActorCriticPolicy(gym.spaces.Box(-1, 1, (3,), np.float32), gym.spaces.Discrete(2), lambda _: 0.0,
                             net_arch=[8])


def test_a_fitting_state_loads():
    source, target = policy(), policy()
    load_policy_state(target, source.state_dict(), PATH)
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values(),
                                                  strict=True))


def test_missing_unexpected_and_misshapen_tensors_are_named():
    state = policy().state_dict()
    state["renamed.weight"] = state.pop("action_net.weight")  # missing one, one unexpected
    for name in ("mlp_extractor.policy_net.0.weight", "value_net.bias"):
        del state[name]
    state["value_net.weight"] = torch.zeros(1, 9)
    with pytest.raises(CheckpointError) as e:
        load_policy_state(policy(), state, PATH, "policy/blue/")
    assert str(e.value) == (
        f"checkpoint {str(PATH)!r} does not fit this policy (3 tensors missing: "
        "'policy/blue/mlp_extractor.policy_net.0.weight', 'policy/blue/action_net.weight', "
        "'policy/blue/value_net.bias'; 1 tensor unexpected: 'policy/blue/renamed.weight'; "
        "'policy/blue/value_net.weight' has shape (1, 9), this policy's (1, 8)); evaluate it with the config "
        "it was trained with")
