"""A trained policy against CMA-ES on the same held-out inverse problems (renderer, seismic).

The policy inverts each instance in one episode: its first guess plus one forward call per step.
CMA-ES (the ``cma`` package) optimises each instance on its own from the same first guess, seeing
only the data misfit that the adapter's black box returns. Both are scored with the adapter's own
success metric against the hidden truth; that score is bookkeeping and is not a forward call.

    python benchmarks/experiments/inverse_baseline.py --run renderer=runs/renderer-… \\
        --run seismic=runs/seismic-… [--instances 20] [--budget 3000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

# adapter -> (metric in score(), success test, pretty success rule)
GOALS: dict[str, tuple[str, Any, str]] = {
    "renderer": ("iou", lambda v: v >= 0.8, "IoU ≥ 0.8"),
    "seismic": ("rel_model_error", lambda v: v <= 0.1, "relative model error ≤ 0.1"),
}
SEED0 = 50_000  # held-out instances: training and evaluate.py use other seeds


def _start_guess(env: Any) -> np.ndarray:
    """The adapter's first guess as a normalised vector (what the policy starts from too)."""
    for name in ("start_params", "_params", "_estimate"):
        x = getattr(env, name, None)
        if x is not None and np.shape(x) == (env.param_dim,):
            return np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    return np.full(env.param_dim, 0.5)


def run_policy(env: Any, backend: Any, seed: int) -> dict[str, Any]:
    """One episode of the trained policy on instance ``seed``."""
    t0 = time.perf_counter()
    obs, _ = env.reset(seed=seed)
    calls0 = env.unwrapped.forward_calls
    done, info = False, {}
    while not done:
        obs, _, term, trunc, info = env.step(backend.predict(obs, deterministic=True))
        done = term or trunc
    wall = time.perf_counter() - t0
    # the first guess (drawn at reset) plus every call the steps made
    return {"calls": env.unwrapped.forward_calls - calls0 + 1, "wall_s": wall, **info["episode_metrics"]}


def run_cmaes(env: Any, name: str, seed: int, budget: int, sigma0: float) -> dict[str, Any]:
    """CMA-ES on instance ``seed`` with at most ``budget`` forward calls."""
    import cma

    metric, ok, _ = GOALS[name]
    u = env.unwrapped
    env.reset(seed=seed)
    x0 = _start_guess(u)
    es = cma.CMAEvolutionStrategy(x0, sigma0,
                                  {"bounds": [0.0, 1.0], "maxfevals": budget, "seed": seed % 2**31 + 1,
                                               "verbose": -9})
    calls, solved_at, t0 = 0, None, time.perf_counter()
    while not es.stop():
        xs = es.ask()
        losses = [u.misfit(np.asarray(x)) for x in xs]
        calls += len(xs)
        es.tell(xs, losses)
        if solved_at is None and ok(u.score(np.asarray(es.result.xbest))[metric]):
            solved_at = calls
    wall = time.perf_counter() - t0
    return {"calls": calls, "calls_to_success": solved_at, "wall_s": wall,
            **u.score(np.asarray(es.result.xbest))}


def compare(name: str, run_dir: str, instances: int, budget: int, sigma0: float) -> dict[str, Any]:
    """Policy and CMA-ES on ``instances`` held-out instances of one adapter."""
    from agents.run.envfactory import env_factory
    from agents.run.scoring import load_policy

    loaded = load_policy(run_dir)
    backend, path = loaded.backend, loaded.path
    env = env_factory(loaded.cfg, loaded.env, for_eval=True)()
    metric, ok, rule = GOALS[name]
    pol = [run_policy(env, backend, SEED0 + i) for i in range(instances)]
    es = [run_cmaes(env, name, SEED0 + i, budget, sigma0) for i in range(instances)]
    env.close()

    def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
        reached = [r["calls_to_success"] for r in rows if r.get("calls_to_success") is not None]
        return {"mean_calls": float(np.mean([r["calls"] for r in rows])),
                "mean_wall_s": float(np.mean([r["wall_s"] for r in rows])),
                f"mean_{metric}": float(np.mean([r[metric] for r in rows])),
                "success_rate": float(np.mean([ok(r[metric]) for r in rows])),
                "median_calls_to_success": float(np.median(reached)) if reached else None,
                "reached_success": len(reached)}

    return {"adapter": name, "checkpoint": str(path), "instances": instances, "budget": budget, "rule": rule,
            "policy": summary(pol), "cmaes": summary(es)}


def table(results: list[dict[str, Any]]) -> str:
    """A markdown table of the comparison."""
    lines = ["| adapter | method | forward calls / instance | wall / instance | final error | success |",
             "|---|---|---|---|---|---|"]
    for r in results:
        metric = GOALS[r["adapter"]][0]
        for method in ("policy", "cmaes"):
            s = r[method]
            calls = f"{s['mean_calls']:.0f}"
            if method == "cmaes" and s["median_calls_to_success"] is not None:
                calls += f" (median {s['median_calls_to_success']:.0f} to success)"
            lines.append(f"| {r['adapter']} | {'trained policy' if method == 'policy' else 'CMA-ES'} | "
                         f"{calls} | {1000 * s['mean_wall_s']:.1f} ms | {metric} {s[f'mean_{metric}']:.3f} | "
                         f"{s['success_rate']:.2f} ({r['rule']}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", action="append", required=True, metavar="ADAPTER=RUN_DIR",
                   help=f"a trained run for one adapter ({', '.join(GOALS)}); repeat for each")
    p.add_argument("--instances", type=int, default=20)
    p.add_argument("--budget", type=int, default=3000, help="forward calls CMA-ES may spend per instance")
    p.add_argument("--sigma0", type=float, default=0.2, help="CMA-ES initial step size (normalised units)")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    results = []
    for item in args.run:
        name, _, run_dir = item.partition("=")
        if name not in GOALS or not run_dir:
            p.error(f"--run expects ADAPTER=RUN_DIR with ADAPTER one of {', '.join(GOALS)}, got {item!r}")
        results.append(compare(name, run_dir, args.instances, args.budget, args.sigma0))
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
