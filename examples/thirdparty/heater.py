"""The C heater's task (heater.c) as a Python program on the nondiff SDK: NumPy and envs.bridge only.

    python examples/thirdparty/heater.py
        # spawned by nondiff: env.command="python examples/thirdparty/heater.py"
    python examples/thirdparty/heater.py --instances 16
        # protocol 1.1: 16 rooms behind one connection
    python examples/thirdparty/heater.py --connect 127.0.0.1:5555
        # connect to a listening nondiff (env.listen)

Test hooks: ``--bad MODE`` makes instance replies hostile from the 5th step on (``nan``: a NaN reward
for instance 0; ``shape``: an observation of the wrong shape; ``bounds``: 10.5 against the high bound of 10;
``crash``: exit(3)); ``reset_nan``: the first reset's observation holds a NaN.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from envs.bridge.sdk import serve  # noqa: E402


class Heater:
    """One room: keep the temperature at a set point with heater power u in [0, 1] (see heater.c)."""

    observation_space = {"type": "Box", "low": -10, "high": 10, "shape": [3], "dtype": "float32"}
    action_space = {"type": "Box", "low": 0, "high": 1, "shape": [1], "dtype": "float32"}
    bad: str | None = None
    steps = 0  # over all rooms of the process, for --bad

    def __init__(self) -> None:
        self.rng = np.random.default_rng()

    def _obs(self) -> np.ndarray:
        return np.array([self.T / 30, (self.S - self.T) / 10, self.ambient / 10], dtype=np.float32)

    def reset(self, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.ambient, self.S = 10 * self.rng.random(), 15 + 10 * self.rng.random()
        self.T, self.t = self.ambient + 5 * self.rng.random(), 0
        obs = self._obs()
        if Heater.bad == "reset_nan":
            Heater.bad, obs[0] = None, np.nan
        return obs, {}

    def step(self, action):
        Heater.steps += 1
        u = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], 0, 1))
        self.T += 0.1 * (30 * u - 0.5 * (self.T - self.ambient))
        self.t += 1
        reward = -abs(self.S - self.T) / 10 - 0.01 * u * u
        obs = self._obs()
        if Heater.bad and Heater.steps >= 5:
            if Heater.bad == "crash":
                os._exit(3)
            if Heater.bad == "nan":
                reward = float("nan")
            if Heater.bad == "shape":
                obs = np.zeros(4, np.float32)
            if Heater.bad == "bounds":
                obs[0] = 10.5  # finite, past the declared high of 10
        return obs, reward, False, self.t >= 100, {"is_success": abs(self.S - self.T) < 0.5}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--instances", type=int, default=None)
    ap.add_argument("--connect", default=None, help="HOST:PORT of a nondiff that listens")
    ap.add_argument("--connect-wait", type=float, default=30.0)
    ap.add_argument("--bad", choices=["nan", "shape", "crash", "bounds", "reset_nan"], default=None)
    args = ap.parse_args()
    Heater.bad = args.bad
    connect = None
    if args.connect:
        host, _, port = args.connect.rpartition(":")
        connect = (host, int(port))
    serve(Heater, name="heater.py", instances=args.instances, connect=connect, connect_wait=args.connect_wait,
          token=os.environ.get("NONDIFF_TOKEN", ""))


if __name__ == "__main__":
    main()
