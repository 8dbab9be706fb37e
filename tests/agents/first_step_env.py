"""A PettingZoo parallel env whose agent ``quick`` finishes at its first step while ``steady`` plays on for
``max_cycles`` steps: the case RLlib's own env check refused (tests/agents/rllib/test_rllib_multiagent.py)."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv


class QuickAndSteady(ParallelEnv):
    metadata = {"name": "quick_and_steady"}

    def __init__(self, max_cycles: int = 8) -> None:
        self.max_cycles = max_cycles
        self.possible_agents = ["quick", "steady"]
        self.agents: list[str] = []
        self.t = 0

    def observation_space(self, agent):
        return spaces.Box(-10, 10, (2,), np.float32)

    def action_space(self, agent):
        return spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        self.t, self.agents = 0, list(self.possible_agents)
        return {a: np.zeros(2, np.float32) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions):
        self.t += 1
        live = list(self.agents)
        obs = {a: np.full(2, self.t, np.float32) for a in live}
        rew = {a: float(actions[a]) for a in live}
        term = {a: a == "quick" or self.t == self.max_cycles for a in live}
        trunc = {a: False for a in live}
        self.agents = [a for a in live if not term[a]]
        return obs, rew, term, trunc, {a: {} for a in live}
