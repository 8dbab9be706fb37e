"""The Godot adapter against a real headless Godot 3 (godot3-server, installed by `make install`): the
GDScript client of protocol 1.1 (handshake both ways, seeds, subset resets), the shipped game, its faults,
and the trainer that learns it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import numpy as np
import pytest

from envs import errors as E
from envs.adapters.godot import GODOT
from envs.bridge import protocol as P
from envs.bridge.batch import BatchProgram
from envs.bridge.handshake import shake
from envs.bridge.launch import ASSETS
from envs.vector.bridge_start import make_bridge_vector_env

PROJECT = str(ASSETS / "godot")


def command(agents: int) -> str:
    return f"{GODOT} --path {PROJECT} --fixed-fps 60 --agents={agents}"


def start_godot(sock: socket.socket, token: str,
                agents: int = 2) -> tuple[subprocess.Popen[bytes], P.Channel]:
    """Godot started by hand, connecting to ``sock``; its connection."""
    host, port = sock.getsockname()
    proc = subprocess.Popen([GODOT, "--path", PROJECT, "--fixed-fps", "60", f"--agents={agents}"],
                            env={**os.environ, "NONDIFF_CONNECT": f"{host}:{port}", "NONDIFF_TOKEN": token},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sock.settimeout(10)
    conn, _ = sock.accept()
    return proc, P.Channel.from_socket(conn)


@pytest.fixture
def listening():
    sock = socket.create_server(("127.0.0.1", 0))
    yield sock
    sock.close()


def test_handshake_proves_the_token_both_ways(listening):
    proc, chan = start_godot(listening, "s3cret", agents=3)
    spec = shake(chan, 5.0, who="godot", token="s3cret", max_message=P.MAX_MESSAGE, max_space_elements=1000)
    assert spec.num_instances == 3 and spec.observation_space.shape == (12,) and spec.action_space.n == 5
    P.send(chan, {"type": "close"}, 2.0)
    assert P.recv(chan, 2.0)["type"] == "bye"
    assert proc.wait(5) == 0  # it quits when the session ends
    proc, chan = start_godot(listening, "s3cret")
    with pytest.raises(E.AuthError):  # Godot's MAC does not prove the trainer's token
        shake(chan, 5.0, who="godot", token="other", max_message=P.MAX_MESSAGE, max_space_elements=1000)
    chan.close()
    proc.wait(5)
    proc, chan = start_godot(listening, "s3cret")  # and Godot checks the trainer's MAC
    P.send(chan, {"type": "hello", "version": "1.1", "nonce": "00"}, 2.0)
    assert len(P.recv(chan, 5.0)["mac"]) == 64
    P.send(chan, {"type": "auth", "mac": "0" * 64}, 2.0)
    with pytest.raises(E.RemoteError, match="authentication failed"):
        P.recv(chan, 5.0)
    assert proc.wait(5) == 2


def test_hmac_matches_the_protocol_example(listening):
    proc, chan = start_godot(listening, "s3cret")
    P.send(chan, {"type": "hello", "version": "1.1", "nonce": "00"}, 2.0)
    assert P.recv(chan, 5.0)["mac"] == "7347c3958013bb788927b929156a9ba00c71ff167757925a435cb27d0d2ce6f7"
    chan.close()  # the trainer goes: Godot ends by itself
    assert proc.wait(5) == 0


def test_same_seeds_same_episodes_and_subset_resets():
    runs = []
    for _ in range(2):
        p = BatchProgram(command=command(4), listen="127.0.0.1:0")
        obs, _ = p.reset_instances(range(4), [7, 8, 9, 10])
        trace = [obs]
        for t in range(25):
            trace.append(p.step_all(np.array([1, 3, 4, t % 5])).result.obs)
        first = trace[-1].copy()
        again, _ = p.reset_instances([1, 3], [8, 10])  # a subset: the others go on undisturbed
        assert again.shape == (2, 12) and np.array_equal(again, trace[0][[1, 3]])
        after = p.step_all(np.zeros(4, dtype=np.int64)).result
        assert after.obs.shape == (4, 12) and not np.array_equal(after.obs[0], trace[0][0])
        assert not np.array_equal(first[0], trace[0][0])
        runs.append(np.stack(trace))
        p.close()
    assert np.array_equal(runs[0], runs[1])


def test_autoreset_gives_the_same_episodes_without_the_reset_round_trips():
    """The addon speaks 1.2: training's steps ask it to reset finished agents within the reply; the
    episodes are those of separate resets (the same seeds and actions, in two Godots), with no reset sent."""
    arms, sent, venvs = [], [], []  # (the wrapped vector envs kept: their collection would close them)
    for autoreset in (True, False):
        venvs.append(make_bridge_vector_env({"command": command(4), "listen": "127.0.0.1:0"}, 4, None))
        raw = venvs[-1].unwrapped
        raw.programs[0].want_autoreset = autoreset
        assert raw.programs[0].spec_reply.version == "1.2" and raw.programs[0].autoreset is autoreset
        begin_reset, calls = raw.programs[0].begin_reset, []
        raw.programs[0].begin_reset = lambda idx, f=begin_reset, calls=calls: calls.append(idx) or f(idx)
        raw.reset(seed=3)
        arms.append(raw)
        sent.append(calls)
    rng, ends = np.random.default_rng(1), 0
    for _ in range(400):
        act = rng.integers(0, 5, 4)
        (o0, r0, t0, u0, i0), (o1, r1, t1, u1, i1) = (raw.step(act) for raw in arms)
        assert np.array_equal(o0, o1) and np.array_equal(r0, r1)
        assert np.array_equal(t0, t1) and np.array_equal(u0, u1)
        if (t0 | u0).any():
            assert np.array_equal(i0["final_obs"][t0 | u0].tolist(), i1["final_obs"][t0 | u0].tolist())
        ends += int((t0 | u0).sum())
    assert ends >= 8 and sent[0] == [] and len(sent[1]) >= 2
    for venv in venvs:
        venv.close()


def test_random_policy_fails():
    venv = make_bridge_vector_env({"command": command(16), "listen": "127.0.0.1:0"}, 16, None)
    raw = venv.unwrapped
    raw.reset(seed=0)
    episodes = successes = 0
    rng = np.random.default_rng(0)
    while episodes < 100:
        _, _, terminated, truncated, info = raw.step(rng.integers(0, 5, 16))
        for i in np.flatnonzero(terminated | truncated):
            episodes += 1
            successes += bool(terminated[i])
    venv.close()
    assert successes / episodes < 0.1


@pytest.mark.parametrize("kind,fault", [("crash", "crash"), ("hang", "timeout"), ("garbage", "protocol")])
def test_a_fault_costs_one_restart_not_the_run(kind, fault, tmp_path, monkeypatch):
    monkeypatch.setenv("NONDIFF_GODOT_FAULT", f"{kind}:5:{tmp_path / 'once'}")
    venv = make_bridge_vector_env({"command": command(4), "listen": "127.0.0.1:0", "step_timeout": 1.0,
                                   "term_grace": 0.2}, 4, None)
    raw = venv.unwrapped
    raw.reset(seed=0)
    seen = []
    for _ in range(12):
        obs, _, _, truncated, info = raw.step(np.ones(4, dtype=np.int64))
        ended = info.get("final_info", {})  # the fault ended the episodes; they were reset in the same step
        if "nondiff_fault" in ended:
            seen += [(f.kind.value, f.restart, bool(t))
                     for f, t in zip(ended["nondiff_fault"], truncated, strict=True) if f]
    assert raw.programs[0].restarts == 1 and (tmp_path / "once").exists()
    assert seen[0] == (fault, True, True) and len([s for s in seen if s[1]]) == 1
    assert np.isfinite(obs).all()
    venv.close()


def test_missing_godot_is_one_line_with_the_install_command(cli, tmp_path):
    proc = cli("train.py", "--env", "godot", "--timesteps", "256", "--run-dir", str(tmp_path / "run"),
               env={"PATH": str(tmp_path)})
    assert proc.returncode == 2
    assert "apt-get install godot3-server" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.ci
def test_train_py_learns_the_godot_game_and_evaluate_py_scores_it(cli, tmp_path):
    run = tmp_path / "run"
    began = time.monotonic()
    cli("train.py", "--env", "godot", "--timesteps", "120000", "--run-dir", str(run), "--set", "eval.every=0",
        check=True)
    trained = time.monotonic() - began
    out = tmp_path / "eval.json"
    cli("evaluate.py", str(run), "--episodes", "100", "--json", str(out), check=True)
    result = json.loads(out.read_text())
    assert result["success_rate"] >= 0.9 and result["random"]["success_rate"] < 0.1, (result, trained)


@pytest.mark.parametrize("frame", ["shape", "length"])
def test_the_client_bounds_what_it_reads(listening, frame):
    proc, chan = start_godot(listening, "")
    shake(chan, 5.0, who="godot", token="", max_message=P.MAX_MESSAGE, max_space_elements=1000)
    header = json.dumps({"type": "step", "actions": {"$array": 0},
                         "arrays": [{"dtype": "<i8", "shape": [10**9, 2]}]}).encode()
    body = header + bytes(16)
    length = len(body) + 4 if frame == "shape" else 2**31  # a billion actions in 16 bytes; a 2 GiB frame
    chan.write_all(length.to_bytes(4, "big") + len(header).to_bytes(4, "big") + body, time.monotonic() + 2)
    assert proc.wait(5) == 0  # it ends the session at once instead of reading or allocating it
    chan.close()


def test_action_repeat_is_physics_ticks_of_game_time():
    speeds = {}
    for repeat in (1, 4):
        p = BatchProgram(command=command(1) + f" --action-repeat={repeat}", listen="127.0.0.1:0")
        p.reset_instances([0], [5])
        obs = p.step_all(np.array([1])).result.obs  # one push to the right
        speeds[repeat] = float(obs[0, 2])  # x velocity / 300 after `repeat` ticks of 1/60 s
        p.close()
    # a constant force against linear damping 2: v(n ticks) = (F/d)(1 - (1 - d/60)^n), F = 600
    for repeat, speed in speeds.items():
        assert speed * 300 == pytest.approx(300 * (1 - (1 - 2 / 60) ** repeat), rel=0.05), (repeat, speed)
