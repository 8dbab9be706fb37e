"""Training survives the third-party program and its own worker processes dying, with real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT, last_scalar, pids_of, read_checkpoint, run_cli

FAST = ["--num-envs", "2", "--quiet", "--set", "agent.n_steps=64", "--set", "agent.batch_size=64",
        "--set", "agent.n_epochs=1", "--set", "eval.every=0"]


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def start(args):
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_program_sigkilled_ten_times_during_one_run(heater, tmp_path):
    run = tmp_path / "run"
    proc = start(["--env", "process", "--set", f"env.command={heater}", "--set", "env.max_restarts=20",
                  "--set", "env.restart_rate=20", "--timesteps", "30000", "--run-dir", str(run),
                  "--seed", "0", "--set", "train.checkpoint_every=2048", *FAST])
    kills = 0
    deadline = time.time() + 120
    while not list((run / "tensorboard").glob("events.*")) and time.time() < deadline:
        time.sleep(0.05)  # training has started: the programs alive now are the training envs
    while kills < 10 and time.time() < deadline and proc.poll() is None:
        victims = pids_of(heater)
        if victims:
            os.kill(victims[0], signal.SIGKILL)
            kills += 1
        time.sleep(0.4)
    out, err = proc.communicate(timeout=300)
    assert kills == 10 and proc.returncode == 0, err
    assert last_scalar(run, "env/restarts") == 10
    assert last_scalar(run, "env/faults_by_kind/crash") == 10
    ok = run_cli("evaluate.py", str(run), "--episodes", "2", "--checkpoint", "latest")
    assert ok.returncode == 0, ok.stderr
    for ckpt in (run / "checkpoints").glob("*.safetensors"):
        assert run_cli("evaluate.py", str(run), "--episodes", "1", "--checkpoint", str(ckpt)).returncode == 0


def test_sigkilled_worker_process_is_respawned(tmp_path):
    run = tmp_path / "run"
    proc = start(["--env", "robot", "--timesteps", "20000", "--run-dir", str(run),
                  "--set", "train.vec_env=subproc", "--set", "train.start_method=spawn", *FAST])
    deadline = time.time() + 120
    workers: list[int] = []
    while time.time() < deadline and len(workers) < 2:
        time.sleep(0.2)
        workers = [c for c in children(proc.pid)
                   if b"multiprocessing" in Path(f"/proc/{c}/cmdline").read_bytes()
                   and b"resource_tracker" not in Path(f"/proc/{c}/cmdline").read_bytes()]
    while not list((run / "tensorboard").glob("events.*")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    os.kill(workers[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "done: 20,096 steps" in out  # 157 rollouts of 2 x 64 steps
    assert last_scalar(run, "env/faults_by_kind/worker") == 1  # FaultKind.WORKER (was "worker_died")
    assert last_scalar(run, "env/restarts") == 1


def test_no_orphan_survives_a_sigkilled_trainer(heater, tmp_path):
    for vec in ("dummy", "subproc"):
        proc = start(["--env", "process", "--set", f"env.command={heater}", "--timesteps", "1000000",
                      "--run-dir", str(tmp_path / vec), "--set", f"train.vec_env={vec}", *FAST])
        deadline = time.time() + 60
        while len(pids_of(heater)) < 2 and time.time() < deadline:
            time.sleep(0.1)
        assert len(pids_of(heater)) >= 2
        time.sleep(1.0)
        proc.kill()
        proc.wait()
        deadline = time.time() + 5
        while pids_of(heater) and time.time() < deadline:
            time.sleep(0.1)
        assert not pids_of(heater), f"orphaned programs survived the trainer ({vec})"


def test_exhausted_budget_stops_with_a_clear_error_after_a_checkpoint(heater, tmp_path):
    run = tmp_path / "run"
    script = tmp_path / "flaky.sh"
    # the first two starts (the spaces probe, then the training env) run; every later one crashes in reset
    script.write_text(f"#!/bin/sh\necho x >> {tmp_path}/starts\n"
                      f"if [ $(wc -l < {tmp_path}/starts) -gt 2 ]; then exec {heater} --crash-in-reset; fi\n"
                      f"exec {heater} --crash-after 300\n")
    script.chmod(0o755)
    proc = run_cli("train.py", "--env", "process", "--set", f"env.command={script}",
                   "--set", "env.max_restarts=3", "--timesteps", "5000", "--run-dir", str(run),
                   "--num-envs", "1", "--quiet", "--set", "agent.n_steps=64", "--set", "agent.batch_size=64",
                   "--set", "agent.n_epochs=1", "--set", "eval.every=0", timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert ("restart budget spent after 3 restart(s)" in proc.stderr
            and "sensor bus offline" in proc.stderr), proc.stderr
    assert "exit code 4" in proc.stderr and "Traceback" not in proc.stderr
    _, meta = read_checkpoint(run / "final" / "model.safetensors")
    assert meta["num_timesteps"] > 0
