"""The bridge adapter and its watchdog against a real C program and real sockets."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from conftest import ROOT

import envs
from envs import errors as E
from envs.bridge import codec
from envs.bridge import protocol as P
from envs.bridge.process import ProcessEnv
from envs.errors import InvalidOutputError, RestartBudgetExhausted
from envs.faults import Fault, faults_in


def make(heater, *flags, nan_policy="truncate", **kwargs):
    command = " ".join([heater, *flags])
    return envs.make("process", command=command, nan_policy=nan_policy, **kwargs)


def fault_of(info) -> Fault:
    """The step's own fault, through the one parser."""
    return faults_in(info)[-1]


def steps_until_fault(env, n=50):
    for _ in range(n):
        obs, reward, term, trunc, info = env.step(np.array([0.5], dtype=np.float32))
        if "nondiff_fault" in info:
            return obs, reward, term, trunc, info
        if term or trunc:
            env.reset()
    raise AssertionError("no fault happened")


def test_heater_speaks_the_protocol(heater):
    env = make(heater)
    obs, _ = env.reset(seed=3)
    again, _ = make(heater).reset(seed=3)
    assert obs.dtype == np.float32 and obs.shape == (3,) and np.array_equal(obs, again)
    obs, reward, term, trunc, info = env.step(np.array([1.0], dtype=np.float32))
    assert np.isfinite(reward) and "is_success" in info and info["nondiff_step_ms"] > 0
    env.close()
    env.close()


def test_crash_is_truncated_recorded_and_restarted(heater):
    env = make(heater, "--crash-after", "5")
    env.reset(seed=0)
    obs, reward, term, trunc, info = steps_until_fault(env)
    fault = info["nondiff_fault"]
    assert isinstance(fault, Fault) and fault.budget == 10 and fault.restart
    assert trunc and not term and reward == 0.0 and np.all(np.isfinite(obs))
    assert fault.kind == "crash" and fault.exit_code == -signal.SIGABRT
    assert any("segfault in solver" in line for line in fault.stderr)
    env.reset()  # a fresh program
    assert env.unwrapped.restarts == 1
    env.close()


def test_hang_times_out_even_when_sigterm_is_ignored(heater):
    env = make(heater, "--hang-after", "3", "--ignore-sigterm", step_timeout=0.5, term_grace=0.5)
    env.reset(seed=0)
    t = time.monotonic()
    *_, info = steps_until_fault(env)
    assert fault_of(info).kind == "timeout" and time.monotonic() - t < 5
    assert fault_of(info).exit_code == -signal.SIGKILL  # SIGTERM ignored → escalated
    env.reset()
    env.step(np.array([0.1], dtype=np.float32))
    env.close()


def test_a_program_that_times_out_until_its_budget_is_spent_names_the_timeouts(heater):
    """A program slower than env.step_timeout on every step ended the run with 'no complete message within
    the deadline', naming no setting: a slow program looked like a hung one with no way out."""
    env = make(heater, "--hang-after", "1", step_timeout=0.3, term_grace=0.2, max_restarts=1)
    env.reset(seed=0)
    slow = r"timeout.*slow rather than hung needs a larger env\.step_timeout \(now 0\.3 s\) or env\.reset_"
    with pytest.raises(RestartBudgetExhausted, match=slow):
        for _ in range(10):
            *_, info = env.step(np.array([0.5], dtype=np.float32))
            if "nondiff_fault" in info:
                env.reset()
    env.close()


def test_sigstop_is_a_hang_and_the_program_is_replaced(heater):
    env = make(heater, step_timeout=0.5, term_grace=0.3)
    env.reset(seed=0)
    pid = env.unwrapped.program_pid
    os.kill(pid, signal.SIGSTOP)
    *_, info = steps_until_fault(env)
    assert fault_of(info).kind == "timeout"
    env.reset()
    assert env.unwrapped.program_pid != pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    env.close()


def test_garbage_bytes_are_a_protocol_fault(heater):
    env = make(heater, "--garbage-after", "4")
    env.reset(seed=0)
    *_, info = steps_until_fault(env)
    assert fault_of(info).kind == "protocol" and "limit" in fault_of(info).detail
    env.reset()
    env.close()


@pytest.mark.parametrize("flag, value", [("--nan-after", "NaN"), ("--inf-after", "inf")])
def test_non_finite_values_follow_the_policy(heater, flag, value):
    env = make(heater, flag, "3")
    env.reset(seed=0)
    obs, reward, term, trunc, info = steps_until_fault(env)
    assert trunc and fault_of(info).kind == "nonfinite" and value in fault_of(info).detail
    assert np.all(np.isfinite(obs)) and reward == 0.0
    env.close()

    env = make(heater, flag, "3", nan_policy="clip")
    env.reset(seed=0)
    obs, reward, term, trunc, info = steps_until_fault(env)
    assert not trunc and np.all(np.isfinite(obs)) and env.observation_space.contains(obs)
    env.close()

    env = make(heater, flag, "3", nan_policy="raise")
    env.reset(seed=0)
    with pytest.raises(InvalidOutputError, match=value):
        for _ in range(10):
            env.step(np.array([0.5], dtype=np.float32))
    env.close()


def test_major_version_mismatch_fails_naming_both(heater):
    with pytest.raises(E.VersionError, match=r"speaks 2\.0.*speaks 1\.3"):
        make(heater, "--version", "2.0")


def test_minor_version_mismatch_warns(heater, caplog):
    env = make(heater, "--version", "1.7")
    env.reset(seed=0)
    assert "minor versions differ" in caplog.text
    env.close()


def test_crash_in_reset_exhausts_the_budget_quickly(heater):
    env = make(heater, "--crash-in-reset", max_restarts=3)
    t = time.monotonic()
    with pytest.raises(RestartBudgetExhausted) as err:
        env.reset(seed=0)
    msg = str(err.value)
    assert ("after 3 restart(s)" in msg and "exit code 4" in msg and "sensor bus offline" in msg
            and heater in msg)
    assert time.monotonic() - t < 10
    env.close()


def test_restart_rate_limit(heater):
    env = make(heater, "--crash-in-reset", max_restarts=100, restart_rate=2, restart_period=60)
    with pytest.raises(RestartBudgetExhausted, match="rate limit 2 per 60s"):
        env.reset(seed=0)


# -- framing --------------------------------------------------------------------------------------------
def _pair():
    a, b = socket.socketpair()
    return P.Channel.from_socket(a), b


def test_huge_declared_length_is_refused_without_allocating():
    chan, peer = _pair()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peer.sendall(b"\xff\xff\xff\xff")
    t = time.monotonic()
    with pytest.raises(E.ProtocolError, match="over the"):
        P.recv(chan, timeout=30.0)
    assert time.monotonic() - t < 10.0  # refused on the length field, not after waiting out the 30 s deadline
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50 * 1024  # KiB


def test_truncated_frame_and_eof_mid_frame():
    chan, peer = _pair()
    peer.sendall(codec.encode({"type": "step", "x": np.zeros(10)})[:-5])
    with pytest.raises(E.BridgeTimeout):
        P.recv(chan, timeout=0.3)
    chan, peer = _pair()
    peer.sendall(codec.encode({"type": "step"})[:-3])
    peer.close()
    t = time.process_time()
    with pytest.raises(E.PeerClosed, match="mid-frame"):
        P.recv(chan, timeout=1.0)
    assert time.process_time() - t < 0.5  # no busy loop


def test_arrays_round_trip_as_raw_binary():
    msg = {"type": "step_result", "obs": {"a": np.arange(6, dtype=np.float32).reshape(2, 3),
                                          "b": np.array([1, 2], dtype=np.int64)}, "reward": 1.5}
    frame = codec.encode(msg)
    assert b"0.0" not in frame.split(b"]}")[0]  # values are not JSON text
    out = codec.decode(frame[4:])
    assert np.array_equal(out["obs"]["a"], msg["obs"]["a"]) and out["obs"]["b"].dtype == np.int64


# -- TCP ------------------------------------------------------------------------------------------------
SERVER = textwrap.dedent("""
    import sys
    import gymnasium as gym
    from envs.bridge.sdk import serve
    serve(lambda: gym.make("Pendulum-v1"), name="pendulum", listen=("127.0.0.1", 0), token=sys.argv[1])
""")


@pytest.fixture
def tcp_server():
    proc = subprocess.Popen([sys.executable, "-c", SERVER, "s3cret"], stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)
    line = proc.stderr.readline()
    port = int(line.strip().rsplit(":", 1)[1])
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    yield port
    proc.kill()
    proc.wait()


def test_tcp_with_token(tcp_server):
    env = envs.make("process", address=f"127.0.0.1:{tcp_server}", token="s3cret")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3,)
    env.step(np.array([0.0], dtype=np.float32))
    env.close()


def test_tcp_wrong_token_is_refused_before_any_step(tcp_server):
    with pytest.raises(E.AuthError, match="token"):
        ProcessEnv(address=f"127.0.0.1:{tcp_server}", token="wrong")


def test_non_loopback_needs_explicit_option_and_token():
    with pytest.raises(ValueError, match="allow_remote=True and a shared token"):
        ProcessEnv(address="10.1.2.3:5555")


def test_tcp_serves_eight_connections_at_once(tcp_server):
    """The trainer opens a probe, then 8 envs at once, then an eval env: all live together."""
    probe = ProcessEnv(address=f"127.0.0.1:{tcp_server}", token="s3cret", reset_timeout=5)
    made: list[ProcessEnv] = []
    errors: list[BaseException] = []

    def connect() -> None:
        try:
            made.append(ProcessEnv(address=f"127.0.0.1:{tcp_server}", token="s3cret", reset_timeout=5))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=connect) for _ in range(8)]
    t = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors and len(made) == 8 and time.monotonic() - t < 5
    for i, env in enumerate([probe, *made]):
        env.reset(seed=i)
    for env in [probe, *made]:
        *_, trunc, info = env.step(np.array([0.0], dtype=np.float32))
        assert not trunc and "nondiff_fault" not in info
    for env in [probe, *made]:
        env.close()


def sdk_program(path, info: str = "{}", after: str = ""):
    """A minimal Python bridge program at ``path`` (the SDK, one float observed and acted): its reset's info
    is the expression ``info``; the code ``after`` runs once ``serve`` has returned."""
    path.write_text(textwrap.dedent("""
        import os, sys, time
        import numpy as np
        from gymnasium import spaces
        from envs.bridge.sdk import serve

        class Env:
            observation_space = spaces.Box(-1, 1, (1,), np.float32)
            action_space = spaces.Box(-1, 1, (1,), np.float32)
            def reset(self, seed=None, options=None):
                return np.zeros(1, np.float32), INFO
            def step(self, action):
                return np.zeros(1, np.float32), 0.0, True, False, {}

        serve(Env())
    """).replace("INFO", info) + textwrap.dedent(after))
    return path


def test_program_inherits_the_environment_but_not_the_private_ray_credentials(tmp_path, monkeypatch):
    seen = '{k: os.environ.get(k, "<unset>") for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE", "NONDIFF_PROBE")}'
    program = sdk_program(tmp_path / "envprobe.py", info=seen)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "ray-secret")
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("NONDIFF_PROBE", "kept")
    env = ProcessEnv(command=f"{sys.executable} {program}", cwd=os.getcwd())
    _, info = env.reset(seed=0)
    env.close()
    assert info == {"RAY_AUTH_TOKEN": "<unset>", "RAY_AUTH_MODE": "<unset>", "NONDIFF_PROBE": "kept"}


def test_a_program_finishes_its_cleanup_after_bye_before_it_is_stopped(tmp_path):
    """After ``bye`` a program on pipes exits by itself (docs/protocol.md); it was sent SIGTERM at once, so
    cleanup after ``serve`` returned raced the signal and lost: Blender's render server left its session
    directory in /tmp on every close. A program that takes 0.3 s to clean up now finishes; one that never
    exits is stopped after EXIT_AFTER_BYE_S."""
    program = sdk_program(tmp_path / "tidy.py", after="""
        if sys.argv[2] == "hang":
            time.sleep(3600)
        time.sleep(0.3)  # removing temporary files, say
        open(sys.argv[1], "w").close()
    """)
    for mode in ("tidy", "hang"):
        done = tmp_path / f"cleaned-{mode}"
        env = ProcessEnv(command=f"{sys.executable} {program} {done} {mode}", cwd=os.getcwd())
        env.reset(seed=0)
        t = time.monotonic()
        env.close()
        took = time.monotonic() - t
        if mode == "tidy":
            assert done.exists() and took < 1.0, took
        else:  # stopped: SIGTERM after the wait, SIGKILL after term_grace
            assert not done.exists() and 1.0 <= took < 1.0 + env.term_grace + 1.0, took


def test_a_discrete_action_travels_as_a_0d_array_as_documented():
    msg = codec.decode(codec.encode({"type": "step", "action": np.asarray(2)})[4:])
    assert msg["action"].shape == () and msg["action"].dtype == np.int64 and int(msg["action"]) == 2


@pytest.mark.parametrize("command", [5, ["./sim", "--fast"], {"a": 1}])
def test_a_command_that_is_no_string_is_a_value_error_naming_what_came(command):
    # was AttributeError "'int' object has no attribute 'read'" from shlex: "env 'process' failed to start"
    with pytest.raises(ValueError, match=f"env.command must be one string.*got {type(command).__name__} "):
        ProcessEnv(command=command)
