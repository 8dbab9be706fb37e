"""N straight steps equal N/2 steps + SIGKILL + resume + N/2 steps, bit for bit (CPU, in-process envs)."""

from __future__ import annotations

import signal

import torch
from conftest import run_cli
from safetensors.torch import load_file
from test_cli import FAST, _start, _wait_for


def straight_and_resumed(tmp_path, common, half):
    """Train ``common`` straight, and again killed (SIGKILL) after the checkpoint at ``half`` then resumed;
    return both final checkpoints' tensors."""
    straight = tmp_path / "straight"
    run_cli("train.py", *common, "--run-dir", str(straight), check=True)
    broken = tmp_path / "broken"
    proc = _start([*common, "--run-dir", str(broken)])
    _wait_for((broken / "checkpoints" / f"step_{half:010d}.safetensors").is_file, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (broken / "final" / "model.safetensors").exists(), "the run finished before it was killed"
    resumed = run_cli("train.py", "--resume", str(broken), "--quiet", check=True)
    assert f"at step {half:,}" in resumed.stdout
    return (load_file(straight / "final" / "model.safetensors"),
            load_file(broken / "final" / "model.safetensors"))


def test_kill_and_resume_reproduces_the_straight_run(tmp_path):
    common = ["--env", "robot", "--timesteps", "4096", "--seed", "7", "--set", "train.checkpoint_every=2048",
              "--set", "eval.every=1024", "--set", "eval.episodes=2", *FAST]
    a, b = straight_and_resumed(tmp_path, common, 2048)
    params = [k for k in a if k.startswith(("policy/", "optim/", "norm/"))]
    assert len(params) > 10 and set(params) <= set(b)
    mismatched = [k for k in params if not torch.equal(a[k], b[k])]
    assert not mismatched, f"resumed run diverged in {mismatched[:5]}"


def test_sac_kill_and_resume_reproduces_the_straight_run(tmp_path):
    # SAC: actor, critics, targets, three optimisers, log_ent_coef and the replay buffer must all come back
    common = ["--env", "robot", "--algo", "sac", "--timesteps", "1600", "--seed", "7", "--num-envs", "4",
              "--quiet", "--set", "train.checkpoint_every=800", "--set", "eval.every=400",
              "--set", "eval.episodes=1", "--set", "agent.learning_starts=200",
              "--set", "agent.buffer_size=1000", "--set", "agent.net_arch=[32, 32]",
              "--set", "agent.gradient_steps=1", "--set", "agent.batch_size=32"]
    a, b = straight_and_resumed(tmp_path, common, 800)
    groups = ("policy/actor.", "policy/critic.", "policy/critic_target.", "optim_actor/", "optim_critic/",
              "optim_ent_coef/", "offpolicy/log_ent_coef", "replay/", "norm/")
    for group in groups:
        assert any(k.startswith(group) for k in a), f"no {group} tensors in the checkpoint"
    params = [k for k in a if k.startswith(groups)]
    assert set(params) <= set(b)
    assert a["replay/observations"].shape[0] == 1000 // 4  # 1600 transitions wrapped the 1000-row buffer
    mismatched = [k for k in params if not torch.equal(a[k], b[k])]
    assert not mismatched, f"resumed SAC run diverged in {mismatched[:5]}"
