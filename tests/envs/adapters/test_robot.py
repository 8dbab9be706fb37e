"""The MuJoCo reach adapter: API contract, determinism, rendering, second arm, bad arguments."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs


def strict_check_env(env):
    """Gymnasium's checker only warns about many problems: every warning fails here, except the advice
    that unbounded Box limits are "probably too low/high" (velocities are unbounded by nature)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore",
                                message=r".*Box observation space (minimum|maximum) value is -?infinity")
        check_env(env, skip_render_check=True)


NONDIFF_IDS = sorted(spec.gym_id for spec in map(envs.resolve, envs.BUILTIN))


@pytest.mark.parametrize("gym_id", NONDIFF_IDS, ids=NONDIFF_IDS)
def test_check_env_passes_on_every_builtin(gym_id, heater):
    given = {"nondiff/Process-v0": {"command": heater}, "nondiff/Devito-v0": {"preset": "small"}}
    kwargs = given.get(gym_id, {})
    env = gym.make(gym_id, **kwargs)
    strict_check_env(env.unwrapped)
    env.close()
    env.close()  # idempotent


@pytest.mark.parametrize(("gym_id", "kwargs"), [("nondiff/Robot-v0", {}),
                                               ("nondiff/Renderer-v0", {"noise": 0.05}),
                                               ("nondiff/Seismic-v0", {"noise": 0.05})],
                         ids=["robot", "renderer", "seismic"])
def test_same_seed_same_rollout(gym_id, kwargs):
    def rollout(seed):
        env = gym.make(gym_id, **kwargs)
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        out = [obs]
        for _ in range(8):
            obs, r, *_ = env.step(env.action_space.sample())
            out.append(np.append(obs, r))
        env.close()
        return np.concatenate(out)

    assert np.array_equal(rollout(5), rollout(5))
    assert not np.array_equal(rollout(5), rollout(6))


def test_success_tolerance_is_ten_percent_of_reach():
    env = gym.make("nondiff/Robot-v0")
    u = env.unwrapped
    assert 0.20 < u.reach < 0.22
    assert u.success_tolerance == pytest.approx(0.1 * u.reach)
    env.close()


def test_reward_is_negative_distance_minus_control_cost_and_success_flag():
    env = gym.make("nondiff/Robot-v0", ctrl_cost_weight=0.0)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.zeros(2, dtype=np.float32))
    assert reward == pytest.approx(-info["distance"])
    assert info["is_success"] == (info["distance"] < env.unwrapped.success_tolerance)
    env.close()


def test_reaching_the_target_with_inverse_kinematics_counts_as_success():
    """A perfect controller (analytic IK on the 2-link arm) must reach success; the task is solvable."""
    env = gym.make("nondiff/Robot-v0")
    obs, _ = env.reset(seed=1)
    x, y = obs[-5], obs[-4]  # target relative to the base
    l1, l2 = 0.1, 0.11
    c2 = np.clip((x * x + y * y - l1 * l1 - l2 * l2) / (2 * l1 * l2), -1, 1)
    q2 = np.arccos(c2)
    q1 = np.arctan2(y, x) - np.arctan2(l2 * np.sin(q2), l1 + l2 * np.cos(q2))
    q1 = (q1 + np.pi) % (2 * np.pi) - np.pi
    action = np.array([q1 / np.pi, q2 / 3.0], dtype=np.float32)
    for _ in range(50):
        _, _, term, trunc, info = env.step(action)
        if term or trunc:
            break
    assert trunc and info["is_success"], info
    env.close()


def test_second_arm_runs_unchanged():
    env = gym.make("nondiff/Robot-v0", model="arm3.xml", ee_site="tip")
    obs, _ = env.reset(seed=0)
    assert env.action_space.shape == (3,) and obs.shape == (3 * 2 + 3 + 8,)
    strict_check_env(env.unwrapped)
    env.close()


def test_renders_headless():
    env = gym.make("nondiff/Robot-v0", render_mode="rgb_array", width=64, height=48)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8 and frame.std() > 5
    env.close()


@pytest.mark.parametrize("kwargs, message", [
    ({"model": "/nonexistent.xml"}, "does not exist"),
    ({"ee_site": "hand"}, "no site named 'hand'"),
    ({"frame_skip": 0}, "frame_skip must be >= 1"),
    ({"target_range": (0.3, 0.1)}, "target_range"),
])
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gym.make("nondiff/Robot-v0", **kwargs)
