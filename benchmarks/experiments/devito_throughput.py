"""Issue 29's throughput figure: Devito simulations per second through nondiff's env workers against one
process driving the forward model directly, side by side in one run.

    python benchmarks/experiments/devito_throughput.py [--workers 2] [--seconds 20] [--set preset=small]

``direct``: one process calls ``problem.forward`` in a loop (one simulation = all shots). ``workers``: the
``devito`` env in ``--workers`` worker processes of envs/vector/subproc.py (each under the Guard, one Devito
process per worker), stepped with random actions in episodes too long to end in the window, so that each step
is one simulation. The goal: ``workers ≥ 0.9 × workers × direct``. The load average is recorded with each.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def direct(kwargs: dict[str, Any], seconds: float) -> float:
    """Simulations per second of one process calling the forward model."""
    import gymnasium as gym

    import envs  # noqa: F401

    env: Any = gym.make("nondiff/Devito-v0", **kwargs)
    pb = env.unwrapped.problem
    rng = np.random.default_rng(0)
    pb.forward(rng.uniform(size=pb.param_dim))  # the operator's first call loads the compiled code
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        pb.forward(rng.uniform(size=pb.param_dim))
        n += 1
    return n / (time.perf_counter() - t0)


def workers(kwargs: dict[str, Any], n_workers: int, seconds: float) -> float:
    """Simulations per second of ``n_workers`` env worker processes stepped together."""
    import envs
    from envs.vector.subproc import SubprocVectorEnv

    fns = [functools.partial(envs.make, "devito", steps=1_000_000, **kwargs) for _ in range(n_workers)]
    venv = SubprocVectorEnv(fns)
    try:
        venv.reset(seed=0)
        actions = np.zeros((n_workers, *(venv.single_action_space.shape or ())), dtype=np.float32)
        venv.step(actions)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            venv.step(actions + np.float32(0.01) * (n % 3 - 1))
            n += n_workers
        return n / (time.perf_counter() - t0)
    finally:
        venv.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    import yaml

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an env: setting")
    args = p.parse_args(argv)
    kwargs = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    rows: dict[str, Any] = {"load_before": os.getloadavg()}
    rows["direct_sims_per_s"] = direct(kwargs, args.seconds)
    rows["load_after_direct"] = os.getloadavg()
    rows["workers_sims_per_s"] = workers(kwargs, args.workers, args.seconds)
    rows["load_after_workers"] = os.getloadavg()
    rows["ratio_to_workers_x_direct"] = (rows["workers_sims_per_s"]
                                         / (args.workers * rows["direct_sims_per_s"]))
    print(json.dumps({"settings": kwargs, "workers": args.workers, **rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
