"""Per-env infos (``StepRows``, envs/vector/base.py): a step read through ``step_rows`` is the Gymnasium step
with its infos unbatched, through every in-process vector env and wrapper that has its own ``step_rows``; a
wrapper from elsewhere is stepped as Gymnasium steps it; and SB3's adapter, which reads the rows, gives SB3
what ``DummyVecEnv`` over ``Monitor`` gives it."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.sb3.vector import SB3VecEnv
from envs.faults import LATENCY_KEY
from envs.guard import Guard
from envs.vector.base import StepRows, add_info, batched, step_rows, unbatch_all, unbatched
from envs.vector.batch_guard import BatchGuard
from envs.vector.channels import ChannelsFirst
from envs.vector.episode_stats import EpisodeStatistics
from envs.vector.sync import SyncVectorEnv
from envs.vector.threads import ThreadVectorEnv

N = 3


class Walk(gym.Env):
    """Episodes of ``3 + index`` steps, terminated or truncated in turn; infos with a nested dict, a reset
    info of its own, an image observation if ``image``."""

    def __init__(self, index: int, image: bool = False) -> None:
        self.index, self.image, self.t, self.episodes = index, image, 0, 0
        shape = (4, 5, 3) if image else (2,)
        dtype = np.uint8 if image else np.float32
        self.observation_space = gym.spaces.Box(0, 255 if image else 10, shape, dtype)
        self.action_space = gym.spaces.Discrete(2)

    def _obs(self) -> np.ndarray:
        if self.image:
            return np.full(self.observation_space.shape, self.t * 10 + self.index, np.uint8)
        return np.array([self.t, self.index], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.episodes += 1
        return self._obs(), {"reset_no": self.episodes}

    def step(self, action):
        self.t += 1
        end = self.t >= 3 + self.index
        terminated, truncated = end and self.episodes % 2 == 1, end and self.episodes % 2 == 0
        info = {"t": self.t, "flag": bool(action), "nested": {"a": self.t * 2}}
        return self._obs(), float(self.t + action), terminated, truncated, info


def stack(kind: str, image: bool = False) -> gym.vector.VectorEnv:
    fns = [lambda i=i: Guard(Walk(i, image), "truncate") for i in range(N)]
    if kind == "thread":
        return ThreadVectorEnv(fns)
    venv: gym.vector.VectorEnv = SyncVectorEnv(fns)
    if kind in ("guarded", "channels"):
        venv = EpisodeStatistics(BatchGuard(venv))
    if kind == "channels":
        venv = ChannelsFirst(venv)
    return venv


def without_latency(info: dict) -> dict:
    """``info`` less what differs between two runs: the step latency, and the episode's wall time."""
    out = {k: v for k, v in info.items() if k != LATENCY_KEY}
    if "episode" in out:
        out["episode"] = {k: v for k, v in out["episode"].items() if k != "t"}
    return out


def assert_same(a: StepRows, b: StepRows) -> None:
    np.testing.assert_array_equal(a.obs, b.obs)
    for x, y in zip(a[1:4], b[1:4]):
        np.testing.assert_array_equal(x, y)
    assert [without_latency(i) for i in a.infos] == [without_latency(i) for i in b.infos]
    assert sorted(a.finals) == sorted(b.finals)
    for i in a.finals:
        np.testing.assert_array_equal(a.finals[i][0], b.finals[i][0])
        assert without_latency(a.finals[i][1]) == without_latency(b.finals[i][1])


@pytest.mark.parametrize("kind", ["sync", "thread", "guarded", "channels"])
def test_step_rows_is_the_gymnasium_step_unbatched(kind):
    gym_side, row_side = stack(kind, image=kind == "channels"), stack(kind, image=kind == "channels")
    try:
        gym_side.reset(seed=1)
        row_side.reset(seed=1)
        ended = 0
        for t in range(14):
            actions = np.array([t % 2] * N)
            step = gym_side.step(actions)
            rows = step_rows(row_side, actions)
            assert_same(unbatched(step, N), rows)
            assert_same(unbatched(batched(rows), N), rows)
            ended += len(rows.finals)
            for i, (last_obs, last_info) in rows.finals.items():
                assert last_info["t"] == 3 + i  # the finished step's info, not the reset's
                assert rows.infos[i]["reset_no"] >= 2  # the reset's info in its place
                if kind == "guarded":
                    assert last_info["episode"]["l"] == 3 + i
                if kind == "channels":
                    assert last_obs.shape == (3, 4, 5) and last_obs[0, 0, 0] == 10 * (3 + i) + i
        assert ended >= N * 2
    finally:
        gym_side.close()
        row_side.close()


class Tagger(gym.vector.VectorWrapper):
    """A vector wrapper from elsewhere: it only knows Gymnasium's step."""

    def step(self, actions):
        obs, rewards, terminated, truncated, infos = self.env.step(actions)
        for i in range(self.num_envs):
            infos = add_info(infos, {"tagged": i}, i, self.num_envs)
        return obs, rewards * 2, terminated, truncated, infos


def test_a_wrapper_from_elsewhere_is_stepped_not_skipped():
    venv = EpisodeStatistics(Tagger(SyncVectorEnv([lambda i=i: Walk(i) for i in range(N)])))
    plain = SyncVectorEnv([lambda i=i: Walk(i) for i in range(N)])
    try:
        venv.reset(seed=0)
        plain.reset(seed=0)
        for _ in range(3):
            rows = step_rows(venv, np.ones(N, np.int64))
            assert [info["tagged"] for info in rows.infos] == list(range(N))
            np.testing.assert_array_equal(rows.rewards, 2 * plain.step(np.ones(N, np.int64))[1])
        assert list(rows.finals) == [0] and rows.finals[0][1]["episode"]["l"] == 3
        assert rows.finals[0][1]["episode"]["r"] == 2 * (2 + 3 + 4)
    finally:
        venv.close()
        plain.close()


def test_sb3_gets_what_dummy_vec_env_over_monitor_gives_it():
    ours = SB3VecEnv(EpisodeStatistics(BatchGuard(SyncVectorEnv([lambda i=i: Walk(i) for i in range(N)]))))
    ref = DummyVecEnv([lambda i=i: Monitor(Walk(i)) for i in range(N)])
    try:
        ours.seed(3)
        ref.seed(3)
        np.testing.assert_array_equal(ours.reset(), ref.reset())
        assert [without_latency(i) for i in ours.reset_infos] == ref.reset_infos
        for t in range(12):
            actions = np.array([(t + i) % 2 for i in range(N)])
            o1, r1, d1, i1 = ours.step(actions)
            o2, r2, d2, i2 = ref.step(actions)
            np.testing.assert_array_equal(o1, o2)
            np.testing.assert_array_equal(r1, r2)
            assert r1.dtype == r2.dtype == np.float32
            np.testing.assert_array_equal(d1, d2)
            for a, b in zip(i1, i2):
                assert a.keys() - {"nondiff_step_ms"} == b.keys()
                assert a["TimeLimit.truncated"] == b["TimeLimit.truncated"]
                if "terminal_observation" in b:
                    np.testing.assert_array_equal(a["terminal_observation"], b["terminal_observation"])
                    assert (a["episode"]["r"], a["episode"]["l"]) == (b["episode"]["r"], b["episode"]["l"])
            assert [without_latency(i) for i in ours.reset_infos] == ref.reset_infos
    finally:
        ours.close()
        ref.close()


def test_unbatch_all_and_rows_agree_on_partial_keys():
    infos: dict = {}
    infos = add_info(infos, {"a": 1}, 0, 2)
    infos = add_info(infos, {"b": np.zeros(2)}, 1, 2)
    step = (np.zeros((2, 1)), np.zeros(2), np.array([False, True]), np.zeros(2, bool),
            add_info(infos, {"final_obs": np.ones(1), "final_info": {"c": 3}}, 1, 2))
    rows = unbatched(step, 2)
    assert rows.infos[0] == {"a": 1} and list(rows.infos[1]) == ["b"]
    assert list(rows.finals) == [1] and rows.finals[1][1] == {"c": 3}
    assert unbatch_all(batched(rows)[4], 2, ("final_obs", "final_info"))[0] == {"a": 1}


class Unpicklable(gym.Env):
    """An env that cannot be pickled (it holds a lock), with an ``action_masks`` method."""

    observation_space = gym.spaces.Box(0, 1, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self) -> None:
        import threading

        self.lock = threading.Lock()

    def reset(self, *, seed=None, options=None):
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 0.0, False, False, {}

    def action_masks(self):
        return np.ones(2, bool)


def test_has_attr_asks_the_worker_processes_without_fetching_the_envs():
    from envs.vector.subproc import SubprocVectorEnv

    venv = SB3VecEnv(SubprocVectorEnv([Unpicklable, Unpicklable]))
    try:
        assert venv.has_attr("action_masks") and not venv.has_attr("no_such_thing")
        assert [m.tolist() for m in venv.env_method("action_masks")] == [[True, True]] * 2
    finally:
        venv.close()
