"""P6: env steps (and wall time) until periodic eval success ≥ 0.9 on `robot`, SAC against PPO, shipped
configs.

``python benchmarks/sample_efficiency.py [--seeds 0 1 2] [--out docs/p6.json]``; P6b, the C heater through the
bridge: ``python benchmarks/sample_efficiency.py --env process --set env.command=./heater --out
docs/p6b.json`` (there env steps are program calls).

Each seed trains SAC and then PPO with ``configs/robot.yaml`` as shipped (``--algo sac`` takes its
``algos.sac`` entry), evaluating every ``--sac-every``/``--ppo-every`` steps on 20 deterministic episodes; a
run stops at the first evaluation with success ≥ 0.9 (or its wall budget). Env steps do not depend on the
machine's load; wall times do, so they are reported as per-seed ratios of runs taken one after the other, with
the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine, train_cmd  # noqa: E402
from benchmarks.solve import until_solved  # noqa: E402


def run(seeds: list[int], every: dict[str, int], budget_s: dict[str, float], episodes: int = 20,
        env: str = "robot",
        sets: list[str] | None = None, success: float = 0.9) -> dict[str, Any]:
    """SAC and PPO on ``env`` for each seed, one run at a time, each until eval success ≥ ``success``;
    per-seed rows and the medians."""
    tmp = tempfile.mkdtemp(prefix="bench-p6-")
    rows: list[dict[str, Any]] = []
    try:
        for seed in seeds:
            row: dict[str, Any] = {"seed": seed}
            for algo in ("sac", "ppo"):
                extra = [a for kv in sets or [] for a in ("--set", kv)]
                cmd = train_cmd("--env", env, *extra, "--algo", algo, "--seed", str(seed), "--run-dir",
                                f"{tmp}/{algo}{seed}", "--set", f"eval.every={every[algo]}", "--set",
                                f"eval.episodes={episodes}")
                r = until_solved(f"{algo}-s{seed}", cmd, budget_s[algo], success=success)
                r.pop("evals")
                row[algo] = r
                print(json.dumps({algo: {k: r[k] for k in ("steps", "wall_s", "ended", "loadavg_at_start")},
                                  "seed": seed}), flush=True)
            s, p = row["sac"], row["ppo"]
            if s["solved"] and p["solved"]:
                row["step_ratio"] = s["steps"] / p["steps"]
                row["wall_ratio"] = s["wall_s"] / p["wall_s"]
            rows.append(row)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def median(algo: str, key: str) -> float | None:
        vals = [r[algo][key] for r in rows if r[algo]["solved"]]
        return statistics.median(vals) if len(vals) == len(rows) else None

    med = {a: {"steps": median(a, "steps"), "wall_s": median(a, "wall_s")} for a in ("sac", "ppo")}
    sac, ppo = med["sac"]["steps"], med["ppo"]["steps"]
    ratio = sac / ppo if sac and ppo else None
    return {"env": env, "rows": rows, "median": med, "step_ratio_of_medians": ratio,
            "goal": "SAC ≤ 0.3× PPO's env steps",
            "success": success,
            "eval_every": every, "eval_episodes": episodes, "machine": machine(),
            "loadavg_end": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    """Run P6 and write its JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sac-every", type=int, default=2000, help="SAC's evaluation interval in env steps")
    p.add_argument("--ppo-every", type=int, default=5000, help="PPO's evaluation interval in env steps")
    p.add_argument("--sac-budget", type=float, default=1200.0, help="wall seconds a SAC run may take")
    p.add_argument("--ppo-budget", type=float, default=900.0, help="wall seconds a PPO run may take")
    p.add_argument("--env", default="robot", help="the env, trained with its shipped configs/<env>.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="passed to train.py for both")
    p.add_argument("--out", default="docs/p6.json")
    args = p.parse_args(argv)
    res = run(args.seeds, {"sac": args.sac_every, "ppo": args.ppo_every},
              {"sac": args.sac_budget, "ppo": args.ppo_budget}, env=args.env, sets=args.set)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(json.dumps({"median": res["median"], "step_ratio_of_medians": res["step_ratio_of_medians"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
