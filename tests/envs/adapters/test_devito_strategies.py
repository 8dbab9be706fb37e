"""The Devito adapter with the black-box strategies and PPO on the small (CI) grid: amortised inversion on
held-out instances, and PPO through train.py and evaluate.py as every other inverse adapter."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import run_cli

import envs  # noqa: F401  (registers nondiff/Devito-v0)
from agents.blackbox.amortised import AmortisedStrategy
from agents.config import validate


@pytest.mark.slow
@pytest.mark.ci
def test_amortised_inversion_beats_the_prior_mean_within_ten_calls():
    torch.set_num_threads(1)
    pb = gym.make("nondiff/Devito-v0", preset="small").unwrapped.problem
    cfg = validate({"blackbox": {"batch": 256, "refine_calls": 9}}, "test").blackbox
    strat = AmortisedStrategy(pb, cfg, 0)
    rng = np.random.default_rng(0)
    while pb.forward_calls < 1024:
        strat.train_round(rng)
    errs, prior, calls = [], [], []
    for i in range(8):
        inst = pb.sample_instance(np.random.default_rng(50_000 + i))
        c0 = pb.forward_calls
        errs.append(pb.score(strat.solve(inst, rng), inst)["rel_model_error"])
        calls.append(pb.forward_calls - c0)
        prior.append(pb.score(pb.start(), inst)["rel_model_error"])
    assert max(calls) <= 10
    # measured: 0.055 against the prior mean's 0.162 (1,024 training simulations, 9 refinement calls of
    # CMA-ES; 512 gave 0.074)
    assert np.mean(errs) < 0.08 and np.mean(errs) < 0.5 * np.mean(prior), (errs, prior)


@pytest.mark.slow
@pytest.mark.ci
def test_ppo_trains_in_worker_processes_and_evaluates_with_a_figure(tmp_path):
    run = tmp_path / "ppo"
    run_cli("train.py", "--env", "devito", "--set", "env.preset=small", "--timesteps", "128", "--num-envs",
            "2", "--seed", "0", "--set", "agent.n_steps=64", "--set", "agent.batch_size=64", "--set",
            "agent.n_epochs=1", "--set", "eval.every=0", "--run-dir", str(run), "--quiet", check=True)
    assert "vec_env: subproc" in (run / "config.yaml").read_text()  # one Devito process per env worker
    png, out = tmp_path / "devito.png", tmp_path / "eval.json"
    run_cli("evaluate.py", str(run), "--episodes", "2", "--figure", str(png), "--json", str(out), check=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    res = json.loads(out.read_text())
    assert res["mean_length"] == 4
    assert set(res["metrics"]) == {"rel_model_error", "param_error", "prior_mean_error", "data_misfit"}
