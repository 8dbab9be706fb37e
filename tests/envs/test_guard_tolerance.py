"""The Guard's float tolerance at the dtype's rounding level, and the fault-rate warning (issue 18 §3)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from agents.run.health import EnvHealth
from envs.faults import faults_in
from envs.guard import Guard, obs_problem


class Lidar(gym.Env):
    """Returns ``value`` in every cell of a Box(0, 1) observation: the shape of FlappyBird's lidar."""

    def __init__(self, value: float, dtype: type = np.float64) -> None:
        self.observation_space = spaces.Box(0.0, 1.0, (4,), dtype)
        self.action_space = spaces.Discrete(2)
        self.value, self.dtype = value, dtype

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.full(4, self.value, self.dtype), {}

    def step(self, action):
        return np.full(4, self.value, self.dtype), 0.0, False, False, {}


@pytest.mark.parametrize(("value", "dtype", "fault"), [
    (1.0 + 2.2e-16, np.float64, False), (np.nextafter(1.0, 2.0), np.float64, False),
    (1.0 + 1e-9, np.float64, True), (1.0021, np.float64, True), (1.0 + 1.2e-7, np.float32, False),
    (1.001, np.float32, True), (-1e-17, np.float64, False), (-1e-3, np.float64, True),
], ids=["f64-1e-16", "f64-next", "f64-1e-9", "f64-flappy", "f32-1ulp", "f32-1e-3", "f64-neg-noise",
        "f64-neg"])
def test_rounding_noise_is_not_a_fault(value, dtype, fault):
    """Within 16 ulps of a bound: snapped into it silently; past it: a fault that truncates (bounds_policy
    truncate; the default, clip, is tested below)."""
    env = Guard(Lidar(value, dtype), bounds_policy="truncate")
    obs, _ = env.reset(seed=0)
    obs, _, _, truncated, info = env.step(0)
    assert (obs_problem(env.observation_space, np.full(4, value, dtype)) is not None) is fault
    assert truncated is fault and bool(faults_in(info)) is fault
    if not fault:
        # snapped onto the bound, so SB3 and RLlib see valid values
        assert env.observation_space.contains(obs)


def test_fault_rate_warning_names_env_kind_example_and_nan_policy():
    """Faults on more than 1% of a period's steps: one warning line, not one per period."""
    lines: list[str] = []
    health = EnvHealth(lines.append)
    env = Guard(Lidar(1.0021))
    env.reset(seed=0)
    for _ in range(3 * EnvHealth.PERIOD):
        health.observe([env.step(0)[4]])
    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == 1
    assert "env Lidar" in warnings[0] and "invalid_output" in warnings[0] and "1.0021" in warnings[0]
    assert "env.bounds_policy: clip" in warnings[0]  # clipped by default, and the line says how to refuse it


def test_the_rate_warning_names_nan_policy_for_faults_it_handles():
    lines: list[str] = []
    health = EnvHealth(lines.append)
    env = Guard(Lidar(float("nan")))
    env.reset(seed=0)
    for _ in range(2 * EnvHealth.PERIOD):
        health.observe([env.step(0)[4]])
    (warning,) = [line for line in lines if line.startswith("warning:")]
    assert "nonfinite" in warning and "env.nan_policy" in warning and "bounds_policy" not in warning


def test_flappy_sized_violations_are_clipped_and_never_truncate_by_default():
    env = Guard(Lidar(1.0021))
    obs, _ = env.reset(seed=0)
    for _ in range(50):
        obs, _, terminated, truncated, info = env.step(0)
        assert not truncated and not terminated and env.observation_space.contains(obs)
        faults = faults_in(info)  # the first step also reports the reset's fault
        assert faults and all(f.clipped and "1.0021" in f.detail for f in faults)


def test_no_rate_warning_below_one_percent():
    """Six faults in a thousand steps stay below the rate: counted, not warned about."""
    lines: list[str] = []
    health = EnvHealth(lines.append)
    bad, good = Guard(Lidar(2.0)), Guard(Lidar(0.5))
    bad.reset(seed=0)
    good.reset(seed=0)
    for i in range(EnvHealth.PERIOD):
        health.observe([(bad if i % 200 == 0 else good).step(0)[4]])
    assert health.by_kind["invalid_output"] == 6  # five steps and the reset, reported with the first step
    assert not [line for line in lines if line.startswith("warning:")]
