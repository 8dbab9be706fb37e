"""Protocol 1.1 (num_instances): the batch API against the real C and Python programs and hostile replies."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import ROOT

from envs import errors as E
from envs.bridge import protocol as P
from envs.bridge.batch import BatchProgram
from envs.bridge.process import ProcessEnv
from envs.faults import FaultKind

PY_HEATER = f"{sys.executable} {ROOT / 'examples' / 'thirdparty' / 'heater.py'}"
ACT = np.full((4, 1), 1.0, np.float32)

HOSTILE = textwrap.dedent("""
    # A 1.1 program (1.2 for the auto_ modes) with 4 instances whose step replies break the batched grammar
    # in one way (argv[1]).
    import sys
    import numpy as np
    from envs.bridge import protocol as P
    mode = sys.argv[1]
    chan = P.Channel(0, 1)
    hello = P.recv(chan, 30)
    version = "1.2" if mode.startswith("auto") else "1.1"
    P.send(chan, {"type": "challenge", "version": version, "nonce": "00", "mac": ""}, 5)
    P.recv(chan, 30)
    P.send(chan, {"type": "spec", "env": "hostile", "version": "1.1", "num_instances": 4,
                  "observation_space": {"type": "Box", "low": -1, "high": 1, "shape": [2]},
                  "action_space": {"type": "Discrete", "n": 2}}, 5)
    while True:
        msg = P.recv(chan, 30)
        n = len(msg.get("instances", range(4)))
        obs = np.zeros((n, 2), np.float32)
        if msg["type"] == "reset":
            P.send(chan, {"type": "reset_result", "obs": obs}, 5)
            continue
        reply = {"type": "step_result", "obs": obs, "rewards": np.zeros(n), "terminated": np.zeros(n, bool)}
        if mode == "wrong_k":
            reply["obs"] = np.zeros((3, 2), np.float32)
        elif mode == "flags":
            reply["truncated"] = np.zeros(n, np.int64)
        elif mode == "infos":
            reply["infos"] = [{}] * (n + 1)
        elif mode == "rewards":
            reply["rewards"] = np.zeros(n - 1)
        elif mode == "single":
            reply = {"type": "step_result", "obs": obs[0], "reward": 0.0}
        elif mode == "unasked":  # final observations for a step that did not ask for autoreset
            reply["final_obs"] = obs[:0]
        elif mode == "auto_missing" and msg.get("autoreset"):
            reply["terminated"] = np.ones(n, bool)
        elif mode == "auto_shape" and msg.get("autoreset"):
            reply["terminated"] = np.array([True] + [False] * (n - 1))
            reply["final_obs"] = np.zeros((2, 2), np.float32)
        P.send(chan, reply, 5)
""")


def test_k_instances_step_in_one_frame_and_match_single_ones(heater):
    batch, single = BatchProgram(command=f"{heater} --instances 4"), ProcessEnv(command=heater)
    assert batch.num_instances == 4 and batch.batched and batch.spec_reply.version == "1.1"
    obs, infos = batch.reset_instances(range(4), [0, 1, 2, 3])
    one, _ = single.reset(seed=2)
    assert obs.shape == (4, 3) and len(infos) == 4
    np.testing.assert_array_equal(obs[2], one)  # instance 2 with seed 2 is the single program with seed 2
    res = batch.step_all(ACT)
    one, reward, *_ = single.step(np.array([1.0], np.float32))
    assert res.fault is None and res.result is not None and res.result.obs.shape == (4, 3)
    np.testing.assert_array_equal(res.result.obs[2], one)
    assert res.result.rewards[2] == pytest.approx(reward) and res.result.truncated.dtype == bool
    sub, sub_infos = batch.reset_instances([1, 3], [2, None])  # any subset
    assert sub.shape == (2, 3) and len(sub_infos) == 2 and not batch.last_reset_all
    batch.close()
    single.close()


def test_process_env_drives_instance_zero_of_a_k_program(heater):
    env = ProcessEnv(command=f"{heater} --instances 3")
    assert env.num_instances == 3
    obs, _ = env.reset(seed=2)
    assert obs.shape == (3,)
    obs, reward, term, trunc, info = env.step(np.array([0.5], np.float32))
    assert obs.shape == (3,) and isinstance(reward, float) and "is_success" in info
    env.close()


def test_a_1_0_program_works_unchanged_against_1_1(heater, caplog):
    caplog.set_level(logging.WARNING)
    prog = BatchProgram(command=heater)  # announces 1.0, no num_instances
    assert (P.VERSION == "1.3" and prog.spec_reply.version == "1.0" and prog.num_instances == 1
            and not prog.batched)
    obs, _ = prog.reset_instances([0], [0])
    res = prog.step_all(np.ones((1, 1), np.float32))
    assert obs.shape == (1, 3) and res.fault is None and res.result.obs.shape == (1, 3)
    assert "minor versions differ" not in caplog.text  # an older minor is served silently
    prog.close()


def test_python_sdk_hosts_k_instances():
    prog = BatchProgram(command=f"{PY_HEATER} --instances 5", cwd=str(ROOT))
    assert prog.num_instances == 5
    obs, _ = prog.reset_instances(range(5), [0, 1, 2, 3, 4])
    res = prog.step_all(np.full((5, 1), 0.3, np.float32))
    assert obs.shape == (5, 3) and res.fault is None and res.result.rewards.shape == (5,)
    assert all("is_success" in info for info in res.result.infos)
    prog.close()


@pytest.mark.parametrize("mode, text", [("wrong_k", "shape [3, 2], expected [4, 2]"),
                                        ("flags", "truncated: expected a bool array"),
                                        ("infos", "infos: expected a list of 4 objects"),
                                        ("rewards", "rewards: shape [3], expected [4]"),
                                        ("single", "obs: shape [2], expected [4, 2]"),
                                        ("unasked", "did not ask for autoreset"),
                                        ("auto_missing", "final_obs: missing for the 4 finished"),
                                        ("auto_shape", "final_obs: shape [2, 2], expected [1, 2]")])
def test_bad_batched_replies_are_protocol_faults_of_the_program(tmp_path, mode, text):
    script = tmp_path / "hostile.py"
    script.write_text(HOSTILE)
    prog = BatchProgram(command=f"{sys.executable} {script} {mode}", cwd=str(ROOT), term_grace=0.5)
    prog.want_autoreset = True  # as training's vector env asks; only a 1.2 program (auto_*) is asked
    assert prog.autoreset == mode.startswith("auto")
    prog.reset_instances(range(4))
    res = prog.step_all([0, 1, 0, 1])
    assert res.result is None and res.fault is not None
    assert res.fault.kind is FaultKind.PROTOCOL and text in res.fault.detail and res.fault.restart
    obs, _ = prog.reset_instances([0])  # the next reset restarts it and resets every instance
    assert prog.restarts == 1 and prog.last_reset_all and obs.shape == (4, 2)
    prog.close()


@pytest.mark.parametrize("k", ["0", "100000", "two"])
def test_absurd_num_instances_is_a_spec_error(heater, k):
    with pytest.raises(E.SpecError, match="spec.num_instances: expected an integer from 1 to 4096"):
        BatchProgram(command=f"{heater} --instances {k}")


def test_sdk_refuses_k_instances_to_a_1_0_trainer():
    """A 1.1 program with num_instances answers a 1.0 hello with an error naming both versions."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    proc = subprocess.Popen([*PY_HEATER.split(), "--instances", "2", "--connect", f"127.0.0.1:{port}",
                             "--connect-wait", "1"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    conn, _ = server.accept()
    chan = P.Channel.from_socket(conn)
    P.send(chan, {"type": "hello", "version": "1.0", "nonce": "00"}, 5)
    with pytest.raises(E.RemoteError, match=r"needs protocol 1\.1; nondiff speaks 1\.0"):
        P.recv(chan, 10)
    chan.close()
    server.close()
    assert proc.wait(20) == 0
