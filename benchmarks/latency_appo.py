"""P4 with RLlib APPO: training throughput end to end on the latency env, side by side with SB3 PPO.

The env is benchmarks/latency.py's ``SleepEnv`` (every step waits 5 ms), 32 envs, limit 32 / 5 ms = 6,400
steps/s. APPO is built exactly as ``train.py --backend rllib --algo appo`` builds it (``RLlibBackend.create``:
private loopback Ray, Guard, watchdog callback), with ``train.vec_env: thread`` so that each env runner steps
its envs concurrently (envs/vector/threads.py). Its env runners keep sampling while the learner updates.
SB3 PPO is ``benchmarks.latency.training`` (thread vec env, synchronous). Both are timed over their training
iterations; APPO's Ray start-up and actor creation are reported apart (``setup_s``). Prints one JSON object.

    python benchmarks/latency_appo.py [--runners 2 --envs-per-runner 16 --fragment 64 --batch 1024 --epochs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.latency import ENTRY, training  # noqa: E402

LATENCY = 0.005


def tree_cpu_s() -> float:
    """CPU seconds (user + system) used so far by this process and every process under it (Ray's included)."""
    import psutil

    total = 0.0
    me = psutil.Process()
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


def appo_cfg(num_envs: int, runners: int, per_runner: int, fragment: int, batch: int, epochs: int,
             timesteps: int) -> Any:
    """The run config: latency.py's PPO settings where APPO has them, APPO's own fragment/batch/passes."""
    from agents.config import RunConfig

    return RunConfig.model_validate({
        "env": {"id": ENTRY},
        "agent": {"backend": "rllib", "algo": "appo", "n_steps": fragment, "batch_size": batch,
                  "n_epochs": epochs,
                  "learning_rate": 1e-3, "gamma": 0.95, "normalize_obs": True, "normalize_reward": True,
                  "clip_range": 0.4, "max_grad_norm": 40.0, "ent_coef": 0.0},
        "train": {"num_envs": num_envs, "vec_env": "thread", "timesteps": timesteps, "threads": 1},
        "rllib": {"num_env_runners": runners, "envs_per_runner": per_runner, "num_cpus": max(2, runners + 1)},
        "eval": {"every": 0}})


def appo_training(cfg: Any, timesteps: int) -> dict[str, float]:
    """APPO through nondiff's RLlib backend: env steps sampled and trained per second over its iterations."""
    from agents.rllib.backend import MODULE, RLlibBackend
    from agents.run.envfactory import probed

    env = probed(cfg, RLlibBackend)
    t0 = time.perf_counter()
    backend = RLlibBackend.create(cfg, 0, env)
    setup = time.perf_counter() - t0
    sampled = trained = 0
    iterations: list[tuple[float, int]] = []
    try:
        t1, c1 = time.perf_counter(), tree_cpu_s()
        while sampled < timesteps:
            result = backend.algo.train()
            sampled = int(result.get("num_env_steps_sampled_lifetime", 0))
            learner = result.get("learners", {}).get(MODULE, {})
            trained = int(learner.get("num_module_steps_trained_lifetime", trained))
            iterations.append((time.perf_counter(), sampled))
        wall, cpu = time.perf_counter() - t1, tree_cpu_s() - c1
    finally:
        backend.close()
    (t_first, s_first), (t_last, s_last) = iterations[0], iterations[-1]
    # after the first iteration (runners warming up)
    steady = (s_last - s_first) / max(t_last - t_first, 1e-9)
    return {"train_steps_per_s": sampled / wall, "steady_steps_per_s": steady, "wall_s": wall,
            "setup_s": setup,
            "steps": sampled, "trained_steps": trained, "iterations": len(iterations),
            "cpu_ms_per_step": 1e3 * cpu / max(sampled, 1)}


def main(argv: list[str] | None = None) -> int:
    """Print APPO's and SB3 PPO's P4 training throughput, taken one after the other in this run."""
    p = argparse.ArgumentParser()
    p.add_argument("--num-envs", type=int, default=32)
    p.add_argument("--runners", type=int, default=2)
    p.add_argument("--envs-per-runner", type=int, default=16)
    p.add_argument("--fragment", type=int, default=64, help="agent.n_steps: rollout fragment per env")
    p.add_argument("--batch", type=int, default=2048, help="agent.batch_size: the learner's batch")
    p.add_argument("--epochs", type=int, default=1, help="agent.n_epochs: passes over each batch")
    p.add_argument("--timesteps", type=int, default=65_536)
    p.add_argument("--skip-sb3", action="store_true")
    args = p.parse_args(argv)
    n = args.num_envs
    limit = n / LATENCY
    out: dict[str, Any] = {"num_envs": n, "latency_ms": LATENCY * 1e3, "limit_steps_per_s": limit,
                           "loadavg_start": [round(x, 2) for x in os.getloadavg()], "config": vars(args),
                           "cpu_count": os.cpu_count()}
    cfg = appo_cfg(n, args.runners, args.envs_per_runner, args.fragment, args.batch, args.epochs,
                   args.timesteps)
    appo = appo_training(cfg, args.timesteps)
    appo["x_limit"] = appo["train_steps_per_s"] / limit
    appo["steady_x_limit"] = appo["steady_steps_per_s"] / limit
    out["appo"] = appo
    out["loadavg_after_appo"] = [round(x, 2) for x in os.getloadavg()]
    if not args.skip_sb3:
        c0 = tree_cpu_s()
        # latency.py's own SB3 PPO run (64-step rollouts, 10 epochs)
        ppo = training(n, 64, args.timesteps // 2)
        ppo["cpu_ms_per_step"] = 1e3 * (tree_cpu_s() - c0) / ppo["steps"]  # set-up included: an upper bound
        ppo["x_limit"] = ppo["train_steps_per_s"] / limit
        out["sb3_ppo"] = ppo
        out["appo_over_sb3_ppo"] = appo["train_steps_per_s"] / ppo["train_steps_per_s"]
    out["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
