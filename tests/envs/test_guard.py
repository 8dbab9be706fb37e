"""The Guard: typed problems, faults decided by what was found, never a raise on garbage, one
crash boundary."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.errors import BridgeError, EnvGaveUp, InvalidOutputError
from envs.faults import FAULT_KEY, RESET_FAULTS_KEY, Fault, FaultKind, faults_in
from envs.guard import Guard, obs_problem, placeholder, reward_problem, sanitize

GOOD = np.array([1.0, 2.0], np.float32)


class Scripted(gym.Env):
    """Returns, step by step, what ``script`` says: an observation, a reward, or an exception to raise."""

    def __init__(self, script: list[Any] | None = None, resets: list[Any] | None = None,
                 low: float = 0.0, high: float = np.inf) -> None:
        self.observation_space = gym.spaces.Box(low, high, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.script, self.resets, self.t = list(script or []), list(resets or []), 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        what = self.resets.pop(0) if self.resets else GOOD
        if isinstance(what, BaseException):
            raise what
        return what, {"from": "reset"}

    def step(self, action):
        what = self.script.pop(0) if self.script else (GOOD, 1.0)
        if isinstance(what, BaseException):
            raise what
        obs, reward = what
        return obs, reward, False, False, {"t": 1}


class Hostile:
    """An object whose every conversion raises."""

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no array")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    def __float__(self) -> float:
        raise RuntimeError("no float")


def _deep(depth: int) -> list[Any]:
    out: list[Any] = []
    for _ in range(depth):
        out = [out]
    return out


GARBAGE = [Hostile(), _deep(100_000), object(), "abc", b"\x00", 10**100, 10**5000, -(10**400),
           [[1.0, 2.0], [3.0]], None, [1.0, 2.0, 3.0], {"a": 1}, np.array(["x", "y"]), np.array([1 + 2j, 3j]),
           np.full((2,), 1e300), float("nan"), np.array([np.nan, 1.0], np.float32), np.array([1.0, 2.0]),
           (1.0, 2.0), np.zeros((2, 2), np.float32)]


def test_out_of_bounds_in_an_infinite_box_is_invalid_output_not_nonfinite():
    space = gym.spaces.Box(0, np.inf, (2,), np.float32)
    problem = obs_problem(space, np.array([-1.0, 1.0], np.float32))
    assert (problem is not None and problem.kind is FaultKind.INVALID_OUTPUT
            and "out of bounds" in str(problem))
    assert "inf" in str(problem)  # the text names the bound, and that no longer decides the kind
    env = Guard(Scripted([(np.array([-1.0, 1.0], np.float32), 0.5)]), bounds_policy="truncate")
    env.reset(seed=0)
    obs, reward, term, trunc, info = env.step(0)
    (fault,) = faults_in(info)
    assert isinstance(info[FAULT_KEY], Fault) and fault.kind is FaultKind.INVALID_OUTPUT and not fault.clipped
    assert trunc and not term and reward == 0.0 and np.array_equal(obs, GOOD)


def test_a_float64_observation_for_a_float32_box_is_cast_not_a_fault(caplog):
    """Third-party envs often return float64 for a float32 Box: every step was an invalid_output fault, so the
    default policy trained on one-step episodes of reward 0. Casts that keep the values are made (said once);
    values the space's dtype cannot hold stay faults, and ``obs_problem`` (``envs check``) still reports the
    dtype."""
    big = np.array([1e300, 1.0])  # finite in float64, inf in float32
    env = Guard(Scripted([(np.array([1.5, 2.5]), 1.0), (np.array([3.5, 4.5]), 1.0), (big, 1.0)]))
    env.reset(seed=0)
    with caplog.at_level("WARNING"):
        for expected in ([1.5, 2.5], [3.5, 4.5]):
            obs, reward, term, trunc, info = env.step(0)
            assert obs.dtype == np.float32 and obs.tolist() == expected and reward == 1.0
            assert not faults_in(info) and not trunc
    assert sum("cast on every step" in r.message for r in caplog.records) == 1
    obs, reward, term, trunc, info = env.step(0)
    (fault,) = faults_in(info)
    assert fault.kind is FaultKind.INVALID_OUTPUT and "beyond float32's range" in fault.detail and trunc
    assert obs_problem(env.observation_space, np.array([1.5, 2.5])) is not None  # envs check still says it
    uint8 = gym.spaces.Box(0, 255, (2,), np.uint8)
    from envs.guard import check

    problem, out = check(uint8, np.array([3, 200], np.int64))
    assert problem is None and out.dtype == np.uint8 and out.tolist() == [3, 200]
    problem, _ = check(uint8, np.array([3, 300], np.int64))
    assert problem is not None and "cannot hold" in problem.text
    problem, _ = check(uint8, np.array([3.0, 200.0]))  # a float into an integer Box: not cast
    assert problem is not None and "has dtype float64" in problem.text


def test_finite_values_past_the_bounds_are_clipped_by_default_and_the_episode_goes_on():
    env = Guard(Scripted([(np.array([-1.0, 1.0], np.float32), 0.5)]))
    env.reset(seed=0)
    obs, reward, term, trunc, info = env.step(0)
    (fault,) = faults_in(info)
    assert (fault.kind is FaultKind.INVALID_OUTPUT and fault.clipped
            and "clipped onto the bounds" in fault.detail)
    assert not trunc and not term and reward == 0.5 and np.array_equal(obs, np.array([0.0, 1.0], np.float32))
    assert obs.dtype == np.float32
    with pytest.raises(InvalidOutputError, match="out of bounds"):
        strict = Guard(Scripted([(np.array([-1.0, 1.0], np.float32), 0.5)]), bounds_policy="raise")
        strict.reset(seed=0)
        strict.step(0)


def test_a_bounds_problem_beside_a_nan_follows_nan_policy_not_bounds_policy():
    space = gym.spaces.Dict({"a": gym.spaces.Box(0, 1, (2,), np.float32),
                             "b": gym.spaces.Box(0, 1, (2,), np.float32)})

    class TwoKeys(gym.Env):
        observation_space, action_space = space, gym.spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):
            return {"a": np.zeros(2, np.float32), "b": np.zeros(2, np.float32)}, {}

        def step(self, action):
            return ({"a": np.full(2, 5.0, np.float32), "b": np.array([np.nan, 0], np.float32)}, 1.0, False,
                    False, {})

    env = Guard(TwoKeys())
    env.reset(seed=0)
    obs, reward, term, trunc, info = env.step(0)
    (fault,) = faults_in(info)
    assert fault.kind is FaultKind.NONFINITE and not fault.clipped
    assert trunc and reward == 0.0 and np.all(obs["a"] == 0.0) and np.all(np.isfinite(obs["b"]))


@pytest.mark.parametrize("value, kind", [(np.array([np.nan, 1.0], np.float32), FaultKind.NONFINITE),
                                         (np.array([np.inf, 1.0], np.float32), FaultKind.NONFINITE),
                                         (np.array([1.0, 2.0]), FaultKind.INVALID_OUTPUT),
                                         (np.array([1.0], np.float32), FaultKind.INVALID_OUTPUT)],
                         ids=["nan", "inf", "dtype", "shape"])
def test_observation_problems_have_the_kind_of_the_check_that_failed(value, kind):
    problem = obs_problem(gym.spaces.Box(-np.inf, np.inf, (2,), np.float32), value)
    assert problem is not None and problem.kind is kind


def test_reward_problems():
    assert (reward_problem(1) is None and reward_problem(np.float32(2.5)) is None
            and reward_problem(True) is None)
    assert reward_problem(float("nan")).kind is FaultKind.NONFINITE
    assert reward_problem(float("-inf")).kind is FaultKind.NONFINITE
    for bad in ("1.5", 10**400, [1.0], np.ones(3), None, object()):
        problem = reward_problem(bad)
        assert problem is not None and problem.kind is FaultKind.INVALID_OUTPUT, bad


@pytest.mark.parametrize("garbage", GARBAGE, ids=range(len(GARBAGE)))
@pytest.mark.parametrize("space", [gym.spaces.Box(0, 10, (2,), np.float32), gym.spaces.Discrete(3),
                                   gym.spaces.Dict({"a": gym.spaces.Box(-1, 1, (2,), np.float32)}),
                                   gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Box(0, 1, (1,))))],
                         ids=["box", "discrete", "dict", "tuple"])
def test_checks_and_repair_never_raise_on_garbage(space, garbage):
    problem = obs_problem(space, garbage)
    assert problem is None or problem.text
    reward_problem(garbage)
    repaired = sanitize(space, garbage)
    assert space.contains(repaired) and obs_problem(space, repaired) is None


@pytest.mark.parametrize("garbage", GARBAGE, ids=range(len(GARBAGE)))
@pytest.mark.parametrize("policy", ["truncate", "clip"])
def test_garbage_from_step_never_reaches_the_learner(garbage, policy):
    env = Guard(Scripted([(garbage, garbage)], high=10.0), policy)
    env.reset(seed=0)
    obs, reward, term, trunc, info = env.step(0)
    assert env.observation_space.contains(obs) and np.isfinite(reward)
    assert [f.kind for f in faults_in(info)] in ([FaultKind.NONFINITE], [FaultKind.INVALID_OUTPUT])
    assert trunc == (policy == "truncate")


def test_raise_policy_keeps_raising():
    env = Guard(Scripted([(np.array([np.nan, 0], np.float32), 0.0)]), "raise")
    env.reset(seed=0)
    with pytest.raises(InvalidOutputError, match="NaN"):
        env.step(0)
    env = Guard(Scripted([ValueError("solver diverged")]), "raise")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="solver diverged"):
        env.step(0)


def test_an_exception_in_step_is_a_crash_fault_and_the_next_reset_goes_on():
    env = Guard(Scripted([(np.array([3.0, 4.0], np.float32), 1.0),
                          ZeroDivisionError("division by zero in C")]))
    env.reset(seed=0)
    good, *_ = env.step(0)
    obs, reward, term, trunc, info = env.step(0)
    (fault,) = faults_in(info)
    assert fault.kind is FaultKind.CRASH and fault.restart and "ZeroDivisionError" in fault.detail
    assert fault.program == "Scripted" and fault.budget is None
    assert trunc and not term and reward == 0.0 and np.array_equal(obs, good) and info["nondiff_step_ms"] >= 0
    env.reset()
    obs, reward, *_ , info = env.step(0)
    assert reward == 1.0 and not faults_in(info)


def test_a_reset_that_raises_is_retried_and_reported_with_the_next_step():
    env = Guard(Scripted(resets=[OSError("device busy")]))
    obs, info = env.reset(seed=0)
    assert np.array_equal(obs, GOOD) and [f.kind for f in faults_in(info)] == [FaultKind.CRASH]
    *_, info = env.step(0)
    assert [f.detail for f in faults_in(info)] == ["reset raised OSError: 'device busy'"]
    assert isinstance(info[RESET_FAULTS_KEY], list)
    *_, info = env.step(0)
    assert not faults_in(info)  # reported once


def test_a_reset_that_keeps_raising_gives_up_with_a_typed_error():
    env = Guard(Scripted(resets=[RuntimeError(f"attempt {i}") for i in range(5)]), max_reset_failures=3)
    with pytest.raises(EnvGaveUp,
                       match="reset failed 3 times in a row; last: reset raised RuntimeError: 'attempt 2'"):
        env.reset(seed=0)


def test_errors_the_bridge_raises_on_purpose_pass_through():
    env = Guard(Scripted(resets=[BridgeError("restart budget spent")]))
    with pytest.raises(BridgeError, match="restart budget spent"):
        env.reset()


@pytest.mark.parametrize("bad", [np.zeros((4,), np.float32), np.zeros((2, 2), np.float32), "ready", None,
                                 np.array([1j, 1.0])], ids=["flat4", "2x2", "str", "none", "complex"])
def test_a_reset_observation_of_the_wrong_shape_becomes_a_valid_placeholder(bad):
    env = Guard(Scripted(resets=[GOOD, bad], low=0.5, high=9.0))
    env.reset(seed=0)
    obs, info = env.reset()  # after a valid one: the last valid observation
    assert np.array_equal(obs, GOOD)
    (fault,) = faults_in(info)
    assert fault.detail.startswith("reset: observation") and not fault.restart
    first = Guard(Scripted(resets=[bad], low=0.5, high=9.0))
    obs, _ = first.reset(seed=0)  # none before: zeros clipped into the bounds
    assert first.observation_space.contains(obs) and np.array_equal(obs, [0.5, 0.5])


def test_a_nan_reset_observation_is_repaired_in_place():
    env = Guard(Scripted(resets=[np.array([np.nan, 20.0], np.float32)], low=0.5, high=9.0))
    obs, info = env.reset(seed=0)
    assert np.array_equal(obs, [0.5, 9.0]) and faults_in(info)[0].kind is FaultKind.NONFINITE


def test_placeholder_is_in_every_space():
    for space in (gym.spaces.Box(1, 2, (3,)), gym.spaces.Discrete(4, start=-2),
                  gym.spaces.MultiDiscrete([2, 3]), gym.spaces.MultiBinary(3),
                  gym.spaces.Dict({"x": gym.spaces.Box(-1, 0, (1,))})):
        assert space.contains(placeholder(space)), space


def test_the_whole_stack_from_make_turns_an_adapter_exception_into_a_fault():
    env = envs.make("test_guard:Scripted", script=[(GOOD, 0.0), KeyError("joint 7")])
    env.reset(seed=0)
    env.step(0)
    *_, trunc, info = env.step(0)
    assert trunc and faults_in(info)[0].kind is FaultKind.CRASH and "joint 7" in faults_in(info)[0].detail
    env.close()


def test_faults_in_reads_any_garbage_without_raising():
    infos: list[Any] = [None, 3, [], {FAULT_KEY: 7},
                        {FAULT_KEY: {"kind": ["x"], "stderr": 5, "restarts": "many"}},
                        {FAULT_KEY: {"kind": "timeout", "budget": "ten", "exit_code": 10**400,
                                     "restart": "yes"}},
                        {RESET_FAULTS_KEY: 12},
                        {RESET_FAULTS_KEY: [None, {"kind": "crash", "restart": True}]}]
    found = [faults_in(i) for i in infos]
    assert [len(f) for f in found] == [0, 0, 0, 0, 1, 1, 0, 1]
    assert found[4][0].kind is FaultKind.PROTOCOL and found[4][0].restarts == 0
    assert found[5][0].kind is FaultKind.TIMEOUT and found[5][0].budget is None and not found[5][0].restart
    assert found[7][0].restart
