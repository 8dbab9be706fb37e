"""`train.vec_env: thread` (envs/vector/threads.py): envs whose step waits run concurrently, with
DummyVecEnv's exact semantics."""

from __future__ import annotations

import threading
import time

import gymnasium as gym
import numpy as np
import pytest
from conftest import lockstep
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.sb3.vector import SB3VecEnv
from envs.vector.threads import ThreadVectorEnv


def ThreadVecEnv(env_fns):  # noqa: N802 - the thread vector env as SB3 sees it
    return SB3VecEnv(ThreadVectorEnv(env_fns))


class WaitingEnv(gym.Env):
    """Each step waits ``latency`` seconds (a remote robot); a deterministic walk that truncates after
    7 steps."""

    def __init__(self, latency: float = 0.0, fail_at: int | None = None) -> None:
        self.latency, self.fail_at = latency, fail_at
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1, 1, (1,), np.float32)
        self.t, self.x = 0, 0.0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.x = 0, float(self.np_random.uniform(-1, 1))
        return np.array([self.x, 0.0], np.float32), {"start": self.x}

    def step(self, action):
        time.sleep(self.latency)
        self.t += 1
        if self.fail_at is not None and self.t == self.fail_at:
            raise RuntimeError("the remote end went away")
        self.x += float(action[0])
        return np.array([self.x, self.t], np.float32), -abs(self.x), self.x > 3, self.t >= 7, {"t": self.t}


class RendezvousEnv(WaitingEnv):
    """A step that returns only once every env of the vector env is inside its own step (a barrier)."""

    def __init__(self, barrier: threading.Barrier, timeout: float = 30.0) -> None:
        super().__init__()
        self.barrier, self.timeout = barrier, timeout

    def step(self, action):
        self.barrier.wait(self.timeout)  # serial stepping never fills it: BrokenBarrierError
        return super().step(action)


def test_waiting_envs_step_concurrently():
    # Concurrency shown by a rendezvous, not by wall time, so a loaded machine slows it but cannot fail it:
    # each vector step completes only if all n envs are waiting inside step() at the same moment.
    n, steps = 16, 10
    barrier = threading.Barrier(n)
    venv = ThreadVecEnv([lambda: RendezvousEnv(barrier) for _ in range(n)])
    try:
        venv.reset()
        for _ in range(steps):
            venv.step(np.zeros((n, 1), np.float32))
    finally:
        venv.close()
    assert not barrier.broken
    serial_barrier = threading.Barrier(2)
    serial = DummyVecEnv([lambda: RendezvousEnv(serial_barrier, timeout=0.3) for _ in range(2)])
    serial.reset()
    with pytest.raises(threading.BrokenBarrierError):  # the same check fails for a serial vector env
        serial.step(np.zeros((2, 1), np.float32))


def test_same_transitions_as_dummy_vec_env_including_auto_reset():
    fns = [lambda: WaitingEnv(0.001) for _ in range(4)]
    ref, thr = DummyVecEnv(fns), ThreadVecEnv(fns)
    try:
        for (o1, r1, d1, i1), (o2, r2, d2, i2) in lockstep(ref, thr, 4, seed=3):
            np.testing.assert_array_equal(o1, o2)
            np.testing.assert_array_equal(r1, r2)
            np.testing.assert_array_equal(d1, d2)
            for a, b in zip(i1, i2):
                assert a.keys() == b.keys() and a["t"] == b["t"]
                assert a["TimeLimit.truncated"] == b["TimeLimit.truncated"]
                if "terminal_observation" in a:
                    np.testing.assert_array_equal(a["terminal_observation"], b["terminal_observation"])
        assert any(ref.reset_infos) and ref.reset_infos == thr.reset_infos
    finally:
        ref.close()
        thr.close()
        thr.close()  # idempotent


def test_an_env_error_reaches_the_caller_and_the_vec_env_still_closes():
    venv = ThreadVecEnv([lambda: WaitingEnv(0.0), lambda: WaitingEnv(0.0, fail_at=2)])
    venv.reset()
    venv.step(np.zeros((2, 1), np.float32))
    with pytest.raises(RuntimeError, match="remote end went away"):
        venv.step(np.zeros((2, 1), np.float32))
    venv.close()
    assert not any(t.is_alive() for t in venv.base._threads)


def test_train_cli_accepts_thread_vec_env(tmp_path, cli):
    run = tmp_path / "run"
    proc = cli("train.py", "--env", "robot", "--timesteps", "512", "--seed", "0", "--run-dir", str(run),
               "--quiet", "--set", "train.vec_env=thread", "--set", "agent.n_steps=64",
               "--set", "eval.every=0")
    assert proc.returncode == 0, proc.stderr
    assert "vec_env: thread" in (run / "config.yaml").read_text()
    assert (run / "final" / "model.safetensors").is_file()


def test_next_step_auto_reset_matches_gymnasiums_sync_vector_env():
    """RLlib's env runners take ``NEXT_STEP`` auto-reset: the same transitions and infos
    as Gymnasium's own."""
    from gymnasium.vector import AutoresetMode
    from gymnasium.wrappers.vector import DictInfoToList

    fns = [lambda: WaitingEnv(0.001) for _ in range(3)]
    ref = DictInfoToList(gym.vector.SyncVectorEnv(fns, autoreset_mode=AutoresetMode.NEXT_STEP))
    thr = DictInfoToList(ThreadVectorEnv(fns, AutoresetMode.NEXT_STEP))
    try:
        (o1, i1), (o2, i2) = ref.reset(seed=3), thr.reset(seed=3)
        np.testing.assert_array_equal(o1, o2)
        assert i1 == i2 and thr.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP
        rng = np.random.default_rng(0)
        for _ in range(20):  # crosses the 7-step truncation and the x > 3 termination
            act = rng.uniform(-1, 1, (3, 1)).astype(np.float32)
            a, b = ref.step(act), thr.step(act)
            for x, y in zip(a[:4], b[:4]):
                np.testing.assert_array_equal(x, y)
            assert a[4] == b[4]
    finally:
        ref.close()
        thr.close()
