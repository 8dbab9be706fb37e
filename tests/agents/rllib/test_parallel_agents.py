"""agents/rllib/multiagent.py's ParallelAgents, the env RLlib's env runners step for a PettingZoo parallel
env: agents that finish early or join late, the Guard's per-agent cut, the env-wide step limit; no Ray
started."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces

pytest.importorskip("pettingzoo")

from pettingzoo import ParallelEnv  # noqa: E402

from agents.rllib.multiagent import AgentMapping, ParallelAgents  # noqa: E402
from envs.faults import faults_in  # noqa: E402


class Scripted(ParallelEnv):
    """``a`` terminates after 2 steps, ``b`` sends NaN at step ``nan_at``, ``c`` joins at step 1; 6 steps."""

    metadata = {"name": "scripted"}

    def __init__(self, nan_at: int = 99) -> None:
        self.possible_agents = ["a", "b", "c"]
        self.nan_at = nan_at
        self.agents: list[str] = []
        self.t = 0
        self.seen: list[dict] = []

    def observation_space(self, agent):
        return spaces.Box(-10, 10, (2,), np.float32)

    def action_space(self, agent):
        return spaces.Discrete(3)

    def _obs(self, agent):
        x = np.nan if agent == "b" and self.t == self.nan_at else float(self.t)
        return np.full(2, x, np.float32)

    def reset(self, seed=None, options=None):
        self.t, self.agents = 0, ["a", "b"]
        return {a: self._obs(a) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions):
        self.seen.append(dict(actions))
        self.t += 1
        live = list(self.agents)
        obs = {a: self._obs(a) for a in live}
        rew = {a: 1.0 for a in live}
        term = {a: a == "a" and self.t == 2 for a in live}
        trunc = {a: self.t == 6 for a in live}
        self.agents = [a for a in live if not (term[a] or trunc[a])]
        if self.t == 1:  # c appears: its first observation comes with this step
            self.agents.append("c")
            obs["c"], rew["c"], term["c"], trunc["c"] = self._obs("c"), 0.0, False, False
        return obs, rew, term, trunc, {a: {} for a in obs}


def _play(env: ParallelAgents, steps: int) -> list[tuple]:
    env.reset(seed=0)
    out = []
    for _ in range(steps):
        out.append(env.step({a: 1 for a in env.agents}))
        if out[-1][2]["__all__"] or out[-1][3]["__all__"]:
            break
    return out


def test_agents_finish_early_and_join_late():
    env = ParallelAgents(Scripted())
    steps = _play(env, 10)
    assert len(steps) == 6 and steps[-1][3]["__all__"] and not steps[-1][2]["__all__"]
    obs, rew, term, trunc, _ = steps[1]
    assert term["a"] and not trunc["a"] and set(obs) == {"a", "b", "c"}  # a's last observation, then gone
    assert "c" not in env.reset()[0] and "c" in steps[0][0]  # c joins when the env first reports it
    assert all("a" not in s[0] for s in steps[2:])
    assert env.possible_agents == ["a", "b", "c"] and env.get_observation_space("c").shape == (2,)


def test_a_nan_cuts_only_that_agent_which_then_acts_with_its_first_action():
    inner = Scripted(nan_at=3)
    env = ParallelAgents(inner, nan_policy="truncate")
    steps = _play(env, 10)
    obs, rew, term, trunc, infos = steps[2]  # the step that gave b a NaN
    assert trunc["b"] and not term["b"] and rew["b"] == 0.0
    np.testing.assert_array_equal(obs["b"], np.full(2, 2.0, np.float32))  # its last valid observation
    assert [f.kind.value for f in faults_in(infos["b"])] == ["nonfinite"]
    assert all("b" not in s[0] for s in steps[3:]) and len(steps) == 6  # the others play on
    assert inner.seen[3]["b"] == 0  # b still in the PettingZoo env: its first action


def test_max_episode_steps_truncates_every_agent_and_raise_raises():
    steps = _play(ParallelAgents(Scripted(), max_episode_steps=3), 10)
    assert len(steps) == 3 and steps[-1][3] == {"__all__": True}  # b and c: by "__all__" alone
    with pytest.raises(Exception, match="NaN|nan"):
        _play(ParallelAgents(Scripted(nan_at=1), nan_policy="raise"), 10)


@pytest.mark.parametrize("limit", [None, 3], ids=["env-end", "max-episode-steps"])
def test_rllib_episodes_call_agents_cut_by_the_end_truncated_not_terminated(limit):
    """Issue 31: RLlib's MultiAgentEpisode calls an episode whose agents are all done terminated for every
    agent, so PPO did not bootstrap at MPE's time limit and the shared module on simple_spread stayed at
    random. Played through RLlib's own episode, the agents the end cuts are truncated, ``a`` (terminated at
    step 2) terminated."""
    from ray.rllib.env.multi_agent_episode import MultiAgentEpisode

    env = ParallelAgents(Scripted(), max_episode_steps=limit)
    episode = MultiAgentEpisode(observation_space=env.observation_spaces, action_space=env.action_spaces)
    obs, infos = env.reset(seed=0)
    episode.add_env_reset(observations=obs, infos=infos)
    while not episode.is_done:
        actions = {a: 1 for a in obs if a in env.agents and a in episode.agent_episodes}
        obs, rew, term, trunc, infos = env.step(actions)
        episode.add_env_step(observations=obs, actions=actions, rewards=rew, infos=infos, terminateds=term,
                             truncateds=trunc)
    flags = {a: (e.is_terminated, e.is_truncated) for a, e in episode.agent_episodes.items()}
    assert flags == {"a": (True, False), "b": (False, True), "c": (False, True)}
    assert episode.env_t == (limit or 6) and episode.is_truncated


def test_the_mapping_is_a_plain_table():
    mapping = AgentMapping({"adversary_0": "adversary", "agent_0": "good"})
    assert mapping("agent_0", None) == "good"
    assert mapping("adversary_0", episode=None, worker=1) == "adversary"


def test_the_health_callback_counts_each_agents_faults():
    """The env runners' health callback reads every agent's info of a multi-agent episode."""
    from ray.rllib.env.multi_agent_episode import MultiAgentEpisode

    from agents.rllib.backend import _health_callback_class
    from agents.rllib.multiagent import agents_health_class

    env = ParallelAgents(Scripted(nan_at=1))
    obs, infos = env.reset(seed=0)
    episode = MultiAgentEpisode(observation_space=env.observation_spaces, action_space=env.action_spaces)
    episode.add_env_reset(observations=obs, infos=infos)
    obs, rew, term, trunc, infos = env.step({"a": 0, "b": 0})
    episode.add_env_step(observations=obs, actions={"a": 0, "b": 0}, rewards=rew, infos=infos,
                         terminateds=term, truncateds=trunc)
    logged: list[tuple] = []

    class Logger:
        def log_value(self, key, value, **kwargs):
            logged.append((key, value))

    agents_health_class(_health_callback_class())().on_episode_step(episode=episode, metrics_logger=Logger())
    assert logged == [(("nondiff", "faults", "nonfinite"), 1)]
