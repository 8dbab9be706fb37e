"""The RLlib backend on a real local Ray: same CLI, run directory, metric names, checkpoints and evaluate.py.

The trainers join the session's shared private Ray (``shared_ray`` in tests/conftest.py); the Ctrl-C test
starts its own, since Ctrl-C must reach Ray's processes as well as the trainer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import ROOT, adam_steps, read_checkpoint, run_cli, scalars, undertakers_of

import envs
from agents.run.scoring import load_policy

pytestmark = pytest.mark.ray

SMALL = ["--backend", "rllib", "--num-env-runners", "1", "--quiet", "--num-envs", "4",
         "--set", "agent.n_steps=128", "--set", "agent.batch_size=128", "--set", "agent.n_epochs=4",
         "--set", "rllib.num_cpus=2"]


def test_robot_trains_evaluates_and_resumes_with_normalised_observations(tmp_path, shared_ray):
    run = tmp_path / "run"
    run_cli("train.py", "--env", "robot", "--timesteps", "3000", "--seed", "0", "--run-dir", str(run),
            "--set", "eval.every=1500", "--set", "eval.episodes=3", "--set", "train.checkpoint_every=1500",
            *SMALL, *shared_ray.flags, timeout=600, check=True, env=shared_ray.env)
    acc = scalars(run)
    for tag in ("rollout/ep_rew_mean", "eval/mean_reward", "eval/success_rate", "time/fps",
                "train/policy_gradient_loss"):
        assert tag in acc.Tags()["scalars"], tag
    tensors, meta = read_checkpoint(run / "final" / "model.safetensors")
    assert (meta["backend"] == "rllib" and meta["num_timesteps"] >= 3000
            and any(k.startswith("module/") for k in tensors))
    # configs/robot.yaml asks for normalize_obs: the MeanStdFilter statistics of the env runners are
    # in the file
    norm = meta["normalize"]
    assert norm["norm_obs"] and norm["obs_count"] >= 3000 and norm["clip_obs"] == 10.0
    mean, sum_sq = tensors["norm/obs_mean"].numpy(), tensors["norm/obs_sum_sq"].numpy()
    assert mean.shape == sum_sq.shape == (14,) and (sum_sq > 0).sum() >= 10 and np.isfinite(mean).all()

    # evaluate.py applies them without starting Ray: the same actions as the module on hand-normalised input
    backend = load_policy(run).backend
    env = envs.make("robot")
    obs, _ = env.reset(seed=1)
    std = np.sqrt(sum_sq / (norm["obs_count"] - 1))
    expected = backend.module.forward_inference(
        {"obs": torch.as_tensor(np.clip((obs - mean) / (std + 1e-6), -10, 10)[None], dtype=torch.float32)})
    action = backend.predict(obs)
    dims = env.action_space.shape[0]  # action_dist_inputs = [mean, log_std]
    want = expected["action_dist_inputs"].detach().numpy()[0, :dims].clip(env.action_space.low,
                                                                           env.action_space.high)
    np.testing.assert_allclose(action, want, rtol=1e-5, atol=1e-6)
    env.close()
    import ray

    assert not ray.is_initialized()
    out = tmp_path / "e.json"
    run_cli("evaluate.py", str(run), "--episodes", "3", "--json", str(out), check=True)
    res = json.loads(out.read_text())
    assert res["episodes"] == 3 and np.isfinite(res["mean_return"])

    # resume: the filter continues from the saved statistics instead of starting again from zero
    step = meta["num_timesteps"]
    resumed = run_cli("train.py", "--resume", str(run), "--timesteps", "1000", "--quiet", timeout=600,
                      check=True, env=shared_ray.env)
    assert f"at step {step:,}" in resumed.stdout
    tensors2, meta2 = read_checkpoint(run / "final" / "model.safetensors")
    assert meta2["num_timesteps"] >= step + 1000
    assert meta2["normalize"]["obs_count"] >= norm["obs_count"] + 1000
    # ... and Adam continues too: its step counts go on from the saved ones (a fresh optimiser would be lower)
    assert adam_steps(meta2) > adam_steps(meta) > 0
    assert any(k.startswith("optim/") and "exp_avg_sq" in k for k in tensors2)
    steps = [e.step for e in scalars(run).Scalars("time/fps")]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)


def test_watchdog_metrics_come_back_from_env_runners(tmp_path, heater, shared_ray):
    run = tmp_path / "run"
    proc = run_cli("train.py", "--env", "process", "--set", f"env.command={heater} --crash-after 300",
                   "--timesteps", "2500", "--run-dir", str(run), "--set", "eval.every=0", *SMALL,
                   *shared_ray.flags, timeout=600, check=True, env=shared_ray.env)
    said = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("env: crash fault")]
    assert said and "(no detail)" not in said[0], said  # the runner's own detail, fetched by the driver
    acc = scalars(run)
    crashes = acc.Scalars("env/faults_by_kind/crash")[-1].value
    restarts = acc.Scalars("env/restarts")[-1].value
    # 4 envs, each program crashes at its 300th step: at least 4 crashes in 2,500 steps, each one restarted
    assert crashes >= 4 and restarts == crashes
    assert {"env/step_latency_ms_p50", "env/step_latency_ms_p99"} <= set(acc.Tags()["scalars"])  # as on SB3


def test_ctrl_c_writes_a_loadable_checkpoint(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "--env", "robot", "--timesteps", "1000000", "--seed", "0",
         "--run-dir", str(run), "--set", "eval.every=0", "--set", "train.checkpoint_every=512", *SMALL],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list((run / "checkpoints").glob("step_*.safetensors")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        # what Ctrl-C in a terminal does: the whole group, Ray's processes too
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    assert f"resume with:  python train.py --resume {run}" in out and "Traceback" not in err
    # its Ray stopped cleanly: the undertaker (agents/run/raywatch.py) found nothing to kill and is gone
    assert "nondiff:" not in err and undertakers_of(proc.pid) == []
    path = run / "final" / "model.safetensors"
    tensors, meta = read_checkpoint(path)
    assert meta["num_timesteps"] >= 512 and meta["normalize"]["obs_count"] >= 512
    backend = load_policy(run).backend
    env = envs.make("robot")
    obs, _ = env.reset(seed=0)
    assert env.action_space.contains(backend.predict(obs))
    env.close()


@pytest.mark.slow
def test_robot_reaches_the_sb3_threshold_on_rllib(tmp_path):
    """docs/results.md, "RLlib vs SB3 on robot": 0.96 at 2.1 cm with seed 0 (SB3: 0.99); not
    in CI (~6-10 min)."""
    run = tmp_path / "run"
    run_cli("train.py", "--env", "robot", "--backend", "rllib", "--seed", "0", "--run-dir", str(run),
            "--quiet", timeout=1800, check=True)
    out = tmp_path / "eval.json"
    run_cli("evaluate.py", str(run), "--episodes", "100", "--json", str(out), timeout=300, check=True)
    res = json.loads(out.read_text())
    assert res["success_rate"] >= 0.9, res
    assert res["mean_return"] > res["random_mean_return"] + 10, res
