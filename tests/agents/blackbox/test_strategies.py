"""Black-box strategies on real forward models: CMA-ES, amortised inversion, the surrogate; the CLI end
to end."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import run_cli

import envs  # noqa: F401
from agents.blackbox.amortised import AmortisedStrategy
from agents.blackbox.cma import CMAStrategy
from agents.blackbox.surrogate import SurrogateStrategy
from agents.config import validate
from agents.run.checkpoint import read_header
from envs.inverse import Instance, InverseProblem


def settings(**kw):
    return validate({"blackbox": kw}, "test").blackbox


def seismic_problem():
    torch.set_num_threads(1)
    return gym.make("nondiff/Seismic-v0").unwrapped.problem


def held_out(problem, n=8):
    return [problem.sample_instance(np.random.default_rng(900 + i)) for i in range(n)]


def test_cma_beats_the_prior_mean_on_seismic_within_its_budget():
    pb = seismic_problem()
    strat = CMAStrategy(pb, settings(calls_per_instance=150), 0)
    rng = np.random.default_rng(0)
    errs, prior, calls = [], [], []
    for inst in held_out(pb, 6):
        c0 = pb.forward_calls
        errs.append(pb.score(strat.solve(inst, rng), inst)["rel_model_error"])
        calls.append(pb.forward_calls - c0)
        prior.append(pb.score(pb.start(), inst)["rel_model_error"])
    assert max(calls) <= 150
    assert np.mean(errs) < np.mean(prior), (errs, prior)  # 150 calls: better than the prior mean, far from 0


def test_amortised_network_beats_the_prior_mean_on_seismic():
    pb = seismic_problem()
    strat = AmortisedStrategy(pb, settings(batch=256, epochs=15, hidden=[128, 128]), 0)
    rng = np.random.default_rng(0)
    for _ in range(2):
        strat.train_round(rng)
    insts = held_out(pb)
    c0 = pb.forward_calls
    errs = [pb.score(strat.solve(i, rng), i)["rel_model_error"] for i in insts]
    assert pb.forward_calls == c0  # one forward pass of the network, no call of the black box
    prior = [pb.score(pb.start(), i)["rel_model_error"] for i in insts]
    assert np.mean(errs) < 0.8 * np.mean(prior), (errs, prior)


class Quadratic(InverseProblem):
    """An analytic black box with a known optimum: data = A x (A fixed, well conditioned)."""

    score_key = "param_error"

    def __init__(self) -> None:
        super().__init__()
        self.param_dim = 3
        self.a = np.array([[1.0, 0.3, 0.0], [0.0, 1.0, -0.4], [0.2, 0.0, 1.0], [0.5, 0.5, 0.5]])

    def simulate(self, x, context=None):
        return self.a @ x

    def data_misfit(self, data, instance):
        return float(np.linalg.norm(data - instance.data))

    def sample_instance(self, rng):
        x = rng.uniform(0.1, 0.9, 3)
        self.forward_calls += 1
        return Instance(self.a @ x, x)

    def score(self, x, instance):
        return {"param_error": float(np.abs(x - instance.known_truth()).mean())}


@pytest.mark.parametrize("gd_steps", [300, 0], ids=["descent", "no-descent"])
def test_surrogate_descent_converges_on_an_analytic_black_box(gd_steps):
    pb = Quadratic()
    strat = SurrogateStrategy(pb, settings(batch=256, epochs=200, hidden=[64], starts=1, gd_steps=gd_steps,
                                           gd_lr=0.02, grad_checks=2), 0)
    rng = np.random.default_rng(0)
    out = strat.train_round(rng)
    assert out["train/grad_cosine"] > 0.9  # a linear black box: the surrogate's gradients must be right
    insts = [pb.sample_instance(np.random.default_rng(50 + i)) for i in range(5)]
    errs = [pb.score(strat.solve(i, rng), i)["param_error"] for i in insts]
    true_misfit = [pb.data_misfit(pb.simulate(strat.solve(i, rng)), i) for i in insts]
    start_misfit = [pb.data_misfit(pb.simulate(pb.start()), i) for i in insts]
    if gd_steps:
        assert np.mean(errs) < 0.05 and np.mean(true_misfit) < 0.3 * np.mean(start_misfit), errs
    else:  # without the gradient step the answer is the first guess: the test above must fail
        assert np.mean(errs) > 0.1


@pytest.fixture(scope="module")
def cma_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("bb") / "run"
    proc = run_cli("train.py", "--env", "seismic", "--backend", "blackbox", "--algo", "cma",
                   "--timesteps", "120", "--seed", "0", "--quiet", "--run-dir", str(run),
                   "--set", "blackbox.calls_per_instance=60", "--set", "eval.every=0",
                   "--set", "train.checkpoint_every=60")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return run


def test_cli_trains_checkpoints_and_evaluates_against_random(cma_run, tmp_path):
    # the final checkpoint itself, with the whole budget in it; a step checkpoint alone is not enough
    assert read_header(cma_run / "final" / "model.safetensors").num_timesteps >= 120
    assert list((cma_run / "checkpoints").glob("step_*.safetensors"))  # train.checkpoint_every=60
    out = tmp_path / "e.json"
    proc = run_cli("evaluate.py", str(cma_run), "--episodes", "4", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert res["forward_calls_per_instance"] <= 60
    assert res["metrics"]["data_misfit"] < res["random_metrics"]["data_misfit"], res  # what CMA-ES minimises


def test_cli_resumes_the_run(cma_run):
    final = cma_run / "final" / "model.safetensors"
    before = read_header(final).num_timesteps
    proc = run_cli("train.py", "--resume", str(cma_run), "--timesteps", "60", "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"at step {before:,}" in proc.stdout, proc.stdout  # from where the run stopped, not from 0
    assert read_header(final).num_timesteps >= before + 60  # and it went on for the 60 steps asked


def test_cli_refuses_an_env_that_is_not_an_inverse_problem(tmp_path):
    proc = run_cli("train.py", "--env", "CartPole-v1", "--backend", "blackbox", "--algo", "cma",
                   "--timesteps", "10", "--run-dir", str(tmp_path / "r"))
    assert proc.returncode == 2, proc.stderr
    assert "not one" in proc.stderr and "renderer" in proc.stderr and "seismic" in proc.stderr
    proc = run_cli("train.py", "--env", "seismic", "--backend", "blackbox", "--timesteps", "10",
                   "--run-dir", str(tmp_path / "r2"))
    assert proc.returncode == 2 and "--algo cma|amortised|surrogate" in proc.stderr, proc.stderr
