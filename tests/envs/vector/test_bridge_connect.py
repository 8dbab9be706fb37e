"""Connect mode (env.listen): programs started after the trainer, late, killed and reconnecting; bad input
exits 2."""

from __future__ import annotations

import random
import re
import signal
import socket
import subprocess
import sys
import time

from conftest import ROOT, free_port, last_scalar, run_cli

from agents.run.checkpoint import read_header

FAST = ["--quiet", "--set", "agent.n_steps=32", "--set", "agent.batch_size=64", "--set", "agent.n_epochs=1",
        "--set", "eval.every=0"]


def test_late_killed_and_reconnecting_programs(heater, tmp_path):
    port, run = free_port(), tmp_path / "run"
    trainer = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--env", "process", "--set",
                                f"env.listen=127.0.0.1:{port}", "--set", "env.connect_timeout=60",
                                "--num-envs", "3", "--timesteps", "12000", "--run-dir", str(run),
                                "--seed", "0", *FAST],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rng = random.Random(0)
    python_heater = [sys.executable, str(ROOT / "examples" / "thirdparty" / "heater.py")]
    programs = []
    for cmd in ([heater], python_heater, [heater]):  # started after the trainer, with random delays
        time.sleep(rng.uniform(0.2, 1.5))
        programs.append(subprocess.Popen([*cmd, "--connect", f"127.0.0.1:{port}", "--connect-wait", "30"],
                                         cwd=ROOT, stderr=subprocess.DEVNULL))
    deadline = time.time() + 120
    while (not list((run / "tensorboard").glob("events.*")) and time.time() < deadline
           and trainer.poll() is None):
        time.sleep(0.05)
    time.sleep(1.0)
    programs[0].send_signal(signal.SIGKILL)  # mid-run: its slot waits for the next program that connects
    time.sleep(0.5)
    programs.append(subprocess.Popen([heater, "--connect", f"127.0.0.1:{port}", "--connect-wait", "1"]))
    out, err = trainer.communicate(timeout=240)
    assert trainer.returncode == 0, err
    done = re.search(r"^done: ([\d,]+) steps", out, re.MULTILINE)
    assert done, out
    steps = int(done.group(1).replace(",", ""))
    # every rollout is 3 envs × 32 steps: the budget is met within one rollout, through the kill and the
    # reconnects, and the final checkpoint holds the steps the run reports
    assert 12_000 <= steps < 12_000 + 3 * 32, out
    assert read_header(run / "final" / "model.safetensors").num_timesteps == steps
    assert last_scalar(run, "env/restarts") == 1 and last_scalar(run, "env/faults_by_kind/crash") == 1
    # the trainer stopped listening: the program gives up after --connect-wait
    assert programs[3].wait(30) == 0
    for p in programs[1:3]:
        p.kill()
        p.wait()


def test_bad_input_exits_2_in_seconds(heater, tmp_path):
    taken = socket.create_server(("127.0.0.1", 0))
    cases = {
        "in use": (["--set", f"env.listen=127.0.0.1:{taken.getsockname()[1]}"], "already in use"),
        "timeout": (["--set", "env.listen=127.0.0.1:0", "--set", "env.connect_timeout=2"],
                    "no program connected to 127.0.0.1:"),
        "k = 0": (["--set", f"env.command={heater} --instances 0"],
                  "spec.num_instances: expected an integer"),
    }
    for name, (args, text) in cases.items():
        t = time.monotonic()
        out = run_cli("train.py", "--env", "process", *args, "--timesteps", "64",
                      "--run-dir", str(tmp_path / name), timeout=60)
        lines = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
        assert out.returncode == 2 and len(lines) == 1 and text in lines[0], (name, out.stderr)
        assert "Traceback" not in out.stderr and time.monotonic() - t < 25, name  # seconds, even at load 10+
        if name == "timeout":  # the wait is visible, and the line says how to start a program
            assert "waiting for 8 programs on 127.0.0.1:" in out.stderr and "--connect 127.0.0.1:" in lines[0]
    taken.close()
