"""Learning tests on the built-in envs (slow). CI runs the robot and C-heater ones; the two toys'
(renderer, seismic) run in ``make test-all``. CI tests the real renderer (Blender) and simulator (Devito)."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli


def train_and_evaluate(tmp_path, *train_args: str, episodes: int, timeout: float = 900) -> dict:
    """Train with ``train.py --seed 0 ARGS`` into a fresh run directory, then evaluate it; the JSON result."""
    run, out = tmp_path / "run", tmp_path / "eval.json"
    run_cli("train.py", *train_args, "--seed", "0", "--run-dir", str(run), "--quiet", timeout=timeout,
            check=True)
    run_cli("evaluate.py", str(run), "--episodes", str(episodes), "--json", str(out), timeout=300, check=True)
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.ci
def test_robot_reaches_within_2cm(tmp_path):
    # 120k of the config's 300k steps (the linear lr schedule anneals over the 120k): 0.94 success here
    # in 95 s
    res = train_and_evaluate(tmp_path, "--env", "robot", "--timesteps", "120000", episodes=100)
    # 2 cm is 10% of the arm's reach; plain PPO on Gymnasium's Reacher-v5 reaches it in ~19-31% of episodes.
    assert res["success_rate"] >= 0.6, res
    assert res["random"]["success_rate"] <= 0.1, res
    assert res["mean_return"] > res["random_mean_return"] + 3, res


@pytest.mark.slow
@pytest.mark.ci
def test_c_heater_through_the_bridge_is_solved(tmp_path, heater):
    res = train_and_evaluate(tmp_path, "--env", "process", "--set", f"env.command={heater}", episodes=50,
                             timeout=600)
    # solved: the temperature ends within 0.5 °C of the set point
    assert res["success_rate"] >= 0.9, res
    assert res["random"]["success_rate"] <= 0.1, res


@pytest.mark.slow  # make test-all: CI keeps the bridge and engine learning tests
def test_seismic_inversion_beats_random_and_prior_mean(tmp_path):
    # ≈ 1/4 of the shipped budget: ≈ 60-120 s here, depending on how busy the 2 cores are
    res = train_and_evaluate(tmp_path, "--env", "seismic", "--timesteps", "24000", "--set", "eval.every=0",
                             episodes=100, timeout=600)
    trained, random = res["metrics"]["rel_model_error"], res["random_metrics"]["rel_model_error"]
    # 100 fixed seeds: random ≈ 0.375, the prior mean ≈ 0.275
    assert trained < random - 0.1, res
    assert trained < res["metrics"]["prior_mean_error"], res


@pytest.mark.slow  # make test-all: CI keeps the bridge and engine learning tests
def test_renderer_policy_beats_random_and_its_first_guess(tmp_path):
    # 30k steps of configs/renderer.yaml (IoU 0.58 here in ≈ 1.5 min); the full 400k run is in docs/results.md
    res = train_and_evaluate(tmp_path, "--env", "renderer", "--timesteps", "30000", "--set", "eval.every=0",
                             episodes=50)
    # the first guess (centred, mid-size) overlaps a target with IoU ≈ 0.2 and random refinement drifts
    # to ≈ 0.1
    assert res["random_metrics"]["iou"] <= 0.2, res
    assert res["metrics"]["iou"] >= 0.35, res
    assert res["metrics"]["param_error"] < res["random_metrics"]["param_error"] - 0.05, res
