"""Run directories written before the layout change (tests/fixtures/runs_v0) still evaluate and resume.

The three fixtures were written by commit 63d1af8 (before issue 13's move): SB3 PPO on CartPole (a
periodic and a final checkpoint), SB3 PPO on Pendulum (observation and reward normalisation) and RLlib
PPO on Pendulum (MeanStdFilter statistics). They are copied before use, so the originals never change.
"""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import ROOT, run_cli
from safetensors import safe_open

FIXTURES = ROOT / "tests" / "fixtures" / "runs_v0"


def _copy(name: str, tmp_path):
    run = tmp_path / name
    shutil.copytree(FIXTURES / name, run)
    return run


def _step(path) -> int:
    with safe_open(str(path), "pt") as f:
        return int(json.loads(f.metadata()["nondiff"])["num_timesteps"])


@pytest.mark.parametrize("name", ["cartpole_sb3", "pendulum_sb3"])
def test_old_sb3_run_evaluates_and_resumes(tmp_path, name):
    run = _copy(name, tmp_path)
    out = tmp_path / "eval.json"
    run_cli("evaluate.py", str(run), "--episodes", "2", "--json", str(out), check=True)
    res = json.loads(out.read_text())
    assert res["episodes"] == 2 and res["step"] == 2048
    proc = run_cli("train.py", "--resume", str(run), "--timesteps", "1024", "--quiet", check=True)
    assert "resuming" in proc.stdout and "2,048" in proc.stdout
    assert _step(run / "final" / "model.safetensors") >= 3072
    run_cli("evaluate.py", str(run), "--episodes", "1", check=True)


@pytest.mark.ray
def test_old_rllib_run_evaluates_and_resumes(tmp_path, shared_ray):
    run = _copy("pendulum_rllib", tmp_path)
    run_cli("evaluate.py", str(run), "--episodes", "2", check=True)
    proc = run_cli("train.py", "--resume", str(run), "--timesteps", "512", "--quiet", *shared_ray.flags,
                   env=shared_ray.env, check=True)
    assert "resuming" in proc.stdout
    assert _step(run / "final" / "model.safetensors") > 1024
