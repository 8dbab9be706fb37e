"""Hostile bridge programs: every bad reply is a counted ``protocol`` fault, every bad start one
fast error."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, run_cli

import envs
from envs import errors as E
from envs import stop as S
from envs.bridge import protocol as P
from envs.bridge.process import ProcessEnv
from envs.faults import FAULT_KEY, RESET_FAULTS_KEY, Fault, FaultKind, faults_in

HOSTILE = ROOT / "tests" / "fixtures" / "bridge" / "hostile.py"
ACT = np.array([0.5], dtype=np.float32)


def hostile(mode: str, *extra: str) -> str:
    return " ".join([sys.executable, str(HOSTILE), mode, *extra])


@pytest.mark.parametrize("mode, field", [
    ("deep_header", "deeper than"),
    ("huge_int_reward", "step_result.reward"),
    ("info_not_object", "step_result.info"),
    ("missing_obs", "step_result.obs: missing"),
    ("zero_itemsize", "arrays[0].dtype"),
    ("rank_65", "arrays[0].shape"),
    ("arrays_not_list", "'arrays' must be a list"),
    ("bad_array_ref", "array reference 7"),
    ("wrong_shape", "step_result.obs: shape [4]"),
])
def test_bad_step_reply_is_a_counted_protocol_fault(mode, field, tmp_path):
    env = ProcessEnv(command=hostile(mode, "--once", str(tmp_path / "once")), max_restarts=3)
    first, _ = env.reset(seed=0)
    env.step(ACT)
    obs, reward, term, trunc, info = env.step(ACT)
    fault = info[FAULT_KEY]
    assert isinstance(fault, Fault) and fault.kind is FaultKind.PROTOCOL and field in fault.detail
    assert trunc and not term and reward == 0.0 and np.array_equal(obs, first)
    assert fault.restart and fault.budget == 3 and fault.program == env.who
    env.reset()  # restarted: the new copy behaves
    assert env.restarts == 1 and FAULT_KEY not in env.step(ACT)[4]
    env.close()


def test_bad_reset_observation_is_a_fault_through_the_guard(tmp_path):
    env = envs.make("process", command=hostile("wrong_shape_reset", "--once", str(tmp_path / "once")))
    obs, info = env.reset(seed=0)
    assert obs.shape == (3,) and env.observation_space.contains(obs)
    assert (faults_in(info)[-1].kind is FaultKind.PROTOCOL
            and "reset_result.obs: shape [4]" in info[FAULT_KEY].detail)
    *_, info = env.step(ACT)  # vector envs drop reset infos: the fault comes again with the next step
    assert [f.kind for f in info[RESET_FAULTS_KEY]] == [FaultKind.PROTOCOL]
    env.close()


def test_bad_reset_every_time_spends_the_budget_in_one_line():
    env = ProcessEnv(command=hostile("wrong_shape_reset"), max_restarts=2)
    with pytest.raises(E.BridgeError, match=r"after 2 restart\(s\).*restart budget of 2 \(env.max_restarts, "
                                            r"shared by all envs\)"):
        env.reset(seed=0)
    env.close()


def test_program_cannot_forge_trainer_records():
    env = ProcessEnv(command=hostile("fake_fault"))
    env.reset(seed=0)
    env.step(ACT)
    *_, trunc, info = env.step(ACT)
    assert not trunc and not faults_in(info) and not any(k.startswith("nondiff_") for k in info)
    env.close()


def test_error_in_reply_to_render_makes_the_program_faulty():
    env = ProcessEnv(command=hostile("render_error"), render_mode="rgb_array")
    env.reset(seed=0)
    with pytest.raises(E.BridgeError, match="failed to render.*no display"):
        env.render()
    env.reset()
    assert env.restarts == 1
    *_, info = env.step(ACT)
    assert [f.kind for f in info[RESET_FAULTS_KEY]] == [FaultKind.REMOTE_ERROR]
    env.close()


def test_stderr_flood_without_newlines_keeps_memory_bounded():
    def rss_mib() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    env = ProcessEnv(command=hostile("stderr_flood"), step_timeout=8)
    env.reset(seed=0)
    env.step(ACT)
    before = rss_mib()
    for _ in range(5):  # 250 MB of stderr, no newline
        *_, trunc, info = env.step(ACT)
        assert not trunc and not faults_in(info)
    grown = rss_mib() - before
    kept = env._stderr.lines()
    assert grown < 40, f"RSS grew {grown:.0f} MiB"
    assert sum(len(line) for line in kept) <= 64 * 1024 and kept and set(kept[-1]) == {"x"}
    env.close()


# -- specs --------------------------------------------------------------------------------------------------
def spec(obs: dict) -> str:
    msg = {"type": "spec", "env": "s", "version": "1.0", "observation_space": obs,
           "action_space": {"type": "Box", "low": 0, "high": 1, "shape": [1], "dtype": "float32"}}
    return hostile("normal", "--spec", "'" + json.dumps(msg) + "'")


@pytest.mark.parametrize("obs, field", [
    ({"type": "Box", "low": 0, "high": 1, "shape": [100000, 100000]}, "max_space_elements"),
    ({"type": "Discrete", "n": 0}, "observation_space.n"),
    ({"type": "Box", "high": 1, "shape": [3]}, "observation_space.low: missing"),
    ({"type": "Box", "low": [0, 0], "high": 1, "shape": [3]}, "observation_space.low: 2 values"),
    ({"type": "Box", "low": 0, "high": 1, "shape": [3], "dtype": "V0"}, "observation_space.dtype"),
    ({"type": "Dict", "spaces": {"a": {"type": "Discreet", "n": 2}}}, "observation_space.spaces['a'].type"),
], ids=["huge", "discrete0", "missing-low", "short-low", "void-dtype", "unknown-type"])
def test_malformed_spec_is_one_fast_error_naming_the_field(obs, field):
    t = time.monotonic()
    with pytest.raises(E.SpecError,
                       match=field.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")) as err:
        ProcessEnv(command=spec(obs))
    assert time.monotonic() - t < 5 and "\n" not in str(err.value) and isinstance(err.value, ValueError)


def test_spec_shape_flat_and_infinite_bounds_are_honoured():
    env = ProcessEnv(command=spec({"type": "Box", "low": [0, None, "-inf", -1], "high": None,
                                   "shape": [2, 2]}))
    box = env.observation_space
    assert (box.shape == (2, 2) and box.low.tolist() == [[0, -np.inf], [-np.inf, -1]]
            and np.all(np.isinf(box.high)))
    env.close()
    env = ProcessEnv(command=spec({"type": "Box", "low": -10, "high": 10, "shape": [3]}))
    assert env.observation_space.shape == (3,) and env.observation_space.low.tolist() == [-10] * 3
    env.reset(seed=0)
    env.close()


# -- start-up errors ----------------------------------------------------------------------------------------
def test_start_up_errors_are_fast_specific_and_not_retried(tmp_path, heater):
    script = tmp_path / "prog"
    script.write_text("#!/bin/sh\nexit 0\n")
    cases = [
        (dict(command=str(tmp_path / "missing")), E.LaunchError, "does not exist"),
        (dict(command="no-such-program-xyz"), E.LaunchError, "not found on PATH"),
        (dict(command=str(script)), E.LaunchError, "not executable"),
        (dict(command=heater, token="s3cret"), E.AuthError, "failed the token check"),
        (dict(command=f"{heater} --version 2.0"), E.VersionError, r"speaks 2\.0"),
        (dict(command=heater, cwd=str(tmp_path / "nowhere")), E.LaunchError, "env.cwd"),
    ]
    for kwargs, cls, match in cases:
        t = time.monotonic()
        with pytest.raises(cls, match=match) as err:
            ProcessEnv(**kwargs, max_restarts=10)
        assert time.monotonic() - t < 2, kwargs
        assert isinstance(err.value, ValueError) and "\n" not in str(err.value)


def test_a_script_whose_interpreter_is_missing_is_not_retried(tmp_path):
    script = tmp_path / "prog"
    script.write_text("#!/no/such/interpreter\n")
    script.chmod(0o755)
    t = time.monotonic()
    with pytest.raises(E.LaunchError, match="cannot run"):
        ProcessEnv(command=str(script), max_restarts=10)
    assert time.monotonic() - t < 3


@pytest.mark.parametrize("case", ["missing", "not-executable", "wrong-token", "version", "bad-spec"])
def test_train_exits_2_in_one_line(case, tmp_path, heater):
    script = tmp_path / "prog"
    script.write_text("#!/bin/sh\nexit 0\n")
    command = {"missing": str(tmp_path / "missing"), "not-executable": str(script), "wrong-token": heater,
               "version": f"{heater} --version 2.0",
               "bad-spec": spec({"type": "Box", "low": 0, "high": 1, "shape": [100000, 100000]})}[case]
    args = ["--env", "process", "--set", f"env.command={command}", "--timesteps", "256",
            "--run-dir", str(tmp_path / "run")]
    if case == "wrong-token":
        args += ["--set", "env.token=s3cret"]
    t = time.monotonic()
    out = run_cli("train.py", *args, timeout=60)
    took = time.monotonic() - t
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip() and not line.startswith("WARNING")]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in out.stderr, out.stderr
    # under the 30 s reset (handshake) deadline: it failed on the reply, not by waiting; the bound leaves room
    # for train.py's own start-up (torch, SB3), alone over 5 s at load > 12 (15.4 s all told at load 8)
    assert took < 25, f"{took:.1f}s"


def test_no_bridge_wait_outlives_a_stop_request():
    """The hook a trainer's signal handler calls: envs.stop.request_stop()."""
    S.clear_stop()
    try:
        threading.Timer(0.3, S.request_stop).start()
        t = time.monotonic()
        with pytest.raises(E.StopRequested):
            ProcessEnv(command=hostile("hang_handshake"), reset_timeout=60)
        assert time.monotonic() - t < 2
    finally:
        S.clear_stop()


def test_the_documented_hmac_example_holds():
    doc = (ROOT / "docs" / "protocol.md").read_text()
    assert P.mac("s3cret", "server", "00") in doc


def test_sigterm_while_programs_hang_in_their_handshake(tmp_path):
    """train.py acts on SIGTERM within seconds although reset_timeout is 60 s, and leaves
    no program behind."""
    import os
    import signal
    import subprocess

    marker = tmp_path / "first-launch-done"
    command = hostile("hang_handshake", "--after", str(marker))
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--env", "process", "--set",
                             f"env.command={command}", "--set", "env.reset_timeout=60", "--num-envs", "2",
                             "--timesteps", "256", "--run-dir", str(tmp_path / "run"), "--quiet"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def programs() -> list[int]:
        out = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and str(marker).encode() in (entry / "cmdline").read_bytes():
                    out.append(int(entry.name))
            except OSError:
                continue
        return out

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (marker.exists() and len(programs()) >= 2):
        time.sleep(0.1)  # the probe is done; the training envs' programs (and supervisors) hang
    assert marker.exists() and proc.poll() is None
    time.sleep(0.5)
    t = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=30)
    took = time.monotonic() - t
    print(f"acted on SIGTERM after {took:.2f}s, exit code {proc.returncode}")
    assert took < 3, f"acted on SIGTERM after {took:.1f}s"
    gone = time.monotonic() + 5
    while programs() and time.monotonic() < gone:
        time.sleep(0.05)
    assert not programs()


def test_every_restart_spent_on_a_failed_start_is_on_record(tmp_path):
    """The run-wide budget sums restart faults, so a start that fails must leave a fault too."""
    env = ProcessEnv(command=hostile("crash_handshake", "--once", str(tmp_path / "once")))
    env.reset(seed=0)
    *_, info = env.step(ACT)
    faults = info[RESET_FAULTS_KEY]
    assert (env.restarts == 1
            and [(f.kind, f.restart, f.exit_code) for f in faults] == [(FaultKind.CRASH, True, 5)])
    assert "crashed in the handshake" in faults[0].stderr[-1]
    env.close()
