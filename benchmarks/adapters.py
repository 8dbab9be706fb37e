"""Raw env steps/s of every built-in adapter, as training sees it (``envs.make``: Guard and Gymnasium's
wrappers included), with random actions and resets at episode ends. Prints one JSON object.

    python benchmarks/adapters.py [--seconds 3] [--only robot,game]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Adapter keyword arguments a benchmark needs (the process adapter needs a program to run).
KWARGS: dict[str, dict[str, Any]] = {"game": {"clip_rewards": True, "episodic_life": True}}


def raw_steps_per_s(name: str, seconds: float = 3.0, **kwargs: Any) -> dict[str, float]:
    """Steps/s and µs/step of one env stepped for ``seconds`` with random actions."""
    import envs

    env = envs.make(name, **kwargs)
    try:
        env.action_space.seed(0)
        env.reset(seed=0)
        for _ in range(5):  # warm-up (first frames, lazy imports)
            _, _, term, trunc, _ = env.step(env.action_space.sample())
            if term or trunc:
                env.reset()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            _, _, term, trunc, _ = env.step(env.action_space.sample())
            n += 1
            if term or trunc:
                env.reset()
        dt = time.perf_counter() - t0
    finally:
        env.close()
    return {"steps_per_s": n / dt, "us_per_step": dt / n * 1e6, "steps": n}


def main(argv: list[str] | None = None) -> int:
    """Measure each built-in adapter; an adapter that fails is reported with its error, not skipped."""
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--only")
    args = p.parse_args(argv)
    import envs
    from benchmarks.bridge import compile_heater

    names = args.only.split(",") if args.only else list(envs.BUILTIN)
    tmp = tempfile.mkdtemp(prefix="bench-env-")
    out: dict[str, Any] = {}
    for name in names:
        kwargs = dict(KWARGS.get(name, {}))
        if name == "process":
            kwargs["command"] = compile_heater(tmp)
        try:
            out[name] = raw_steps_per_s(name, args.seconds, **kwargs)
            out[name]["note"] = "C heater over pipes" if name == "process" else ""
        except Exception as e:  # reported in the table as a failure with its reason
            out[name] = {"error": f"{type(e).__name__}: {e}"}
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
