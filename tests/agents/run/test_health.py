"""Env health: faults counted from any info, the run-wide restart budget, and fault lines on the console."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import pytest
from conftest import ROOT
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.run.health import EnvHealth, FaultReporter
from envs.errors import EnvFailure
from envs.faults import FAULT_KEY, LATENCY_KEY, RESET_FAULTS_KEY, Fault, FaultKind

FAST = ["--quiet", "--seed", "0", "--set", "agent.n_steps=64", "--set", "agent.batch_size=64",
        "--set", "agent.n_epochs=1", "--set", "eval.every=0"]


def crash(budget: int | None = 3, program: str = "./sim", restart: bool = True) -> Fault:
    return Fault(FaultKind.CRASH, "the stream closed", restart=restart, program=program, exit_code=-6,
                 stderr=("sim: segfault in solver",), budget=budget)


def test_observe_never_raises_on_garbage_and_counts_what_it_can_read():
    health = EnvHealth()
    garbage: list[Any] = [None, 3, "info", [], {LATENCY_KEY: "slow"}, {LATENCY_KEY: float("nan")},
                          {LATENCY_KEY: 2.5}, {FAULT_KEY: 7},
                          {FAULT_KEY: {"kind": 3, "restart": 1, "stderr": 9, "budget": []}},
                          {FAULT_KEY: {"kind": "timeout", "restart": True, "exit_code": "x",
                                       "restarts": None}},
                          {RESET_FAULTS_KEY: "crash"}, {RESET_FAULTS_KEY: [None, crash(None)]},
                          {FAULT_KEY: (crash(None), {"kind": "nonfinite"})}]
    health.observe(garbage)
    for odd in (None, 5, "abc", {"a": 1}, object()):
        health.observe(odd)
    assert health.by_kind == {"protocol": 1, "timeout": 1, "crash": 2, "nonfinite": 1}
    assert health.restarts == 3 and health.timeouts == 1  # "restart": 1 is not True
    assert health.metrics()["env/step_latency_ms_p50"] == 2.5


@pytest.mark.parametrize("envs", [1, 2, 8])
def test_the_restart_budget_is_for_the_whole_run(envs):
    health = EnvHealth()
    vector_steps = 0
    with pytest.raises(EnvFailure) as err:
        for _ in range(10):
            vector_steps += 1
            health.observe([{FAULT_KEY: crash(budget=3)} for _ in range(envs)])
    # failure 4 stops; later ones are not counted
    assert health.restarts == 4 and health.by_kind == {"crash": 4}
    assert str(err.value) == ("program './sim': the stream closed; restart budget of 3 for the whole run "
                              "spent after 3 restarts (this is failure 4, counted over all env instances); "
                              "exit code -6; last stderr: sim: segfault in solver")
    assert vector_steps == -(-4 // envs)  # stopped in the vector step that held failure 4


def test_the_smallest_budget_wins_and_faults_without_one_do_not_spend_it():
    health = EnvHealth()
    health.observe([{FAULT_KEY: crash(budget=None)} for _ in range(20)])  # workers, in-process crashes
    health.observe([{FAULT_KEY: crash(budget=5)}])
    assert health.restarts == 21 and health.budget == 5
    with pytest.raises(EnvFailure, match="restart budget of 1 for the whole run spent after 1 restarts"):
        health.observe([{FAULT_KEY: crash(budget=1)}])


def test_counts_aggregated_by_rllib_share_the_counters_lines_and_budget():
    lines: list[str] = []
    health = EnvHealth(lines.append)
    health.observe_counts({"crash": 2, "nonfinite": 5, "bogus": 9}, restarts=2, budgeted_restarts=2, budget=3,
                          examples={"crash": crash()})
    assert health.by_kind == {"crash": 2, "nonfinite": 5} and health.restarts == 2
    assert lines[0].startswith("env: crash fault (./sim): the stream closed (and 1 more)")
    assert lines[1].startswith("env: nonfinite fault: (no detail) (and 4 more)")
    with pytest.raises(EnvFailure, match=r"program './sim': the stream closed; restart budget of 3 for "
                                         r"the whole run spent after 3 restarts \(this is failure 5, "
                                         r"counted over all env instances\)"):
        health.observe_counts({"crash": 3}, restarts=3, budgeted_restarts=3, budget=3,
                              examples={"crash": crash()})


def test_fault_lines_are_rate_limited_per_kind():
    lines: list[str] = []
    now = [0.0]
    reporter = FaultReporter(lines.append, window=30.0, clock=lambda: now[0])
    nan = Fault(FaultKind.NONFINITE, "observation contains NaN", program="NanCartPole")
    for i in range(3000):  # 3000 faults over 100 s
        now[0] = i / 30
        reporter.note(nan)
        if i % 100 == 0:
            reporter.note(crash())
    reporter.flush()
    nonfinite = [line for line in lines if "nonfinite" in line]
    assert nonfinite[0] == ("env: nonfinite fault (NanCartPole): observation contains NaN; further nonfinite "
                            "faults are summarised every 30 s; see env/faults_by_kind in TensorBoard")
    assert nonfinite[1] == ("env: 900 nonfinite faults in the last 30 s (total 901): observation contains "
                            "NaN; see env/faults_by_kind in TensorBoard")
    assert len(nonfinite) == 5 and "(total 3000)" in nonfinite[-1]  # first, at 30, 60, 90 s, and the flush
    assert len([line for line in lines if "crash" in line]) == 5


def _train(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_a_caught_nan_prints_a_line(tmp_path):
    proc = _train("--env", "tests.agents.faulty_env:NanCartPole", "--set", "env.nan_every=50",
                  "--timesteps", "256", "--num-envs", "1", "--run-dir", str(tmp_path / "run"), *FAST)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert "env: nonfinite fault (NanCartPole): observation[1]" not in out  # the path is the observation's
    assert "env: nonfinite fault (NanCartPole): observation contains NaN" in out, out
    assert "env: 4 nonfinite faults since the last report (total 5)" in out, out


def test_thousands_of_faults_print_a_bounded_number_of_lines(tmp_path):
    t = time.monotonic()
    proc = _train("--env", "tests.agents.faulty_env:NanCartPole", "--set", "env.nan_every=1",
                  "--timesteps", "2048", "--num-envs", "2", "--run-dir", str(tmp_path / "run"), *FAST)
    took = time.monotonic() - t
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "nonfinite fault" in line]
    assert 2 <= len(lines) <= 2 + took // 30, lines  # the first, one per 30 s, the flush
    assert "(total 2048)" in lines[-1]


@pytest.mark.parametrize("num_envs", [1, 2, 8])
def test_programs_that_keep_crashing_stop_the_run_at_the_run_wide_budget(heater, tmp_path, num_envs):
    starts = tmp_path / "starts"
    script = tmp_path / "crashy.sh"  # every start of the program crashes (abort) at its 2nd step
    script.write_text(f"#!/bin/sh\necho x >> {starts}\nexec {heater} --crash-after 2\n")
    script.chmod(0o755)
    run = tmp_path / "run"
    proc = _train("--env", "process", "--set", f"env.command={script}", "--set", "env.max_restarts=3",
                  "--timesteps", "5000", "--num-envs", str(num_envs), "--run-dir", str(run), *FAST)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    line = proc.stderr
    assert "restart budget of 3" in line and "spent after 3 restart" in line, line
    assert (f"program '{script}'" in line and "heater: segfault in solver" in line
            and "exit code -6" in line), line
    assert (run / "final" / "model.safetensors").is_file()
    n_starts = len(starts.read_text().split())  # the spaces probe, the training envs, then every restart
    if num_envs == 1:  # the program's own env sees failure 4 first: 3 restarts, then it stops
        assert n_starts == 1 + 1 + 3
        return
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    assert acc.Scalars("env/restarts")[-1].value == 4  # failures counted by the trainer: budget + 1
    # each env crashes at its 2nd step, all in the same vector step, so all restarted before the count
    assert n_starts == 1 + num_envs + -(-4 // num_envs) * num_envs


def test_an_in_process_adapter_that_raises_in_step_does_not_stop_training(tmp_path):
    run = tmp_path / "run"
    proc = _train("--env", "tests.agents.faulty_env:FlakyCartPole", "--set", "env.raise_every=40",
                  "--timesteps", "256", "--num-envs", "2", "--run-dir", str(run), *FAST)
    assert proc.returncode == 0, proc.stderr
    assert ("env: crash fault (FlakyCartPole): step raised FloatingPointError: 'solver diverged'"
            in proc.stdout)
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    # 2 envs x 256 steps / 40, up to the last rollout
    assert acc.Scalars("env/faults_by_kind/crash")[-1].value >= 4


def test_an_adapter_whose_reset_keeps_raising_stops_with_exit_1_and_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    proc = _train("--env", "tests.agents.faulty_env:FlakyCartPole", "--set", "env.raise_every=30", "--set",
                  "env.reset_fails_after=1", "--timesteps", "2000", "--num-envs", "1", "--run-dir", str(run),
                  *FAST)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert ("env FlakyCartPole: reset failed 3 times in a row; last: reset raised ConnectionError: 'motor "
            "controller unreachable'") in proc.stderr, proc.stderr
    assert list(run.rglob("*.safetensors")), sorted(p.name for p in run.rglob("*"))
