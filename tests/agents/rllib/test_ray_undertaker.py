"""A trainer killed by SIGKILL leaves none of its private local Ray's processes behind
(agents/run/raywatch.py): without the undertaker, Ray's dashboard and runtime-env agents stayed for good,
re-parented to init."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from conftest import ROOT

from agents.run import raywatch

pytestmark = pytest.mark.ray

SMALL = ["--backend", "rllib", "--num-env-runners", "1", "--quiet", "--num-envs", "2",
         "--set", "agent.n_steps=128", "--set", "agent.batch_size=128", "--set", "agent.n_epochs=1",
         "--set", "rllib.num_cpus=2", "--set", "eval.every=0"]


def _session_dir(pid: int) -> str:
    """The Ray session a driver of ``pid`` started (Ray names it after the driver's pid)."""
    root = os.environ.get("RAY_TMPDIR") or os.path.join(tempfile.gettempdir(), "ray")
    found = glob.glob(os.path.join(root, f"session_*_{pid}"))
    assert len(found) == 1, found
    return found[0]


def test_a_sigkilled_trainer_leaves_no_ray_process(tmp_path):
    """(A trainer that stops by itself ends its undertaker at once, silently: test_rllib.py's Ctrl-C test.)"""
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "--env", "robot", "--timesteps", "1000000", "--seed", "0",
         "--run-dir", str(run), "--set", "train.checkpoint_every=256", *SMALL],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list((run / "checkpoints").glob("step_*.safetensors")):  # Ray is up and training
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        session = _session_dir(proc.pid)
        assert len(raywatch.holding(session)) >= 3  # gcs_server, raylet, the runner, the agents...
        os.kill(proc.pid, signal.SIGKILL)  # the trainer alone, as the OOM killer does
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    deadline = time.monotonic() + 30
    while (left := raywatch.holding(session)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left == [], (left, err[-2000:])
