"""Black-box strategies on held-out inverse problems: calls per instance, wall time, score, error curves.

Two modes. One strategy, trained with a forward-call budget (none for CMA-ES), answering the same held-out
instances as benchmarks/experiments/inverse_baseline.py (the env's instances of seeds 50000…):

    python benchmarks/experiments/strategies.py --adapter seismic --algo amortised --train-calls 4096 \\
        [--instances 20]

The comparison (``make bench-strategies``): per adapter, one shared training run (one bank of prior pairs
that the amortised network, the surrogate f̂ and the surrogate's inverse network (a) all fit), then every
row of :data:`~benchmarks.experiments.strategies_rows.ROWS` on the same held-out instances side by side,
sbi's NPE on the same pairs (seismic), a JSON per adapter and the plot docs/strategies_<adapter>.png (mean
error against forward calls per instance):

    python benchmarks/experiments/strategies.py --suite [--adapters renderer,seismic] [--instances 20] \\
        [--train-calls 4096]

Forward calls are exact counts of the problem's black box and do not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from benchmarks.experiments.strategies_rows import BUDGET, ROWS, run_row, variants  # noqa: E402

SEED0 = 50_000
PPO = {"renderer": {"train_calls": 400_000, "mean_calls": 11, "score": 0.761, "success_rate": 0.45},
       "seismic": {"train_calls": 100_000, "mean_calls": 5, "score": 0.147, "success_rate": 0.20},
       "devito": {"train_calls": 75_000, "mean_calls": 5, "score": 0.117, "success_rate": 0.10}}
"""The shipped configs' PPO policies on the same 20 instances, quoted (docs/results.md)."""


def make_problem(adapter: str, overrides: dict[str, Any] | None = None) -> Any:
    import gymnasium as gym
    import yaml

    import envs  # noqa: F401

    kwargs = yaml.safe_load((ROOT / "configs" / f"{adapter}.yaml").read_text())["env"]
    kwargs.pop("id")
    kwargs.update(overrides or {})
    return gym.make(f"nondiff/{adapter.capitalize()}-v0", **kwargs)


def parse_settings(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` options (``--set``, ``--train-set``) as ``blackbox:`` settings, values read as YAML."""
    import yaml

    return {k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in pairs)}


def held_out(env: Any, n: int, first: int = SEED0) -> list[Any]:
    out = []
    for i in range(n):
        env.reset(seed=first + i)
        out.append(env.unwrapped.instance)
    return out


def single(args: argparse.Namespace) -> int:
    """One strategy, trained to ``--train-calls``, on ``--instances`` held-out instances."""
    import torch

    from agents.blackbox import STRATEGIES
    from agents.config import validate

    torch.set_num_threads(1)
    settings = parse_settings(args.set)
    cfg = validate({"blackbox": settings}, "--set").blackbox
    env = make_problem(args.adapter, parse_settings(args.env_set))
    problem = env.unwrapped.problem
    module, _, name = STRATEGIES[args.algo].partition(":")
    t0 = time.perf_counter()
    strategy = getattr(importlib.import_module(module), name)(problem, cfg, 0)
    rng = np.random.default_rng(0)
    last: dict[str, float] = {}  # the last training round's scalars (e.g. the surrogate's train/grad_cosine)
    while problem.forward_calls < args.train_calls:
        last = strategy.train_round(rng)
    train_calls, train_s = problem.forward_calls, time.perf_counter() - t0
    rows = []
    for inst in held_out(env, args.instances):
        c0, t1 = problem.forward_calls, time.perf_counter()
        x = strategy.solve(inst, rng)
        rows.append({"calls": problem.forward_calls - c0, "wall_s": time.perf_counter() - t1,
                     **problem.score(x, inst)})
    key = problem.score_key
    out = {"adapter": args.adapter, "algo": args.algo, "settings": settings, "train_calls": train_calls,
           "train_s": train_s, "instances": args.instances,
           "mean_calls": float(np.mean([r["calls"] for r in rows])),
           "mean_wall_s": float(np.mean([r["wall_s"] for r in rows])),
           f"mean_{key}": float(np.mean([r[key] for r in rows])),
           "success_rate": float(np.mean([problem.solved(r) for r in rows])), "last_round": last,
           "loadavg": os.getloadavg()}
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps({**out, "rows": rows}, indent=1))
    return 0


# -- the comparison (its rows: benchmarks/experiments/strategies_rows.py) ----------------------------
def train_shared(problem: Any, train_calls: int, round_calls: int = 1024,
                 settings: dict[str, Any] | None = None, seed: int = 0) -> dict[str, Any]:
    """One bank of prior pairs; the amortised network, f̂ and the inverse network (a) fitted on it (rounds of
    ``round_calls`` draws: 4 rounds for 4,096, as each round refits on the whole bank); ``settings``: other
    ``blackbox:`` training settings (``--train-set``, e.g. ``epochs``, ``hidden``); ``seed``: the bank's
    draws and the networks' initialisation."""
    from agents.blackbox.chain import ChainStrategy
    from agents.config import validate

    cfg = validate({"blackbox": {"chain": ["amortised", "surrogate"], "inverse_epochs": 20,
                                 "batch": round_calls,
                                 **(settings or {})}}, "suite").blackbox
    c0, t0 = problem.forward_calls, time.perf_counter()
    chain = ChainStrategy(problem, cfg, seed)
    rng, last, checks = np.random.default_rng(seed), {}, 0
    bank_calls = 0
    while len(chain.bank.x) < train_calls:
        c1 = problem.forward_calls
        last = chain.train_round(rng)
        bank_calls += cfg.batch
        checks += problem.forward_calls - c1 - cfg.batch
    stages = dict(chain.stages)
    return {"cfg": cfg, **stages, "train_calls_all": problem.forward_calls - c0, "bank_calls": bank_calls,
            "grad_check_calls": checks, "train_s": time.perf_counter() - t0, "last_round": last}


def grad_quality(problem: Any, learned: dict[str, Any], insts: list[Any], budget: int) -> dict[str, float]:
    """Cosine of f̂'s (global, and locally refitted by the trust region) directional derivative with a real
    finite difference at each instance's answer of ``surrogate (a) → (b)``; 4 extra calls per instance."""
    from agents.blackbox.surrogate import directional_cosine

    sur = learned["surrogate"]
    sur.cfg = learned["cfg"].model_copy(update={"refine_calls": 0, "trust_calls": budget})
    rng = np.random.default_rng(2)
    glob: list[float] = []
    loc: list[float] = []
    for inst in insts:
        x = np.clip(sur.solve(inst, rng), 0.01, 0.99)
        glob.append(directional_cosine(problem, sur.net, x, inst, np.random.default_rng(len(glob))))
        loc.append(directional_cosine(problem, sur.last_local_net, x, inst, np.random.default_rng(len(loc))))
    sur.cfg = learned["cfg"]
    return {"global": float(np.mean(glob)), "local": float(np.mean(loc))}


def run_sbi(problem: Any, bank: Any, insts: list[Any], samples: int = 1000) -> dict[str, Any]:
    """sbi's NPE on a bank's prior pairs (same simulation budget); the posterior mean scored as the rest."""
    import torch
    from sbi.inference import NPE
    from sbi.utils import BoxUniform

    x, c, f = bank.tensors()
    data = torch.cat([f, c], dim=1)
    keep = data.std(0) > 0  # constant features (e.g. a trace's silent start) carry nothing; sbi warns on them
    prior = BoxUniform(torch.zeros(x.shape[1]), torch.ones(x.shape[1]))
    t0 = time.perf_counter()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as logs, contextlib.chdir(logs):  # sbi's TensorBoard logs: ./sbi-logs
        npe = NPE(prior=prior, show_progress_bars=False)
        npe.append_simulations(x, data[:, keep]).train()
        posterior = npe.build_posterior()
    train_s, key, per = time.perf_counter() - t0, problem.score_key, []
    for inst in insts:
        t1 = time.perf_counter()
        obs = torch.as_tensor(np.concatenate([problem.features(inst.data),
                                              problem.context_features(inst.context)]))
        # samples outside the prior box are clipped onto it rather than rejected (rejection stalls on leakage)
        draws = posterior.sample((samples,), x=obs[keep], show_progress_bars=False,
                                 reject_outside_prior=False)
        mean = draws.detach().clamp(0.0, 1.0).mean(0).double().numpy()
        per.append({"calls": 0, "wall_s": time.perf_counter() - t1, **problem.score(mean, inst)})
    return {"mean_calls": 0.0, "mean_wall_s": float(np.mean([r["wall_s"] for r in per])), "train_s": train_s,
            "score": float(np.mean([r[key] for r in per])),
            "success_rate": float(np.mean([problem.solved(r) for r in per])), "instances": per}


def plot(adapter: str, res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    tab20 = plt.get_cmap("tab20")
    colours = [tab20(i) for i in range(20)]
    for i, (name, row) in enumerate(res["rows"].items()):
        curve = np.asarray(row["curve"])
        ax.plot(np.arange(len(curve)), curve, label=name, lw=1.6, color=colours[(2 * i) % 20 + (2 * i) // 20],
                ls="-" if i < 10 else "--")
    ppo = PPO.get(adapter)
    if ppo:
        ax.plot([ppo["mean_calls"]], [ppo["score"]], "k*", ms=12, label="PPO policy (quoted)")
    if "sbi NPE" in res:
        ax.plot([0], [res["sbi NPE"]["score"]], "rs", ms=8, label="sbi NPE posterior mean")
    ax.axvline(BUDGET[adapter], color="grey", ls=":", lw=1)
    ax.set_xscale("symlog", linthresh=20)
    ax.set_xlabel("forward calls per instance (best checked point so far; 0 = the strategy's no-call answer)")
    ax.set_ylabel(f"mean {res['key']} over {res['instances']} held-out instances")
    ax.set_title(f"{adapter}: {res['key']} against forward calls per instance ({res['train_calls_all']:,} "
                 "training calls)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def suite(args: argparse.Namespace) -> int:
    """The comparison, adapter by adapter."""
    import torch

    torch.set_num_threads(1)
    for adapter in args.adapters.split(","):
        env = make_problem(adapter, parse_settings(args.env_set))
        problem = env.unwrapped.problem
        insts = held_out(env, args.instances, args.first_seed)
        learned = train_shared(problem, args.train_calls, args.round_calls, parse_settings(args.train_set),
                               args.train_seed)
        budget = BUDGET[adapter]
        res: dict[str, Any] = {"adapter": adapter, "key": problem.score_key, "instances": args.instances,
                               "budget": budget, "train_calls_all": learned["train_calls_all"],
                               "bank_calls": learned["bank_calls"],
                               "grad_check_calls": learned["grad_check_calls"],
                               "train_s": learned["train_s"], "last_round": learned["last_round"],
                               "train_settings": args.train_set, "train_seed": args.train_seed,
                               "env_settings": args.env_set,
                               "ppo_quoted": PPO.get(adapter),
                               "loadavg_start": os.getloadavg(), "rows": {}}
        print(json.dumps({k: v for k, v in res.items() if k != "rows"}), flush=True)
        for name, stages in variants(args.rows, json.loads(args.variants)):
            row = run_row(problem, learned, stages, insts, budget,
                          200 if name.startswith("cma (200") else 2 * budget)
            res["rows"][name] = row
            print(json.dumps({"row": name,
                              **{k: v for k, v in row.items() if k not in ("instances", "curve")},
                              "loadavg": os.getloadavg()}), flush=True)
            save(adapter, res, Path(args.out))
        if args.no_grad_check:
            continue
        res["grad_cosine_at_answers"] = grad_quality(problem, learned, insts[:10], budget)
        print(json.dumps({"grad_cosine_at_answers": res["grad_cosine_at_answers"],
                          "loadavg": os.getloadavg()}),
              flush=True)
        save(adapter, res, Path(args.out))
        if adapter in ("seismic", "devito") and not args.no_sbi:
            res["sbi NPE"] = run_sbi(problem, learned["amortised"].bank, insts)
            print(json.dumps({"row": "sbi NPE",
                              **{k: v for k, v in res["sbi NPE"].items() if k != "instances"},
                              "loadavg": os.getloadavg()}), flush=True)
            save(adapter, res, Path(args.out))
    return 0


def save(adapter: str, res: dict[str, Any], out: Path, stamp: bool = True) -> None:
    """The adapter's JSON and plot (rewritten as rows are added; ``stamp``: record the load average now)."""
    if stamp or "loadavg_end" not in res:
        res["loadavg_end"] = os.getloadavg()
    out.mkdir(parents=True, exist_ok=True)
    (out / f"strategies_{adapter}.json").write_text(json.dumps(res, indent=1, default=float))
    plot(adapter, res, out / f"strategies_{adapter}.png")


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    from agents.blackbox import STRATEGIES

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--suite", action="store_true", help="the side-by-side comparison and its plots")
    p.add_argument("--adapters", default="renderer,seismic", help="--suite: adapters, comma-separated")
    p.add_argument("--rows", default="",
                   help="--suite: only rows whose name contains one of these (comma-separated)")
    p.add_argument("--no-sbi", action="store_true", help="--suite: leave out sbi's NPE (the bench extra)")
    p.add_argument("--no-grad-check", action="store_true",
                   help="--suite: leave out the gradient check and sbi")
    p.add_argument("--sbi-into", metavar="JSON",
                   help="add sbi's NPE (fresh prior draws, as many as the bank) to a --suite JSON, written "
                   "to --out")
    p.add_argument("--merge", metavar="JSON", nargs="+",
                   help="merge the rows of --suite JSON files of one adapter (rows run in parallel "
                   "processes, same seeds) into --out, and plot them")
    p.add_argument("--out", default=str(ROOT / "docs"), help="--suite: folder of the JSON and PNG files")
    p.add_argument("--adapter", choices=list(BUDGET))
    p.add_argument("--env-set", action="append", default=[], metavar="KEY=VALUE",
                   help="an env: setting over configs/<adapter>.yaml (e.g. snr_db=20, preset=small)")
    p.add_argument("--algo", choices=list(STRATEGIES))
    p.add_argument("--train-calls", type=int, default=None,
                   help="training forward-call budget (single: default 0; --suite: prior pairs, default "
                        "4096)")
    p.add_argument("--round-calls", type=int, default=1024,
                   help="--suite: prior draws per training round (each round refits on the whole bank)")
    p.add_argument("--instances", type=int, default=20)
    p.add_argument("--train-seed", type=int, default=0,
                   help="--suite: seed of the shared training (the bank's prior draws, the networks' "
                        "initialisation); the held-out instances do not depend on it")
    p.add_argument("--first-seed", type=int, default=SEED0,
                   help="--suite: env seed of the first instance (50000: the held-out set; another: for "
                        "tuning)")
    p.add_argument("--variants", default="[{}]", help="--suite: JSON list of blackbox overrides of the rows' "
                   "surrogate stages, e.g. '[{}, {\"trust_radius\": 0.05}]'; one training serves them all")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a blackbox: setting")
    p.add_argument("--train-set", action="append", default=[], metavar="KEY=VALUE",
                   help="--suite: a blackbox: setting of the shared training (e.g. epochs=40, 'hidden=[512, "
                        "512]')")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    if args.sbi_into:  # sbi's NPE added to a --suite JSON, on a fresh bank of as many prior draws
        import torch

        from agents.blackbox.common import PairBank

        torch.set_num_threads(1)
        res = json.loads(Path(args.sbi_into).read_text())
        env = make_problem(res["adapter"])
        insts = held_out(env, res["instances"])
        bank = PairBank()
        bank.draw(env.unwrapped.problem, res["bank_calls"], np.random.default_rng(0))
        res["sbi NPE"] = {**run_sbi(env.unwrapped.problem, bank, insts), "bank": "fresh prior draws, seed 0",
                          "loadavg": os.getloadavg()}
        print(json.dumps({k: v for k, v in res["sbi NPE"].items() if k != "instances"}))
        save(res["adapter"], res, Path(args.out))
        return 0
    if args.merge:
        res = json.loads(Path(args.merge[0]).read_text())
        for other in args.merge[1:]:
            more = json.loads(Path(other).read_text())
            if more["train_calls_all"] != res["train_calls_all"] or more["last_round"] != res["last_round"]:
                raise SystemExit(f"{other}: another training than {args.merge[0]}'s; merge only runs of one "
                                 "seed")
            res["rows"].update(more["rows"])
            res.update({k: v for k, v in more.items() if k not in res})
        res["rows"] = {k: res["rows"][k] for k in ROWS if k in res["rows"]}
        save(res["adapter"], res, Path(args.out), stamp=False)
        return 0
    if args.suite:
        args.train_calls = 4096 if args.train_calls is None else args.train_calls
        return suite(args)
    if not (args.adapter and args.algo):
        p.error("give --adapter and --algo (one strategy) or --suite (the comparison)")
    args.train_calls = args.train_calls or 0
    return single(args)


if __name__ == "__main__":
    sys.exit(main())
