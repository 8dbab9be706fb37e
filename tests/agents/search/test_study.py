"""Issue 30 §1/§3/§4: real studies on CartPole (real Optuna, real train.py runs): the artefacts, best.yaml
trained unchanged, a study SIGKILLed mid-trial that resumes to the same number of finished trials, and Ctrl-C
on a --jobs 2 study."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from conftest import ROOT

import train

# ~60 s of CPU together (3 studies, ~8 trials); one xdist worker, so the straight study runs once
pytestmark = [pytest.mark.slow, pytest.mark.ci, pytest.mark.xdist_group("search-study")]

CONFIG = """\
env: {id: CartPole-v1}
agent: {n_steps: 32, batch_size: 64}
train: {num_envs: 2, timesteps: 512}
eval: {episodes: 3}
search:
  defaults: false
  seeds_per_trial: 2
  evaluations: 2
  sampler: random
  pruner: none
  space:
    agent.learning_rate: {low: 1.0e-4, high: 3.0e-3, log: true}
    agent.n_epochs: {choices: [2, 4]}
"""


def _study(tmp_path, name):
    config = tmp_path / "search.yaml"
    config.write_text(CONFIG)
    return ["--config", str(config), "--optimize", "--trials", "3", "--seed", "3", "--study-dir",
            str(tmp_path / name)]


def _trials(study_dir):
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(study_dir / "study.journal")))
    return optuna.load_study(study_name="nondiff", storage=storage).trials


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """A study of 3 trials × 2 seeds × 512 steps that ran without a stop."""
    tmp = tmp_path_factory.mktemp("straight")
    assert train.main(_study(tmp, "study")) == 0
    return tmp / "study"


def test_a_study_leaves_run_dirs_a_table_and_best_yaml(straight, capsys, tmp_path):
    trials = _trials(straight)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    for t in trials:
        assert len(t.user_attrs["seed_scores"]) == 2 and sorted(t.intermediate_values) == [0, 1]
        assert t.value == pytest.approx(sum(t.user_attrs["seed_scores"]) / 2)
        for seed in (3, 4):  # ordinary run dirs: config, final checkpoint, evaluations, TensorBoard
            run = straight / f"trial-{t.number:04d}" / f"seed-{seed}"
            assert (run / "final" / "model.safetensors").is_file() and (run / "tensorboard").is_dir()
    best = max(trials, key=lambda t: t.value)
    table = (straight / "trials.md").read_text().splitlines()
    assert table[2].startswith(f"| 1 | {best.number} | complete |") and len(table) == 5
    assert (straight / "trials.csv").read_text().count("\n") == 4
    assert (straight / "history.png").read_bytes()[:4] == b"\x89PNG"
    cfg = yaml.safe_load((straight / "best.yaml").read_text())
    assert cfg["agent"]["learning_rate"] == best.params["agent.learning_rate"]
    assert "search" not in cfg and "seed" not in cfg["train"]
    # best.yaml trains unchanged
    assert train.main(["--config", str(straight / "best.yaml"), "--run-dir", str(tmp_path / "r"),
                       "--quiet", "--timesteps", "128"]) == 0


def _popen(argv):
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *argv], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait_for(path, proc, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.1)


def test_a_study_killed_mid_trial_resumes_without_losing_a_trial(straight, tmp_path):
    proc = _popen([*_study(tmp_path, "killed"), "--across-seeds", "min"])  # kept by the resumed study
    study = tmp_path / "killed"
    _wait_for(study / "trial-0001" / "seed-3" / "config.yaml", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _trials(study)
    assert [t.state.name for t in before] == ["COMPLETE", "RUNNING"]
    assert train.main(["--optimize", "--resume", str(study)]) == 0
    after = _trials(study)
    assert [t.state.name for t in after] == [t.state.name for t in _trials(straight)]
    assert after[0].value == before[0].value  # the finished trial was neither lost nor run again
    assert (study / "trial-0000" / "seed-3" / "command.txt").read_text().count("\n") == 1
    assert after[1].params == before[1].params  # the running trial was adopted, not drawn again
    for t in after:  # each trial's score is its worst seed's, before the kill and after it
        assert t.value == min(t.user_attrs["seed_scores"])
    assert "(the lowest over seeds [3, 4]" in (study / "best.yaml").read_text()


def test_ctrl_c_checkpoints_the_running_trials_of_a_parallel_study(tmp_path):
    proc = _popen([*_study(tmp_path, "parallel"), "--jobs", "2"])
    study = tmp_path / "parallel"
    events = study / "trial-0001" / "seed-3" / "tensorboard"
    deadline = time.monotonic() + 60
    while not (events.is_dir() and any(events.iterdir())):  # the run trains: its Ctrl-C handler is set
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, out
    assert "SIGINT: stopping the running trials" in out and "--optimize --resume" in out
    states = {t.number: t.state.name for t in _trials(study)}
    assert states[1] == "RUNNING"  # left to --resume, with its runs' checkpoints
    assert (study / "trial-0001" / "seed-3" / "final" / "model.safetensors").is_file()
    assert (study / "trials.md").is_file()


def test_on_a_terminal_a_bar_counts_the_trials_with_the_best_score(tmp_path):
    import pty
    import re

    primary, secondary = pty.openpty()  # a real terminal for train.py's stdout
    cmd = [sys.executable, str(ROOT / "train.py"), *_study(tmp_path, "tty"), "--trials", "2",
           "--seeds-per-trial", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=secondary, stderr=secondary,
                            env={**os.environ, "COLUMNS": "120", "TERM": "xterm"})
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(primary, 65536)
        except OSError:  # the terminal closed: the study exited
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=60) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))
    best = max(_trials(tmp_path / "tty"), key=lambda t: t.value)
    assert "[2/2] trial 1 complete" in text  # the lines stay, above the bar
    bar = [line for line in text.splitlines() if line.lstrip().startswith("trials ")]
    assert bar and "2/2" in bar[-1] and f"best {best.value:.4g} (trial {best.number})" in bar[-1], bar[-3:]
