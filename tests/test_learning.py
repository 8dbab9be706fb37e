"""Learning tests: the shipped robot config must really solve the task (marked slow; CI runs it)."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli


@pytest.mark.slow
@pytest.mark.ci
def test_robot_reaches_within_2cm(tmp_path):
    run = tmp_path / "run"
    run_cli("train.py", "--env", "robot", "--seed", "0", "--run-dir", str(run), "--quiet", timeout=900, check=True)
    out = tmp_path / "eval.json"
    run_cli("evaluate.py", str(run), "--episodes", "100", "--json", str(out), timeout=300, check=True)
    res = json.loads(out.read_text())
    # 2 cm is 10% of the arm's reach; plain PPO on Gymnasium's Reacher-v5 reaches it in ~19-31% of episodes.
    assert res["success_rate"] >= 0.6, res
    assert res["random"]["success_rate"] <= 0.1, res
    assert res["mean_return"] > res["random_mean_return"] + 3, res


@pytest.mark.slow
@pytest.mark.ci
def test_c_heater_through_the_bridge_is_solved(tmp_path, heater):
    run = tmp_path / "run"
    run_cli("train.py", "--env", "process", "--set", f"env.command={heater}", "--seed", "0", "--run-dir", str(run),
            "--quiet", timeout=600, check=True)
    out = tmp_path / "eval.json"
    run_cli("evaluate.py", str(run), "--episodes", "50", "--json", str(out), timeout=300, check=True)
    res = json.loads(out.read_text())
    # solved: the temperature ends within 0.5 °C of the set point
    assert res["success_rate"] >= 0.9, res
    assert res["random"]["success_rate"] <= 0.1, res
