"""The inverse-rendering adapter: a real Pillow rasteriser, its black-box interface and its CLI surface."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np
import pytest
from conftest import run_cli

import envs  # noqa: F401  (registers nondiff/Renderer-v0)
from envs.adapters.renderer import PARAMS, RendererEnv


def make(**kw) -> RendererEnv:
    env = gym.make("nondiff/Renderer-v0", **{"image_size": 32, **kw})
    return env.unwrapped


def test_rasteriser_is_piecewise_constant_no_gradient():
    env = make(shape_kinds=["rectangle"])
    env.reset(seed=3)
    x = env._truth.copy()
    base, _ = env._draw(x)
    nudged = x.copy()
    nudged[0] += 1e-4  # a thousandth of a pixel: the picture does not change at all
    same, _ = env._draw(nudged)
    assert np.array_equal(base, same)
    moved = x.copy()
    moved[0] += 3 / 32  # three pixels: whole pixels flip
    other, _ = env._draw(moved)
    assert np.abs(other - base).sum() > 5


def test_truth_fits_exactly_and_black_box_calls_are_counted():
    env = make(n_shapes=2)
    env.reset(seed=0)
    assert env.forward_calls == 2  # the target and the first guess
    assert env.misfit(env._truth) == pytest.approx(0.0, abs=1e-9)
    assert env.forward_calls == 3
    assert env.score(env._truth) == {"iou": 1.0, "param_error": 0.0}
    assert env.forward_calls == 3  # scoring against the hidden truth is not a query
    start = env.score(env._params)
    assert start["iou"] < 0.8 and start["param_error"] > 0.05
    env.step(np.zeros(env.param_dim, dtype=np.float32))
    assert env.forward_calls == 4
    assert env.param_dim == 2 * len(PARAMS) and env.observation_space.shape == (2 * 3 * 32 * 32 + 14 + 24,)


def test_noise_reaches_the_observation_not_the_truth():
    env = make(noise=0.1)
    obs, _ = env.reset(seed=1)
    target = obs[: 3 * 32 * 32].reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.abs(target - env._target_rgb).mean() > 0.02
    assert env.misfit(env._truth) > 0.0
    assert env.score(env._truth)["iou"] == 1.0


def test_rotation_symmetry_counts_in_the_parameter_error():
    env = make(shape_kinds=["rectangle"])
    env.reset(seed=2)
    turned = env._truth.copy()
    turned[3] = (turned[3] + 0.5) % 1.0  # a half turn draws the same rectangle
    assert np.array_equal(env._draw(turned)[0], env._draw(env._truth)[0])
    assert env.score(turned)["param_error"] == pytest.approx(0.0, abs=1e-9)


def test_episode_reward_telescopes_to_the_final_gain_and_reports_metrics():
    env = make()
    _, info = env.reset(seed=5)
    start = env._fit(env._rgb, env._mask)
    total, done, t = 0.0, False, 0
    while not done:
        _, r, term, trunc, info = env.step(env.action_space.sample())
        total += r
        t += 1
        done = term or trunc
    assert t == env.steps and trunc and not term
    final = info["fit"]
    assert total == pytest.approx(final - start, abs=1e-6)
    assert set(info["episode_metrics"]) == {"iou", "param_error"}


def test_observation_is_the_area_average_of_the_pictures():
    env = make(image_size=32, obs_size=8)
    obs, _ = env.reset(seed=4)
    assert obs.shape == (2 * 3 * 8 * 8 + 7 + 24,)
    target = obs[: 3 * 64].reshape(3, 8, 8)
    assert target.sum() == pytest.approx(env._observed.sum() / 16, rel=1e-5)  # mass is kept
    assert target[:, 0, 0].mean() == pytest.approx(env._observed[:4, :4].mean(), abs=1e-6)


def test_moments_describe_where_how_big_and_which_way():
    from envs.adapters import renderer_image as image

    env = make(image_size=64, shape_kinds=["rectangle"])
    env.reset(seed=0)
    x = env._truth.copy()
    x[:3], x[4:7] = [0.25, 0.75, 0.5], [1.0, 0.5, 0.25]
    m = [(image.moments(env._draw(x)[0]), x[3])]
    x[3] = (x[3] + 0.25) % 1.0  # a quarter turn flips a 2:1 rectangle's second moment
    m.append((image.moments(env._draw(x)[0]), x[3]))
    (a, _), (b, _) = m
    assert a[1] == pytest.approx(2 * 0.25 - 1, abs=0.02) and a[2] == pytest.approx(2 * 0.75 - 1, abs=0.02)
    assert np.allclose(a[7:], [1.0, 0.0, -0.5], atol=0.02)  # mean colour, scaled to [-1, 1]
    assert a[0] == pytest.approx(b[0], abs=0.01)  # same area
    assert np.hypot(a[3], a[4]) > 0.3 and np.allclose(a[3:5], -b[3:5], atol=0.15)  # pixels alias
    assert not image.moments(np.zeros((16, 16, 3))).any()


def test_orientation_difference_says_which_way_to_turn():
    from envs.adapters import renderer_image as image

    env = make(image_size=64, shape_kinds=["rectangle"])
    env.reset(seed=3)
    target = image.moments(env._draw(env._truth)[0])
    signs = []
    for delta in (0.05, -0.05):
        x = env._truth.copy()
        x[3] = (x[3] + delta) % 1.0
        turn = image.turn(target, image.moments(env._draw(x)[0]))
        assert np.hypot(turn[0], turn[1]) == pytest.approx(1.0)
        signs.append(np.sign(turn[1]))
    assert signs[0] == -signs[1] != 0
    assert image.turn(target, target)[:2] == pytest.approx([1.0, 0.0])


def test_state_round_trip_is_exact():
    env = make(noise=0.05)
    env.reset(seed=7)
    env.step(env.action_space.sample())
    state = json.loads(json.dumps(env.get_state()))
    a = np.full(env.param_dim, 0.3, dtype=np.float32)
    want = env.step(a)
    other = make(noise=0.05)
    other.reset(seed=99)
    other.set_state(state)
    got = other.step(a)
    assert np.array_equal(want[0], got[0]) and want[1] == got[1]


def test_render_shows_target_and_current_side_by_side():
    env = make(render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (256, 514, 3) and frame.dtype == np.uint8  # 32 px enlarged 8×, a 2 px separator
    left, right = frame[:, :256], frame[:, 258:]
    assert not np.array_equal(left, right)  # the first guess is not the target


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"n_shapes": 0}, "n_shapes must be an integer ≥ 1, got 0"),
    ({"image_size": -4}, "image_size must be an integer ≥ 8"),
    ({"shape_kinds": ["hexagon"]}, "shape_kinds must be a non-empty list of circle, rectangle, triangle"),
    ({"noise": -0.1}, "noise must be a standard deviation ≥ 0"),
    ({"steps": 0}, "steps must be an integer ≥ 1"),
    ({"image_size": 64, "obs_size": 24}, r"obs_size must be a positive divisor of image_size \(64\)"),
])
def test_bad_keyword_arguments_are_one_clear_sentence(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RendererEnv(**kwargs)


def test_cli_rejects_zero_shapes_with_exit_2(tmp_path):
    proc = run_cli("train.py", "--env", "renderer", "--set", "env.n_shapes=0",
                   "--run-dir", str(tmp_path / "r"))
    assert proc.returncode == 2, proc.stderr
    assert "n_shapes must be an integer ≥ 1, got 0" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()


def test_train_then_evaluate_with_video_figure_and_metrics(tmp_path):
    run = tmp_path / "run"
    run_cli("train.py", "--env", "renderer", "--timesteps", "2048", "--seed", "0", "--run-dir", str(run),
            "--quiet", "--set", "eval.every=0", timeout=300, check=True)
    video, fig, out = tmp_path / "r.mp4", tmp_path / "r.png", tmp_path / "e.json"
    proc = run_cli("evaluate.py", str(run), "--episodes", "3", "--video", str(video), "--figure", str(fig),
                   "--json", str(out), timeout=300, check=True)
    assert "iou" in proc.stdout
    res = json.loads(out.read_text())
    # evaluate.py's random baseline is the mean final IoU of these seeded episodes, recomputed here
    from agents.run.envfactory import env_factory
    from agents.run.evaluation import random_policy, run_episodes
    from agents.run.scoring import load_policy

    loaded = load_policy(run)
    env = env_factory(loaded.cfg, loaded.env, for_eval=True)()
    again = run_episodes(env, random_policy(env.action_space, 10_000), 3, 10_000)
    env.close()
    assert res["random_metrics"]["iou"] == pytest.approx(again.summary.metrics["iou"], abs=1e-12)
    assert res["metrics"]["iou"] != res["random_metrics"]["iou"]
    frames = imageio.mimread(str(video))
    assert len(frames) == 3 * 11 and frames[0].shape[:2] == (256, 514)
    assert imageio.imread(str(fig)).shape[:2] == (256, 514)
    assert math.isfinite(res["metrics"]["param_error"])
    # the black-box baseline runs on the same run directory
    bench = tmp_path / "bench.json"
    run_cli("benchmarks/experiments/inverse_baseline.py", "--run", f"renderer={run}", "--instances", "2",
            "--budget", "60", "--json", str(bench), timeout=300, check=True)
    (row,) = json.loads(bench.read_text())
    assert row["policy"]["mean_calls"] == 11  # the first guess and one render per refinement step
    assert 60 <= row["cmaes"]["mean_calls"] <= 60 + 10  # the budget, rounded up to a whole generation
    assert row["rule"] == "IoU ≥ 0.8" and all(0.0 <= row[m]["mean_iou"] <= 1.0 for m in ("policy", "cmaes"))
