"""The Devito adapter on the small (CI) grid, real Devito throughout: the grid model, the solver's physics,
the black-box interface and scores, noise at a stated SNR, determinism, the compile cache and the errors."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from conftest import ROOT, run_cli
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers nondiff/Devito-v0)
from envs.adapters import devito_physics as phys
from envs.adapters.devito import DevitoEnv


@pytest.fixture(scope="module")
def env():
    e = gym.make("nondiff/Devito-v0", preset="small")
    yield e
    e.close()


def test_the_grid_model_is_layered_with_a_disk_and_ramps_over_one_cell():
    # interface at 202.5 m on a 10 m grid: a quarter of the cell around z = 200 m lies below it
    params = np.array([202.5, 2.0, 3.0, 300.0, 100.0, 50.0, 1.5])
    v = phys.velocity_model(params, 51, 10.0)
    assert v.shape == (51, 51) and v[40, 0] == 2.0 and v[40, 50] == 3.0
    assert v[40, 19] == 2.0 and v[40, 20] == pytest.approx(2.25) and v[40, 21] == 3.0  # the cell average
    assert v[30, 10] == 1.5 and v[30, 16] == 2.0  # the disk's centre, and 60 m below it (outside r = 50 m)
    nudged = phys.velocity_model(params + np.r_[1.0, 0, 0, 0, 0, 0, 0], 51, 10.0)
    assert 0 < np.abs(nudged - v).max() <= 0.1 + 1e-12  # 1 m moves the grid by 1/10 of a cell's contrast


def test_damping_is_zero_inside_and_rises_towards_the_edge():
    d = phys.damping(21, 10, 10.0)
    assert d.shape == (41, 41) and np.all(d[10:31, 10:31] == 0.0)
    edge = d[:10, 20]
    assert np.all(np.diff(edge) < 0) and edge[0] > 0


def test_resample_and_envelope():
    t = np.arange(201) * 2.0
    rec = np.stack([t, 2 * t], axis=1)
    np.testing.assert_allclose(phys.resample(rec, 2.0, np.array([1.0, 5.0, 399.0])),
                               [[1.0, 2.0], [5.0, 10.0], [399.0, 798.0]])
    trace = phys.ricker(t, 0.02)[None, :]  # peak at 1/f = 50 ms = sample 25
    e = phys.envelope(trace, 0.5)
    assert np.argmax(e[0]) == 25 and e[0, 25] == pytest.approx(1.0, rel=0.05)


def test_the_direct_wave_arrives_at_offset_over_velocity():
    s = phys.WaveSolver(n=61, spacing=10.0, cells=15, space_order=4, duration=500.0, peak_frequency=20.0,
                        v_max=3.0, shots=1, receivers=61)
    g = s.gathers(np.full((61, 61), 2.0))[0]
    assert s.sources[0, 0] == 300.0 and g.dtype == np.float32 and g.shape == (s.nt, 61)
    for r in (40, 50, 60):  # 100, 200 and 300 m from the source at 2 km/s, after the Ricker's 1/f delay
        peak = np.argmax(np.abs(g[:, r])) * s.dt
        assert abs(peak - (abs(s.receivers[r, 0] - 300.0) / 2.0 + 50.0)) < 12.0, (r, peak)
    assert np.abs(g[-20:]).max() < 0.01 * np.abs(g).max()  # the absorbing layer leaves no echo


def test_black_box_interface_scores_and_counts(env):
    u = env.unwrapped
    pb = u.problem
    obs, info = env.reset(seed=0)
    assert obs.shape == env.observation_space.shape and u.param_dim == 7 == env.action_space.shape[0]
    assert u.forward_calls == 1 and u.instance.data.shape == (3, 11, 51)
    x = u.instance.truth
    assert u.misfit(x) == 0.0 and u.forward_calls == 2
    s = u.score(x)
    assert s == {"rel_model_error": 0.0, "param_error": 0.0, "data_misfit": 0.0,
                 "prior_mean_error": pytest.approx(u.score(pb.start())["rel_model_error"])}
    assert s["prior_mean_error"] > 0.05 and u.forward_calls == 2  # score() reports; it does not count
    assert u.score(np.clip(x + 0.05, 0, 1))["rel_model_error"] > 0.0
    for k in range(4):
        _, _, term, trunc, info = env.step(env.action_space.sample())
        assert not term and trunc == (k == 3)
    assert u.forward_calls == 6 and info["episode_metrics"] == pytest.approx(u.score(u._x))


def test_forwards_are_bit_identical_and_seeds_repeat(env):
    pb = env.unwrapped.problem
    x = np.linspace(0.1, 0.9, pb.param_dim)
    assert np.array_equal(pb.forward(x), pb.forward(x))
    first = env.reset(seed=3)[0]
    again = env.reset(seed=3)[0]
    assert np.array_equal(first, again) and not np.array_equal(first, env.reset(seed=4)[0])


def test_noise_has_the_stated_snr():
    u = gym.make("nondiff/Devito-v0", preset="small", snr_db=20.0).unwrapped
    u.reset(seed=5)
    clean = u.problem.simulate(u.instance.truth)
    snr = 10 * math.log10(np.mean(clean**2) / np.mean((u.instance.data - clean) ** 2))
    assert abs(snr - 20.0) < 0.5
    assert 0.05 < u.misfit(u.instance.truth) < 0.5 * u.misfit(u.problem.start())


def test_check_env_and_render(env):
    check_env(env.unwrapped, skip_render_check=True)
    r = gym.make("nondiff/Devito-v0", preset="small", render_mode="rgb_array")
    r.reset(seed=0)
    frame = r.render()
    assert frame.shape == (240, 720, 3) and frame.dtype == np.uint8 and frame.std() > 5
    r.close()
    r.close()


@pytest.mark.parametrize("kwargs, message", [
    ({"preset": "huge"}, "preset must be one of"),
    ({"space_order": 3}, "space_order must be an even integer in 2..12, got 3"),
    ({"anomalies": 3}, "anomalies must be 0, 1 or 2, got 3"),
    ({"sample_interval": 100.0}, "sample_interval must be > 0 ms with at least 4 samples"),
    ({"top_velocity": (2500, 1500)}, "top_velocity must satisfy 0 < low < high"),
    ({"render_mode": "human"}, "render_mode must be None or 'rgb_array'"),
])
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DevitoEnv(**{"preset": "small", **kwargs})


def test_compile_cache_and_a_missing_compiler(tmp_path):
    code = ("import numpy as np, envs.adapters.devito_physics as p; s = p.WaveSolver(n=21, spacing=20.0, "
            "cells=6, space_order=2, duration=100.0, peak_frequency=10.0, v_max=3.0, shots=1, receivers=5); "
            "print(float(np.abs(s.gathers(np.full((21, 21), 2.0))).max()))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)}, check=True)
    assert float(proc.stdout) > 0 and list((tmp_path / "nondiff" / "devito" / "jitcache").glob("*.so"))
    bad = run_cli("train.py", "--env", "devito", "--set", "env.preset=small", "--run-dir",
                  str(tmp_path / "r"), env={"CC": "nondiff-no-such-cc", "XDG_CACHE_HOME": str(tmp_path)},
                  timeout=120)
    assert bad.returncode == 2, bad.stderr
    assert "no C compiler 'nondiff-no-such-cc'" in bad.stderr and "apt-get install gcc" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
