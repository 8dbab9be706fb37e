"""P3: per-step cost of the bridge (C heater over pipes) against the same dynamics in-process, a raw pipe
round trip, and gymnasium's AsyncVectorEnv. Prints one JSON object; figures are medians of the repeats.

    python benchmarks/bridge.py [STEPS] [REPEATS] [--profile]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class PyHeater(gym.Env):
    """The heater's dynamics (examples/thirdparty/heater.c) in Python."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-10, 10, (3,), np.float32)
        self.action_space = gym.spaces.Box(0, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.amb, self.s = 10 * self.np_random.random(), 15 + 10 * self.np_random.random()
        self.temp, self.t = self.amb + 5 * self.np_random.random(), 0
        return self._obs(), {}

    def _obs(self):
        return np.array([self.temp / 30, (self.s - self.temp) / 10, self.amb / 10], dtype=np.float32)

    def step(self, action):
        u = float(np.clip(action[0], 0, 1))
        self.temp += 0.1 * (30 * u - 0.5 * (self.temp - self.amb))
        self.t += 1
        return self._obs(), -abs(self.s - self.temp) / 10, False, self.t >= 100, {}


def per_step_us(env, n: int) -> float:
    env.reset(seed=0)
    action = np.array([0.5], dtype=np.float32)
    t = time.perf_counter()
    for _ in range(n):
        _, _, term, trunc, _ = env.step(action)
        if term or trunc:
            env.reset()
    return (time.perf_counter() - t) / n * 1e6


def vec_per_step_us(env, n: int) -> float:
    env.reset(seed=0)
    action = np.array([[0.5]], dtype=np.float32)
    t = time.perf_counter()
    for _ in range(n):
        env.step(action)
    return (time.perf_counter() - t) / n * 1e6


def pipe_round_trip_us(n: int) -> float:
    proc = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    msg = b"x" * 64
    t = time.perf_counter()
    for _ in range(n):
        os.write(proc.stdin.fileno(), msg)
        got = 0
        while got < len(msg):
            got += len(os.read(proc.stdout.fileno(), 4096))
    dt = (time.perf_counter() - t) / n * 1e6
    proc.kill()
    return dt


def compile_heater(directory: str) -> str:
    """Build examples/thirdparty/heater.c with the system C compiler (as tests/conftest.py does)."""
    heater = os.path.join(directory, "heater")
    subprocess.run(["cc", "-O2", "-o", heater, str(ROOT / "examples/thirdparty/heater.c"), "-lm"], check=True)
    return heater


def measure(n: int, repeats: int = 5) -> dict[str, float]:
    """Medians over ``repeats`` of µs per step for every path, plus the added costs over in-process."""
    import envs
    from envs.bridge.process import ProcessEnv

    tmp = tempfile.mkdtemp()
    heater = compile_heater(tmp)
    if "bench/PyHeater-v0" not in gym.registry:
        gym.register("bench/PyHeater-v0", entry_point=PyHeater)
    rows: dict[str, list[float]] = {k: [] for k in ("in_process", "in_process_guarded", "bridge_raw",
                                                     "bridge_guarded", "pipe_round_trip", "async_vector_env")}
    for _ in range(repeats):
        rows["in_process"].append(per_step_us(PyHeater(), n))
        rows["in_process_guarded"].append(per_step_us(envs.make("bench/PyHeater-v0"), n))
        bridge = ProcessEnv(command=heater)
        rows["bridge_raw"].append(per_step_us(bridge, n))
        bridge.close()
        guarded = envs.make("process", command=heater)
        rows["bridge_guarded"].append(per_step_us(guarded, n))
        guarded.close()
        rows["pipe_round_trip"].append(pipe_round_trip_us(n))
        vec = gym.vector.AsyncVectorEnv([PyHeater])
        rows["async_vector_env"].append(vec_per_step_us(vec, n))
        vec.close()
    shutil.rmtree(tmp)
    med: dict[str, float] = {k: round(float(np.median(v)), 1) for k, v in rows.items()}
    med["bridge_added_us"] = round(med["bridge_raw"] - med["in_process"], 1)
    med["bridge_guarded_added_us"] = round(med["bridge_guarded"] - med["in_process_guarded"], 1)
    med["async_added_us"] = round(med["async_vector_env"] - med["in_process"], 1)
    med["steps_per_measure"] = n
    med["repeats"] = repeats
    return med


def profile_us(n: int) -> dict[str, float]:
    """Where a bridge step's time goes: cProfile's own time per function, in µs per step (top 8)."""
    import cProfile
    import pstats

    from envs.bridge.process import ProcessEnv

    tmp = tempfile.mkdtemp()
    bridge = ProcessEnv(command=compile_heater(tmp))
    prof = cProfile.Profile()
    try:
        prof.enable()
        per_step_us(bridge, n)
        prof.disable()
    finally:
        bridge.close()
        shutil.rmtree(tmp)
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    own = sorted(((tt, f"{Path(f).name}:{fn}") for (f, _, fn), (_, _, tt, _, _) in stats.items()), reverse=True)
    return {name: round(tt / n * 1e6, 1) for tt, name in own[:8]}


def main() -> None:
    """Print one JSON object: ``python benchmarks/bridge.py [STEPS] [REPEATS] [--profile]``."""
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 5000
    out: dict[str, object] = dict(measure(n, int(args[1]) if len(args) > 1 else 5))
    if "--profile" in sys.argv:
        out["profile_us_per_step"] = profile_us(n)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
