"""N straight steps equal N/2 steps + SIGKILL + resume + N/2 steps, bit for bit (CPU, in-process envs)."""

from __future__ import annotations

import signal

import torch
from conftest import run_cli
from safetensors.torch import load_file
from test_cli import FAST, _start, _wait_for


def test_kill_and_resume_reproduces_the_straight_run(tmp_path):
    common = ["--env", "robot", "--timesteps", "4096", "--seed", "7", "--set", "train.checkpoint_every=2048",
              "--set", "eval.every=1024", "--set", "eval.episodes=2", *FAST]
    straight = tmp_path / "straight"
    run_cli("train.py", *common, "--run-dir", str(straight), check=True)

    broken = tmp_path / "broken"
    proc = _start([*common, "--run-dir", str(broken)])
    ckpt = broken / "checkpoints" / "step_0000002048.safetensors"
    _wait_for(ckpt.is_file, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (broken / "final" / "model.safetensors").exists(), "the run finished before it was killed"
    resumed = run_cli("train.py", "--resume", str(broken), "--quiet", check=True)
    assert "at step 2,048" in resumed.stdout

    a = load_file(straight / "final" / "model.safetensors")
    b = load_file(broken / "final" / "model.safetensors")
    params = [k for k in a if k.startswith(("policy/", "optim/", "norm/"))]
    assert len(params) > 10 and set(params) <= set(b)
    mismatched = [k for k in params if not torch.equal(a[k], b[k])]
    assert not mismatched, f"resumed run diverged in {mismatched[:5]}"
