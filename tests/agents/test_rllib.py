"""The RLlib backend on a real local Ray: same CLI, run directory, metric names, checkpoints and evaluate.py."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents import checkpoint

pytestmark = pytest.mark.ray

SMALL = ["--backend", "rllib", "--num-env-runners", "1", "--quiet", "--num-envs", "4", "--set", "agent.n_steps=128",
         "--set", "agent.batch_size=128", "--set", "agent.n_epochs=4", "--set", "rllib.num_cpus=2"]


def test_rllib_trains_evaluates_and_resumes(tmp_path):
    run = tmp_path / "run"
    run_cli("train.py", "--env", "CartPole-v1", "--timesteps", "3000", "--seed", "0", "--run-dir", str(run),
            "--set", "eval.every=1500", "--set", "eval.episodes=3", "--set", "train.checkpoint_every=1500", *SMALL,
            timeout=600, check=True)
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    for tag in ("rollout/ep_rew_mean", "eval/mean_reward", "time/fps", "train/policy_loss"):
        assert tag in acc.Tags()["scalars"], tag
    tensors, meta = checkpoint.load(run / "final" / "model.safetensors")
    assert meta["backend"] == "rllib" and meta["num_timesteps"] >= 3000 and any(k.startswith("module/") for k in tensors)

    out = tmp_path / "e.json"
    run_cli("evaluate.py", str(run), "--episodes", "3", "--json", str(out), check=True)
    res = json.loads(out.read_text())
    assert res["episodes"] == 3 and res["mean_return"] > 0

    step = meta["num_timesteps"]
    resumed = run_cli("train.py", "--resume", str(run), "--timesteps", "1000", "--quiet", timeout=600, check=True)
    assert f"at step {step:,}" in resumed.stdout
    _, meta2 = checkpoint.load(run / "final" / "model.safetensors")
    assert meta2["num_timesteps"] >= step + 1000
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("time/fps")]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)


def test_watchdog_metrics_come_back_from_env_runners(tmp_path, heater):
    run = tmp_path / "run"
    run_cli("train.py", "--env", "process", "--set", f"env.command={heater} --crash-after 300", "--timesteps",
            "2500", "--run-dir", str(run), "--set", "eval.every=0", *SMALL, timeout=600, check=True)
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    crashes = acc.Scalars("env/faults_by_kind/crash")[-1].value
    restarts = acc.Scalars("env/restarts")[-1].value
    # 4 envs, each program crashes at its 300th step: at least 4 crashes in 2,500 steps, each one restarted
    assert crashes >= 4 and restarts == crashes
    assert "env/step_latency_ms_mean" in acc.Tags()["scalars"]
