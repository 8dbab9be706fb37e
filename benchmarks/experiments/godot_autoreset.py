"""Godot throughput with protocol 1.2's autoreset against 1.1's separate reset round trip, side by side.

configs/godot.yaml's layout (2 Godots × 16 agents of the shipped game Reach, action repeat 4) as training
steps it: the raw bridge vector env, driven by a greedy policy (push along the larger component of the way
to the goal, a random push one step in five) so that episodes end at spread-out steps, as a learner's do.
The two arms alternate (``want_autoreset`` on and off, nothing else differs); each reports env steps/s,
the episodes ended, the reset requests sent, and the CPU µs per env step of the driver and of the Godots.

    python benchmarks/experiments/godot_autoreset.py --seconds 10 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.experiments.godot_anchor import cpu_seconds  # noqa: E402


def greedy(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Reach's actions 1–4 push +x, −x, +y, −y; obs[:, :2] is the way to the goal."""
    dx, dy = obs[:, 0], obs[:, 1]
    act = np.where(np.abs(dx) >= np.abs(dy), np.where(dx > 0, 1, 2), np.where(dy > 0, 3, 4))
    explore = rng.random(len(act)) < 0.2
    return np.where(explore, rng.integers(0, 5, len(act)), act)


def arm(autoreset: bool, seconds: float, godots: int, agents: int, repeat: int) -> dict[str, float]:
    """One timed run of ``godots`` × ``agents`` with autoreset on or off."""
    from envs.vector.bridge_start import make_bridge_vector_env

    cmd = f"godot3-server --path {{assets}}/godot --fixed-fps 60 --agents={agents} --action-repeat={repeat}"
    venv = make_bridge_vector_env({"command": cmd, "listen": "127.0.0.1:0"}, godots * agents, None)
    assert venv is not None
    raw = venv.unwrapped
    resets = [0]
    for p in raw.programs:
        p.want_autoreset = autoreset
        begin = p.begin_reset

        def counted(idx: list[int], begin=begin) -> bool:  # type: ignore[no-untyped-def]
            resets[0] += 1
            return begin(idx)
        p.begin_reset = counted
    obs, _ = raw.reset(seed=0)
    rng = np.random.default_rng(0)
    pids = [p.program_pid for p in raw.programs]
    for _ in range(50):  # warm up
        obs, *_ = raw.step(greedy(obs, rng))
    resets[0] = 0
    n = ends = 0
    began, mine, theirs = time.monotonic(), time.process_time(), sum(cpu_seconds(pid) for pid in pids)
    while time.monotonic() - began < seconds:
        obs, _, terminated, truncated, _ = raw.step(greedy(obs, rng))
        ends += int((terminated | truncated).sum())
        n += 1
    wall = time.monotonic() - began
    steps = n * godots * agents
    godot_cpu = sum(cpu_seconds(pid) for pid in pids) - theirs
    out = {"autoreset": autoreset, "env_steps_per_s": round(steps / wall),
           "driver_cpu_us_per_env_step": round((time.process_time() - mine) / steps * 1e6, 2),
           "godot_cpu_us_per_env_step": round(godot_cpu / steps * 1e6, 2),
           "episodes": ends, "reset_requests": resets[0], "vector_steps": n}
    venv.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--godots", type=int, default=2)
    ap.add_argument("--agents", type=int, default=16)
    ap.add_argument("--action-repeat", type=int, default=4)
    a = ap.parse_args(argv)
    for r in range(a.rounds):
        pair = {}
        for autoreset in ((True, False) if r % 2 == 0 else (False, True)):
            pair[autoreset] = arm(autoreset, a.seconds, a.godots, a.agents, a.action_repeat)
            pair[autoreset]["load"] = round(os.getloadavg()[0], 2)
        print(json.dumps({"round": r, "on": pair[True], "off": pair[False],
                          "ratio": round(pair[True]["env_steps_per_s"] / pair[False]["env_steps_per_s"], 3)}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
