"""train.py and evaluate.py against run dirs edited or made elsewhere, in their newest parts (the self-play
league's state, a run dir's config.yaml): one line, exit 2, no traceback, the file and the fix named."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import ROOT, run_cli
from measure import one_line

C4 = "pettingzoo.classic.connect_four_v3:env"


@pytest.fixture(autouse=True)
def _own_key(tmp_path, monkeypatch):
    """A signing key of this test's own user, so that tests never touch ~/.config."""
    monkeypatch.setenv("NONDIFF_KEY_FILE", str(tmp_path / "key" / "nondiff.key"))


def test_resuming_a_league_whose_state_was_edited_is_one_line(tmp_path):
    run = tmp_path / "c4"
    run_cli("train.py", "--env", C4, "--num-envs", "2", "--set", "agent.n_steps=64", "--set",
            "agent.batch_size=64", "--set", "agent.n_epochs=1", "--set", "selfplay.snapshot_every=128",
            "--set", "eval.every=0", "--timesteps", "256", "--seed", "0", "--quiet", "--run-dir", str(run),
            check=True)
    state = run / "league" / "state_000000256.json"
    data = json.loads(state.read_text())
    data["rating"] = float("nan")  # was taken as it came: the run went on rating against NaN, exit 0
    state.write_text(json.dumps(data))
    kept = {name: (run / name).read_bytes() for name in ("config.yaml", "config.sig")}
    proc = run_cli("train.py", "--resume", str(run), "--timesteps", "128", "--quiet")
    line = one_line(proc.stderr)
    assert proc.returncode == 2, proc.stderr
    # found before the first step: no crash checkpoint and no resume hint (a resume would meet it again)
    assert line == (f"error: {state}: expected the league's state (JSON with rating, members and rng), "
                    "but the learner's rating is nan, not a finite number; restore the file from the run or "
                    "start a new run")
    assert not (run / "crash").exists()
    # and the resume's rewrite of config.yaml (timesteps 256 -> 384) is undone, with its signature
    assert {name: (run / name).read_bytes() for name in kept} == kept


def test_a_run_dir_whose_config_expands_to_billions_of_values_is_refused_in_one_line(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(ROOT / "tests" / "fixtures" / "runs_v0" / "cartpole_sb3", run)
    laughs = ["  extra:", "    a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    laughs += [f"    a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    text = (run / "config.yaml").read_text()
    assert text.count("  extra: {}\n") == 1  # rllib.extra, which takes any mapping
    text = text.replace("  extra: {}\n", "\n".join(laughs) + "\n")  # nine lines: 10**9 values once expanded
    (run / "config.yaml").write_text(text)  # validating it took 3.6 GB and more than 60 s
    proc = run_cli("evaluate.py", str(run), "--episodes", "1", timeout=60)
    line = one_line(proc.stderr)
    assert proc.returncode == 2
    assert line == (f"error: config file {str(run / 'config.yaml')!r} holds more than 100,000 values "
                    "(YAML aliases count each time they are used), beyond what a config may hold; write it "
                    "out without nested aliases, and keep large data in files the env reads")
