"""Checkpoint files: atomic, integrity-checked, and never unpickled."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from gymnasium import spaces

from agents.run import checkpoint
from agents.run.header import FORMAT, CheckpointHeader
from envs.errors import CheckpointError
from envs.spaces import space_from_json, space_to_json


def _meta(step=7):
    return checkpoint.base_meta("test", "ppo", step, 0, (spaces.Box(-1, 1, (3,)), spaces.Discrete(2)), {})


def test_round_trip(tmp_path):
    path = tmp_path / "c.safetensors"
    checkpoint.save(path, {"w": torch.arange(4.0)}, _meta(7))
    ckpt = checkpoint.load(path)
    assert torch.equal(ckpt.tensors["w"], torch.arange(4.0)) and ckpt.header.num_timesteps == 7
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_truncated_file_is_reported_as_corrupted(tmp_path):
    path = tmp_path / "c.safetensors"
    checkpoint.save(path, {"w": torch.zeros(100)}, {})
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="corrupted"):
        checkpoint.load(path)


class _Payload:
    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return (open, (str(self.sentinel), "w"))


def test_pickle_payload_is_refused_and_never_executed(tmp_path):
    sentinel = tmp_path / "pwned"
    for name in ("model.safetensors", "model.pt", "model.pkl"):
        path = tmp_path / name
        path.write_bytes(pickle.dumps(_Payload(sentinel)))
        with pytest.raises(CheckpointError, match="pickle payload"):
            checkpoint.load(path)
    assert not sentinel.exists()


def test_rng_state_round_trip():
    tensors, meta = checkpoint.rng_state()
    a = (np.random.rand(), torch.rand(1).item())
    checkpoint.set_rng_state(tensors, meta)
    assert (np.random.rand(), torch.rand(1).item()) == a


@pytest.mark.parametrize("space", [
    spaces.Box(-1, 1, (3,), np.float32), spaces.Discrete(4), spaces.MultiDiscrete([2, 3]),
    spaces.Dict({"a": spaces.Discrete(2), "b": spaces.Box(0, 255, (4, 4, 1), np.uint8)}),
], ids=["box", "discrete", "multidiscrete", "dict"])
def test_space_description_round_trip(space):
    assert space_from_json(space_to_json(space)) == space


def test_space_mismatch_is_refused():
    header = CheckpointHeader(FORMAT, "sb3", "ppo", 0, 0, space_to_json(spaces.Box(-1, 1, (3,))),
                              space_to_json(spaces.Discrete(2)), {})
    with pytest.raises(CheckpointError, match="observation space"):
        checkpoint.check_spaces(header, spaces.Box(-1, 1, (4,)), spaces.Discrete(2), "test")
