"""Measure `game` (Pong) raw env steps/s and PPO training steps/s for Dummy vs Subproc and 1 vs 2 threads."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def raw_steps_per_s(seconds: float = 5.0) -> float:
    """One `game` env's steps/s (the harness's shared measurement, benchmarks/adapters.py)."""
    from benchmarks import adapters

    return adapters.raw_steps_per_s("game", seconds=seconds, **adapters.KWARGS["game"])["steps_per_s"]


def training_steps_per_s(vec: str, threads: int, steps: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "train.py"), "--env", "game", "--timesteps", str(steps), "--seed",
                        "0", "--quiet", "--run-dir", f"{tmp}/r", "--set", f"train.vec_env={vec}", "--set",
                        f"train.threads={threads}", "--set", "eval.every=0"], check=True, capture_output=True, cwd=ROOT)
        return steps / (time.perf_counter() - t)


if __name__ == "__main__":
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 8192
    print(json.dumps({"raw_env_steps_per_s": round(raw_steps_per_s())}), flush=True)
    for vec in ("dummy", "subproc"):
        for threads in (1, 2):
            sps = training_steps_per_s(vec, threads, steps)
            print(json.dumps({"vec_env": vec, "threads": threads, "train_steps_per_s": round(sps)}), flush=True)
