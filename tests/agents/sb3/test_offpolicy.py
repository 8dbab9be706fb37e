"""SAC and TD3 on the SB3 backend: train and evaluate through the CLIs, checkpoints, bad input, learning."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import ROOT, run_cli
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.config import check_algorithm, load_yaml, select_algo, validate
from agents.run.cli import train_parser
from agents.run.header import parse_header
from agents.run.runner import build_config
from envs.errors import CheckpointError, UserError

SMALL = ["--num-envs", "2", "--quiet", "--set", "agent.learning_starts=200",
         "--set", "agent.buffer_size=2000", "--set", "agent.net_arch=[32, 32]",
         "--set", "agent.batch_size=64", "--set", "eval.episodes=1"]
BOX = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


def tags(run_dir) -> set[str]:
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return set(acc.Tags()["scalars"])


@pytest.mark.parametrize("algo", ["sac", "td3"])
def test_train_evaluate_and_checkpoint(tmp_path, algo):
    run = tmp_path / "run"
    extra = ["--set", "train.checkpoint_replay=false"] if algo == "td3" else []
    proc = run_cli("train.py", "--env", "Pendulum-v1", "--algo", algo, "--timesteps", "600", "--seed", "1",
                   "--run-dir", str(run), "--set", "eval.every=300", "--set", "train.checkpoint_every=300",
                   *SMALL, *extra, check=True)
    assert "done: 600 steps" in proc.stdout
    assert f"algo: {algo}" in (run / "config.yaml").read_text()
    want = {"rollout/ep_rew_mean", "eval/mean_reward", "time/fps", "train/actor_loss", "train/critic_loss"}
    want |= {"train/ent_coef"} if algo == "sac" else set()
    assert want <= tags(run), want - tags(run)

    ckpt = load_file(run / "final" / "model.safetensors")
    meta = json.loads((run / "final" / "model.json").read_text())
    assert meta["algo"] == algo and meta["optimizer"] is None
    assert set(meta["optimizers"]) == ({"actor", "critic", "ent_coef"} if algo == "sac"
                                       else {"actor", "critic"})
    target = "policy/critic_target." if algo == "sac" else "policy/actor_target."
    assert any(k.startswith(target) for k in ckpt)
    if algo == "sac":
        assert meta["off_policy"]["replay"]["n"] == 300 and ckpt["replay/observations"].shape == (300, 2, 3)
        assert torch.isfinite(ckpt["offpolicy/log_ent_coef"]).all()
    else:  # train.checkpoint_replay: false
        assert meta["off_policy"]["replay"] is None and not any(k.startswith("replay/") for k in ckpt)
        assert "resumed run will not be exact" in proc.stderr
        resumed = run_cli("train.py", "--resume", str(run), "--timesteps", "100", check=True)
        assert "holds no replay buffer" in resumed.stderr and "done: 700 steps" in resumed.stdout

    out = tmp_path / "eval.json"
    run_cli("evaluate.py", str(run), "--episodes", "2", "--json", str(out), check=True)
    res = json.loads(out.read_text())
    assert res["episodes"] == 2 and np.isfinite(res["mean_return"])

    del meta["off_policy"]  # the header parser requires the off-policy state of a SAC/TD3 checkpoint
    with pytest.raises(CheckpointError, match="field 'off_policy' is missing"):
        parse_header(meta, "x.safetensors")


def test_wrong_action_space_is_one_line_exit_2(tmp_path):
    proc = run_cli("train.py", "--env", "CartPole-v1", "--algo", "sac", "--run-dir", str(tmp_path / "r"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == ("error: SAC needs a continuous (Box) action space; `--env CartPole-v1` "
                                   "has Discrete(2): use `--algo ppo`")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["--env", "robot", "--algo", "td3", "--set", "agent.n_epochs=3"],
     r"^--algo td3 does not take agent.n_epochs \(a key of PPO\).*TD3 accepts: .*policy_delay"),
    (["--env", "robot", "--algo", "ppo", "--set", "agent.tau=0.01"],
     r"^--algo ppo does not take agent.tau \(a key of SAC/TD3\).*PPO accepts: .*clip_range"),
    (["--env", "Pendulum-v1", "--algo", "sac", "--set", "agent.n_steps=64"],
     r"^--algo sac does not take agent.n_steps \(a key of A2C/PPO\).*SAC accepts: .*target_entropy"),
])
def test_a_key_of_another_algorithm_is_refused(argv, message):
    with pytest.raises(UserError, match=message) as e:
        build_config(train_parser().parse_args(argv))
    assert "\n" not in str(e.value)


def test_an_action_space_the_backend_cannot_train_is_refused_before_training():
    """RLlib failed inside its env runner on MultiBinary actions, SB3 on a Tuple with an AssertionError
    (exit 1), and RLlib trained MultiDiscrete actions that evaluate.py then could not pick."""
    tup = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(3)))
    cases = [("sb3", tup, r"^--backend sb3 trains Box, Discrete, MultiDiscrete, MultiBinary actions; "
                          r"`--env e` has Tuple\(Discrete\(2\), Discrete\(3\)\): wrap the env"),
             ("rllib", gym.spaces.MultiBinary(3), r"^--backend rllib trains Box, Discrete, MultiDiscrete "
                                                  r"actions; .* has MultiBinary\(3\): use `--backend sb3`$")]
    for backend, space, message in cases:
        with pytest.raises(UserError, match=message):
            check_algorithm(validate({"env": {"id": "e"}, "agent": {"backend": backend}}, "x"), space)
    for backend in ("sb3", "rllib"):  # both train these
        check_algorithm(validate({"agent": {"backend": backend}}, "x"), gym.spaces.MultiDiscrete([3, 2]))
    unbounded = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)  # SB3's AssertionError was exit 1
    with pytest.raises(UserError, match=r"^--backend sb3 needs finite bounds on a Box action space; .*"
                                        r"use `--backend rllib`$"):
        check_algorithm(validate({"env": {"id": "e"}}, "x"), unbounded)
    check_algorithm(validate({"agent": {"backend": "rllib"}}, "x"), unbounded)


def test_algorithm_keys_are_checked_per_algorithm():
    with pytest.raises(UserError, match=r"agent.ent_coef: auto is SAC's.*PPO takes a number"):
        check_algorithm(validate({"agent": {"algo": "ppo", "ent_coef": "auto"}}, "x"), BOX)
    with pytest.raises(UserError, match="target_entropy applies only with agent.ent_coef: auto"):
        check_algorithm(validate({"agent": {"algo": "sac", "ent_coef": 0.1, "target_entropy": -2}}, "x"), BOX)
    with pytest.raises(UserError,
                       match=r"--algo a2c does not take agent.clip_range, agent.n_epochs \(a key of PPO\)"):
        check_algorithm(validate({"agent": {"algo": "a2c", "n_epochs": 3, "clip_range": 0.1}}, "x"), BOX)
    with pytest.raises(UserError, match=r"--algo sac does not take agent.policy_delay \(a key of TD3\)"):
        check_algorithm(validate({"agent": {"algo": "sac", "policy_delay": 3}}, "x"), BOX)
    check_algorithm(validate({"agent": {"algo": "sac", "ent_coef": "auto", "tau": 0.02}}, "x"), BOX)
    with pytest.raises(UserError, match=r"unknown algorithm 'algos.sack'; did you mean 'sac'"):
        select_algo({"algos": {"sack": {}}}, None, "x.yaml")


@pytest.mark.parametrize("algo", ["ppo", "sac", "td3", "a2c"])
def test_robot_config_gives_each_algorithm_its_own_settings(algo):
    raw = load_yaml(ROOT / "configs" / "robot.yaml")
    select_algo(raw, algo, "robot.yaml")
    raw["agent"]["algo"] = algo  # what --algo does
    assert "algos" not in raw
    cfg = validate(raw, "robot.yaml")
    check_algorithm(cfg, BOX)  # no key of another algorithm reaches it
    if algo == "sac":
        assert cfg.agent.net_arch == [256, 256] and cfg.agent.buffer_size == 100_000
    if algo == "ppo":
        assert (cfg.agent.n_steps == 256 and cfg.agent.lr_schedule == "linear"
                and cfg.train.timesteps == 300_000)


@pytest.mark.slow  # make test-all (CI time: issue 26)
def test_sac_learns_pendulum(tmp_path):
    # ~5k steps of SAC (lr 1e-3 as RL Zoo's Pendulum-v1 entry, one gradient step per env step) swing it up;
    # a uniform-random policy scores about -1200 and PPO needs far more steps for -400
    run, out = tmp_path / "run", tmp_path / "eval.json"
    run_cli("train.py", "--env", "Pendulum-v1", "--algo", "sac", "--timesteps", "5000", "--seed", "0",
            "--num-envs", "1", "--quiet", "--run-dir", str(run), "--set", "agent.learning_rate=1e-3",
            "--set", "agent.net_arch=[64, 64]", "--set", "eval.every=0", timeout=600, check=True)
    run_cli("evaluate.py", str(run), "--episodes", "10", "--json", str(out), check=True)
    res = json.loads(out.read_text())
    assert res["mean_return"] >= -400, res
    assert res["random"]["mean_reward"] <= -900, res


@pytest.mark.parametrize("name", ["process", "renderer", "seismic", "game"])
def test_shipped_configs_keep_ppo_keys_to_ppo(name):
    # --env seismic --algo sac must not inherit PPO's n_steps from the file (it would be refused)
    for algo in ("ppo", "sac", "td3") if name != "game" else ("ppo", "a2c"):
        raw = load_yaml(ROOT / "configs" / f"{name}.yaml")
        select_algo(raw, algo, name)
        raw["agent"]["algo"] = algo
        check_algorithm(validate(raw, name), BOX if name != "game" else gym.spaces.Discrete(6))
