"""`train.vec_env: threadproc` (envs/vector/threadproc.py): threads in several worker processes, DummyVecEnv's
transitions, the watchdog."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from conftest import ROOT, lockstep
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.run.health import EnvHealth
from agents.sb3.vector import SB3VecEnv
from envs.faults import FAULT_KEY, LATENCY_KEY, Fault, FaultKind, faults_in
from envs.guard import Guard
from envs.vector.threadproc import ThreadProcVectorEnv


class ThreadProcVecEnv(SB3VecEnv):
    """The threadproc vector env as SB3 sees it, with the worker pool's attributes at hand."""

    def __init__(self, env_fns, **kwargs):
        super().__init__(ThreadProcVectorEnv(env_fns, **kwargs))
        self.slices, self.procs = self.base.slices, self.base.procs

    @property
    def restarts(self):
        return self.base.restarts


class Walk(gym.Env):
    """A deterministic walk that waits ``latency`` s per step, truncates after 7 steps; NaN
    at step ``nan_at``."""

    def __init__(self, latency: float = 0.0, nan_at: int | None = None) -> None:
        self.latency, self.nan_at = latency, nan_at
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1, 1, (1,), np.float32)
        self.t, self.x, self.steps = 0, 0.0, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.x = 0, float(self.np_random.uniform(-1, 1))
        return np.array([self.x, 0.0], np.float32), {}

    def step(self, action):
        time.sleep(self.latency)
        self.t += 1
        self.steps += 1
        self.x += float(action[0])
        obs = np.array([self.x, self.t], np.float32)
        if self.steps == self.nan_at:
            obs[0] = np.nan
        return obs, -abs(self.x), self.x > 3, self.t >= 7, {"t": self.t}


def guarded(nan_at=None):
    return Monitor(Guard(Walk(0.001, nan_at)))


def test_same_transitions_as_dummy_vec_env_over_workers():
    fns = [guarded for _ in range(5)]
    ref, tp = DummyVecEnv(fns), ThreadProcVecEnv(fns, workers=2, start_method="fork")
    try:
        assert [list(s) for s in tp.slices] == [[0, 1], [2, 3, 4]]
        for a, b in lockstep(ref, tp, 5, seed=7):  # crosses the 7-step truncation and the x > 3 termination
            for x, y in zip(a[:3], b[:3]):
                np.testing.assert_array_equal(x, y)
            for ia, ib in zip(a[3], b[3]):
                assert ia.keys() - {LATENCY_KEY} == ib.keys() - {LATENCY_KEY}
                np.testing.assert_array_equal(ia.get("terminal_observation", 0),
                                              ib.get("terminal_observation", 0))
        assert tp.get_attr("nan_at", indices=[3]) == [None] and len(tp.env_method("reset")) == 5
    finally:
        ref.close()
        tp.close()


def test_a_killed_worker_is_replaced_with_a_worker_fault_on_each_of_its_envs():
    venv = ThreadProcVecEnv([guarded for _ in range(4)], workers=2, start_method="fork")
    try:
        venv.reset()
        venv.procs[1].kill()
        venv.procs[1].join(5)
        obs, rewards, dones, infos = venv.step(np.zeros((4, 1), np.float32))
        assert not faults_in(infos[0]) and not faults_in(infos[1]) and not dones[:2].any()
        assert dones[2:].all() and (rewards[2:] == 0).all()
        f2, f3 = infos[2][FAULT_KEY], infos[3][FAULT_KEY]
        assert isinstance(f2, Fault) and f2.kind is FaultKind.WORKER and f3.kind is FaultKind.WORKER
        # one respawn, one restart
        assert f2.restart and not f3.restart and f2.exit_code == -9 and venv.restarts == 1
        assert f2.detail.startswith("env worker 1 (2 envs) died")
        assert infos[2]["terminal_observation"] is not None and np.isfinite(obs).all()
        health = EnvHealth()
        health.observe(infos)
        assert health.by_kind == {"worker": 2} and health.restarts == 1
        _, _, _, infos = venv.step(np.zeros((4, 1), np.float32))  # the respawned worker steps
        assert all(LATENCY_KEY in i for i in infos)
    finally:
        venv.close()


def test_guard_faults_and_latencies_reach_health_from_the_workers():
    venv = ThreadProcVecEnv([lambda i=i: guarded(nan_at=2 if i == 3 else None) for i in range(4)], workers=2,
                            start_method="fork")
    health = EnvHealth()
    try:
        venv.reset()
        for _ in range(3):
            _, _, _, infos = venv.step(np.zeros((4, 1), np.float32))
            health.observe(infos)
    finally:
        venv.close()
    assert health.by_kind == {"nonfinite": 1}
    m = health.metrics()
    # 12 latencies, each >= the 1 ms wait
    assert m["env/step_latency_ms_p50"] >= 1.0 and len(health.latencies) == 0


def _last(run: Path, tag: str) -> float:
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return acc.Scalars(tag)[-1].value if tag in acc.Tags()["scalars"] else 0.0


def test_trains_through_threadproc_and_survives_a_sigkilled_worker(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "--env", "robot", "--timesteps", "6144",
         "--run-dir", str(run), "--num-envs", "4", "--quiet", "--set", "agent.n_steps=64",
         "--set", "agent.batch_size=64", "--set", "agent.n_epochs=1", "--set", "eval.every=0",
         "--set", "train.vec_env=threadproc", "--set", "train.env_workers=2",
         "--set", "train.start_method=forkserver"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, workers = time.time() + 120, []
    while time.time() < deadline and len(workers) < 2:
        time.sleep(0.2)
        kids = [int(c) for t in Path(f"/proc/{proc.pid}/task").iterdir()
                for c in (t / "children").read_text().split()]
        workers = [c for c in kids if b"from multiprocessing.forkserver" not in _cmd(c)
                   and b"multiprocessing" in _cmd(c) and b"resource_tracker" not in _cmd(c)]
        workers += [g for c in kids if b"forkserver" in _cmd(c) for g in _children(c)]
    while not list((run / "tensorboard").glob("events.*")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    assert workers, "no worker process found"
    os.kill(workers[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "done: 6,144 steps" in out
    assert _last(run, "env/faults_by_kind/worker") == 2  # both envs of the killed worker
    assert _last(run, "env/restarts") == 1
    assert _last(run, "env/step_latency_ms_p50") > 0


def _cmd(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for t in Path(f"/proc/{pid}/task").iterdir()
                for c in (t / "children").read_text().split()]
    except OSError:
        return []


def test_threadproc_on_rllib_is_refused_in_one_line():
    from agents.config.loading import validate
    from envs.errors import UserError

    with pytest.raises(UserError, match=r"^x.yaml: train.vec_env: threadproc is for the sb3 backend, got "
                                        r"agent.backend: rllib; .* use train.vec_env: thread"):
        validate({"env": {"id": "robot"}, "agent": {"backend": "rllib"}, "train": {"vec_env": "threadproc"}},
                 "x.yaml")
    assert validate({"env": {"id": "robot"}, "train": {"vec_env": "threadproc", "env_workers": 3}}, "x.yaml")
