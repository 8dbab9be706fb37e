"""Connect mode's listener with real sockets and the C heater connecting to it."""

from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest

from envs import errors as E
from envs.bridge import listen as L
from envs.bridge.batch import BatchProgram
from envs.bridge.process import ProcessEnv


@pytest.fixture(autouse=True)
def _fresh_listeners():
    yield
    L.close_all()


def test_the_probe_connection_is_kept_for_the_next_env(heater):
    lst = L.listener("127.0.0.1:0")
    prog = subprocess.Popen([heater, "--instances", "2", "--connect", lst.address, "--connect-wait", "1"])
    probe = ProcessEnv(listen="127.0.0.1:0", connect_timeout=20)
    assert probe.num_instances == 2
    probe.close()  # parked, not closed: the program connects once
    batch = BatchProgram(listen="127.0.0.1:0", connect_timeout=1)
    obs, _ = batch.reset_instances(range(2), [0, 1])
    assert lst.connected == 1 and lst.held == 1 and obs.shape == (2, 3)
    assert batch.step_all(np.zeros((2, 1), np.float32)).fault is None
    batch.close()
    L.close_all()  # the parked session gets `close`; the heater finds nobody listening and exits
    assert prog.wait(10) == 0


def test_a_dropped_program_is_replaced_by_the_next_one_that_connects(heater):
    lst = L.listener("127.0.0.1:0")
    first = subprocess.Popen([heater, "--connect", lst.address, "--crash-after", "2"],
                             stderr=subprocess.DEVNULL)
    prog = BatchProgram(listen="127.0.0.1:0", connect_timeout=20)
    prog.reset_instances([0])
    prog.step_all(np.zeros((1, 1), np.float32))
    res = prog.step_all(np.zeros((1, 1), np.float32))
    assert res.fault is not None and res.fault.kind.value == "crash" and lst.held == 0
    second = subprocess.Popen([heater, "--connect", lst.address, "--connect-wait", "1"])
    obs, _ = prog.reset_instances([0])
    assert prog.restarts == 1 and lst.connected == 2 and obs.shape == (1, 3)
    prog.close()
    L.close_all()
    first.wait(10)
    assert second.wait(10) == 0


def test_non_loopback_needs_a_token_and_a_taken_port_is_refused():
    with pytest.raises(E.StartupError, match="not a loopback address"):
        L.Listener("0.0.0.0:0")
    taken = L.Listener("127.0.0.1:0", say=lambda line: None)
    with pytest.raises(E.StartupError, match="already in use"):
        L.Listener(taken.address)
    with pytest.raises(E.StartupError, match="HOST:PORT"):
        L.parse_address("5555")
    taken.close()


def test_the_wait_is_visible_and_bounded():
    lines: list[str] = []
    lst = L.Listener("127.0.0.1:0", say=lines.append)
    lst.expected = 8
    with pytest.raises(E.ConnectTimeout,
                       match=rf"no program connected to {lst.address} within 1.5 s.*--connect"):
        lst.take(1.5, lambda chan, timeout: None)
    assert any(f"waiting for 8 programs on {lst.address} (for 8 envs, one each unless they declare "
               "num_instances; 0 taken, 0 ready; 0 connections came" in line for line in lines)
    lst.close()


def test_a_stranger_with_a_wrong_token_is_refused_and_the_wait_goes_on(heater):
    lines: list[str] = []
    lst = L.listener("127.0.0.1:0", "s3cret")
    lst.say = lines.append
    stranger = subprocess.Popen([heater, "--connect", lst.address, "--connect-wait", "1"])  # no HMAC: refused
    t = time.monotonic()
    with pytest.raises(E.ConnectTimeout, match="refused .*token: .*wrong or missing token"):
        BatchProgram(listen="127.0.0.1:0", token="s3cret", connect_timeout=3)
    assert time.monotonic() - t < 10  # a stranger that reconnects at once does not extend the wait
    assert any("refused a program that connected to" in line for line in lines)
    stranger.kill()
    stranger.wait()


def test_a_program_with_another_k_is_refused_for_the_slot(heater):
    lines: list[str] = []
    lst = L.listener("127.0.0.1:0")
    lst.say = lines.append
    progs = [subprocess.Popen([heater, "--instances", "2", "--connect", lst.address, "--connect-wait", "1"])]
    first = BatchProgram(listen="127.0.0.1:0", connect_timeout=20)
    progs.append(subprocess.Popen([heater, "--instances", "3", "--connect", lst.address,
                                   "--connect-wait", "1"]))
    with pytest.raises(E.ConnectTimeout,
                       match="declares .*num_instances 3; this run trains on .*num_instances 2"):
        BatchProgram(listen="127.0.0.1:0", connect_timeout=2, expect=first.spec_reply)
    progs.append(subprocess.Popen([heater, "--instances", "2", "--connect", lst.address,
                                   "--connect-wait", "1"]))
    second = BatchProgram(listen="127.0.0.1:0", connect_timeout=20, expect=first.spec_reply)
    assert second.num_instances == 2
    for p in (first, second):
        p.close()
    L.close_all()
    for proc in progs:
        proc.kill()
        proc.wait()
