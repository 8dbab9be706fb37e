"""HER on the SB3 backend: when SAC/TD3 take SB3's HerReplayBuffer, bad settings, resume, and learning.

Real envs: panda-gym's PandaReach-v3 (pybullet) and gymnasium-robotics' PointMaze (MuJoCo), both from the
``thirdparty`` extra.
"""

from __future__ import annotations

import json
import logging
import signal

import numpy as np
import pytest
import torch
from conftest import ROOT, read_checkpoint, run_cli
from stable_baselines3.common.buffers import DictReplayBuffer
from stable_baselines3.her import GoalSelectionStrategy, HerReplayBuffer
from test_cli import _start, _wait_for

from agents.run import checkpoint
from agents.run.cli import train_parser
from agents.run.runner import build_config
from agents.sb3.backend import SB3Backend
from envs.errors import CheckpointError, UserError

PANDA = ["--env", "PandaReach-v3", "--env-package", "panda_gym"]
CONFIG = ["--config", str(ROOT / "configs" / "PandaReach-v3.yaml")]
SMALL = ["--set", "agent.buffer_size=5000", "--set", "eval.every=0"]


def _create(*argv: str) -> SB3Backend:
    """A fresh SB3 backend for ``train.py ARGV``, built as train.py builds it (probe, config, vector env)."""
    cfg, env, spare = build_config(train_parser().parse_args(["--quiet", *argv]))
    if spare is not None:
        spare.close()
    return SB3Backend.create(cfg, 0, env)


def _her_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "agents.sb3.her"]


def test_sac_on_a_goal_env_takes_her_and_says_so_once(caplog):
    caplog.set_level(logging.WARNING)
    backend = _create(*PANDA, "--algo", "sac", "--num-envs", "4", *SMALL)
    try:
        model = backend.model
        buf = model.replay_buffer
        assert isinstance(buf, HerReplayBuffer)
        assert buf.n_sampled_goal == 4 and buf.goal_selection_strategy == GoalSelectionStrategy.FUTURE
        assert model.learning_starts == 200  # 4 envs x one 50-step episode; the default 100 is too early
        lines = _her_lines(caplog)
        assert len(lines) == 1, lines
        assert "SAC with HER" in lines[0] and "learning starts at step 200" in lines[0]
        # the buffer's reward call goes through the wrappers and the vector env: a goal reached is reward 0
        goal = np.array([[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]], np.float32)
        far = goal + 1.0
        rewards = buf.env.env_method("compute_reward", goal, np.stack([goal[0], far[1]]), [{}, {}],
                                     indices=[0])[0]
        assert rewards.tolist() == [0.0, -1.0]
    finally:
        backend.close()


def test_td3_tuned_her_through_worker_processes_on_gymnasium_robotics(caplog):
    caplog.set_level(logging.WARNING)
    backend = _create("--env", "PointMaze_UMaze-v3", "--env-package", "gymnasium_robotics", "--algo", "td3",
                      "--num-envs", "2", "--set", "train.vec_env=subproc",
                      "--set", "agent.her_n_sampled_goal=8",
                      "--set", "agent.her_goal_selection_strategy=episode", *SMALL)
    try:
        buf = backend.model.replay_buffer
        assert isinstance(buf, HerReplayBuffer)
        assert buf.n_sampled_goal == 8 and buf.goal_selection_strategy == GoalSelectionStrategy.EPISODE
        # one episode per env: the shipped configs/PointMaze_UMaze-v3.yaml's 100-step episodes x 2 envs
        assert backend.model.learning_starts == 200
        assert len(_her_lines(caplog)) == 1 and "TD3 with HER" in _her_lines(caplog)[0]
    finally:
        backend.close()


def test_ppo_on_a_goal_env_is_unchanged(caplog):
    caplog.set_level(logging.WARNING)
    backend = _create(*PANDA, "--algo", "ppo", "--num-envs", "2", "--set", "eval.every=0")
    try:
        assert not hasattr(backend.model, "replay_buffer") and _her_lines(caplog) == []
    finally:
        backend.close()


def test_her_false_keeps_the_plain_replay_buffer(caplog):
    caplog.set_level(logging.WARNING)
    backend = _create(*PANDA, "--algo", "sac", "--num-envs", "2", "--set", "agent.her=false", *SMALL)
    try:
        buf = backend.model.replay_buffer
        assert isinstance(buf, DictReplayBuffer) and not isinstance(buf, HerReplayBuffer)
        assert backend.model.learning_starts == 100
        assert _her_lines(caplog) == ["goal-conditioned env: HER off (agent.her: false)"]
    finally:
        backend.close()


def test_goal_keys_without_compute_reward(caplog):
    caplog.set_level(logging.WARNING)
    keys_only = ["--env", "tests.agents.sb3.goal_env:KeysOnlyReach", "--algo", "sac", "--num-envs", "2",
                 "--set", "env.max_episode_steps=20", *SMALL]
    backend = _create(*keys_only)  # auto: no HER, one line saying why
    try:
        assert not isinstance(backend.model.replay_buffer, HerReplayBuffer)
        (line,) = _her_lines(caplog)
        assert line.startswith("HER off for env") and "compute_reward cannot be called" in line
    finally:
        backend.close()
    with pytest.raises(UserError, match=r"^agent.her: true needs a goal-conditioned env .*compute_reward "
                                        r"cannot be called.*; set agent.her: auto or false$"):
        _create(*keys_only, "--set", "agent.her=true")


@pytest.mark.parametrize(("argv", "message"), [
    (["--algo", "sac", "--set", "agent.her=maybe"],
     r"'agent.her' input should be 'auto', True or False \(got 'maybe'\)"),
    (["--algo", "sac", "--set", "agent.her_n_sampled_goal=0"],
     r"'agent.her_n_sampled_goal' input should be greater than 0 \(got 0\)"),
    (["--algo", "td3", "--set", "agent.her_goal_selection_strategy=futur"],
     r"'agent.her_goal_selection_strategy' input should be 'future', 'final' or 'episode'"),
    (["--algo", "ppo", "--set", "agent.her=true"],
     r"^--algo ppo does not take agent.her \(a key of SAC/TD3\)"),
])
def test_bad_her_settings_are_one_line(argv, message):
    with pytest.raises(UserError, match=message) as e:
        build_config(train_parser().parse_args([*PANDA, *argv]))
    assert "\n" not in str(e.value)


def test_bad_her_value_exits_2_in_one_line(tmp_path):
    proc = run_cli("train.py", *PANDA, "--algo", "sac", "--run-dir", str(tmp_path / "r"),
                   "--set", "agent.her=maybe")
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and line.endswith(
        ": 'agent.her' input should be 'auto', True or False (got 'maybe'); fix the value in the YAML or "
        "with --set agent.her=VALUE")
    assert "Traceback" not in proc.stderr
    proc = run_cli("train.py", "--env", "Pendulum-v1", "--algo", "sac", "--run-dir", str(tmp_path / "p"),
                   "--set", "agent.her=true")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: agent.her: true needs a goal-conditioned env (a Dict observation with observation, "
        "achieved_goal, desired_goal and compute_reward), but env 'Pendulum-v1': its observation is a Box")


def test_kill_and_resume_a_her_run(tmp_path):
    run = tmp_path / "run"
    proc = _start([*CONFIG, "--timesteps", "520", "--seed", "3", "--quiet", "--run-dir", str(run),
                   "--set", "train.checkpoint_every=260", "--set", "eval.every=0"])
    saved = run / "checkpoints" / f"step_{260:010d}.safetensors"
    _wait_for(saved.is_file, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "final" / "model.safetensors").exists(), "the run finished before it was killed"
    at_kill, meta = read_checkpoint(saved)
    assert meta["off_policy"]["her"] == {"n_sampled_goal": 4, "goal_selection_strategy": "future"}
    assert at_kill["her/ep_length"].shape == (260, 1)
    assert at_kill["replay/observations/desired_goal"].shape == (260, 1, 3)

    resumed = run_cli("train.py", "--resume", str(run), "--quiet", check=True)
    assert "at step 260" in resumed.stdout and "done: 520 steps" in resumed.stdout
    final, _ = read_checkpoint(run / "final" / "model.safetensors")
    # the episodes that ended before the checkpoint keep their index; the one it cut ends where it was cut
    before, after = at_kill["her/ep_length"][:, 0], final["her/ep_length"][:260, 0]
    done = int(at_kill["her/current_ep_start"][0])
    assert 0 < done <= 260 and torch.equal(after[:done], before[:done])
    # Where episodes end varies from run to run, seed or not: panda-gym reseeds its goal sampler from fresh
    # entropy at every reset without a seed (panda_gym/envs/core.py, RobotTaskEnv.reset). About 1 run in 8
    # ends an episode at step 260 exactly, and then the checkpoint cut none.
    if done < 260:  # the kill cut an episode: it ends where it was cut
        assert bool((after[done:] == 260 - done).all()) and bool((before[done:] == 0).all())
    assert int(final["her/ep_start"][260, 0]) == 260  # the first episode after the resume starts afresh
    assert bool((final["her/ep_length"][:, 0] > 0).any())

    out = tmp_path / "eval.json"
    run_cli("evaluate.py", str(run), "--episodes", "5", "--json", str(out), check=True)
    assert json.loads(out.read_text())["episodes"] == 5


def test_a_her_checkpoint_needs_her_to_resume(tmp_path):
    run = tmp_path / "run"
    run_cli("train.py", *CONFIG, "--timesteps", "300", "--seed", "1", "--quiet", "--run-dir", str(run),
            "--set", "eval.every=0", check=True)
    ckpt = checkpoint.load(run / "final" / "model.safetensors")
    cfg, env, spare = build_config(train_parser().parse_args([*CONFIG, "--set", "agent.her=false",
                                                              "--set", "eval.every=0"]))
    assert spare is None
    with pytest.raises(CheckpointError, match=r"holds HER replay state, and this config builds none"):
        SB3Backend.load(ckpt, cfg, env, for_training=True)
    ckpt.tensors["her/ep_length"][0, 0] = 10**9  # a damaged episode index is refused, not sampled from
    cfg, env, _ = build_config(train_parser().parse_args([*CONFIG, "--set", "eval.every=0"]))
    with pytest.raises(CheckpointError, match=r"tensor 'her/ep_length' holds values outside"):
        SB3Backend.load(ckpt, cfg, env, for_training=True)


@pytest.mark.slow  # make test-all (CI time: issue 26)
def test_sac_with_her_learns_panda_reach(tmp_path):
    # The shipped config, cut to 4,000 steps: seeds 0 and 1 reached eval success 1.00 at 3,000 steps (0.30 at
    # 2,000); without HER the same budget stays at 0.00-0.10 (docs/results.md). About 30 s at load 1.
    run, out = tmp_path / "run", tmp_path / "eval.json"
    proc = run_cli("train.py", *CONFIG, "--timesteps", "4000", "--seed", "0", "--quiet",
                   "--run-dir", str(run), "--set", "eval.every=0", timeout=600, check=True)
    assert "SAC with HER" in proc.stderr
    run_cli("evaluate.py", str(run), "--episodes", "20", "--json", str(out), check=True)
    res = json.loads(out.read_text())
    assert res["success_rate"] >= 0.9, res
    assert res["random"]["success_rate"] <= 0.3, res
