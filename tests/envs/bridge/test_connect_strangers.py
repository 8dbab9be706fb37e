"""Issue 25, parts 2, 5 and 6: strangers on the port, programs that do not fit, a single SDK env
object, back-off.

Real processes and sockets throughout: train.py as a subprocess, the C heater, SDK programs, raw sockets.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, free_port

from envs import errors as E
from envs.bridge import listen as L
from envs.bridge import protocol as P
from envs.bridge.batch import BatchProgram

FAST = ["--quiet", "--set", "agent.n_steps=32", "--set", "agent.batch_size=64", "--set", "agent.n_epochs=1",
        "--set", "eval.every=0", "--seed", "0"]


@pytest.fixture(autouse=True)
def _fresh_listeners():
    yield
    L.close_all()


def address(lst: L.Listener) -> tuple[str, int]:
    host, port = lst.address.rsplit(":", 1)
    return host, int(port)


def connect_when_listening(port: int, wait: float = 60.0) -> socket.socket:
    deadline = time.monotonic() + wait
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def trainer(port: int, run: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--env", "process",
                             "--set", f"env.listen=127.0.0.1:{port}", "--set", "env.connect_timeout=60",
                             "--num-envs", "2", "--timesteps", "256", "--run-dir", str(run), *FAST, *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def sdk_program(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "program.py"
    script.write_text(f"import sys\n"
                      f"sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'examples' / 'thirdparty')!r}]\n"
                      "import numpy as np\nfrom envs.bridge.sdk import serve\nfrom heater import Heater\n"
                      + body)
    return script


def test_twenty_silent_connections_do_not_stall_a_run(heater, tmp_path):
    port = free_port()
    t = time.monotonic()
    proc = trainer(port, tmp_path / "run", "--set", "env.handshake_timeout=3")
    silent = [connect_when_listening(port)]
    silent += [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(19)]
    programs = [subprocess.Popen([heater, "--connect", f"127.0.0.1:{port}", "--connect-wait", "2"],
                                 stderr=subprocess.DEVNULL) for _ in range(2)]
    out, err = proc.communicate(timeout=120)
    took = time.monotonic() - t
    print(f"20 silent connections + 2 heaters: train.py took {took:.1f} s")
    assert proc.returncode == 0 and "done: 256 steps" in out, err
    assert "Traceback" not in err and took < 60
    for p in programs:
        assert p.wait(30) == 0  # the run sent `close`; the heater then finds nobody listening and exits
    for s in silent:
        s.close()


def test_a_program_that_does_not_fit_is_told_why_and_the_run_goes_on(heater, tmp_path):
    port = free_port()
    other = sdk_program(tmp_path, "class Other(Heater):\n"
                        "    observation_space = {'type': 'Box', 'low': -1, 'high': 1, 'shape': [5]}\n"
                        f"serve(Other, connect=('127.0.0.1', {port}), connect_wait=5, max_refusals=1)\n")
    proc = trainer(port, tmp_path / "run", "--set", "env.num_instances=1")
    connect_when_listening(port).close()
    # other spaces
    misfits = [subprocess.Popen([sys.executable, str(other)], stderr=subprocess.PIPE, text=True),
               # another K than env.num_instances
               subprocess.Popen([heater, "--instances", "2", "--connect", f"127.0.0.1:{port}",
                                 "--max-refusals", "1"],
                                stderr=subprocess.PIPE, text=True)]
    time.sleep(1.0)  # the misfits come first
    good = [subprocess.Popen([heater, "--connect", f"127.0.0.1:{port}", "--connect-wait", "2"],
                             stderr=subprocess.DEVNULL) for _ in range(2)]
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "done: 256 steps" in out, err
    sdk_err, c_err = (p.communicate(timeout=30)[1] for p in misfits)
    assert "nondiff refused this program: it declares observation Box(-1.0, 1.0, (5,), float32)" in sdk_err
    assert "this run trains on observation Box(-10.0, 10.0, (3,), float32)" in sdk_err, sdk_err
    assert "refused this program 1 times in a row" in sdk_err and "Traceback" not in sdk_err
    assert ("nondiff refused this program: it declares num_instances 2; this run wants 1 (env.num_instances)"
            in c_err)
    assert err.count("refused a program that connected to") <= 2, err  # rate-limited: one line per 5 s
    for p in good:
        assert p.wait(30) == 0


def test_a_single_sdk_env_object_refuses_a_second_connection_and_the_trainer_exits_2(tmp_path):
    port = free_port()
    script = sdk_program(tmp_path, f"serve(Heater(), listen=('127.0.0.1', {port}))\n")
    server = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE, text=True)
    try:
        connect_when_listening(port, 30).close()
        t = time.monotonic()
        out = subprocess.run([sys.executable, str(ROOT / "train.py"), "--env", "process",
                              "--set", f"env.address=127.0.0.1:{port}", "--num-envs", "2",
                              "--timesteps", "256", "--run-dir", str(tmp_path / "run"), *FAST],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
        lines = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
        assert out.returncode == 2 and len(lines) == 1, out.stderr
        assert ("another connection is using; pass a factory" in lines[0]
                and "serve(Heater, listen=...)" in lines[0])
        assert "Traceback" not in out.stderr and time.monotonic() - t < 60
    finally:
        server.kill()
        _, server_err = server.communicate(timeout=10)
    assert "refused a second connection" in server_err


def test_pending_handshakes_are_bounded_and_the_timeout_says_what_came(heater):
    lst = L.listener("127.0.0.1:0")
    lst.say, lst.max_pending = (lambda line: None), 4
    silent = [socket.create_connection(address(lst)) for _ in range(10)]
    prog = subprocess.Popen([heater, "--connect", lst.address, "--connect-wait", "1"],
                            stderr=subprocess.DEVNULL)
    with pytest.raises(E.ConnectTimeout) as err:  # the heater's K is not the one asked for: nothing fits
        BatchProgram(listen="127.0.0.1:0", connect_timeout=0.5, handshake_timeout=30.0, num_instances=2)
    text = str(err.value)
    assert f"on {lst.address} within 0.5 s" in text and "busy" in text, text
    assert lst.refused["busy"] >= 6 and lst.pending <= 4
    closed_at_once = 0
    for s in silent:  # the 6 past the bound were closed at once: a read ends at EOF, not at a timeout
        s.settimeout(0.2)
        try:
            closed_at_once += s.recv(1) == b""
        except (TimeoutError, ConnectionResetError):
            pass
        s.close()
    assert closed_at_once >= 6
    prog.kill()
    prog.wait()


def test_connect_timeout_counts_only_until_the_handshakes_are_done_and_names_why(heater):
    lst = L.listener("127.0.0.1:0")
    silent = [socket.create_connection(address(lst)) for _ in range(5)]
    prog = subprocess.Popen([heater, "--connect", lst.address, "--connect-wait", "1"],
                            stderr=subprocess.DEVNULL)
    t = time.monotonic()
    first = BatchProgram(listen="127.0.0.1:0", connect_timeout=10, handshake_timeout=1.0)
    assert time.monotonic() - t < 3  # served beside the silent ones, not after them
    with pytest.raises(E.ConnectTimeout) as err:
        BatchProgram(listen="127.0.0.1:0", connect_timeout=2, handshake_timeout=1.0, expect=first.spec_reply)
    text = str(err.value)
    assert "6 connections came, 1 completed a handshake, 5 refused (5 silent)" in text, text
    assert "no complete handshake within 1 s (env.handshake_timeout)" in text and "--connect" in text
    first.close()
    for s in silent:
        s.close()
    L.close_all()
    assert prog.wait(10) == 0


def test_refusal_lines_are_rate_limited(heater):
    lines: list[str] = []
    lst = L.Listener("127.0.0.1:0", say=lines.append)
    stop = threading.Event()

    def flood() -> None:  # connect and hang up at once, as fast as possible
        while not stop.is_set():
            try:
                socket.create_connection(address(lst), timeout=1).close()
            except OSError:
                pass

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    with pytest.raises(E.ConnectTimeout):
        lst.take(3.0, lambda chan, timeout: P.recv(chan, timeout))
    stop.set()
    flooder.join(5)
    refusals = [ln for ln in lines if ln.startswith("refused a program")]
    assert sum(lst.refused.values()) >= 50 and len(refusals) == 1, (lst.refused, refusals)
    lst.close()


@pytest.mark.parametrize("client", ["sdk", "heater.c"])
def test_a_refused_client_backs_off_and_gives_up(client, heater, tmp_path):
    lst = L.listener("127.0.0.1:0", "s3cret")  # a client without the token is refused (silently)
    lst.say = lambda line: None
    host, port = lst.address.rsplit(":", 1)
    script = sdk_program(tmp_path,
                         f"serve(Heater, connect=({host!r}, {port}), connect_wait=1, max_refusals=3)\n")
    cmd = ([sys.executable, str(script)] if client == "sdk"
           else [heater, "--connect", lst.address, "--max-refusals", "3"])
    t = time.monotonic()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    with pytest.raises(E.ConnectTimeout):
        BatchProgram(listen="127.0.0.1:0", token="s3cret", connect_timeout=3.5)
    _, err = proc.communicate(timeout=20)
    took = time.monotonic() - t
    assert proc.returncode == 0 and "refused this program 3 times in a row" in err and "giving up" in err, err
    assert "trying again in 0.5 s" in err and "trying again in 1 s" in err, err
    assert lst.connected == 3 and lst.refused["token"] == 3 and 1.4 < took < 15, (lst.connected, took)


def test_fault_counts_say_what_they_count_and_warnings_name_the_governing_setting():
    from agents.run.health import EnvHealth
    from envs.faults import FAULT_KEY, Fault, FaultKind

    lines: list[str] = []
    health = EnvHealth(say=lines.append)
    crash = Fault(FaultKind.CRASH, "the program exited", restart=True, program="./heater --instances 4",
                  budget=100)  # as ProcessEnv reports it; an in-process env's crash has no budget
    shared = crash.merged(restart=False, budget=None, shared=True)  # its K - 1 other envs, as the vector env
    for _ in range(20):  # 20 program faults of a K = 4 program in 1,000 env steps: 2%
        health.observe([{FAULT_KEY: crash}, *({FAULT_KEY: shared} for _ in range(3))] + [{}] * 46)
    metrics = health.metrics()
    assert metrics["env/faults_by_kind/crash"] == 20 and metrics["env/envs_cut_by_program_faults"] == 60
    warning = next(line for line in lines if line.startswith("warning:"))
    assert "env.max_restarts" in warning and "nan_policy" not in warning, warning
