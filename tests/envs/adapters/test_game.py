"""The ALE adapter: real emulator, preprocessing, raw-score evaluation, colour video, bad game names."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import torch
from conftest import run_cli
from gymnasium.utils.env_checker import check_env

import envs


def test_check_env_and_preprocessing():
    env = gym.make("nondiff/Game-v0")
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    env.close()
    env.close()


def test_render_is_full_colour_not_the_network_input():
    env = envs.make("game", render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (210, 160, 3) and frame.dtype == np.uint8
    env.close()


def test_clip_rewards_only_when_asked():
    """Space Invaders scores 5-30 per alien: the raw env reports that, the clipped one only the sign."""
    seen = []
    for clip in (False, True):
        env = envs.make("game", game="SpaceInvaders", clip_rewards=clip)
        env.reset(seed=1)
        env.action_space.seed(1)
        seen.append({env.step(env.action_space.sample())[1] for _ in range(300)})
        env.close()
    assert max(seen[0]) >= 5 and seen[1] <= {0.0, 1.0} and 1.0 in seen[1]


def test_other_game_and_sticky_actions():
    env = envs.make("game", game="Breakout", sticky_actions=True)
    assert env.action_space.n == 4
    env.close()


def test_unknown_game_exits_2_with_suggestion(tmp_path):
    proc = run_cli("train.py", "--env", "game", "--set", "env.game=Pongg", "--run-dir", str(tmp_path / "r"))
    assert proc.returncode == 2 and "did you mean 'Pong'" in proc.stderr and "Traceback" not in proc.stderr


def test_smoke_training_then_evaluate_with_video(tmp_path):
    run = tmp_path / "run"
    run_cli("train.py", "--env", "game", "--timesteps", "2048", "--seed", "0", "--run-dir", str(run),
            "--quiet", "--num-envs", "4", "--set", "eval.every=0", "--set", "train.vec_env=dummy",
            timeout=600, check=True)
    # the shipped config is the fast path of issue 17: 42x42 frames into the small CNN, stored as CPU fp32
    from safetensors import safe_open

    (ckpt,) = (run / "final").glob("*.safetensors")
    with safe_open(str(ckpt), "pt", device="cpu") as f:
        w = f.get_tensor("policy/features_extractor.cnn.0.weight")
    assert tuple(w.shape) == (16, 4, 8, 8) and w.dtype == torch.float32
    assert json.loads(ckpt.with_suffix(".json").read_text())["observation_space"]["shape"] == [4, 42, 42]
    video, out = tmp_path / "pong.mp4", tmp_path / "e.json"
    run_cli("evaluate.py", str(run), "--episodes", "1", "--video", str(video), "--json", str(out),
            timeout=600, check=True)
    res = json.loads(out.read_text())
    assert video.stat().st_size > 10_000
    # raw Pong score: -21..21 and an integer; a clipped/normalised reward would not look like this
    assert -21 <= res["mean_return"] <= 21 and float(res["mean_return"]).is_integer()
    import imageio.v3 as iio

    frame = iio.imread(video, index=0)
    assert frame.shape[:2] == (210, 160) and frame.ndim == 3
