"""PettingZoo parallel envs as one vector env (envs/vector/pettingzoo.py) and as one team env
(envs/multiagent.py): slots, spaces, same-step auto-reset, agents that finish early or appear later."""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

pettingzoo = pytest.importorskip("pettingzoo")
mpe2 = pytest.importorskip("mpe2")

from envs.errors import UserError  # noqa: E402
from envs.multiagent import TeamEnv, is_parallel_source, make_parallel, shared_spaces  # noqa: E402
from envs.vector.pettingzoo import IDLE_KEY, PettingZooVectorEnv  # noqa: E402
from envs.vector.row_guard import RowGuard  # noqa: E402

SPREAD = "mpe2.simple_spread_v3:parallel_env"


class Staggered(pettingzoo.ParallelEnv):
    """Agent ``a`` terminates after 2 steps, ``b`` is truncated after 4; ``c`` joins at step 1 and leaves with
    ``b``. Observations count the steps; each reward is 1."""

    metadata = {"name": "staggered"}

    def __init__(self) -> None:
        self.possible_agents = ["a", "b", "c"]
        self.agents: list[str] = []
        self.t = 0

    def observation_space(self, agent: str) -> spaces.Box:
        return spaces.Box(0.0, 100.0, (1,), np.float32)

    def action_space(self, agent: str) -> spaces.Discrete:
        return spaces.Discrete(2)

    def _obs(self) -> dict[str, np.ndarray]:
        return {a: np.array([self.t + 10.0 * k], np.float32) for k, a in enumerate(self.possible_agents)
                if a in self.agents}

    def reset(self, seed=None, options=None):
        self.t, self.agents = 0, ["a", "b"]
        return self._obs(), {a: {"start": True} for a in self.agents}

    def step(self, actions):
        assert set(actions) == set(self.agents), (actions, self.agents)
        self.t += 1
        live = list(self.agents)
        obs = {a: np.array([self.t + 10.0 * self.possible_agents.index(a)], np.float32) for a in live}
        terms = {a: a == "a" and self.t == 2 for a in live}
        truncs = {a: a != "a" and self.t == 4 for a in live}
        self.agents = [a for a in live if not (terms[a] or truncs[a])]
        if self.t == 1:
            self.agents.append("c")
            obs["c"] = np.array([self.t + 20.0], np.float32)
        return obs, {a: 1.0 for a in live}, terms, truncs, {a: {} for a in live}


def spread(copies: int, **kwargs) -> PettingZooVectorEnv:
    fn = functools.partial(make_parallel, SPREAD, {"max_cycles": 5, **kwargs})
    return PettingZooVectorEnv([fn] * copies, name=SPREAD)


def annotated() -> pettingzoo.ParallelEnv:
    return Staggered()


def test_recognises_parallel_env_sources():
    from mpe2 import simple_spread_v3

    assert is_parallel_source(simple_spread_v3.parallel_env)  # made by parallel_wrapper_fn
    assert is_parallel_source(Staggered) and is_parallel_source(annotated)
    assert not is_parallel_source(simple_spread_v3.env)  # the AEC env
    assert not is_parallel_source(gym.make) and not is_parallel_source(None)


def test_slots_are_copies_times_agents_with_one_agents_spaces():
    venv = spread(2)
    try:
        assert venv.num_envs == 6 and venv.agents == ["agent_0", "agent_1", "agent_2"]
        assert venv.single_observation_space == spaces.Box(-np.inf, np.inf, (18,), np.float32)
        assert venv.single_action_space == spaces.Discrete(5)
        obs, _ = venv.reset(seed=0)
        assert obs.shape == (6, 18)
        again, _ = venv.reset(seed=0)
        np.testing.assert_array_equal(obs, again)
        np.testing.assert_array_equal(obs[:3], spread_obs(0))
        assert venv.render_mode is None and venv.get_attr_at([4], "possible_agents")[0] == venv.agents
    finally:
        venv.close()


def spread_obs(seed: int) -> np.ndarray:
    env = make_parallel(SPREAD, {"max_cycles": 5})
    obs, _ = env.reset(seed=seed)
    env.close()
    return np.stack([obs[a] for a in env.possible_agents])


def test_every_agent_ends_with_its_copy_and_starts_again_in_the_same_step():
    venv = spread(2)
    try:
        venv.reset(seed=1)
        for t in range(5):
            obs, rewards, term, trunc, infos = venv.step(np.zeros(6, dtype=np.int64))
            assert not term.any() and rewards.shape == (6,)
            assert trunc.all() == (t == 4) and not (trunc.any() and t < 4)
        assert infos["_final_obs"].all() and infos["final_obs"][0].shape == (18,)
        assert not np.array_equal(infos["final_obs"][0], obs[0])  # obs is the new episode's first
    finally:
        venv.close()


def test_max_episode_steps_truncates_a_copy():
    fn = functools.partial(make_parallel, SPREAD, {"max_cycles": 25})
    venv = PettingZooVectorEnv([fn], max_episode_steps=3)
    venv.reset(seed=0)
    ends = [venv.step(np.zeros(3, dtype=np.int64))[3].all() for _ in range(6)]
    assert ends == [False, False, True, False, False, True]
    venv.close()


def test_agents_that_finish_early_idle_and_agents_that_appear_later_join():
    venv = PettingZooVectorEnv([Staggered, Staggered])
    obs, infos = venv.reset(seed=0)
    assert venv.num_envs == 6 and obs[:3, 0].tolist() == [0.0, 10.0, 0.0]  # c is not there yet: zeros
    assert infos["start"][0] is True and not infos["_start"][2]
    acts = np.zeros(6, dtype=np.int64)
    obs, r, te, tr, infos = venv.step(acts)  # t=1: c appears, with reward 0
    assert obs[:3, 0].tolist() == [1.0, 11.0, 21.0] and r[:3].tolist() == [1.0, 1.0, 0.0]
    obs, r, te, tr, infos = venv.step(acts)  # t=2: a terminates
    assert te[:3].tolist() == [True, False, False] and not tr[:3].any()
    assert infos["final_obs"][0][0] == 2.0 and obs[0, 0] == 0.0 and infos[IDLE_KEY][0] is True
    obs, r, te, tr, infos = venv.step(acts)  # t=3: a idles (its action ignored: Staggered asserts it)
    assert obs[0, 0] == 0.0 and r[0] == 0.0 and not te[0] and not tr[0] and infos[IDLE_KEY][0] is True
    obs, r, te, tr, infos = venv.step(acts)  # t=4: b and c truncated, the copy ends and resets
    assert tr[:3].tolist() == [False, True, True] and not te[:3].any() and r[:3].tolist() == [0.0, 1.0, 1.0]
    assert obs[:3, 0].tolist() == [0.0, 10.0, 0.0]  # the next episode, a live again
    assert infos["final_obs"][1][0] == 14.0 and not infos["_final_obs"][0]
    np.testing.assert_array_equal(obs[:3], obs[3:])
    venv.close()


def test_reset_mask_benches_the_slots_named_or_resets_a_copy_they_fill():
    venv = spread(2)
    venv.reset(seed=0)
    moved, *_ = venv.step(np.ones(6, dtype=np.int64))
    again, infos = venv.reset(options={"reset_mask": np.array([0, 0, 0, 0, 1, 0], dtype=bool)})
    np.testing.assert_array_equal(np.delete(again, 4, 0), np.delete(moved, 4, 0))  # the others play on
    assert not again[4].any() and infos[IDLE_KEY][4] is True and not infos["_" + IDLE_KEY][3]
    obs, rewards, _, _, infos = venv.step(np.ones(6, dtype=np.int64))
    assert rewards[4] == 0.0 and not obs[4].any() and infos[IDLE_KEY][4] is True
    live_of_copy_1 = np.array([0, 0, 0, 1, 0, 1], dtype=bool)
    again, _ = venv.reset(options={"reset_mask": live_of_copy_1})
    np.testing.assert_array_equal(again[:3], obs[:3])
    assert again[3:].any(axis=1).all()  # copy 1 starts over, slot 4 included
    venv.close()


class Poisoned(Staggered):
    """Agents a and b for 5 steps; b's observation is NaN at step 2. Records the actions it was given."""

    def reset(self, seed=None, options=None):
        self.t, self.agents, self.given = 0, ["a", "b"], []
        return self._obs(), {}

    def step(self, actions):
        self.given.append(dict(actions))
        self.t += 1
        obs = self._obs()
        if self.t == 2:
            obs["b"] = np.array([np.nan], np.float32)
        end = self.t == 5
        live, self.agents = list(self.agents), [] if end else self.agents
        return obs, {a: 1.0 for a in live}, dict.fromkeys(live, False), dict.fromkeys(live, end), {}


def test_a_slot_the_guard_cuts_idles_while_its_copy_plays_on():
    inner = PettingZooVectorEnv([Poisoned])
    venv = RowGuard(inner, "truncate", "clip", None)
    venv.reset(seed=0)
    ones = np.ones(3, dtype=np.int64)
    venv.step(ones)
    obs, rewards, term, trunc, infos = venv.step(ones)  # b's NaN: cut, benched
    assert trunc.tolist() == [False, True, False] and rewards[1] == 0.0
    assert infos["final_info"]["nondiff_fault"][1] is not None and infos["final_obs"][1][0] == 11.0
    assert obs[0, 0] == 2.0 and not obs[1].any()
    obs, rewards, term, trunc, infos = venv.step(ones)
    assert obs[0, 0] == 3.0 and rewards.tolist() == [1.0, 0.0, 0.0] and infos[IDLE_KEY][1] is True
    assert inner.envs[0].given[-1] == {"a": 1, "b": 0}  # a benched agent acts with the placeholder
    venv.step(ones)
    _, _, term, trunc, _ = venv.step(ones)  # step 5: the copy ends; b was already out
    assert trunc.tolist() == [True, False, False] and not term.any()
    venv.close()


def test_agents_with_different_spaces_are_refused_in_one_line():
    from mpe2 import simple_adversary_v3

    env = simple_adversary_v3.parallel_env()
    with pytest.raises(UserError, match=r"agents 'adversary_0' and 'agent_0' have different observation "
                                        r"spaces .*one policy shared by all agents; pad them"):
        shared_spaces(env, "adv")
    env.close()


def test_the_guard_checks_the_batch():
    venv = RowGuard(spread(1), "truncate", "clip", None)
    obs, _ = venv.reset(seed=0)
    out = venv.step(np.zeros(3, dtype=np.int64))
    assert out[0].shape == (3, 18) and np.isfinite(out[1]).all()
    venv.close()


def test_team_env_plays_every_agent_and_reports_the_mean_reward():
    team = TeamEnv(f"{Staggered.__module__}:Staggered", {}, name="staggered")
    assert team.observation_space.shape == (3, 1) and team.action_space == spaces.MultiDiscrete([2, 2, 2])
    assert team.single_action_space == spaces.Discrete(2)
    obs, _ = team.reset(seed=0)
    total, done, steps = 0.0, False, 0
    while not done:
        obs, reward, terminated, truncated, _ = team.step(team.action_space.sample())
        total, done, steps = total + reward, terminated or truncated, steps + 1
    assert steps == 4 and truncated and not terminated
    assert total == pytest.approx((2 + 4 + 3) / 3)  # rewards of 1: a 2 steps, b 4, c 3 (from step 2)
    team.close()
    team.close()


def test_groups_split_the_agents_by_policy_with_their_own_spaces_and_step_in_lock_step():
    from envs.vector.pettingzoo_groups import PettingZooGroups

    fn = functools.partial(make_parallel, "mpe2.simple_adversary_v3:parallel_env", {"max_cycles": 3})
    groups = PettingZooGroups([fn, fn], {"adv": ["adversary_*"], "good": ["*"]}, name="adv")
    adv, good = groups.views["adv"], groups.views["good"]
    assert (adv.num_envs, good.num_envs) == (2, 4) and good.group.agents == ("agent_0", "agent_1")
    assert adv.single_observation_space.shape == (8,) and good.single_observation_space.shape == (10,)
    assert adv.reset(seed=0)[0].shape == (2, 8) and good.reset(seed=0)[0].shape == (4, 10)
    with pytest.raises(RuntimeError, match=r"stage the actions of policy group\(s\) \['good'\]"):
        adv.step(np.zeros(2, dtype=np.int64))
    for _ in range(3):
        groups.stage("adv", np.zeros(2, dtype=np.int64))
        groups.stage("good", np.zeros(4, dtype=np.int64))
        a = adv.step(np.zeros(2, dtype=np.int64))
        g = good.step(np.zeros(4, dtype=np.int64))
    assert a[3].all() and g[3].all()  # every agent of both copies truncated at max_cycles, together
    assert groups.fresh_states() is not None  # every copy just started its next episode
    assert groups.copies.steps.tolist() == [0, 0]
    with pytest.raises(UserError, match="agent 'agent_0' matches no policy"):
        PettingZooGroups([fn], {"adv": ["adversary_*"]}, name="adv")
    adv.close()
