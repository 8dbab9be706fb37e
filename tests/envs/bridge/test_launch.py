"""Spawn, then let them connect (env.command with env.listen, envs/bridge/launch.py): real programs (the
Python SDK's heater example and Godot), real processes and sockets."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from envs import errors as E
from envs.bridge.launch import ASSETS, expand
from envs.bridge.process import ProcessEnv
from envs.vector.bridge_start import make_bridge_vector_env

ROOT = Path(__file__).resolve().parents[3]
HEATER = f"{sys.executable} {ROOT / 'examples' / 'thirdparty' / 'heater.py'}"
GODOT = "godot3-server --path {assets}/godot --fixed-fps 60 --agents=4"


def test_placeholders_expand_and_nothing_else():
    argv = expand(["prog", "--connect={connect}", "{host}", "{port}", "--seed", "{seed}", "{assets}/g",
                   "{x}"], "127.0.0.1", 4242, 7)
    assert argv == ["prog", "--connect=127.0.0.1:4242", "127.0.0.1", "4242", "--seed", "7", f"{ASSETS}/g",
                    "{x}"]


@pytest.mark.parametrize("command", [HEATER + " --instances 2", GODOT], ids=["sdk", "godot"])
def test_the_program_is_told_where_to_connect_in_its_environment_not_its_argv(command):
    env = ProcessEnv(command=command, listen="127.0.0.1:0")
    pid = env.program_pid
    assert pid is not None
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    environ = dict(v.split("=", 1) for v in raw if v)
    token = environ["NONDIFF_TOKEN"]
    assert len(token) == 32 and token not in argv and environ["NONDIFF_SEED"].isdigit()
    assert environ["NONDIFF_CONNECT"] == env._back.address and env.token == token
    obs, _ = env.reset(seed=3)
    assert env.observation_space.contains(env.step(env.action_space.sample())[0])
    env.close()
    env.close()
    time.sleep(0.2)
    gone = not Path(f"/proc/{pid}").exists()
    assert gone or Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")


def test_every_program_of_a_vector_env_gets_its_own_port_and_token():
    venv = make_bridge_vector_env({"command": HEATER + " --instances 2", "listen": "127.0.0.1:0"}, 6, None)
    programs = venv.unwrapped.programs
    assert venv.num_envs == 6 and len(programs) == 3
    assert len({p._back.address for p in programs}) == 3 and len({p.token for p in programs}) == 3
    venv.reset(seed=0)
    for _ in range(5):
        venv.step(np.zeros((6, 1), dtype=np.float32))
    venv.close()


def test_a_fixed_port_is_refused_in_one_line():
    with pytest.raises(E.StartupError, match="the port must be 0"):
        ProcessEnv(command=HEATER, listen="127.0.0.1:5555")
    # beyond loopback the advice is loopback, port 0; it suggested 0.0.0.0:0, itself refused next
    with pytest.raises(E.StartupError, match="use env.listen=127.0.0.1:0$"):
        ProcessEnv(command=HEATER, listen="0.0.0.0:5555")


def test_a_program_that_exits_before_connecting_is_a_counted_crash():
    crash = f"{sys.executable} -c \"import sys; print('no engine here', file=sys.stderr); sys.exit(3)\""
    with pytest.raises(E.RestartBudgetExhausted, match="exited with code 3.*no engine here"):
        ProcessEnv(command=crash, listen="127.0.0.1:0", max_restarts=1)


def test_a_program_that_never_connects_is_a_timeout():
    began = time.monotonic()
    with pytest.raises(E.RestartBudgetExhausted, match="did not connect"):
        ProcessEnv(command=f"{sys.executable} -c \"import time; time.sleep(30)\"", listen="127.0.0.1:0",
                   reset_timeout=0.5, max_restarts=0, term_grace=0.1)
    assert time.monotonic() - began < 5


@pytest.mark.parametrize("listen", ["127.0.0.1:0", None])
def test_a_program_that_never_comes_up_stops_the_run_after_two_starts_not_the_whole_budget(listen):
    """Before: 11 starts (the default budget of 10 restarts), 113 s for a command that never connects."""
    began = time.monotonic()
    with pytest.raises(E.StartupError, match="never came up: 2 starts in a row timed out.*reset_timeout"):
        ProcessEnv(command="sleep 30", listen=listen, reset_timeout=0.5, term_grace=0.1)
    assert time.monotonic() - began < 4


def test_only_timeouts_in_a_row_stop_a_program_that_never_came_up(tmp_path):
    """Start 1 hangs, start 2 crashes, starts 3 and 4 hang: the crash breaks the row, so the run stops after
    the 4th start, not the 3rd."""
    count = tmp_path / "starts"
    script = (f'n=$(($(cat {count} 2>/dev/null || echo 0) + 1)); echo $n > {count}; '
              '[ $n -eq 2 ] && exit 3; sleep 30')
    with pytest.raises(E.StartupError, match="never came up: 2 starts in a row timed out"):
        ProcessEnv(command=f"sh -c '{script}'", reset_timeout=0.5, term_grace=0.1)
    assert count.read_text().strip() == "4"


def test_a_program_with_the_wrong_k_stops_the_run_at_once():
    began = time.monotonic()
    with pytest.raises(E.StartupError, match="num_instances"):
        ProcessEnv(command=GODOT, listen="127.0.0.1:0", num_instances=3)
    assert time.monotonic() - began < 5


def test_train_and_evaluate_start_their_own_programs(cli, tmp_path):
    run = tmp_path / "run"
    args = ("--set", f"env.command={HEATER} --instances 4", "--set", "env.listen=127.0.0.1:0")
    proc = cli("train.py", "--env", "process", *args, "--num-envs", "8", "--timesteps", "512",
               "--run-dir", str(run), "--set", "eval.every=0", check=True)
    assert proc.stderr.count("connected in") >= 2
    proc = cli("evaluate.py", str(run), "--episodes", "2", check=True)
    assert "connected in" in proc.stderr and "trained" in proc.stdout


def test_a_program_started_by_xvfb_run_is_checked_too(tmp_path, monkeypatch):
    """A resumed run builds no probe: a missing renderer behind xvfb-run is still one line, not restarts."""
    from envs.bridge.spawn import check_program

    fake = tmp_path / "xvfb-run"
    fake.write_text("#!/bin/sh\nexec \"$@\"\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    missing = "'godot3' is not installed; install it with: apt-get install godot3"
    with pytest.raises(E.LaunchError, match=missing):
        check_program(["xvfb-run", "-a", "-s", "-screen 0 64x64x24", "godot3", "--path", "x"], None)
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    with pytest.raises(E.LaunchError, match="'xvfb-run' is not installed; install it with: apt-get install"):
        check_program(["xvfb-run", "-a", "godot3"], None)
