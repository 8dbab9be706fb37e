"""The amortised network as a CNN on the features' picture (``blackbox.amortised_net: cnn``) on the renderer:
it learns, it round-trips through train.py's checkpoint into evaluate.py, and a problem without a picture
is refused in one line. The set loss (``blackbox.amortised_loss: set``) on objects the data cannot tell
apart."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from bumps import Bumps
from conftest import run_cli
from safetensors import safe_open
from test_strategies import Quadratic, settings

import envs  # noqa: F401
from agents.blackbox.amortised import AmortisedStrategy
from envs.errors import UserError


def test_cnn_amortised_network_learns_the_renderer():
    torch.set_num_threads(1)
    pb = gym.make("nondiff/Renderer-v0", image_size=32).unwrapped.problem
    assert pb.feature_image() == (16, 16, 4)
    strat = AmortisedStrategy(pb, settings(batch=512, epochs=10, hidden=[64], amortised_net="cnn"), 0)
    assert any(isinstance(m, torch.nn.Conv2d) for m in strat.net.modules())
    rng = np.random.default_rng(0)
    for _ in range(2):
        strat.train_round(rng)
    insts = [pb.sample_instance(np.random.default_rng(900 + i)) for i in range(16)]
    c0 = pb.forward_calls
    iou = [pb.score(strat.solve(i, rng), i)["iou"] for i in insts]
    assert pb.forward_calls == c0  # an answer is one pass of the network
    start = [pb.score(pb.start(), i)["iou"] for i in insts]
    assert np.mean(iou) > 0.5 and np.mean(iou) > np.mean(start) + 0.3, (np.mean(iou), np.mean(start))


def test_cli_cnn_round_trips_through_the_checkpoint(tmp_path):
    run = tmp_path / "run"
    proc = run_cli("train.py", "--env", "renderer", "--backend", "blackbox", "--algo", "amortised",
                   "--timesteps", "256", "--seed", "0", "--quiet", "--run-dir", str(run),
                   "--set", "env.image_size=32", "--set", "blackbox.batch=256", "--set", "blackbox.epochs=3",
                   "--set", "blackbox.hidden=[32]", "--set", "blackbox.amortised_net=cnn",
                   "--set", "blackbox.refine_calls=0", "--set", "eval.every=0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    model = run / "final" / "model.safetensors"
    with safe_open(str(model), "pt") as f:
        keys = set(f.keys())
    assert any(k.startswith("net/1.conv.") for k in keys), sorted(keys)[:8]
    out = tmp_path / "e.json"
    proc = run_cli("evaluate.py", str(run), "--episodes", "3", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert res["forward_calls_per_instance"] <= 1  # the network's answer, measured at most once

    # the same config with the MLP cannot load the CNN's tensors: one line naming the mismatch
    from agents.blackbox.backend import BlackBoxBackend
    from agents.config import load_yaml, validate
    from agents.run import checkpoint
    from agents.run.resolved import resolve_env
    from envs.errors import CheckpointError

    raw = load_yaml(run / "config.yaml")
    raw["blackbox"]["amortised_net"] = "mlp"
    with pytest.raises(CheckpointError, match=r"does not fit this strategy"):
        ckpt, cfg = checkpoint.load(model), validate(raw, "test")
        BlackBoxBackend.load(ckpt, cfg,
                             resolve_env(cfg, BlackBoxBackend.channels_first, spaces=ckpt.header.spaces()))


def test_cnn_refuses_a_problem_without_a_picture():
    with pytest.raises(UserError, match=r"amortised_net=cnn .* declares none .*amortised_net=mlp"):
        AmortisedStrategy(Quadratic(), settings(amortised_net="cnn"), 0)


class TwinBumps(Bumps):
    """Two equal bumps on a line at ``x[0]`` and ``x[1]``: the data cannot tell which is which."""

    def score(self, x, instance):
        t = instance.known_truth()
        return {"param_error": float(min(np.abs(x - t).mean(), np.abs(x[::-1] - t).mean()))}


@pytest.mark.parametrize("loss", ["set", "slots"])
def test_set_loss_places_objects_that_slots_average(loss):
    torch.set_num_threads(1)
    pb = TwinBumps()
    strat = AmortisedStrategy(pb, settings(batch=1024, epochs=40, hidden=[64], amortised_loss=loss), 0)
    strat.train_round(np.random.default_rng(0))
    err = [pb.score(strat.solve(i, np.random.default_rng(0)), i)["param_error"]
           for i in (pb.sample_instance(np.random.default_rng(70 + k)) for k in range(20))]
    if loss == "set":
        assert np.median(err) < 0.03, err
    else:  # each output answers the mean of the two places: the test above must fail
        assert np.median(err) > 0.08, err
