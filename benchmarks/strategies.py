"""Black-box strategies (CMA-ES, amortised, surrogate) on held-out inverse problems: calls per instance and score.

Each strategy is trained with a forward-call budget (none for CMA-ES), then answers the same held-out
instances as benchmarks/inverse_baseline.py (the env's instances of seeds 50000…). Forward calls are exact
counts of the problem's black box and do not depend on the machine's load.

    python benchmarks/strategies.py --adapter seismic --algo amortised --train-calls 4096 [--instances 20]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SEED0 = 50_000


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    import gymnasium as gym
    import torch

    import envs  # noqa: F401
    from agents.blackbox import STRATEGIES
    from agents.config import validate

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--adapter", choices=["renderer", "seismic"], required=True)
    p.add_argument("--algo", choices=list(STRATEGIES), required=True)
    p.add_argument("--train-calls", type=int, default=0, help="training forward-call budget (amortised, surrogate)")
    p.add_argument("--instances", type=int, default=20)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a blackbox: setting")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    import yaml

    settings = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    cfg = validate({"blackbox": settings}, "--set").blackbox
    kwargs = yaml.safe_load((ROOT / "configs" / f"{args.adapter}.yaml").read_text())["env"]
    kwargs.pop("id")
    env = gym.make(f"nondiff/{args.adapter.capitalize()}-v0", **kwargs)
    problem = env.unwrapped.problem
    module, _, name = STRATEGIES[args.algo].partition(":")
    import importlib

    t0 = time.perf_counter()
    strategy = getattr(importlib.import_module(module), name)(problem, cfg, 0)
    rng = np.random.default_rng(0)
    last: dict[str, float] = {}  # the last training round's scalars (e.g. the surrogate's train/grad_cosine)
    while problem.forward_calls < args.train_calls:
        last = strategy.train_round(rng)
    train_calls, train_s = problem.forward_calls, time.perf_counter() - t0
    rows = []
    for i in range(args.instances):
        env.reset(seed=SEED0 + i)
        inst = env.unwrapped.instance
        c0, t1 = problem.forward_calls, time.perf_counter()
        x = strategy.solve(inst, rng)
        rows.append({"calls": problem.forward_calls - c0, "wall_s": time.perf_counter() - t1, **problem.score(x, inst)})
    key = problem.score_key
    out = {"adapter": args.adapter, "algo": args.algo, "settings": settings, "train_calls": train_calls,
           "train_s": train_s, "instances": args.instances, "mean_calls": float(np.mean([r["calls"] for r in rows])),
           "mean_wall_s": float(np.mean([r["wall_s"] for r in rows])), f"mean_{key}": float(np.mean([r[key] for r in rows])),
           "success_rate": float(np.mean([problem.solved(r) for r in rows])), "last_round": last,
           "loadavg": os.getloadavg()}
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps({**out, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
