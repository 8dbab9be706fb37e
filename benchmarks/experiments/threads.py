"""Measure SB3 PPO training steps/s on `robot` for each torch thread count (chooses train.threads)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def measure(threads: int, steps: int, busy: bool) -> float:
    """Wall-clock training steps/s of `train.py --env robot` with ``threads`` torch threads."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            cmd = [sys.executable, str(ROOT / "train.py"), "--env", "robot", "--timesteps", str(steps),
                   "--seed", "0", "--quiet", "--run-dir", f"{tmp}/r", "--set", f"train.threads={threads}",
                   "--set", "eval.every=0"]
            subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
            return steps / (time.perf_counter() - t)
    finally:
        if hog is not None:
            hog.kill()


def main() -> None:
    """Print one JSON line per (threads, other-core-busy) pair."""
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=60_000)
    args = p.parse_args()
    for busy in (False, True):
        for threads in (1, 2):
            sps = measure(threads, args.steps, busy)
            print(json.dumps({"threads": threads, "other_core_busy": busy, "steps_per_s": round(sps)}),
                  flush=True)


if __name__ == "__main__":
    main()
