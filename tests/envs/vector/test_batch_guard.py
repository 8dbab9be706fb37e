"""The batched Guard (envs/vector/batch_guard.py): one check per vector step, and a fault still hits only the
env that returned it."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from agents.sb3.vector import SB3VecEnv
from envs.errors import InvalidOutputError
from envs.faults import FaultKind, faults_in
from envs.guard import Guard
from envs.vector.batch_guard import BatchGuard, guard_below
from envs.vector.episode_stats import EpisodeStatistics
from envs.vector.sync import SyncVectorEnv
from envs.vector.threads import ThreadVectorEnv

BOX = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
DICT = gym.spaces.Dict({"pos": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
                        "count": gym.spaces.Box(0, 10, (1,), np.int64)})


class FaultyEnv(gym.Env):
    """A deterministic walk inside the bounds; at its step ``bad_at`` (once in its life) it returns the
    fault ``bad``."""

    def __init__(self, space: gym.Space, bad: str | None = None, bad_at: int = 3) -> None:
        self.observation_space, self.action_space = space, gym.spaces.Box(-1, 1, (1,), np.float32)
        self.bad, self.bad_at, self.t, self.steps = bad, bad_at, 0, 0

    def _obs(self, x: float) -> object:
        if isinstance(self.observation_space, gym.spaces.Dict):
            return {"pos": np.array([x, -x], np.float32), "count": np.array([self.t % 10], np.int64)}
        return np.array([x, -x, 0.5], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(0.0), {}

    def step(self, action):
        self.t += 1
        self.steps += 1
        obs, reward = self._obs(0.1 * (self.t % 5)), float(self.t)
        bad = self.bad if self.steps == self.bad_at else None
        if bad == "nan_obs":
            (obs["pos"] if isinstance(obs, dict) else obs)[0] = np.nan
        elif bad == "out_of_bounds":
            (obs["pos"] if isinstance(obs, dict) else obs)[1] = 1.5
        elif bad == "nan_reward":
            reward = float("nan")
        elif bad == "crash":
            raise RuntimeError("adapter exploded")
        return obs, reward, False, self.t >= 8, {"t": self.t}


def make(space, bad, policy, bounds_policy="clip", wrap=None):
    def fn():
        env: gym.Env = Guard(FaultyEnv(space, bad), policy, bounds_policy=bounds_policy)
        return wrap(env) if wrap else env
    return fn


class Guarded(SB3VecEnv):
    """``cls`` under the batched Guard and the episode statistics, as SB3 sees it; ``batch``: the
    Guard wrapper."""

    def __init__(self, cls, env_fns, batch_guard=True):
        self.inner = cls(env_fns)
        self.batch = BatchGuard(self.inner, batch_guard)
        super().__init__(EpisodeStatistics(self.batch))


def GuardedDummyVecEnv(env_fns, batch_guard=True):  # noqa: N802 - the vector env the test names
    return Guarded(SyncVectorEnv, env_fns, batch_guard)


def ThreadVecEnv(env_fns, batch_guard=True):  # noqa: N802
    return Guarded(ThreadVectorEnv, env_fns, batch_guard)


def run(venv_cls, space, bad, policy, bounds_policy="clip", steps=10, batch=True):
    fns = [make(space, bad if i == 2 else None, policy, bounds_policy) for i in range(4)]
    venv = venv_cls(fns, batch_guard=batch)
    out = []
    try:
        venv.reset()
        for _ in range(steps):
            obs, rew, done, infos = venv.step(np.zeros((4, 1), np.float32))
            out.append((obs, rew.copy(), done.copy(), [[(f.kind, f.detail, f.clipped) for f in faults_in(i)]
                                                       for i in infos]))
        return out, venv.batch.active, venv.batch.vouched
    finally:
        venv.close()


def same(a, b):
    for (oa, ra, da, fa), (ob, rb, db, fb) in zip(a, b):
        if isinstance(oa, dict):
            for k in oa:
                np.testing.assert_array_equal(oa[k], ob[k])
        else:
            np.testing.assert_array_equal(oa, ob)
        np.testing.assert_array_equal(ra, rb)
        np.testing.assert_array_equal(da, db)
        assert fa == fb


@pytest.mark.parametrize("space", [BOX, DICT], ids=["box", "dict"])
@pytest.mark.parametrize("bad", ["nan_obs", "out_of_bounds", "nan_reward", "crash"])
@pytest.mark.parametrize("policy", ["truncate", "clip"])
@pytest.mark.parametrize("venv_cls", [GuardedDummyVecEnv, ThreadVecEnv], ids=["dummy", "thread"])
def test_a_fault_hits_only_the_offending_env_exactly_as_per_env_checks_do(venv_cls, space, bad, policy):
    batched, active, vouched = run(venv_cls, space, bad, policy)
    per_env, per_active, _ = run(venv_cls, space, bad, policy, batch=False)
    assert active and not per_active
    same(batched, per_env)
    assert vouched == 4 * 10 - 1  # every transition but the bad one went through the batch check alone
    faulty = [(step, env) for step, (_, _, _, faults) in enumerate(batched)
              for env, f in enumerate(faults) if f]
    assert faulty == [(2, 2)]  # step 3 of env 2, nowhere else
    _, rew, done, faults = batched[2]
    kind = {"nan_obs": FaultKind.NONFINITE, "out_of_bounds": FaultKind.INVALID_OUTPUT,
            "nan_reward": FaultKind.NONFINITE, "crash": FaultKind.CRASH}[bad]
    assert faults[2][0][0] is kind
    assert np.isfinite(rew).all() and list(rew[[0, 1, 3]]) == [3.0, 3.0, 3.0]  # the others' rewards untouched
    # bounds_policy clip goes on
    truncated = bad == "crash" or (policy == "truncate" and bad != "out_of_bounds")
    assert list(done) == [False, False, truncated, False]
    for obs, _, _, _ in batched:  # nothing invalid reaches the learner
        assert all(space.contains({k: v[i] for k, v in obs.items()} if isinstance(obs, dict) else obs[i])
                   for i in range(4))


@pytest.mark.parametrize("space", [BOX, DICT], ids=["box", "dict"])
@pytest.mark.parametrize("bad,bounds_policy", [("nan_obs", "clip"), ("nan_reward", "clip"),
                                               ("out_of_bounds", "raise")])
def test_raise_stops_with_the_same_error_as_per_env_checks(space, bad, bounds_policy):
    errors = []
    for batch in (True, False):
        with pytest.raises(InvalidOutputError) as e:
            run(GuardedDummyVecEnv, space, bad, "raise", bounds_policy, batch=batch)
        errors.append(str(e.value))
    assert errors[0] == errors[1] and errors[0].startswith("step: ")


def test_bounds_policy_truncate_cuts_only_the_offending_env():
    batched, active, _ = run(GuardedDummyVecEnv, BOX, "out_of_bounds", "clip", "truncate")
    same(batched, run(GuardedDummyVecEnv, BOX, "out_of_bounds", "clip", "truncate", batch=False)[0])
    assert active and list(batched[2][2]) == [False, False, True, False]


def test_an_action_wrapper_between_keeps_the_per_env_checks():
    wrapped = make(BOX, None, "truncate", wrap=lambda e: gym.wrappers.ClipAction(e))()
    assert guard_below(wrapped) is None  # ClipAction changes the action: the Guard must see the changed one
    venv = GuardedDummyVecEnv([make(BOX, "nan_obs" if i == 1 else None, "truncate",
                                     wrap=lambda e: gym.wrappers.ClipAction(e)) for i in range(2)])
    venv.reset()
    faults = []
    for _ in range(4):
        _, _, _, infos = venv.step(np.zeros((2, 1), np.float32))
        faults.append([bool(faults_in(i)) for i in infos])
    assert not venv.batch.active and venv.batch.vouched == 0
    assert faults[2] == [False, True] and sum(map(sum, faults)) == 1
