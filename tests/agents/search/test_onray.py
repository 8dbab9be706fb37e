"""Issue 30 §5: a study's trials as Ray tasks (agents/search/onray.py) on a real Ray: a simulated two-node
cluster (``ray.cluster_utils.Cluster``, one CPU per node), a driver SIGKILLed mid-trial and resumed there, and
the refusals (no cluster, trials too big for every node, a node without the study dir) in one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from conftest import ROOT, free_port, run_cli

import train

on_ray = [pytest.mark.ray, pytest.mark.slow, pytest.mark.ci]
"""The marks of a test that starts Ray (CI runs them: ``-m "not slow or ci"``)."""


def _ray(test):
    for mark in on_ray:
        test = mark(test)
    return test


def _ray_full(test):
    """Ray, slow and not in CI (``make test-all`` runs it): the longer durability cases, kept out of CI's
    20-minute budget; CI keeps the two-node, Ctrl-C and refusal cases."""
    return pytest.mark.slow(pytest.mark.ray(test))

CONFIG = """\
env: {id: CartPole-v1}
agent: {n_steps: 32, batch_size: 64}
train: {num_envs: 2, timesteps: 256}
eval: {episodes: 2}
search:
  defaults: false
  seeds_per_trial: 1
  evaluations: 1
  sampler: random
  pruner: none
  space:
    agent.learning_rate: {low: 1.0e-4, high: 3.0e-3, log: true}
"""


@pytest.fixture(scope="module")
def cluster():
    """A head without CPUs and two worker nodes of one CPU each, token-authenticated like a private Ray."""
    from ray.cluster_utils import Cluster

    from agents.run import localray as local

    saved = {k: os.environ.get(k) for k in (local.AUTH_MODE_VAR, local.AUTH_TOKEN_VAR)}
    local.require_token_auth()  # a fresh token in this process's environment, inherited by the nodes
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        workers = [c.add_node(num_cpus=1) for _ in range(2)]
        c.wait_for_nodes()
        yield c, {w.node_id for w in workers}
    finally:
        c.shutdown()
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def _argv(tmp_path, name, address, trials=4, jobs=2, extra=""):
    config = tmp_path / f"{name}.yaml"
    config.write_text(CONFIG + extra)
    return ["--config", str(config), "--optimize", "--trials", str(trials), "--jobs", str(jobs), "--seed",
            "3", "--study-dir", str(tmp_path / name), "--ray-address", address]


def _trials(study_dir):
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(study_dir / "study.journal")))
    return optuna.load_study(study_name="nondiff", storage=storage).trials


@_ray
def test_trials_run_as_ray_tasks_on_both_nodes_into_the_study_dir(cluster, tmp_path):
    c, workers = cluster
    t0 = time.monotonic()
    out = run_cli("train.py", *_argv(tmp_path, "study", c.address), timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "trials run as Ray tasks on the Ray cluster" in out.stdout and "2 node(s)" in out.stdout
    study = tmp_path / "study"
    trials = _trials(study)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    nodes = {t.user_attrs["ray_node"]["node_id"] for t in trials}
    assert nodes <= workers and len(nodes) == 2, nodes  # --jobs 2 on two one-CPU nodes: both ran trials
    for t in trials:  # each trial's run dir is in the driver's study dir, whichever node trained it
        run = study / f"trial-{t.number:04d}" / "seed-3"
        assert (run / "final" / "model.safetensors").is_file() and (run / "evaluations.jsonl").is_file()
    best = max(trials, key=lambda t: t.value)
    cfg = yaml.safe_load((study / "best.yaml").read_text())
    assert cfg["agent"]["learning_rate"] == best.params["agent.learning_rate"]
    assert "rllib" not in cfg and "search" not in cfg  # where the trials ran is not part of the config
    assert not (study / ".ray-probe").exists()
    print(f"4 trials on 2 nodes in {time.monotonic() - t0:.0f} s")
    assert train.main(["--config", str(study / "best.yaml"), "--run-dir", str(tmp_path / "r"), "--quiet",
                       "--timesteps", "128"]) == 0


@_ray_full
def test_a_killed_driver_loses_no_finished_trial_and_resumes_on_ray(cluster, tmp_path):
    c, _ = cluster
    argv = _argv(tmp_path, "killed", c.address, trials=3, jobs=1)
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *argv], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    study = tmp_path / "killed"
    deadline = time.monotonic() + 120
    while not (study / "trial-0001" / "seed-3" / "config.yaml").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _trials(study)
    assert [t.state.name for t in before] == ["COMPLETE", "RUNNING"]
    out = run_cli("train.py", "--optimize", "--resume", str(study), "--ray-address", c.address, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 finished trial(s) kept, 1 running one(s) continued" in out.stdout
    after = _trials(study)
    assert [t.state.name for t in after] == ["COMPLETE"] * 3
    assert after[0].value == before[0].value and after[1].params == before[1].params
    assert "ray_node" in after[1].user_attrs and (study / "best.yaml").is_file()


@_ray
def test_ctrl_c_stops_the_trials_on_the_nodes_with_a_checkpoint_each(cluster, tmp_path):
    c, _ = cluster
    argv = [*_argv(tmp_path, "stopped", c.address, trials=4, jobs=2), "--timesteps", "50000"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *argv], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    study = tmp_path / "stopped"
    events = [study / f"trial-000{i}" / "seed-3" / "tensorboard" for i in (0, 1)]
    deadline = time.monotonic() + 120
    while not all(e.is_dir() and any(e.iterdir()) for e in events):  # both runs train on their nodes
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=180)[0]
    assert proc.returncode == 0, out
    assert "SIGINT: stopping the running trials" in out and "--optimize --resume" in out
    assert [t.state.name for t in _trials(study)] == ["RUNNING"] * 2  # left to --resume
    for i in (0, 1):  # each run, on its node, wrote its checkpoint before the task returned
        assert (study / f"trial-000{i}" / "seed-3" / "final" / "model.safetensors").is_file()


def _one_line(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


def test_an_unreachable_ray_address_is_one_line(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    line = _one_line(run_cli("train.py", *_argv(tmp_path, "s", address), timeout=120))
    assert f"--ray-address '{address}': no Ray cluster is reachable there" in line


@_ray
def test_a_trial_bigger_than_every_node_is_one_line(cluster, tmp_path):
    c, _ = cluster
    big = "  cpus_per_trial: 2\n"
    line = _one_line(run_cli("train.py", *_argv(tmp_path, "s", c.address, extra=big), timeout=120))
    assert "each trial reserves 2 CPUs on Ray" in line and "(the most: 1)" in line


_ELSEWHERE = """
import sys
from pathlib import Path
from agents.search import onray
from envs.errors import UserError

def elsewhere(study_dir):  # what a node with its own dir at that path would see: not the driver's token
    (study_dir / onray.PROBE).write_text("another filesystem")
    return "the driver's token"

onray.write_probe = elsewhere
onray.connect(sys.argv[1], 1)
try:
    onray.check_shared(Path(sys.argv[2]), 1.0)
except UserError as e:
    print(e)
"""


@_ray
def test_a_node_that_does_not_see_the_study_dir_is_refused(cluster, tmp_path):
    c, _ = cluster
    out = subprocess.run([sys.executable, "-c", _ELSEWHERE, c.address, str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert "does not see the study dir" in out.stdout and "shared by every node" in out.stdout, out.stderr
    assert not (tmp_path / ".ray-probe").exists()


RLLIB = CONFIG.replace("agent: {n_steps: 32, batch_size: 64}\ntrain: {num_envs: 2, timesteps: 256}",
                       "agent: {backend: rllib, n_steps: 64, batch_size: 64, n_epochs: 1}\n"
                       "rllib: {num_env_runners: 0}\ntrain: {num_envs: 1, timesteps: 128}")
"""The search config with RLlib's PPO and no remote env runner."""


@_ray_full
def test_an_rllib_study_runs_its_trials_as_tasks_on_a_private_local_ray(tmp_path):
    config = tmp_path / "rllib.yaml"
    config.write_text(RLLIB)
    study = tmp_path / "study"
    out = run_cli("train.py", "--config", str(config), "--optimize", "--trials", "2", "--seed", "3",
                  "--study-dir", str(study), timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "trials run as Ray tasks on a private local Ray" in out.stdout
    trials = _trials(study)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2
    assert {t.user_attrs["ray_node"]["node_ip"] for t in trials} == {"127.0.0.1"}  # loopback only
    for t in trials:
        assert (study / f"trial-{t.number:04d}" / "seed-3" / "final" / "model.safetensors").is_file()
    assert yaml.safe_load((study / "best.yaml").read_text())["agent"]["backend"] == "rllib"


def test_the_search_package_does_not_import_ray():
    code = "import sys, agents.search.study, agents.search.onray; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


@_ray_full
def test_a_trial_whose_node_dies_is_rerun_on_another_node_from_its_checkpoint(cluster, tmp_path):
    c, _ = cluster
    first = c.add_node(num_cpus=2)  # the only node a trial of 2 CPUs fits on
    c.wait_for_nodes()
    argv = [*_argv(tmp_path, "died", c.address, trials=1, jobs=1, extra="  cpus_per_trial: 2\n"),
            "--timesteps", "20000", "--set", "train.checkpoint_every=2000"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *argv], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    run = tmp_path / "died" / "trial-0000" / "seed-3"
    second = None
    try:
        deadline = time.monotonic() + 120
        while not list((run / "checkpoints").glob("step_*.safetensors")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
            time.sleep(0.1)
        second = c.add_node(num_cpus=2)
        c.wait_for_nodes()
        c.remove_node(first)  # the node dies with the trial's task on it
        out = proc.communicate(timeout=300)[0]
    finally:
        for node in (first, second):
            if node is not None and node in c.worker_nodes:
                c.remove_node(node)
        proc.kill()
    assert proc.returncode == 0, out
    [trial] = _trials(tmp_path / "died")
    assert trial.state.name == "COMPLETE" and trial.user_attrs["ray_node"]["node_id"] == second.node_id
    commands = (run / "command.txt").read_text().splitlines()
    assert len(commands) == 2 and "--resume" in commands[1]  # Ray reran the task; the run went on
