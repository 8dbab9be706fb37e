"""Other people's envs that start processes and leave them running: train.py and evaluate.py stop them when
they end, however they end, with one line, and leave nondiff's own processes alone (envs/children.py)."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT, run_cli

from envs import children

FAST = ["--set", "agent.n_steps=64", "--set", "agent.batch_size=64", "--set", "agent.n_epochs=1",
        "--num-envs", "2", "--quiet", "--set", "eval.every=0", "--timesteps", "128"]

FORKING = '''
import os, subprocess, sys, time
from stub_env import Stub

PIDS = os.environ["PIDS_DIR"]


def note(pid):
    open(os.path.join(PIDS, str(pid)), "w").close()


def daemon():
    """A Python double fork without exec: the trainer's command line and signal handlers."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:
            note(os.getpid())
            os.write(w, b"x")
            time.sleep(1000)
        os._exit(0)
    os.waitpid(pid, 0)
    os.read(r, 1)
    os.close(r)
    os.close(w)


class Env(Stub):
    def __init__(self):
        super().__init__()
        self.started = False

    def reset(self, *, seed=None, options=None):
        if not self.started:
            self.started = True
            note(subprocess.Popen(["sleep", "1000"]).pid)  # never waited for
            out = subprocess.run(["sh", "-c", "sleep 1001 >/dev/null 2>&1 & echo $!"], capture_output=True,
                                 text=True)
            note(int(out.stdout))  # its parent, the shell, has exited
            daemon()
        return super().reset(seed=seed)

    def step(self, action):
        if os.environ.get("HANG") and self.t == 2:
            time.sleep(3600)
        return super().step(action)
'''


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    proc = children._read(pid)
    return proc is not None and proc.state not in "ZX"


@pytest.fixture
def forking(tmp_path, monkeypatch):
    """The module ``forking_env`` on PYTHONPATH; yields the folder where its processes note their pids, and
    kills whatever of them is still running afterwards."""
    (tmp_path / "forking_env.py").write_text(FORKING)
    pids = tmp_path / "pids"
    pids.mkdir()
    monkeypatch.setenv("NONDIFF_KEY_FILE", str(tmp_path / "key" / "nondiff.key"))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{FIXTURES}")
    monkeypatch.setenv("PIDS_DIR", str(pids))
    yield pids
    for entry in pids.iterdir():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(entry.name), signal.SIGKILL)


def left_line(stderr: str) -> str:
    lines = [x for x in stderr.splitlines() if " left " in x and "running" in x]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("vec", ["dummy", "subproc"])
def test_processes_an_env_leaves_are_stopped_when_training_ends(forking, tmp_path, vec):
    # before: the sleeps and the forked trainer copies ran on after train.py exited (the copies kept its
    # SIGTERM handler, which asks for a checkpoint instead of exiting)
    proc = run_cli("train.py", "--env", "forking_env:Env", "--run-dir", str(tmp_path / "run"), *FAST,
                   "--set", f"train.vec_env={vec}", timeout=60)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    pids = [int(p.name) for p in forking.iterdir()]
    assert len(pids) == 9  # 3 envs (the probe and 2 trained), 3 processes each
    assert not [p for p in pids if alive(p)]
    line = left_line(proc.stderr)
    assert line.startswith("warning: the env left 9 processes running (pid ") and "'sleep 1000'" in line
    assert "multiprocessing" not in line and "stopped them" in line
    assert "SIGTERM received" not in proc.stderr  # the forked copies got SIGKILL, not the trainer's handler


def test_a_ctrl_c_on_a_hung_env_stops_its_processes_too(forking, tmp_path):
    env = {**os.environ, "HANG": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--env", "forking_env:Env", "--run-dir",
                             str(tmp_path / "run"), *FAST, "--set", "train.vec_env=threadproc"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("run directory:")
        deadline = time.monotonic() + 20
        while len(list(forking.iterdir())) < 9 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # the workers' envs are in their hung step
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err, err  # a timely stop: the hung worker is replaced
    pids = [int(p.name) for p in forking.iterdir()]
    assert len(pids) >= 9 and not [p for p in pids if alive(p)]
    assert left_line(err).startswith(f"warning: the env left {len(pids)} processes running")


def test_evaluate_stops_the_processes_its_env_leaves(forking, tmp_path):
    run = tmp_path / "run"
    assert run_cli("train.py", "--env", "forking_env:Env", "--run-dir", str(run), *FAST,
                   timeout=60).returncode == 0
    for entry in forking.iterdir():
        entry.unlink()
    proc = run_cli("evaluate.py", str(run), "--episodes", "2", timeout=60)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    pids = [int(p.name) for p in forking.iterdir()]
    assert pids and not [p for p in pids if alive(p)]
    assert left_line(proc.stderr).startswith(f"warning: the env left {len(pids)} processes running")


def _mp_worker() -> None:
    time.sleep(60)


def test_the_sweep_leaves_nondiffs_own_processes_alone(tmp_path, monkeypatch):
    # a bridge supervisor (and its program), a helper script named as nondiff's own (the private Ray's
    # undertaker), a multiprocessing worker and its forkserver, and Ray's processes (run from the ray
    # package, or titled ray::), all started after the sweeper, are nondiff's; the orphaned sleep is the env's
    from envs.bridge import launch
    from envs.bridge.spawn import StderrTail

    ray_dir = tmp_path / "real_ray"  # where this process's ray package lives, as far as the sweep can tell,
    ray_dir.mkdir()  # imported through a link: Ray names its programs by the resolved path
    (tmp_path / "ray").symlink_to(ray_dir)
    monkeypatch.setitem(sys.modules, "ray", type(sys)("ray"))
    sys.modules["ray"].__file__ = str(tmp_path / "ray" / "__init__.py")
    helper = tmp_path / "undertaker.py"
    helper.write_text("import time\ntime.sleep(30)\n")
    sweeper = children.Sweeper(own=[str(helper)])
    ctx = mp.get_context("forkserver")
    worker = ctx.Process(target=_mp_worker, daemon=True)
    supervisor, _, chan = launch.spawn(["sleep", "30"], None, 1.0, StderrTail())
    ray = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", str(ray_dir / "raylet")]),
           subprocess.Popen(["bash", "-c", 'exec -a "ray::IDLE" sleep 30']),
           subprocess.Popen([sys.executable, "-I", "-S", str(helper)])]
    try:
        worker.start()
        out = subprocess.run(["sh", "-c", "sleep 1002 >/dev/null 2>&1 & echo $!"], capture_output=True,
                             text=True)
        orphan = int(out.stdout)
        assert sweeper.adopting and children._read(orphan).ppid == os.getpid()  # adopted, not init's
        deadline = time.monotonic() + 60  # the supervisor starts its program itself, after its own start-up
        while not (program := [p.pid for p in children.table().values() if p.ppid == supervisor.pid]):
            assert time.monotonic() < deadline and supervisor.poll() is None, "no program came"
            time.sleep(0.05)
        left = sweeper.sweep(grace=1.0)
        assert [(p.pid, p.command, p.killed) for p in left] == [(orphan, "sleep 1002", False)]
        assert not alive(orphan) and worker.is_alive() and supervisor.poll() is None and alive(program[0])
        assert [p.poll() for p in ray] == [None, None, None]
        assert children._prctl(children.PR_GET_CHILD_SUBREAPER) == 0  # adoption ends with the sweep
    finally:
        worker.kill()
        worker.join(5)
        for p in [supervisor, *ray]:
            p.terminate()
            p.wait(5)
        if chan is not None:
            chan.close()


def test_an_env_that_orphans_processes_by_the_hundred_stops_being_adopted(monkeypatch):
    # each orphan that exits is a zombie of the adopter until it is reaped, and the trainer cannot tell them
    # from its own children: past MAX_ZOMBIES it stops adopting instead of filling the process table
    monkeypatch.setattr(children, "MAX_ZOMBIES", 20)
    monkeypatch.setattr(children, "WATCH_EVERY", 0.05)
    said: list[str] = []
    sweeper = children.Sweeper(say=said.append)
    orphans = []
    try:
        for _ in range(25):
            out = subprocess.run(["sh", "-c", "sleep 0.3 >/dev/null 2>&1 & echo $!"], capture_output=True,
                                 text=True)  # the sleep outlives the shell, then exits: a zombie of ours
            orphans.append(int(out.stdout))
        deadline = time.monotonic() + 5
        while not said and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(said) == 1 and "orphaned processes" in said[0] and "no longer stopped" in said[0]
        assert not sweeper.adopting and children._prctl(children.PR_GET_CHILD_SUBREAPER) == 0
    finally:
        sweeper.sweep()
        for pid in orphans:  # the adopted zombies
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def test_the_report_names_five_and_counts_the_rest():
    left = [children.Leftover(i, f"sleep {i}", killed=i == 0) for i in range(7)]
    line = children.report(left)
    assert line == ("warning: the env left 7 processes running (pid 0 'sleep 0', pid 1 'sleep 1', "
                    "pid 2 'sleep 2', pid 3 'sleep 3', pid 4 'sleep 4', and 2 more); stopped them "
                    "(1 with SIGKILL)")
    assert children.report(left[1:2]).endswith("left 1 process running (pid 1 'sleep 1'); stopped it")
    assert Path(children.REAPER).is_file()


class SpawnsThenHangs:
    """Starts ``sleep 1000`` as it is built (noting its pid in ``pids``), then hangs in every step."""

    def __init__(self, pids: str) -> None:
        import gymnasium as gym
        import numpy as np

        self.env = gym.make("CartPole-v1")
        self.observation_space, self.action_space = self.env.observation_space, self.env.action_space
        self.metadata, self.render_mode, self.spec = {}, None, None
        self.np = np
        self.sleep = subprocess.Popen(["sleep", "1000"])
        Path(pids, str(self.sleep.pid)).touch()

    def reset(self, *, seed=None, options=None):
        return self.env.reset(seed=seed)

    def step(self, action):
        time.sleep(3600)

    def close(self):
        pass


def test_a_hung_worker_replaced_mid_run_takes_its_envs_processes_with_it(tmp_path, caplog):
    # before: the killed worker's sleep ran on, orphaned, until the run ended (or for good outside train.py)
    import functools

    from envs.vector.subproc import SubprocVectorEnv

    venv = SubprocVectorEnv([functools.partial(SpawnsThenHangs, str(tmp_path))], start_method="fork",
                            step_timeout=1.0)
    try:
        venv.reset(seed=0)
        first = [int(p.name) for p in tmp_path.iterdir()]
        assert len(first) == 1 and alive(first[0])
        with caplog.at_level("WARNING", logger="envs.vector.workers"):
            venv.step(venv.action_space.sample())  # hangs: the worker is killed and replaced
        assert not alive(first[0])
        assert f"env worker 0 left 1 process running (pid {first[0]} 'sleep 1000'); stopped it" in caplog.text
        assert len([p for p in tmp_path.iterdir() if alive(int(p.name))]) == 1  # the new worker's
    finally:
        venv.close()
        for entry in tmp_path.iterdir():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
