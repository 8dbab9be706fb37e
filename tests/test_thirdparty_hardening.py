"""Other people's envs that used to break the run instead of the step (issue 25 §7), on the real packages.

tetris-gymnasium (an env state that is not JSON), stable-retro (one emulator per process, a render mode that
wants a display), mo-gymnasium (a vector reward) and gymnasium-2048 (no time limit; a policy that repeats
an illegal move never ends an episode). The Makefile installs them.
"""

from __future__ import annotations

import json

from conftest import run_cli
from safetensors import safe_open

FAST = ["--set", "agent.n_steps=64", "--set", "agent.batch_size=64", "--set", "agent.n_epochs=1",
        "--num-envs", "2", "--quiet", "--set", "eval.every=0", "--seed", "0"]


def _train(run, env, *extra, timesteps="256"):
    return run_cli("train.py", "--env", env, "--timesteps", timesteps, "--run-dir", str(run), *FAST, *extra,
                   timeout=300)


def _header(path):
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["nondiff"])


def test_an_env_state_that_is_not_json_costs_no_checkpoint(tmp_path):
    run = tmp_path / "run"
    proc = _train(run, "tetris_gymnasium/Tetris", "--env-package", "tetris_gymnasium.envs",
                  "--set", "train.checkpoint_every=128")
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "env state left out of checkpoints" in line]
    assert len(warnings) == 1 and "TetrisState is not JSON serializable" in warnings[0], proc.stderr
    assert _header(run / "final" / "model.safetensors")["env_states"] is None
    assert list((run / "checkpoints").glob("*.safetensors"))  # the periodic ones too
    resumed = run_cli("train.py", "--resume", str(run), "--timesteps", "128", "--quiet", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert _header(run / "final" / "model.safetensors")["num_timesteps"] == 384


def test_an_env_with_one_instance_per_process_gets_a_process_each(tmp_path):
    run = tmp_path / "run"
    proc = _train(run, "retro:RetroEnv", "--set", "env.game=Airstriker-Genesis-v0", "--set",
                  "eval.max_episode_steps=50", timesteps="128")
    assert proc.returncode == 0, proc.stderr
    assert "could not be built a second time in this process (RuntimeError: Cannot create multiple emulator" \
        in proc.stderr and "a worker process each (train.vec_env: subproc" in proc.stderr
    # stable-retro's default render_mode='human' is not asked for
    env = {"DISPLAY": "", "WAYLAND_DISPLAY": ""}
    out = run_cli("evaluate.py", str(run), "--episodes", "1", "--json", str(tmp_path / "e.json"), timeout=300,
                  env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "e.json").read_text())["mean_length"] == 50.0


def test_a_vector_reward_is_refused_at_start_and_its_scalarising_wrapper_works(tmp_path):
    proc = _train(tmp_path / "bare", "deep-sea-treasure-v0", "--env-package", "mo_gymnasium")
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert "returns a vector reward of shape (2,)" in errors[0]
    assert "mo_gymnasium.wrappers:LinearReward" in errors[0] and "weight: [1.0, 0.0]" in errors[0]
    assert not (tmp_path / "bare").exists()  # nothing ran
    config = tmp_path / "mo.yaml"
    config.write_text("env:\n  id: deep-sea-treasure-v0\n  packages: [mo_gymnasium]\n"
                      "  wrappers: [{'mo_gymnasium.wrappers:LinearReward': {weight: [1.0, 0.0]}}]\n")
    run = tmp_path / "run"
    proc = _train(run, "deep-sea-treasure-v0", "--config", str(config), "--set", "eval.every=256",
                  "--set", "eval.episodes=2", timesteps="512")
    assert proc.returncode == 0, proc.stderr
    first = json.loads((run / "evaluations.jsonl").read_text().splitlines()[0])
    # the treasure's value came through the wrapper (no fault turned it into 0)
    assert first["mean_reward"] > 0
    assert "invalid_output" not in proc.stderr


def test_an_evaluation_episode_that_never_ends_is_cut_and_said(tmp_path):
    run = tmp_path / "run"
    proc = _train(run, "gymnasium_2048/TwentyFortyEight-v0", "--env-package", "gymnasium_2048",
                  "--set", "eval.max_episode_steps=300", "--set", "env.action_mask=none", timesteps="128")
    assert proc.returncode == 0, proc.stderr
    out = run_cli("evaluate.py", str(run), "--episodes", "2", "--json", str(tmp_path / "e.json"), timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "e.json").read_text())
    # without its mask (the shipped config's LegalMoves, turned off) the untrained policy repeats a move
    assert result["capped_episodes"] == 2 and result["mean_length"] == 300.0
    assert "2 of 2 evaluation episodes were cut at 300 steps" in out.stderr + out.stdout


def test_the_cap_defaults_to_the_env_limit_else_27000():
    import gymnasium as gym
    import gymnasium_2048  # noqa: F401

    from agents.run.evaluation import DEFAULT_CAP, episode_cap

    assert episode_cap(gym.make("CartPole-v1"), None) == 500
    assert episode_cap(gym.make("gymnasium_2048/TwentyFortyEight-v0"), None) == DEFAULT_CAP == 27_000
    assert episode_cap(gym.make("CartPole-v1"), 7) == 7
