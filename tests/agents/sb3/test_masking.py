"""Action masks on SB3 (issue 30 §6): MaskablePPO trains on envs that give masks in each of the three ways,
never sends an illegal action in training or evaluation, resumes, and refuses algorithms that cannot mask.

The envs (tests/agents/masked_env.py) count every illegal action they are sent; the same env without masks
(``env.action_mask: none``) is the control that shows the count can fail.
"""

from __future__ import annotations

import pytest
from conftest import evaluate_json, read_checkpoint, run_cli

from tests.agents.masked_env import read_counts

ENV = "tests.agents.masked_env:"
FAST = ["--set", "agent.n_steps=64", "--set", "agent.batch_size=64", "--set", "agent.n_epochs=2",
        "--num-envs", "2", "--quiet", "--seed", "0", "--set", "eval.every=256", "--set", "eval.episodes=3"]


def _train(run, env, counts, *extra, timesteps="512"):
    return run_cli("train.py", "--env", ENV + env, "--timesteps", timesteps, "--run-dir", str(run), *FAST,
                   "--set", f"env.count_file={counts}", *extra, timeout=120)


@pytest.mark.parametrize(("env", "source", "vec_env"), [
    ("ObsMaskEnv", "obs", "dummy"), ("MethodMaskEnv", "method", "subproc"),
    ("InfoMaskEnv", "info", "subproc")])
def test_a_masked_env_is_sent_no_illegal_action_in_training_or_evaluation(tmp_path, env, source, vec_env):
    run, counts = tmp_path / "run", tmp_path / "counts"
    proc = _train(run, env, counts, "--set", f"train.vec_env={vec_env}")
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if "MaskablePPO" in line]
    assert len(notes) == 1 and f"env.action_mask: {source}" in notes[0]
    assert f"action_mask: {source}" in (run / "config.yaml").read_text()  # resolved once, recorded
    steps, illegal = read_counts(counts)
    assert steps >= 512 + 2 * 3 * 20 and illegal == 0  # training envs and two periodic evaluations
    result = evaluate_json(run, tmp_path)
    assert result["metrics"]["illegal"] == 0.0
    assert result["random_metrics"]["illegal"] == 0.0  # the random baseline plays legal moves only too


def test_without_masks_the_same_env_is_sent_illegal_actions(tmp_path):
    run, counts = tmp_path / "run", tmp_path / "counts"
    proc = _train(run, "MethodMaskEnv", counts, "--set", "env.action_mask=off")
    assert proc.returncode == 0, proc.stderr
    assert "MaskablePPO" not in proc.stderr
    assert "action_mask: none" in (run / "config.yaml").read_text()
    steps, illegal = read_counts(counts)
    assert illegal > steps // 5
    assert evaluate_json(run, tmp_path)["metrics"]["illegal"] > 0


@pytest.mark.parametrize("env", ["InfoMaskEnv", "StatefulInfoMaskEnv"])
def test_a_masked_run_resumes_as_a_masked_policy(tmp_path, env):
    run, counts = tmp_path / "run", tmp_path / "counts"
    assert _train(run, env, counts, timesteps="256").returncode == 0
    counts.unlink()
    proc = run_cli("train.py", "--resume", str(run), "--timesteps", "256", "--quiet", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "MaskablePPO" in proc.stderr
    # env states do not hold the last info's mask: fresh episodes, said (not a crash for want of a mask)
    assert "cannot restore their mid-episode state" in proc.stderr
    steps, illegal = read_counts(counts)
    assert steps >= 256 and illegal == 0
    _, header = read_checkpoint(run / "final" / "model.safetensors")
    assert header["num_timesteps"] == 512 and header["algo"] == "ppo"
    assert header["config"]["env"]["action_mask"] == "info"
    assert evaluate_json(run, tmp_path)["metrics"]["illegal"] == 0.0


@pytest.mark.parametrize("args", [["--algo", "sac"], ["--algo", "a2c"], ["--algo", "td3"],
                                  ["--backend", "rllib", "--algo", "sac"]])
def test_an_algorithm_that_cannot_mask_exits_2_naming_ppo(tmp_path, args):
    proc = _train(tmp_path / "run", "MethodMaskEnv", tmp_path / "counts", *args)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "gives action masks (an action_masks() method)" in errors[0]
    assert "--algo ppo" in errors[0] and "env.action_mask: none" in errors[0]
    assert not (tmp_path / "run").exists()


def test_a_named_source_the_env_lacks_and_a_mask_of_the_wrong_size_exit_2(tmp_path):
    proc = _train(tmp_path / "a", "MethodMaskEnv", tmp_path / "c", "--set", "env.action_mask=obs")
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "gives no mask by a Dict observation key 'action_mask'" in errors[0]
    proc = _train(tmp_path / "b", "WrongSizeMaskEnv", tmp_path / "c")
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "expected 5 entries (one per action), got shape (6,)" in errors[0], errors
