"""Env runners that keep dying on RLlib: each restart said, the run ended past rllib.max_runner_restarts.

The unit tests read the bound (agents/rllib/runners.py) and the config it sets, without Ray; the ray test
trains an env that kills its own runner process at every start, or once (tests/agents/dying_env.py), on the
session's shared Ray."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import gymnasium as gym
import pytest
from conftest import ROOT, read_checkpoint, run_cli

from agents.config import RunConfig
from agents.rllib import runners
from agents.rllib.algos import build_algo_config
from agents.run.resolved import resolve_env
from envs.errors import EnvFailure

RAY_ERROR = ("Ray error (The actor died unexpectedly before finishing this task.\n\tclass_name: "
             "SingleAgentEnvRunner\nThe actor is dead because its worker process has died. Worker exit type: "
             "SYSTEM_ERROR Worker exit detail: Worker unexpectedly exits with a connection error code 2. End "
             "of file.), taking actor 1 out of service.")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_restarts_are_said_rate_limited_and_the_failure_past_the_budget_ends_the_run():
    clock, lines = Clock(), []
    watch = runners.RunnerRestarts(budget=3, window=30.0, clock=clock)
    watch.attach()
    try:
        logging.getLogger(runners.ACTOR_MANAGER_LOGGER).error(RAY_ERROR)
    finally:
        watch.detach()
    error = ("env runner 1: The actor died unexpectedly before finishing this task. (Worker unexpectedly "
             "exits with a connection error code 2)")
    assert watch.last_error() == error
    watch.observe(0, 1, lines.append)  # down, not yet restarted: 1 failure of 3 allowed
    assert lines == []
    watch.observe(1, 0, lines.append)
    assert lines == [f"rllib: an env runner failed and was restarted (1 of rllib.max_runner_restarts=3): "
                     f"{error}; further restarts are summarised every 30 s; see env/runner_restarts in "
                     "TensorBoard"]
    clock.now = 10.0
    watch.observe(2, 0, lines.append)  # within the window: counted, not said
    watch.observe(None, 0, lines.append)  # an iteration without the count changes nothing
    assert len(lines) == 1
    clock.now = 31.0
    watch.observe(3, 0, lines.append)  # the budget itself is allowed
    assert lines[1] == (f"rllib: 2 env-runner restarts in the last 31 s (3 of rllib.max_runner_restarts=3); "
                        f"last error: {error}")
    with pytest.raises(EnvFailure, match=r"the RLlib env runners kept failing: 4 failures, past the budget "
                       r"of rllib\.max_runner_restarts=3 restarts for the whole run; last error: "
                       r"env runner 1: The actor died .*raise rllib\.max_runner_restarts"):
        watch.observe(3, 1, lines.append)


def test_a_budget_of_zero_ends_the_run_at_the_first_failure_and_long_errors_are_cut():
    watch = runners.RunnerRestarts(budget=0)
    watch.observe(0, 0, print)
    with pytest.raises(EnvFailure, match=r"1 failures.*\(RLlib reported no error text\)"):
        watch.observe(0, 1, print)
    assert len(runners.shorten("x" * 1000 + "\nmore")) == runners.ERROR_CHARS


def test_the_algorithm_config_carries_the_bound():
    cfg = RunConfig.model_validate({"env": {"id": "CartPole-v1"}, "agent": {"backend": "rllib"},
                                    "rllib": {"max_runner_restarts": 4}})
    env = resolve_env(cfg, False, spaces=(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2)))
    config = build_algo_config(cfg, 0, env)
    assert config.restart_failed_env_runners
    assert config.max_num_env_runner_restarts == 4  # Ray's restarts per runner: never more than the run's
    assert config.delay_between_env_runner_restarts_s == runners.RESTART_DELAY_S
    assert RunConfig().rllib.max_runner_restarts == 10
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        RunConfig.model_validate({"rllib": {"max_runner_restarts": -1}})


def _train(run, shared_ray, *args: str):
    return run_cli("train.py", "--env", "tests.agents.dying_env:DyingCartPole", "--backend", "rllib",
                   "--num-env-runners", "1", "--num-envs", "2", "--quiet", "--set", "agent.n_steps=64",
                   "--set", "agent.batch_size=64", "--set", "eval.every=0", "--run-dir", str(run), *args,
                   *shared_ray.flags, env=shared_ray.env, timeout=180)


@pytest.mark.ray
def test_runners_that_die_at_every_start_end_the_run_with_a_checkpoint_and_one_line(tmp_path, shared_ray):
    run = tmp_path / "run"
    t = time.monotonic()
    proc = _train(run, shared_ray, "--set", "env.die_after=20", "--set", "rllib.max_runner_restarts=1",
                  "--timesteps", "5000")
    elapsed = time.monotonic() - t
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert elapsed < 120, f"took {elapsed:.0f} s"
    said = [line for line in proc.stdout.splitlines() if line.startswith("rllib: ")]
    assert len(said) == 1 and said[0].startswith("rllib: an env runner failed and was restarted (1 of "
                                                 "rllib.max_runner_restarts=1): env runner 1: "), proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert ("the RLlib env runners kept failing: 2 failures, past the budget of rllib.max_runner_restarts=1 "
            "restarts for the whole run; last error: env runner 1: ") in errors[0]
    assert "checkpoint written to" in errors[0] and f"--resume {run}" in errors[0]
    assert "Traceback" not in proc.stderr
    assert list(run.rglob("*.safetensors")), sorted(p.name for p in run.rglob("*"))


def test_the_env_error_a_runner_logged_is_read_back(tmp_path):
    """RLlib reports only that a runner's process died; the env's own error is in the runner's log."""
    assert runners.logged_env_error(tmp_path) is None
    (tmp_path / "worker-a.err").write_text("Traceback (most recent call last):\n  ...\n"
                                           "envs.errors.EnvGaveUp: env X: step failed 100 times in a row\n")
    (tmp_path / "worker-b.out").write_text("envs.errors.EnvGaveUp: not an .err file\n")
    assert runners.logged_env_error(tmp_path) == "EnvGaveUp: env X: step failed 100 times in a row"
    (tmp_path / "worker-c.err").write_text("x" * 100_000 + "\nenvs.errors.EnvFailure: " + "y" * 1000 + "\n")
    said = runners.logged_env_error(tmp_path)  # the newest log first, cut
    assert said is not None and said.startswith("EnvFailure: yyy") and len(said) == runners.ERROR_CHARS


@pytest.mark.ray
def test_runners_whose_env_gives_up_end_the_run_with_the_envs_own_error(tmp_path, shared_ray):
    """An env on Gym's old API in the runners: the Guard's EnvGaveUp kills each runner; the run's last line
    quotes it from the runner's log, not only 'the actor died unexpectedly'."""
    run = tmp_path / "run"
    proc = _train(run, shared_ray, "--set", "env.old_api=true", "--set", "rllib.max_runner_restarts=1",
                  "--timesteps", "5000")
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "(its log: EnvGaveUp: env DyingCartPole: step failed 100 times in a row" \
        in errors[0], proc.stderr[-3000:]


@pytest.mark.ray
def test_a_second_ctrl_c_on_a_hung_runner_writes_crash_and_the_trainer_exits(tmp_path, shared_ray):
    """The runner's env step never returns: the second Ctrl-C wrote crash/ and its line, then the trainer hung
    for ever in RLlib's stop (the runner never answers its ``stop`` call). The runners are now killed after
    runners.STOP_WAIT_S and the trainer exits 130."""
    run = tmp_path / "run"
    args = ["train.py", "--env", "tests.agents.dying_env:DyingCartPole", "--backend", "rllib",
            "--num-env-runners", "1", "--num-envs", "2", "--set", "env.hang=true", "--set", "eval.every=0",
            "--timesteps", "5000", "--run-dir", str(run), *shared_ray.flags]
    env = {**os.environ, **shared_ray.env, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the runners are sampling (and hang) once the run says where it writes
            if line.startswith("run directory:"):
                break
        time.sleep(3)
        proc.send_signal(signal.SIGINT)
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        t = time.monotonic()
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert time.monotonic() - t < runners.STOP_WAIT_S + 30
    assert "did not stop within 10 s" in err and (run / "crash" / "model.safetensors").is_file()


@pytest.mark.ray
def test_a_runner_that_dies_once_is_restarted_said_and_the_run_goes_on(tmp_path, shared_ray):
    run, marker = tmp_path / "run", tmp_path / "died"
    proc = _train(run, shared_ray, "--set", "env.die_after=60", "--set", f"env.once_marker={marker}",
                  "--timesteps", "512")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert marker.exists()  # the runner did die
    said = [line for line in proc.stdout.splitlines() if line.startswith("rllib: ")]
    assert len(said) == 1 and said[0].startswith("rllib: an env runner failed and was restarted (1 of "
                                                 "rllib.max_runner_restarts=10): env runner 1: "), said
    _, meta = read_checkpoint(run / "final" / "model.safetensors")
    assert meta["num_timesteps"] >= 512


@pytest.mark.ray
def test_runners_that_die_as_they_start_are_one_line_not_an_index_error(tmp_path, shared_ray):
    """RLlib asks its runners for the spaces as the algorithm is built; when all died, that was its own
    'unexpected IndexError: list index out of range'."""
    run = tmp_path / "run"
    proc = _train(run, shared_ray, "--set", "env.fail_to_build=true", "--timesteps", "256")
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: RLlib's env runners died as they started, "
                                                     "before any step"), proc.stderr[-3000:]
    assert "worker-*.err" in errors[0] and "Traceback" not in proc.stderr
    assert not run.exists()  # nothing ran: the same --run-dir works once the env is fixed
