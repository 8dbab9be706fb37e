"""The seismic inversion adapter: forward-model physics, the black-box interface, episodes, rendering,
errors."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from conftest import run_cli

import envs  # noqa: F401  (registers nondiff/Seismic-v0)
from envs.adapters.seismic import SeismicEnv
from envs.adapters.seismic_physics import envelope, gardner_density, reflectivity, ricker, synthetic

T = np.arange(251) * 0.002


def make(**kwargs):
    return gym.make("nondiff/Seismic-v0", **kwargs)


def truth_x(u):
    """The hidden model as a normalised vector (the test reaches into the env; the policy never can)."""
    return (u._true - u._lo) / (u._hi - u._lo)


def test_gardner_and_reflection_coefficient_match_hand_values():
    assert gardner_density(np.array([2000.0]))[0] == pytest.approx(0.31 * 2000**0.25)  # ≈ 2.07 g/cc
    v = np.array([2000.0, 3000.0])
    z1, z2 = 0.31 * 2000**1.25, 0.31 * 3000**1.25
    assert reflectivity(v)[0] == pytest.approx((z2 - z1) / (z2 + z1))
    assert reflectivity(v)[0] == pytest.approx(0.2481, abs=1e-4)  # (1.5^1.25 − 1) / (1.5^1.25 + 1)
    assert reflectivity(v[::-1])[0] == pytest.approx(-reflectivity(v)[0])


def test_single_interface_is_a_ricker_of_amplitude_r_at_its_two_way_time():
    v = np.array([2000.0, 3000.0])
    trace = synthetic(v, np.array([]), T, 25.0, 0.1)
    r = reflectivity(v)[0]
    assert np.argmax(trace) == 50 and trace[50] == pytest.approx(r)  # t0 = 0.1 s = sample 50
    np.testing.assert_allclose(trace, r * ricker(T - 0.1, 25.0), atol=1e-12)
    # Ricker side lobes: zero crossings at ±1/(√2·π·f) ≈ ±9.0 ms, troughs of −2·e^(−3/2) ≈ −0.446 at ±15.6 ms
    assert ricker(np.array([1 / (np.sqrt(2) * np.pi * 25)]), 25.0)[0] == pytest.approx(0.0, abs=1e-12)
    assert ricker(np.array([np.sqrt(1.5) / (np.pi * 25)]), 25.0)[0] == pytest.approx(-2 * np.exp(-1.5))


def test_envelope_bounds_the_trace_and_peaks_at_the_arrival():
    d = 0.3 * ricker(T - 0.2, 25.0)
    e = envelope(d, np.ones(1))
    assert np.all(e >= np.abs(d) - 1e-9) and np.argmax(e) == 100 and e[100] == pytest.approx(0.3, rel=1e-3)
    smooth = envelope(d, np.full(11, 1 / 11))
    assert smooth.max() < e.max() and np.argmax(smooth) == 100


def test_misfit_basin_is_wider_than_the_waveform_misfit():
    """Shifting an interface by half a period is worse than a quarter (the envelope term); L2 alone
    saturates."""
    u = make(n_layers=2).unwrapped
    u.reset(seed=0)
    x = truth_x(u)
    shifted = [u.misfit(np.r_[x[:2], x[2] + dx]) for dx in (0.0, 0.05, 0.1, 0.2)]
    assert shifted[0] == 0.0 and shifted[0] < shifted[1] < shifted[2] < shifted[3]


def test_zero_contrast_gives_a_zero_trace():
    assert np.all(synthetic(np.full(4, 2500.0), np.array([100.0, 80.0]), T, 25.0, 0.04) == 0.0)


def test_interfaces_sit_at_the_two_way_times_and_match_a_discrete_convolution():
    v = np.array([3000.0, 2000.0, 4000.0])
    h = np.array([200.0])  # 2·200/2000 = 0.2 s below t0 = 0.04 s: samples 20 and 120
    trace = synthetic(v, h, T, 25.0, 0.04)
    spikes = np.zeros(len(T))
    spikes[[20, 120]] = reflectivity(v)
    wavelet = ricker(np.arange(-30, 31) * 0.002, 25.0)
    np.testing.assert_allclose(trace, np.convolve(spikes, wavelet, mode="same"), atol=1e-9)


def test_a_spike_between_samples_moves_the_trace_smoothly():
    v = np.array([2000.0, 3000.0])
    # quarter-sample shifts
    traces = [synthetic(v, np.array([]), T, 25.0, 0.1 + k * 0.0005) for k in range(5)]
    steps = [np.linalg.norm(b - a) for a, b in zip(traces, traces[1:])]
    assert max(steps) / min(steps) < 1.01 and 0 < steps[0] < 0.2 * np.linalg.norm(traces[0])


def test_observation_action_and_black_box_interface():
    env = make(n_layers=3)
    u = env.unwrapped
    obs, info = env.reset(seed=0)
    assert u.param_dim == 5 and env.action_space.shape == (5,)
    assert obs.shape == env.observation_space.shape == (2 * u.n_samples + 2 * len(u.times[::4]) + 7,)
    assert u.forward_calls == 1  # the synthetic at the prior mean; the field data are not a call
    x = truth_x(u)
    assert u.misfit(x) == pytest.approx(0.0, abs=1e-12) and u.forward_calls == 2
    assert u.misfit(np.full(5, 0.5)) == pytest.approx(info["data_misfit"]) and u.forward_calls == 3
    s = u.score(x)
    assert s["rel_model_error"] == 0.0 and s["data_misfit"] == pytest.approx(0.0, abs=1e-12)
    assert s["prior_mean_error"] == pytest.approx(u.score(np.full(5, 0.5))["rel_model_error"])
    assert s["prior_mean_error"] > 0.05
    assert u.forward_calls == 3  # score() reports, it does not count
    for k in range(4):
        _, _, term, trunc, info = env.step(env.action_space.sample())
        assert not term and trunc == (k == 3) and "is_success" in info
    assert u.forward_calls == 7
    assert set(info["episode_metrics"]) == {"rel_model_error", "prior_mean_error", "data_misfit"}
    env.reset(seed=1)
    assert u.forward_calls == 1
    env.close()
    env.close()


def test_rewards_telescope_to_the_misfit_reduction_and_the_truth_is_success():
    env = make(steps=4, step_size=1.0, step_decay=1.0)
    u = env.unwrapped
    _, info0 = env.reset(seed=3)
    x = truth_x(u)
    total, info = 0.0, {}
    for action in (np.zeros(5), np.full(5, 0.3), x - 0.8, np.zeros(5)):  # 0.5 → 0.5 → 0.8 → x → x
        _, r, _, _, info = env.step(action.astype(np.float32))
        total += r
    assert info["is_success"] and info["episode_metrics"]["rel_model_error"] < 1e-6
    assert total == pytest.approx(info0["data_misfit"] - info["data_misfit"]) and total > 0.5


def test_noise_is_relative_to_the_trace_rms():
    u = make(noise=0.1).unwrapped
    u.reset(seed=4)
    clean = u._forward(u._true)
    ratio = np.std(u._d_obs - clean) / np.sqrt(np.mean(clean**2))
    assert 0.08 < ratio < 0.12
    assert 0.02 < u.misfit(truth_x(u)) < 0.5 * u.misfit(np.full(5, 0.5))


def test_prior_respects_ranges_and_min_contrast_and_traces_fit_the_window():
    u = make(n_layers=4).unwrapped
    for seed in range(50):
        u.reset(seed=seed)
        v, h = u._true[:4], u._true[4:]
        assert np.all((v >= 2000) & (v <= 4500)) and np.all((h >= 50) & (h <= 200))
        assert np.all(np.abs(reflectivity(np.concatenate([[u.v0], v]))) >= 0.03)
        assert np.all(np.abs(u._d_obs[-10:]) < 1e-3 * np.abs(u._d_obs).max())  # the last wavelet has decayed


def test_render_returns_an_image_only_when_asked():
    env = make(render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (320, 640, 3) and frame.dtype == np.uint8 and frame.std() > 5
    assert make().unwrapped.render() is None
    env.close()


@pytest.mark.parametrize("kwargs, message", [
    ({"n_layers": 0}, "n_layers must be an integer >= 1, got 0"),
    ({"steps": 0}, "steps must be an integer >= 1, got 0"),
    ({"noise": -0.1}, "noise must be >= 0"),
    ({"step_size": 0.0}, "step_size must be > 0"),
    ({"peak_frequency": -25.0}, "peak_frequency must be > 0 Hz"),
    ({"velocity_range": (4500, 2000)}, "velocity_range must satisfy 0 < low < high"),
    ({"thickness_range": (-5, 100)}, "thickness_range must satisfy 0 < low < high"),
    ({"thickness_range": 7}, "thickness_range must be a pair"),
])
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(**kwargs)
    with pytest.raises(ValueError, match="render_mode must be None or 'rgb_array'"):
        SeismicEnv(render_mode="human")


def test_cli_bad_n_layers_exits_2_with_one_line(tmp_path):
    proc = run_cli("train.py", "--env", "seismic", "--set", "env.n_layers=0",
                   "--run-dir", str(tmp_path / "r"), timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "n_layers must be an integer >= 1, got 0" in proc.stderr and "--set env.n_layers=3" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_tiny_run_evaluates_with_metrics_and_figure(tmp_path):
    run = tmp_path / "run"
    run_cli("train.py", "--env", "seismic", "--timesteps", "256", "--seed", "0", "--run-dir", str(run),
            "--set", "agent.n_steps=64", "--set", "agent.batch_size=64", "--set", "agent.n_epochs=1",
            "--num-envs", "2", "--set", "eval.every=0", "--quiet", check=True)
    png, out = tmp_path / "seismic.png", tmp_path / "eval.json"
    run_cli("evaluate.py", str(run), "--episodes", "2", "--figure", str(png), "--json", str(out), check=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    res = json.loads(out.read_text())
    assert set(res["metrics"]) == {"rel_model_error", "prior_mean_error", "data_misfit"}
    assert res["mean_length"] == 4


def test_model_reward_telescopes_to_the_model_error_reduction_and_steps_shrink():
    env = make(reward="model", steps=3, step_size=0.2, step_decay=0.5)
    u = env.unwrapped
    env.reset(seed=2)
    e0 = u.score(np.full(5, 0.5))["rel_model_error"]
    total = 0.0
    for k in range(3):
        _, r, _, trunc, info = env.step(np.full(5, -1.0, dtype=np.float32))
        total += r
        np.testing.assert_allclose(u._x, [0.3, 0.2, 0.15][k])  # steps of 0.2, 0.1, 0.05
    assert trunc and total == pytest.approx(e0 - info["episode_metrics"]["rel_model_error"])
