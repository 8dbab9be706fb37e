"""P5: RLlib sample throughput of `robot` with 1, 2, … env runners, through nondiff's RLlib config mapping.

    python benchmarks/scaleout.py [--runners 1,2] [--rounds 5] [--address ray://head:10001] [--local]

For each runner count it builds the PPO algorithm exactly as ``train.py --backend rllib`` does
(configs/robot.yaml, 8 envs split across the runners), then times ``rounds`` synchronous parallel sample
rounds of one train batch each (what PPO's training step does before learning) and one full training
iteration. On a real cluster pass ``--address`` and runner counts up to the cluster's spare CPUs.
``--local`` (the harness's quick mode) samples with one RLlib env runner in this process, without Ray.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def measure(runners: int, rounds: int, n_steps: int) -> dict[str, Any]:
    """Sample and iteration throughput with ``runners`` env-runner actors."""
    from ray.rllib.execution.rollout_ops import synchronous_parallel_sample

    from agents.config import select_algo, validate
    from agents.rllib.backend import RLlibBackend, build_algo_config
    from agents.run.envfactory import probed

    raw = yaml.safe_load((ROOT / "configs" / "robot.yaml").read_text())
    select_algo(raw, "ppo", "configs/robot.yaml")
    raw["agent"]["n_steps"] = n_steps
    raw["rllib"] = {"num_env_runners": runners}
    cfg = validate(raw, "configs/robot.yaml")
    t = time.perf_counter()
    algo = build_algo_config(cfg, 0, probed(cfg, RLlibBackend)).build_algo()
    setup = time.perf_counter() - t
    batch = n_steps * cfg.train.num_envs
    try:
        def sample() -> int:
            episodes = synchronous_parallel_sample(worker_set=algo.env_runner_group, max_env_steps=batch,
                                                   _uses_new_env_runners=True)
            if not isinstance(episodes, list):
                raise TypeError("expected a list of episodes from the env runners, got "
                                f"{type(episodes).__name__}")
            return sum(len(e) for e in episodes)

        sample()  # warm-up: first connector and module calls
        t, steps = time.perf_counter(), 0
        for _ in range(rounds):
            steps += sample()
        sample_s = time.perf_counter() - t
        t = time.perf_counter()
        algo.train()
        iter_s = time.perf_counter() - t
    finally:
        algo.stop()
    return {"runners": runners, "envs_per_runner": cfg.train.num_envs // runners, "setup_s": setup,
            "sample_steps_per_s": steps / sample_s, "sampled_steps": steps,
            "train_iteration_s": iter_s, "train_iteration_steps_per_s": batch / iter_s, "batch": batch}


def measure_local(n_steps: int, rounds: int) -> dict[str, Any]:
    """The smoke-test variant: one RLlib env runner in this process, no Ray cluster, sampling only."""
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
    from ray.tune.registry import register_env

    from agents.config import select_algo, validate
    from agents.rllib.backend import ENV_NAME, RLlibBackend, _create_env, build_algo_config
    from agents.run.envfactory import probed

    raw = yaml.safe_load((ROOT / "configs" / "robot.yaml").read_text())
    select_algo(raw, "ppo", "configs/robot.yaml")
    raw["agent"]["n_steps"] = n_steps
    raw["rllib"] = {"num_env_runners": 0}
    cfg = validate(raw, "configs/robot.yaml")
    register_env(ENV_NAME, _create_env)
    t = time.perf_counter()
    runner = SingleAgentEnvRunner(config=build_algo_config(cfg, 0, probed(cfg, RLlibBackend)))
    setup = time.perf_counter() - t
    batch = n_steps * cfg.train.num_envs
    runner.sample(num_timesteps=batch)  # warm-up
    t, steps = time.perf_counter(), 0
    for _ in range(rounds):
        steps += sum(len(e) for e in runner.sample(num_timesteps=batch))
    sample_s = time.perf_counter() - t
    runner.stop()
    return {"runners": 0, "envs_per_runner": cfg.train.num_envs, "setup_s": setup,
            "sample_steps_per_s": steps / sample_s, "sampled_steps": steps, "train_iteration_s": None,
            "train_iteration_steps_per_s": None, "batch": batch}


def main(argv: list[str] | None = None) -> int:
    """Start (or join) Ray once and measure each runner count."""
    p = argparse.ArgumentParser()
    p.add_argument("--runners", default="1,2")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--n-steps", type=int, default=256)
    p.add_argument("--address", help="a running Ray cluster; default: a private local Ray on loopback")
    p.add_argument("--local", action="store_true",
                   help="smoke test: one env runner in-process, no Ray cluster")
    args = p.parse_args(argv)
    if args.local:
        print(json.dumps({"rows": [measure_local(args.n_steps, args.rounds)], "cluster_cpus": None,
                          "local": True}))
        return 0
    import ray
    from ray.tune.registry import register_env

    from agents.rllib.backend import ENV_NAME, _create_env

    if args.address:
        ray.init(address=args.address, log_to_driver=False)
    else:
        ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
    register_env(ENV_NAME, _create_env)
    try:
        rows = [measure(int(k), args.rounds, args.n_steps) for k in args.runners.split(",")]
        cpus = ray.cluster_resources().get("CPU")
    finally:
        ray.shutdown()
    print(json.dumps({"rows": rows, "cluster_cpus": cpus}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
