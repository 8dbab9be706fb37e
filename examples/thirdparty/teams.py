"""Two teams in one scene, served over protocol 1.3 with the nondiff SDK: NumPy and envs.bridge only.

    python train.py --config examples/thirdparty/teams.yaml     # a policy per team (policies: map)
    python train.py --env envs.bridge.parallel:BridgeParallelEnv \\
        --set env.command="python examples/thirdparty/teams.py"   # spawned by nondiff (pipes)
    python examples/thirdparty/teams.py --connect 127.0.0.1:5555  # connect to a listening nondiff

The scene: two runners (group ``runner``) walk a line from 0 to their own targets, drawn from the reset's
seed (runner_0's in 1..3, runner_1's in 4..7), with a discrete action (0 left, 1 stay, 2 right); each step
costs 0.1, reaching the target pays 1 and ends that runner's episode (``terminated``), so the runners finish
at different steps. A guard (group ``guard``, other spaces: a continuous action in [-1, 1], three
observations) follows the runners: it moves by half its action and pays a tenth of its distance to their
mean position. The guard's episode ends (``terminated``) when both runners are done; after ``LIMIT`` steps
every agent still in the scene is ``truncated``. Everything is deterministic given the seed.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from envs.bridge.sdk import serve  # noqa: E402

LIMIT = 20
"""Steps after which every agent still in the scene is truncated."""


class Teams:
    """Two runners and a guard (see the module docstring): a scene of the SDK (envs/bridge/sdk_agents.py)."""

    agent_groups = {"runner_0": "runner", "runner_1": "runner", "guard_0": "guard"}
    group_spaces = {
        "runner": ({"type": "Box", "low": -20, "high": 20, "shape": [2], "dtype": "float32"},
                   {"type": "Discrete", "n": 3}),
        "guard": ({"type": "Box", "low": -20, "high": 20, "shape": [3], "dtype": "float32"},
                  {"type": "Box", "low": -1, "high": 1, "shape": [1], "dtype": "float32"}),
    }

    def __init__(self) -> None:
        self.rng = np.random.default_rng()
        self.pos = {"runner_0": 0, "runner_1": 0}
        self.target = {"runner_0": 1, "runner_1": 4}
        self.guard = 0.0
        self.t = 0
        self.live: set[str] = set()

    def _obs(self, agent: str) -> np.ndarray:
        left = (LIMIT - self.t) / LIMIT
        if agent == "guard_0":
            mean = float(np.mean(list(self.pos.values())))
            runners = sum(a in self.live for a in self.pos)
            return np.array([self.guard - mean, runners, left], dtype=np.float32)
        return np.array([self.target[agent] - self.pos[agent], left], dtype=np.float32)

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None):
        """Every agent starts: the runners at 0 with new targets, the guard at 0."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.target = {"runner_0": int(self.rng.integers(1, 4)), "runner_1": int(self.rng.integers(4, 8))}
        self.pos = {"runner_0": 0, "runner_1": 0}
        self.guard, self.t = 0.0, 0
        self.live = set(self.agent_groups)
        return {a: self._obs(a) for a in self.agent_groups}, {a: {} for a in self.agent_groups}

    def step(self, actions: dict[str, Any]):
        """The live agents act; each result is keyed by exactly the agents in ``actions``."""
        self.t += 1
        rewards: dict[str, float] = {}
        terms: dict[str, bool] = {}
        for a in (x for x in ("runner_0", "runner_1") if x in actions):
            self.pos[a] = int(np.clip(self.pos[a] + int(actions[a]) - 1, -9, 9))
            reached = self.pos[a] == self.target[a]
            rewards[a], terms[a] = -0.1 + (1.0 if reached else 0.0), reached
            if reached:
                self.live.discard(a)
        if "guard_0" in actions:
            move = 0.5 * float(np.clip(actions["guard_0"][0], -1, 1))
            self.guard = float(np.clip(self.guard + move, -9, 9))
            mean = float(np.mean(list(self.pos.values())))
            rewards["guard_0"] = -abs(self.guard - mean) / 10
            terms["guard_0"] = not any(a in self.live for a in self.pos)
        over = self.t >= LIMIT
        truncs = {a: over and not terms[a] for a in actions}
        obs = {a: self._obs(a) for a in actions}
        infos = {a: {"is_success": terms[a]} if a != "guard_0" else {} for a in actions}
        self.live -= {a for a in actions if terms[a] or truncs[a]}
        return obs, rewards, terms, truncs, infos


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connect", help="HOST:PORT of a listening nondiff (env.listen)")
    args = ap.parse_args()
    connect = None
    if args.connect:
        host, _, port = args.connect.rpartition(":")
        connect = (host, int(port))
    serve(Teams, name="teams", connect=connect, token=os.environ.get("NONDIFF_TOKEN", ""))


if __name__ == "__main__":
    main()
