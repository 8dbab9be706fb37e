"""The batched checks (envs/value_checks.py) and the Guard's prefetch/vouch: what a vector env or a K-instance
program calls to validate N observations and rewards at once."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from envs.faults import FAULT_KEY, LATENCY_KEY, FaultKind
from envs.guard import Guard
from envs.value_checks import RowCheck, all_finite_floats, check, valid_rewards, valid_rows

BOX = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
OPEN = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
DICT = gym.spaces.Dict({"a": BOX, "n": gym.spaces.Box(0, 5, (2,), np.int64)})


@pytest.mark.parametrize("space", [BOX, OPEN], ids=["bounded", "unbounded"])
def test_rows_flag_exactly_the_invalid_observations(space):
    obs = np.zeros((6, 3), np.float32)
    obs[1, 2], obs[2, 0], obs[3, 1] = np.nan, np.inf, -np.inf
    obs[4, 0] = 1.5  # past the bound of BOX only
    expected = [True, False, False, False, space is OPEN, True]
    rows = RowCheck(space)
    assert rows.valid(obs).tolist() == expected  # a stacked array (a K-instance program's reply)
    assert rows.valid(list(obs)).tolist() == expected  # one array per env
    assert valid_rows(space, list(obs)).tolist() == expected
    assert not rows.all_valid(list(obs)) and rows.all_valid([obs[0], obs[5]])
    assert [rows.valid_one(o) for o in obs] == expected
    for o, ok in zip(obs, expected):  # never vouches for what the per-value check would reject or change
        problem, checked = check(space, o)
        assert ok <= (problem is None and checked is o)


def test_rows_leave_wrong_types_shapes_dtypes_and_rounding_noise_to_the_per_value_check():
    noise = np.array([1.0 + 1e-7, 0, 0], np.float32)  # snapped onto the bound by check(): not "valid as is"
    values = [np.zeros(3, np.float32), np.zeros(3), np.zeros(4, np.float32), [0.0, 0.0, 0.0], "garbage",
              noise]
    assert RowCheck(BOX).valid(values).tolist() == [True, False, False, False, False, False]
    assert RowCheck(gym.spaces.Discrete(3)).valid([0, 1]).tolist() == [False, False]  # not batchable


def test_dict_rows_check_every_key():
    good = {"a": np.zeros(3, np.float32), "n": np.array([1, 5])}
    values = [good, {**good, "n": np.array([1, 6])}, {**good, "a": np.full(3, np.nan, np.float32)},
              {"a": good["a"]}, {**good, "extra": 1}]
    assert RowCheck(DICT).valid(values).tolist() == [True, False, False, False, False]


def test_rewards():
    assert (valid_rewards([1.0, np.float32(2), 3, True, float("nan"), float("inf")]).tolist()
            == [True] * 4 + [False] * 2)
    # a string is no reward, even if numpy parses it
    assert valid_rewards(["1.0", 2.0]).tolist() == [False, False]
    assert valid_rewards([np.zeros(2), 1.0]).tolist() == [False, False]  # ragged: left to reward_problem
    assert all_finite_floats([1.0, np.float32(2.5)]) and not all_finite_floats([1.0, float("nan")])
    # an int, an overflowing sum
    assert not all_finite_floats([1.0, 2]) and not all_finite_floats([1e308, 1e308])


class Fixed(gym.Env):
    observation_space, action_space = BOX, gym.spaces.Discrete(2)

    def __init__(self):
        self.next_obs = np.zeros(3, np.float32)

    def reset(self, *, seed=None, options=None):
        return np.zeros(3, np.float32), {}

    def step(self, action):
        return self.next_obs, 1.0, False, False, {}


def test_prefetch_then_step_returns_the_prefetched_transition_checked_per_env_unless_vouched():
    env = Fixed()
    guard = Guard(env, "truncate")
    guard.reset()
    action = 1
    raw = guard.prefetch(action)
    assert raw is not None and raw[1] == 1.0
    env.next_obs = np.full(3, np.nan, np.float32)  # the adapter is not stepped again by step()
    guard.vouch()
    obs, reward, _, truncated, info = guard.step(action)
    assert np.array_equal(obs, np.zeros(3)) and reward == 1.0 and not truncated and LATENCY_KEY in info
    guard.prefetch(action)  # not vouched for: the Guard checks it itself and truncates
    obs, reward, _, truncated, info = guard.step(action)
    assert (truncated and reward == 0.0 and info[FAULT_KEY].kind is FaultKind.NONFINITE
            and np.isfinite(obs).all())
    guard.prefetch(action)
    with pytest.raises(RuntimeError, match="another action"):  # a wrapper in between changed the action
        guard.step(0)
