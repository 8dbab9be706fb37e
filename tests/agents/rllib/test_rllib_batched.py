"""K-instance bridge programs on RLlib: each env runner starts and listens for its own programs on its node's
loopback and steps their instances as one batched vector env in RLlib's NEXT_STEP order
(agents/rllib/state.py ``batched_programs``, envs/vector/next_step.py); the Godot game learns that way. The
trainers join the session's shared private Ray (``shared_ray`` in tests/conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_cli, scalars

pytestmark = pytest.mark.ray

COMMON = ["--backend", "rllib", "--quiet", "--set", "rllib.num_cpus=2", "--num-env-runners", "1",
          "--set", "eval.every=0"]


def _runner_programs(name: str) -> list[list[str]]:
    """The command lines of the running ``name`` processes' ancestors."""
    out = []
    for pid in subprocess.run(["pgrep", "-f", name], capture_output=True, text=True).stdout.split():
        chain, p = [], int(pid)
        while p > 1:
            try:
                p = int((Path("/proc") / str(p) / "stat").read_text().rsplit(")", 1)[1].split()[1])
                chain.append((Path("/proc") / str(p) / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except (OSError, IndexError, ValueError):
                break
        out.append(chain)
    return out


def test_k_instance_programs_run_inside_the_env_runner_and_train(tmp_path, shared_ray):
    run = tmp_path / "run"
    command = f"{sys.executable} {ROOT / 'examples' / 'thirdparty' / 'heater.py'} --instances 4"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "--env", "process", "--set", f"env.command={command}",
         "--num-envs", "8", "--timesteps", "6000", "--seed", "0",
         "--run-dir", str(run), *COMMON, *shared_ray.flags],
        cwd=ROOT, env={**os.environ, **shared_ray.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    seen: list[list[str]] = []
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        chains = [c for c in _runner_programs("heater.py --instances 4")  # the programs (under their reaper)
                  if c and "reaper.py" in c[0] and any(x.startswith("ray::") for x in c)]
        seen = seen if len(seen) >= len(chains) else chains
        time.sleep(0.2)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    assert len(seen) == 2  # 8 envs of 4 instances each: two programs, started inside the env runner
    assert "done: " in out and "rollout/ep_rew_mean" in scalars(run).Tags()["scalars"]
    res = tmp_path / "e.json"
    run_cli("evaluate.py", str(run), "--episodes", "2", "--json", str(res), check=True)
    assert json.loads(res.read_text())["episodes"] == 2


@pytest.mark.slow  # not in CI (its 20-minute budget; the heater test above runs there): make test-all
def test_the_godot_game_learns_on_rllib(tmp_path, shared_ray):
    """configs/godot.yaml on --backend rllib: 2 Godots × 16 agents in one env runner, 24,576 steps; the
    trained policy's mean return beats a random policy's by 2 over 30 episodes (measured 3.2 against −1.4
    after 20k steps)."""
    run = tmp_path / "run"
    run_cli("train.py", "--env", "godot", "--timesteps", "24576", "--seed", "0", "--run-dir", str(run),
            *COMMON, *shared_ray.flags, timeout=600, check=True, env=shared_ray.env)
    res = tmp_path / "e.json"
    run_cli("evaluate.py", str(run), "--episodes", "30", "--json", str(res), check=True, timeout=300)
    got = json.loads(res.read_text())
    assert got["mean_return"] > got["random_mean_return"] + 2.0, got
