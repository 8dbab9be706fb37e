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


@pytest.mark.parametrize("stopped", [True, False])
def test_the_undertaker_kills_what_holds_the_session_and_says_whether_ray_was_stopped(tmp_path, stopped):
    """Without Ray: a process holding a file in a stand-in session directory is killed once the pipe closes;
    the line tells a clean stop (the trainer wrote STOPPED: an env's forks held the session) from a trainer
    that died."""
    session = tmp_path / "session"
    (session / "logs").mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; f = open(sys.argv[1], 'w'); "
                               "print(1, flush=True); time.sleep(600)", str(session / "logs" / "x.out")],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "1"
    r, w = os.pipe()
    watch = subprocess.Popen([sys.executable, "-I", "-S", raywatch.__file__, "0.5", str(r), str(session)],
                             pass_fds=(r,), stderr=subprocess.PIPE, text=True)
    os.close(r)
    try:
        assert raywatch.holding(str(session)) == [holder.pid]
        if stopped:
            os.write(w, raywatch.STOPPED)
        os.close(w)
        _, err = watch.communicate(timeout=20)
        assert holder.wait(timeout=10) == -signal.SIGKILL
    finally:
        for p in (holder, watch):
            if p.poll() is None:
                p.kill()
                p.wait()
    why = "the local Ray stopped, but processes still held its session" if stopped else \
        "the trainer ended without stopping its local Ray"
    assert err.startswith(f"nondiff: {why}") and err.strip().endswith(f"killed 1 of them (pids {holder.pid})")
