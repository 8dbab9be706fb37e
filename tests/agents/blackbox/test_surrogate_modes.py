"""Surrogate (a) and (b) on an analytic black box with a known optimum; chains from train.py / evaluate.py."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from conftest import run_cli
from safetensors import safe_open
from test_strategies import Quadratic, settings

from agents.blackbox.chain import ChainStrategy
from agents.blackbox.surrogate import SurrogateStrategy
from envs.errors import UserError
from envs.inverse import Instance


def trained(**kw):
    torch.set_num_threads(1)
    pb = Quadratic()
    strat = SurrogateStrategy(pb, settings(batch=256, epochs=150, hidden=[64], starts=1, gd_lr=0.02,
                                           grad_checks=0, **kw), 0)
    strat.train_round(np.random.default_rng(0))
    return pb, strat, [pb.sample_instance(np.random.default_rng(50 + i)) for i in range(3)]


@pytest.mark.parametrize("gd_steps", [50, 0], ids=["descent", "no-descent"])
def test_trust_region_converges_from_the_first_guess_and_counts_its_calls(gd_steps):
    pb, strat, insts = trained(trust_calls=6, trust_radius=0.2, local_steps=10, gd_steps=gd_steps)
    rng, errs = np.random.default_rng(1), []
    for inst in insts:
        c0 = pb.forward_calls
        x = strat.solve(inst, rng, pb.start())  # a chain's seed: the trust region starts there, checked
        assert pb.forward_calls - c0 == 6  # exactly trust_calls real calls, the centre's included
        assert strat.last_misfit == pytest.approx(pb.data_misfit(pb.simulate(x), inst))
        errs.append(pb.score(x, inst)["param_error"])
    start = np.mean([pb.score(pb.start(), i)["param_error"] for i in insts])
    if gd_steps:
        assert np.mean(errs) < 0.04 < 0.5 * start, errs
    else:  # no gradient step: every candidate is the centre, the answer stays the first guess
        assert np.mean(errs) == pytest.approx(start)


@pytest.mark.parametrize("inverse_epochs", [150, 0], ids=["trained", "untrained"])
def test_inverse_network_through_the_frozen_surrogate_answers_without_a_call(inverse_epochs):
    pb, strat, insts = trained(inverse_epochs=inverse_epochs or 1, gd_steps=0)
    if not inverse_epochs:  # the same network without its data-consistency training: fresh weights
        for m in strat.inv.modules():
            if isinstance(m, torch.nn.Linear):
                m.reset_parameters()
    c0 = pb.forward_calls
    errs = [pb.score(strat.solve(i, np.random.default_rng(0)), i)["param_error"] for i in insts]
    assert pb.forward_calls == c0  # (a) answers in one pass of g, no black-box call
    if inverse_epochs:
        assert np.mean(errs) < 0.05, errs
    else:
        assert np.mean(errs) > 0.1, errs


def test_inverse_network_learns_without_the_truth():
    """(a) sees data only: training it on a bank whose parameters are overwritten gives the same network."""
    _, strat, _ = trained(inverse_epochs=5, gd_steps=0)
    blind = copy.deepcopy(strat)
    blind.bank.x = [np.zeros_like(v) for v in blind.bank.x]  # no truth at all
    blind.bank._cache = None
    _, c, f = strat.bank.tensors()
    _, c2, f2 = blind.bank.tensors()
    assert strat.fit_inverse(c, f) == blind.fit_inverse(c2, f2)
    probe = torch.rand(4, f.shape[1] + c.shape[1])
    assert torch.equal(strat.inv(probe), blind.inv(probe))


def test_chain_seeds_each_stage_with_the_previous_answer():
    pb = Quadratic()
    cfg = settings(chain=["surrogate", "cma"], batch=256, epochs=150, hidden=[64], inverse_epochs=150,
                   gd_steps=0, trust_calls=4, local_steps=5, grad_checks=0, calls_per_instance=6,
                   refine_sigma=0.02)
    chain = ChainStrategy(pb, cfg, 0)
    assert chain.stages[0][1].bank is chain.bank and chain.stages[0][1].cfg.refine_calls == 0
    c0 = pb.forward_calls
    chain.train_round(np.random.default_rng(0))
    assert pb.forward_calls - c0 == 256  # one shared bank, no gradient checks
    inst = pb.sample_instance(np.random.default_rng(7))
    c0 = pb.forward_calls
    x = chain.solve(inst, np.random.default_rng(0))
    assert pb.forward_calls - c0 == 4 + 6  # the cma stage reuses the surrogate's measured misfit
    assert pb.score(x, inst)["param_error"] < 0.05


def test_cli_chain_trains_checkpoints_and_evaluates(tmp_path):
    run = tmp_path / "run"
    proc = run_cli("train.py", "--env", "seismic", "--backend", "blackbox", "--algo", "chain",
                   "--timesteps", "512", "--seed", "0", "--quiet", "--run-dir", str(run),
                   "--set", "blackbox.chain=[amortised, cma]", "--set", "blackbox.batch=256",
                   "--set", "blackbox.epochs=5", "--set", "blackbox.hidden=[64]",
                   "--set", "blackbox.calls_per_instance=8", "--set", "eval.every=0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    model = next(run.rglob("*.safetensors"))
    with safe_open(str(model), "pt") as f:
        keys = set(f.keys())
    assert "bank/x" in keys and any(k.startswith("amortised/net/") for k in keys), sorted(keys)[:5]
    out = tmp_path / "e.json"
    proc = run_cli("evaluate.py", str(run), "--episodes", "3", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert 1 <= res["forward_calls_per_instance"] <= 8  # the amortised answer is measured once, then CMA-ES

    # a checkpoint whose tensors do not fit the strategy this config builds: one line naming the mismatch
    from agents.blackbox.backend import BlackBoxBackend
    from agents.config import load_yaml, validate
    from agents.run import checkpoint
    from agents.run.resolved import resolve_env
    from envs.errors import CheckpointError

    raw = load_yaml(run / "config.yaml")
    raw["blackbox"]["hidden"] = [32]
    with pytest.raises(CheckpointError,
                       match=r"does not fit this strategy \(size mismatch for .*; use the config"):
        ckpt, cfg = checkpoint.load(model), validate(raw, "test")
        BlackBoxBackend.load(ckpt, cfg,
                             resolve_env(cfg, BlackBoxBackend.channels_first, spaces=ckpt.header.spaces()))


def test_chain_refuses_a_bad_order_and_an_empty_chain():
    with pytest.raises(UserError, match="amortised only first.*--set blackbox.chain"):  # one line, exit 2
        settings(chain=["cma", "amortised"])
    with pytest.raises(UserError, match=r"needs its stages in blackbox.chain.*--set"):
        ChainStrategy(Quadratic(), settings(), 0)


class Dial(Quadratic):
    """An analytic black box with an angle: data = (x₀, cos 2πx₁, sin 2πx₁); x₁ = 0 and 1 are one angle."""

    def __init__(self, periodic: bool) -> None:
        super().__init__()
        self.param_dim, self.wraps = 2, periodic

    def periodic(self):
        return np.array([False, self.wraps])

    def simulate(self, x, context=None):
        return np.array([x[0], np.cos(2 * np.pi * x[1]), np.sin(2 * np.pi * x[1])])

    def sample_instance(self, rng):
        x = np.array([rng.uniform(0.2, 0.8), rng.uniform(0.0, 1.0)])
        self.forward_calls += 1
        return Instance(self.simulate(x), x)

    def score(self, x, instance):
        d = abs(x[1] - instance.known_truth()[1]) % 1.0
        return {"param_error": float(abs(x[0] - instance.known_truth()[0]) + min(d, 1 - d))}


@pytest.mark.parametrize("periodic", [True, False], ids=["wraps", "clamped"])
def test_trust_region_crosses_the_seam_of_a_periodic_parameter(periodic):
    """The truth's angle lies just below 1, the seed's just above 0: a periodic parameter (fed to f̂ as
    sin/cos, not cut by [0, 1]) reaches it across the seam; clamped to [0, 1] it stops at 0."""
    torch.set_num_threads(1)
    pb = Dial(periodic)
    strat = SurrogateStrategy(pb, settings(batch=256, epochs=150, hidden=[64], starts=1, gd_lr=0.02,
                                           grad_checks=0, trust_calls=8, trust_radius=0.2, local_steps=10,
                                           gd_steps=50), 0)
    strat.train_round(np.random.default_rng(0))
    errs = []
    for truth in (0.93, 0.95, 0.97):
        inst = Instance(pb.simulate(np.array([0.5, truth])), np.array([0.5, truth]))
        x = strat.solve(inst, np.random.default_rng(1), np.array([0.5, 0.06]))
        assert 0.0 <= x[1] < 1.0
        errs.append(pb.score(x, inst)["param_error"])
    if periodic:
        assert max(errs) < 0.02, errs
    else:  # from 0.06 the nearest way to the truth is down through 0, which the box does not allow
        assert min(errs) > 0.02, errs
