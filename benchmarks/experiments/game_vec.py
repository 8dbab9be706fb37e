"""Measure `game` (Pong) raw env steps/s and PPO training steps/s for Dummy vs Subproc and 1 vs 2 threads.

``--ale``: the env side alone, side by side: 8 envs through nondiff's path (``envs.make``: Gymnasium's
AtariPreprocessing and frame stack, the Guard, stepped one after another as DummyVecEnv does) against ALE's
native ``AtariVectorEnv`` (C++ preprocessing and threads) with 1 and 2 threads, in interleaved rounds, with
the load average before each row (issue 17).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def raw_steps_per_s(seconds: float = 5.0) -> float:
    """One `game` env's steps/s (the harness's shared measurement, benchmarks/adapters.py)."""
    from benchmarks import adapters

    return adapters.raw_steps_per_s("game", seconds=seconds, **adapters.KWARGS["game"])["steps_per_s"]


def training_steps_per_s(vec: str, threads: int, steps: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        cmd = [sys.executable, str(ROOT / "train.py"), "--env", "game", "--timesteps", str(steps), "--seed",
               "0", "--quiet", "--run-dir", f"{tmp}/r", "--set", f"train.vec_env={vec}", "--set",
               f"train.threads={threads}", "--set", "eval.every=0"]
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
        return steps / (time.perf_counter() - t)


def gym_path_steps_per_s(n: int = 8, size: int = 42, seconds: float = 3.0) -> tuple[float, float]:
    """Agent steps/s of ``n`` envs built as training builds them (Guard included), random actions, and the
    process's CPU µs per agent step (all threads; independent of other processes' load)."""
    import numpy as np

    import envs

    es = [envs.make("game", frame_size=size, clip_rewards=True, episodic_life=True) for _ in range(n)]
    for i, e in enumerate(es):
        e.reset(seed=i)
    rng, k, t, c = np.random.default_rng(0), 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t < seconds:
        for e in es:
            _, _, term, trunc, _ = e.step(int(rng.integers(6)))
            if term or trunc:
                e.reset()
        k += n
    rate, cpu = k / (time.perf_counter() - t), (time.process_time() - c) / k * 1e6
    for e in es:
        e.close()
    return rate, cpu


def ale_vector_steps_per_s(n: int = 8, size: int = 42, threads: int = 1,
                           seconds: float = 3.0) -> tuple[float, float]:
    """Agent steps/s and CPU µs per agent step of ALE's ``AtariVectorEnv`` (same preprocessing, random
    actions)."""
    import numpy as np
    from ale_py.vector_env import AtariVectorEnv

    v = AtariVectorEnv("pong", n, num_threads=threads, img_height=size, img_width=size, episodic_life=True,
                       reward_clipping=True, use_fire_reset=False)
    v.reset(seed=0)
    rng, k, t, c = np.random.default_rng(0), 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t < seconds:
        v.step(rng.integers(6, size=n))
        k += n
    rate, cpu = k / (time.perf_counter() - t), (time.process_time() - c) / k * 1e6
    v.close()
    return rate, cpu


def ale_comparison(rounds: int = 3) -> None:
    """Interleaved rounds of the three env paths; one JSON line per measurement."""
    import os

    for r in range(rounds):
        for name, fn in (("gym wrappers + Guard, 8 envs in turn", gym_path_steps_per_s),
                         ("AtariVectorEnv, 8 envs, 1 thread", lambda: ale_vector_steps_per_s(threads=1)),
                         ("AtariVectorEnv, 8 envs, 2 threads", lambda: ale_vector_steps_per_s(threads=2))):
            load = os.getloadavg()[0]
            rate, cpu = fn()
            print(json.dumps({"round": r, "path": name, "env_steps_per_s": round(rate),
                              "cpu_us_per_step": round(cpu),
                              "load_1min": round(load, 2)}), flush=True)


if __name__ == "__main__":
    if "--ale" in sys.argv:
        ale_comparison()
        sys.exit(0)
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 8192
    print(json.dumps({"raw_env_steps_per_s": round(raw_steps_per_s())}), flush=True)
    for vec in ("dummy", "subproc"):
        for threads in (1, 2):
            sps = training_steps_per_s(vec, threads, steps)
            print(json.dumps({"vec_env": vec, "threads": threads, "train_steps_per_s": round(sps)}),
                  flush=True)
