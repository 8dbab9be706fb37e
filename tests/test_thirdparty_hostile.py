"""Other people's Gymnasium envs misbehaving in-process: each failure costs an episode or ends in one line,
never the run (an adversarial pass; every case here was found by training such an env)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
from conftest import FIXTURES, ROOT, run_cli

from envs.faults import FaultKind, faults_in
from envs.guard import Guard, reward_problem
from envs.value_checks import all_finite_floats, valid_rewards

FAST = ["--set", "agent.n_steps=64", "--set", "agent.batch_size=64", "--set", "agent.n_epochs=1",
        "--num-envs", "2", "--quiet", "--set", "eval.every=0"]

HOSTILE = '''
import os
import sys
import time
import numpy as np
from stub_env import Stub


class Env(Stub):
    def __init__(self):
        if os.environ.get("HOSTILE") == "init_fails":
            raise RuntimeError("no licence server")
        super().__init__()

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed)
        return obs if os.environ.get("HOSTILE") == "reset_obs_only" else (obs, info)

    def step(self, action):
        self.t += 1
        mode, obs, done = os.environ.get("HOSTILE"), np.zeros(4, np.float32), self.t >= 20
        if mode == "huge_reward":
            return obs, 1e308, done, False, {}
        if mode == "gym_step":
            return obs, 1.0, done, {}
        if mode == "hang":
            time.sleep(3600)
        if mode == "sys_exit" and self.t == 5:
            sys.exit(4)
        if mode == "keyboard_interrupt" and self.t == 5:
            raise KeyboardInterrupt
        return obs, 1.0, done, False, {}

    def close(self):
        if os.environ.get("HOSTILE") == "close_raises":
            raise RuntimeError("close fails")
'''


@pytest.fixture
def hostile(tmp_path, monkeypatch):
    """The module ``hostile_env`` on PYTHONPATH and a key of this test's own; returns a runner of train.py."""
    (tmp_path / "hostile_env.py").write_text(HOSTILE)
    monkeypatch.setenv("NONDIFF_KEY_FILE", str(tmp_path / "key" / "nondiff.key"))

    def train(mode: str, *args: str, popen: bool = False):
        if popen:  # started, not waited for
            env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{FIXTURES}", "HOSTILE": mode,
                   "PYTHONUNBUFFERED": "1"}
            return subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--env", "hostile_env:Env",
                                     "--run-dir", str(tmp_path / "run"), *FAST, *args], cwd=ROOT, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return run_cli("train.py", "--env", "hostile_env:Env", "--run-dir", str(tmp_path / "run"), *FAST,
                       *args, env={"PYTHONPATH": f"{tmp_path}:{FIXTURES}", "HOSTILE": mode}, timeout=120)
    return train


class Rewarding(gym.Env):
    def __init__(self, reward: float) -> None:
        self.observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.reward = reward

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), self.reward, False, False, {}


def test_a_reward_past_float32_range_is_a_nonfinite_fault_not_nan_weights():
    # 1e308 is a finite float64 but inf in the learner's float32 buffers: it used to pass the Guard, turn the
    # losses and weights into NaN, and stop training with a crash checkpoint full of NaN
    problem = reward_problem(1e308)
    assert problem is not None and problem.kind is FaultKind.NONFINITE and "float32" in str(problem)
    assert reward_problem(1e20) is None and reward_problem(-3e38) is None
    assert valid_rewards(np.array([1e308, 1.0, -1e39, np.nan])).tolist() == [False, True, False, False]
    assert not all_finite_floats([1.0, 1e308]) and all_finite_floats([1.0, -2.0])
    env = Guard(Rewarding(1e308))
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(0)
    assert (reward, terminated, truncated) == (0.0, False, True)
    assert [f.kind for f in faults_in(info)] == [FaultKind.NONFINITE]
    clipped = Guard(Rewarding(1e308), nan_policy="clip")
    clipped.reset(seed=0)
    _, reward, _, truncated, _ = clipped.step(0)
    assert reward == 1e6 and not truncated  # env.nan_policy: clip repairs it onto the reward clip


def test_training_on_a_reward_of_1e308_finishes_with_finite_weights(hostile, tmp_path):
    proc = hostile("huge_reward", "--timesteps", "128")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "nonfinite" in proc.stdout + proc.stderr and "float32" in proc.stdout + proc.stderr
    from safetensors.numpy import load_file

    weights = load_file(str(tmp_path / "run" / "final" / "model.safetensors"))
    assert all(np.isfinite(w).all() for w in weights.values() if w.dtype.kind == "f")


def test_an_env_that_calls_sys_exit_is_a_crash_fault_not_a_silent_exit(hostile):
    # before: train.py ended with the env's exit code 4, no line and no checkpoint
    proc = hostile("sys_exit", "--timesteps", "128")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "step raised SystemExit: '4'" in proc.stdout + proc.stderr


def test_an_env_that_raises_keyboard_interrupt_stops_with_a_checkpoint(hostile, tmp_path):
    proc = hostile("keyboard_interrupt", "--timesteps", "128")
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr
    assert "the env raised KeyboardInterrupt (no Ctrl-C came); checkpoint written to" in proc.stderr
    assert (tmp_path / "run" / "crash" / "model.safetensors").is_file()


@pytest.mark.parametrize("vec", ["dummy", "thread"])
def test_a_second_ctrl_c_stops_a_hung_in_process_step_with_a_checkpoint(hostile, tmp_path, vec):
    # before: the first Ctrl-C waited for ever for the step, the second printed a KeyboardInterrupt
    # traceback and wrote no checkpoint; with the thread vec env it then joined each hung thread for 5 s
    proc = hostile("hang", "--timesteps", "128", "--set", f"train.vec_env={vec}", popen=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("run directory:")
        time.sleep(2.0)  # the first step is under way and hangs
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err
    line = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(line) == 1
    assert "a second SIGINT stopped training without waiting for the current step" in line[0]
    assert "resume with:  python train.py --resume" in line[0]
    assert (tmp_path / "run" / "crash" / "model.safetensors").is_file()


def test_an_env_whose_close_raises_ends_a_good_run_with_exit_0_and_one_warning(hostile, tmp_path):
    # before: 'done', then 'error: unexpected RuntimeError: close fails', exit 1, and three "Exception ignored
    # in VectorEnv.__del__" tracebacks
    proc = hostile("close_raises", "--timesteps", "128")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Traceback" not in out and "Exception ignored" not in out, out
    assert out.count("close() raised RuntimeError: 'close fails' (ignored)") == 1
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


class Raising(gym.Env):
    """Raises in every step (``every`` 1) or every ``every``-th."""

    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, every: int = 1) -> None:
        self.every, self.t = every, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        if self.t % self.every == 0:
            raise ValueError("not enough values to unpack (expected 5, got 4)")
        return np.zeros(2, np.float32), 1.0, False, False, {}


def test_an_env_that_cannot_step_at_all_gives_up_after_max_step_failures():
    from envs.errors import EnvGaveUp

    env = Guard(Raising(), max_step_failures=5)
    env.reset(seed=0)
    for _ in range(4):
        assert env.step(0)[3]  # truncated: a crash fault each, then the loop resets
        env.reset()
    with pytest.raises(EnvGaveUp, match="step failed 5 times in a row.*got 4.*python -m envs check"):
        env.step(0)
    flaky = Guard(Raising(every=2), max_step_failures=2)  # every other step fails: never 2 in a row
    flaky.reset(seed=0)
    for _ in range(50):
        flaky.step(0)


def test_training_an_env_with_gyms_old_step_api_stops_in_one_line_with_a_checkpoint(hostile, tmp_path):
    # before: every step was a crash fault, and the run went on to 'done' and exit 0 with an untrained policy
    proc = hostile("gym_step", "--timesteps", "2048")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    line = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert len(line) == 1 and "step failed 100 times in a row" in line[0], proc.stderr
    assert "expected 5, got 4" in line[0] and "python -m envs check" in line[0]
    assert "Gym before 0.26 returned 4 (obs, reward, done, info): port the env" in line[0]
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


def test_evaluation_episodes_ended_by_env_faults_are_said_not_silent():
    # before: evaluate.py on an env whose step raised printed 'trained 0.00, random 0.00' and nothing else
    from agents.run.evaluation import run_episodes

    said: list[str] = []
    result = run_episodes(Guard(Raising(every=3)), lambda o: np.int64(0), 4, seed=0, say=said.append)
    assert result.summary.mean_length == 3.0  # each episode is cut by the crash at its 3rd step
    assert len(said) == 1 and said[0].startswith("4 of 4 evaluation episodes ended on an env fault")
    assert "crash: step raised ValueError" in said[0] and "fix the env" in said[0]
    said.clear()
    run_episodes(gym.wrappers.TimeLimit(Guard(Raising(every=10**9)), 5), lambda o: np.int64(0), 2, seed=0,
                 say=said.append)
    assert said == []  # a time limit's truncation is no fault


@pytest.mark.parametrize(("mode", "code", "line"), [
    # before: a 30-line KeyboardInterrupt traceback (the same as Ctrl-C on an env whose step hangs)
    ("keyboard_interrupt", 130, "error: interrupted (Ctrl-C, or the env raised KeyboardInterrupt) before the "
                                "evaluation ended; nothing was scored"),
    # before: exit 1, "unexpected RuntimeError" (train.py: exit 2, "failed to start")
    ("init_fails", 2, "error: env 'hostile_env:Env' failed to start: RuntimeError: no licence server; "
                      "run with --debug for the traceback"),
], ids=["keyboard-interrupt", "constructor-raises"])
def test_evaluate_on_an_env_that_breaks_is_one_line(hostile, tmp_path, mode, code, line):
    assert hostile("fine", "--timesteps", "128").returncode == 0
    proc = run_cli("evaluate.py", str(tmp_path / "run"), "--episodes", "2", timeout=60,
                   env={"PYTHONPATH": f"{tmp_path}:{FIXTURES}", "HOSTILE": mode})
    assert proc.returncode == code and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [line]


def test_an_env_whose_reset_returns_obs_alone_is_one_line_naming_the_fix(hostile):
    # before: "reset raised ValueError: 'too many values to unpack (expected 2)'", which names no fix
    proc = hostile("reset_obs_only", "--timesteps", "128")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    line = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert len(line) == 1 and "reset failed 3 times in a row" in line[0]
    assert "reset() returned a ndarray, not (obs, info)" in line[0] and "return obs, {}" in line[0]


def test_the_crash_warning_for_an_in_process_env_names_no_restart_budget_and_stays_within_100_percent():
    # before: 'on 200% of the last 1,000 steps' (a reset's fault and its step's counted twice) and 'each one
    # restarts the program and spends the run's restart budget', which in-process envs do not have
    from agents.run.health import EnvHealth
    from envs.faults import FAULT_KEY, RESET_FAULTS_KEY, Fault

    def warnings(budget):
        lines: list[str] = []
        health = EnvHealth(lines.append)
        fault = Fault(FaultKind.CRASH, "step raised ValueError: x", restart=True, program="Hostile",
                      budget=budget)
        for _ in range(125):
            health.observe([{FAULT_KEY: fault, RESET_FAULTS_KEY: fault}] * 8)
        return [x for x in lines if x.startswith("warning:")]

    in_process = warnings(None)
    assert len(in_process) == 1 and "on 100% of the last 1,000 steps" in in_process[0]
    assert "the env is reset, not rebuilt; 100 failed steps in a row stop training" in in_process[0]
    assert "restart budget" not in in_process[0]
    assert "restart budget" in warnings(10**9)[0]  # a program's crash still names env.max_restarts


class Reshaping(Rewarding):
    """Declares a (2,) Box, then assigns itself a (5,) Box at its 2nd step and returns (5,) observations."""

    def __init__(self) -> None:
        super().__init__(1.0)
        self.t = 0

    def step(self, action):
        self.t += 1
        if self.t >= 2:
            self.observation_space = gym.spaces.Box(-1, 1, (5,), np.float32)
            self.action_space = gym.spaces.Discrete(7)
            return np.zeros(5, np.float32), 1.0, False, False, {}
        return super().step(action)


def test_an_env_that_changes_its_spaces_after_make_is_judged_against_the_declared_ones():
    # before: the Guard read the env's new (5,) space, passed the (5,) observation, and the vector env
    # stopped training with 'unexpected ValueError: could not broadcast input array from shape (5,) into (4,)'
    env = Guard(Reshaping())
    env.reset(seed=0)
    env.step(0)
    obs, reward, _, truncated, info = env.step(0)
    assert obs.shape == (2,) and truncated and reward == 0.0
    assert [f.kind for f in faults_in(info)] == [FaultKind.INVALID_OUTPUT]
    assert env.observation_space.shape == (2,) and env.action_space == gym.spaces.Discrete(2)
