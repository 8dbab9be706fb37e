"""RLlib APPO and SAC on a real local Ray: train, checkpoint, evaluate.py without Ray, resume; a bridge
program SIGKILLed inside an env runner; bad input refused with one line before Ray starts. The trainers join
the session's shared private Ray (``shared_ray`` in tests/conftest.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, adam_steps, pids_of, read_checkpoint, run_cli, scalars

import train

pytestmark = pytest.mark.ray

COMMON = ["--backend", "rllib", "--quiet", "--set", "rllib.num_cpus=2"]


def _ancestors(pid: int) -> list[str]:
    """The command lines of ``pid``'s parent, grandparent, … (a bridge program runs under its reaper)."""
    names = []
    while pid > 1:
        pid = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        names.append((Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode())
    return names


def test_appo_survives_a_bridge_program_killed_inside_an_env_runner(tmp_path, heater, shared_ray):
    binary = str(tmp_path / "heater_appo")  # our own copy: no other test's heater is ever killed
    shutil.copy(heater, binary)
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "--env", "process", "--algo", "appo",
         "--set", f"env.command={binary}", "--timesteps", "2000", "--seed", "0", "--num-envs", "2",
         "--num-env-runners", "1", "--run-dir", str(run), "--set", "eval.every=0",
         "--set", "train.checkpoint_every=1000", "--set", "agent.batch_size=200",
         "--set", "rllib.extra={min_sample_timesteps_per_iteration: 400}", *COMMON, *shared_ray.flags],
        cwd=ROOT, env={**os.environ, **shared_ray.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        # training is under way (1,000 steps)
        while not list((run / "checkpoints").glob("step_*.safetensors")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        victim = pids_of(binary)[0]
        # in an env runner
        assert any(name.startswith("ray::") for name in _ancestors(victim)), _ancestors(victim)
        os.kill(victim, signal.SIGKILL)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    acc = scalars(run)
    # the kill, counted by the env runner's watchdog
    assert acc.Scalars("env/faults_by_kind/crash")[-1].value >= 1
    assert acc.Scalars("env/restarts")[-1].value >= 1
    for tag in ("train/policy_gradient_loss", "train/value_loss", "train/entropy_loss", "train/loss",
                "rollout/ep_rew_mean", "time/fps"):  # SB3's names
        assert tag in acc.Tags()["scalars"], tag
    tensors, meta = read_checkpoint(run / "final" / "model.safetensors")
    assert meta["algo"] == "appo" and meta["num_timesteps"] >= 2000  # it kept training after the kill
    assert any(k.startswith("module/_old_pi.") for k in tensors) and meta["normalize"]["norm_obs"]

    res_path = tmp_path / "e.json"  # evaluate.py: a bare APPO RLModule, no Ray
    run_cli("evaluate.py", str(run), "--episodes", "2", "--json", str(res_path), check=True)
    assert json.loads(res_path.read_text())["episodes"] == 2

    step = meta["num_timesteps"]
    resumed = run_cli("train.py", "--resume", str(run), "--timesteps", "400", "--quiet", timeout=300,
                      check=True, env=shared_ray.env)
    assert f"at step {step:,}" in resumed.stdout
    _, meta2 = read_checkpoint(run / "final" / "model.safetensors")
    assert meta2["num_timesteps"] >= step + 400 and adam_steps(meta2) > adam_steps(meta) > 0
    assert meta2["normalize"]["obs_count"] > meta["normalize"]["obs_count"]


def test_sac_trains_evaluates_and_resumes(tmp_path, shared_ray):
    run = tmp_path / "run"
    # the env runner in the driver (0 remote runners): SAC samples 16 steps between updates, a remote
    # call each
    run_cli("train.py", "--env", "Pendulum-v1", "--algo", "sac", "--timesteps", "800", "--seed", "0",
            "--num-envs", "2", "--num-env-runners", "0", "--run-dir", str(run),
            "--set", "agent.learning_starts=200", "--set", "agent.train_freq=8",
            "--set", "agent.batch_size=64", "--set", "agent.learning_rate=3e-3",
            "--set", "agent.lr_schedule=linear", "--set", "agent.net_arch=[32,32]",
            "--set", "agent.ent_coef=auto", "--set", "eval.every=400", "--set", "eval.episodes=1",
            "--set", "train.checkpoint_every=400",
            "--set", "rllib.extra={min_sample_timesteps_per_iteration: 200}", *COMMON, *shared_ray.flags,
            timeout=300, check=True, env=shared_ray.env)
    acc = scalars(run)
    for tag in ("train/actor_loss", "train/critic_loss", "train/ent_coef", "train/learning_rate",
                "eval/mean_reward"):
        assert tag in acc.Tags()["scalars"], tag
    rates = [e.value for e in acc.Scalars("train/learning_rate")]
    # the linear schedule anneals SAC's learning rates
    assert len(rates) >= 2 and rates[-1] < rates[0] <= 3e-3
    alpha = acc.Scalars("train/ent_coef")[-1].value
    assert 0 < alpha < 1.0  # learned down from SB3's start of 1.0
    tensors, meta = read_checkpoint(run / "final" / "model.safetensors")
    assert meta["algo"] == "sac" and meta["num_timesteps"] >= 800 and meta["replay_buffer"] is False
    assert float(tensors["sac/log_alpha"].exp()) == pytest.approx(alpha, rel=0.05)
    # all four optimisers are in the file
    assert any(k.startswith("optim/") and "alpha" in k for k in tensors)

    out = tmp_path / "e.json"
    run_cli("evaluate.py", str(run), "--episodes", "2", "--json", str(out), check=True)
    res = json.loads(out.read_text())
    assert res["episodes"] == 2 and np.isfinite(res["mean_return"])

    step = meta["num_timesteps"]
    resumed = run_cli("train.py", "--resume", str(run), "--timesteps", "400", "--quiet", timeout=300,
                      check=True, env=shared_ray.env)
    assert f"at step {step:,}" in resumed.stdout
    assert "checkpoints hold no replay buffer" in resumed.stdout and "not exact" in resumed.stdout
    tensors2, meta2 = read_checkpoint(run / "final" / "model.safetensors")
    assert meta2["num_timesteps"] >= step + 400
    # α was restored, not restarted at 1.0: log α only falls further from the saved value (a fresh one starts
    # at 0)
    saved = float(tensors["sac/log_alpha"])
    assert saved < -0.02 and float(tensors2["sac/log_alpha"]) < saved + 0.01


BAD = [
    (["--env", "CartPole-v1", "--algo", "sac"],
     r"SAC needs a continuous \(Box\) action space; `--env CartPole-v1` has Discrete\(2\): use `--algo ppo`"),
    (["--env", "Pendulum-v1", "--algo", "appo", "--set", "agent.tau=0.01"],
     r"--algo appo does not take agent\.tau on --backend rllib \(a key of SAC\); "
     r".*APPO accepts: .*clip_range"),
    (["--env", "Pendulum-v1", "--algo", "appo", "--set", "agent.gae_lambda=0.9"],
     r"--algo appo does not take agent\.gae_lambda on --backend rllib \(a key of PPO\)"),
    (["--env", "Pendulum-v1", "--algo", "sac", "--set", "agent.n_epochs=3"],
     r"--algo sac does not take agent\.n_epochs on --backend rllib \(a key of APPO/PPO\); "
     r".*SAC accepts: .*tau"),
    (["--env", "Pendulum-v1", "--algo", "sac", "--set", "agent.action_noise=normal"],
     r"agent\.action_noise on --backend rllib \(no --backend rllib algorithm honours it\)"),
    (["--env", "Pendulum-v1", "--algo", "td3"],
     r"--backend rllib runs --algo ppo\|appo\|sac, got 'td3'; use `--backend sb3`"),
    (["--env", "Pendulum-v1", "--algo", "appo", "--set", "agent.lr_schedule=linear"],
     r"agent\.lr_schedule: linear is not honoured by RLlib's APPO .* "
     r"use lr_schedule: constant with --algo appo"),
]


@pytest.mark.parametrize(("flags", "message"), BAD, ids=["sac-discrete", "appo-sac-key", "appo-gae",
                                                          "sac-ppo-key", "sac-noise", "td3-on-rllib",
                                                          "appo-linear"])
def test_bad_algorithm_input_is_one_line_and_exit_2(tmp_path, capsys, flags, message):
    code = train.main(["--backend", "rllib", "--quiet", "--run-dir", str(tmp_path / "run"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and re.search(message, err), err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    import ray

    assert not ray.is_initialized(), "bad input must be refused before Ray starts"


def test_appo_on_the_sb3_backend_names_the_fix(tmp_path, capsys):
    code = train.main(["--env", "Pendulum-v1", "--algo", "appo", "--quiet",
                       "--run-dir", str(tmp_path / "run")])
    assert code == 2
    assert ("--backend sb3 runs --algo ppo|a2c|sac|td3, got 'appo'; use `--backend rllib`"
            in capsys.readouterr().err)


def test_appo_target_policy_starts_as_a_copy_of_the_sb3_initialised_policy():
    from agents.rllib.state import sb3_init

    rng = np.random.default_rng(0)
    names = ["encoder.actor_encoder.net.mlp.0.weight", "pi.net.mlp.0.weight", "pi.net.mlp.0.bias",
             "pi.log_std"]
    weights = {n: rng.normal(size=(3, 4) if n.endswith("weight") else (3,)) for n in names}
    weights |= {"_old_" + n: rng.normal(size=v.shape) for n, v in weights.items() if n != "pi.log_std"}
    out = sb3_init(weights, log_std_init=-0.5, seed=0)
    for n in names[:3]:
        np.testing.assert_array_equal(out["_old_" + n], out[n])
        assert not np.array_equal(out[n], weights[n])
    assert np.allclose(out["pi.log_std"], -0.5) and np.allclose(out["pi.net.mlp.0.bias"], 0)


def test_convolutions_get_sb3s_orthogonal_init_too():
    """SB3 makes every Conv2d of a features extractor orthogonal (gain √2); RLlib's state kept PyTorch's
    default for them (the board CNN's three convolutions), so the two backends started differently."""
    from agents.rllib.state import sb3_init

    conv = np.random.default_rng(0).normal(size=(32, 2, 3, 3))
    out = sb3_init({"encoder.board.trunk.0.weight": conv}, log_std_init=0.0, seed=0)
    flat = out["encoder.board.trunk.0.weight"].reshape(32, -1)  # 32 × 18: orthogonal columns of norm √2
    np.testing.assert_allclose(flat.T @ flat, 2 * np.eye(18), atol=1e-5)


def test_a_new_appo_run_starts_from_rllib_appo_defaults_below_the_file_and_the_command_line():
    from agents.config.algos import select_algo

    raw = {"agent": {"n_epochs": 10}, "algos": {"appo": {"agent": {"batch_size": 256}}}}
    select_algo(raw, "appo", "test")
    # the file wins over the defaults
    assert raw["agent"]["n_epochs"] == 10 and raw["agent"]["batch_size"] == 256
    assert (raw["agent"]["clip_range"] == 0.4 and raw["agent"]["n_steps"] == 50
            and raw["agent"]["ent_coef"] == 0.01)
    ppo = {"agent": {}}
    select_algo(ppo, "ppo", "test")
    assert ppo == {"agent": {}}
