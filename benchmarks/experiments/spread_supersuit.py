"""MPE simple_spread (mpe2's ``simple_spread_v3``), one PPO policy shared by the three agents: nondiff's
``train.py`` against SuperSuit + SB3 with the same settings and budget, alternating, scored the same way
(issue 31; docs/results.md, "Cooperative: simple_spread (issue 31)").

Both arms read one config (``configs/simple_spread.yaml``):

- **nondiff**: ``train.py --config CONFIG --timesteps N --seed S --set eval.every=0``.
- **SuperSuit + SB3**: the env built as SuperSuit's and PettingZoo's SB3 tutorials build it,
  ``pettingzoo_env_to_vec_env_v1`` then ``concat_vec_envs_v1(..., base_class="stable_baselines3")`` with
  ``train.num_envs`` copies in-process (``num_cpus=0``, as nondiff steps its copies), and SB3's ``PPO`` with
  the keyword arguments nondiff itself derives from the config (:func:`agents.sb3.backend.hyperparameters`:
  the same learning rate, rollout, batch, epochs, network), seeded with S (SB3's ``set_random_seed``, and
  copy i of the env with S + i), on ``train.threads`` torch threads.

Each training run is a process of its own (its wall time counts its start-up, as a user's command would).
Both policies, and a uniform-random team, are then scored on the same seeds (10,000, 10,001, ...) by the
same code: :class:`envs.multiagent.TeamEnv` and :func:`agents.run.evaluation.run_episodes`, what
``evaluate.py`` runs, with deterministic actions (``return``) and sampled ones (``return_stochastic``): the
return is the mean over the agents of each agent's episode return (the sum over the team is N times it,
every agent playing the whole episode). The load average (``uptime``'s) is recorded before and after every
run. ``--arms supersuit_truncation`` runs the SuperSuit arm with the one flag its SB3 wrapper leaves out,
``info["TimeLimit.truncated"]`` on a time-limit cut (:func:`truncation_marked`)::

    python benchmarks/experiments/spread_supersuit.py [--steps 300000] [--seeds 1 2 3] [--episodes 100] \\
        [--arms nondiff supersuit supersuit_truncation] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

CONFIG = "configs/simple_spread.yaml"
ARMS = ("nondiff", "supersuit", "supersuit_truncation")


def load_config(path: str) -> Any:
    """The validated nondiff :class:`~agents.config.schema.RunConfig` of a config file."""
    from agents.config.algos import select_algo
    from agents.config.loading import load_yaml, validate

    raw = load_yaml(ROOT / path)
    select_algo(raw, None, path)
    return validate(raw, path)


def load() -> float:
    """The 1-minute load average (``uptime``'s first figure)."""
    return round(os.getloadavg()[0], 2)


def train_nondiff(config: str, steps: int, seed: int, run_dir: Path) -> int:
    """``train.py`` on the config; the agent-steps it trained."""
    cmd = [sys.executable, str(ROOT / "train.py"), "--config", config, "--timesteps", str(steps), "--seed",
           str(seed), "--run-dir", str(run_dir), "--quiet", "--set", "eval.every=0"]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return int(json.loads((run_dir / "final" / "model.json").read_text())["num_timesteps"])


def train_supersuit(config: str, steps: int, seed: int, save: Path, mark_truncation: bool = False) -> int:
    """SuperSuit's vector env of the config's env and SB3 PPO with nondiff's keyword arguments for it; saves
    the model to ``save`` and returns the agent-steps it trained. ``mark_truncation``: tell SB3 which episode
    ends are time limits (:func:`truncation_marked`), which SuperSuit's own wrapper does not."""
    import supersuit as ss
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import Logger
    from stable_baselines3.common.utils import set_random_seed
    from stable_baselines3.common.vec_env import VecMonitor

    from agents.sb3.backend import hyperparameters
    from envs.multiagent import make_parallel

    cfg = load_config(config)
    torch.set_num_threads(cfg.train.threads)
    env = make_parallel(cfg.env.id, cfg.env.adapter_kwargs())
    venv = ss.pettingzoo_env_to_vec_env_v1(env)
    base = "gymnasium" if mark_truncation else "stable_baselines3"
    venv = ss.concat_vec_envs_v1(venv, cfg.train.num_envs, num_cpus=0, base_class=base)
    set_random_seed(seed)  # python, numpy, torch; PPO(seed=) would call venv.seed, which SuperSuit lacks
    (venv if mark_truncation else venv.venv).reset(seed=seed)  # copy i from seed + i (else: one RNG state)
    venv = VecMonitor(truncation_marked(venv) if mark_truncation else venv)
    model = PPO("MlpPolicy", venv, verbose=0, device="cpu", **hyperparameters(cfg))
    model.set_logger(Logger(folder=None, output_formats=[]))  # SB3's default would make /tmp/SB3-<time>/
    model.learn(total_timesteps=steps)
    model.save(save)
    venv.close()
    return int(model.num_timesteps)


def truncation_marked(venv: Any) -> Any:
    """SuperSuit's SB3 wrapper around ``venv`` (a ``ConcatVecEnv``), except that a step cut by the time limit
    (truncated, not terminated) carries ``info["TimeLimit.truncated"]``, so that SB3 bootstraps its value
    from ``info["terminal_observation"]`` instead of taking the cut for the end of the task."""
    from supersuit.vector.sb3_vector_wrapper import SB3VecEnvWrapper

    class TruncationMarked(SB3VecEnvWrapper):
        def step_wait(self) -> Any:
            obs, rewards, terminated, truncated, infos = self.venv.step_wait()
            for i, info in enumerate(infos):
                if truncated[i] and not terminated[i]:
                    info["TimeLimit.truncated"] = True
            return obs, rewards, np.logical_or(terminated, truncated), infos

    return TruncationMarked(venv)


def score(config: str, policy: Callable[[Any], Any] | None, episodes: int, seed: int) -> dict[str, float]:
    """Mean and spread of the team's return (mean over agents) over ``episodes`` seeded episodes; ``policy``
    None plays a uniform-random team (evaluate.py's baseline, seeded the same)."""
    from agents.run.evaluation import random_policy, run_episodes
    from envs.multiagent import TeamEnv

    cfg = load_config(config)
    env = TeamEnv(cfg.env.id, cfg.env.adapter_kwargs(), name=cfg.env.id)
    try:
        act = policy if policy is not None else random_policy(env.action_space, seed)
        returns = np.asarray(run_episodes(env, act, episodes, seed).returns)
        n = len(env.agents)
    finally:
        env.close()
    return {"mean": round(float(returns.mean()), 3), "std": round(float(returns.std()), 3),
            "team_sum": round(float(returns.mean()) * n, 3)}


def nondiff_policy(run_dir: Path) -> Callable[[Any, bool], Any]:
    """The shared policy of a nondiff run (its final checkpoint): (observations, deterministic) -> actions,
    for every agent of one copy."""
    from agents.run.scoring import load_policy

    backend = load_policy(run_dir).backend
    return lambda obs, deterministic: backend.predict(obs, deterministic=deterministic)


def supersuit_policy(path: Path) -> Callable[[Any, bool], Any]:
    """The SB3 model the SuperSuit arm saved: (observations, deterministic) -> actions, for every agent."""
    from stable_baselines3 import PPO

    model = PPO.load(path, device="cpu")
    return lambda obs, deterministic: model.predict(obs, deterministic=deterministic)[0]


def run_arm(arm: str, args: argparse.Namespace, seed: int, tmp: Path) -> dict[str, Any]:
    """Train one arm for one seed in its own process and score it; steps, wall time and load."""
    out = tmp / f"{arm}_{seed}"
    before, t = load(), time.perf_counter()
    if arm == "nondiff":
        steps = train_nondiff(args.config, args.steps, seed, out)
    else:
        cmd = [sys.executable, __file__, "--arm", arm, "--config", args.config, "--steps",
               str(args.steps), "--seeds", str(seed), "--save", str(out)]
        done = subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True)
        steps = int(done.stdout.strip().splitlines()[-1])
    wall, after = time.perf_counter() - t, load()
    policy = nondiff_policy(out) if arm == "nondiff" else supersuit_policy(out.with_suffix(".zip"))
    return {"arm": arm, "seed": seed, "steps": steps, "wall_s": round(wall, 1), "load_before": before,
            "load_after": after,
            "return": score(args.config, lambda o: policy(o, True), args.episodes, args.eval_seed),
            "return_stochastic": score(args.config, lambda o: policy(o, False), args.episodes,
                                       args.eval_seed)}


def main(argv: list[str] | None = None) -> int:
    """Alternate the arms over the seeds; one JSON line per run, then the random team's score."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=CONFIG, help=f"the run config both arms take (default {CONFIG})")
    p.add_argument("--steps", type=int, default=300_000, help="agent-steps per run (default 300000)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="training seeds (default 1 2 3)")
    p.add_argument("--episodes", type=int, default=100, help="scoring episodes (default 100)")
    p.add_argument("--eval-seed", type=int, default=10_000, help="seed of the first episode (default 10000)")
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS[:2]),
                   help="which arms to run (default nondiff supersuit; supersuit_truncation: SuperSuit + SB3 "
                        "with time-limit cuts marked as such)")
    p.add_argument("--json", type=Path, help="write every row to this file")
    p.add_argument("--arm", choices=ARMS[1:], help=argparse.SUPPRESS)  # the child process's own run
    p.add_argument("--save", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.arm is not None:
        print(train_supersuit(args.config, args.steps, args.seeds[0], args.save,
                              mark_truncation=args.arm == "supersuit_truncation"))
        return 0
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, seed in enumerate(args.seeds):
            order = args.arms if i % 2 == 0 else args.arms[::-1]  # alternate which arm goes first
            for arm in order:
                rows.append(run_arm(arm, args, seed, Path(tmp)))
                print(json.dumps(rows[-1]), flush=True)
    rows.append({"arm": "random", "return": score(args.config, None, args.episodes, args.eval_seed)})
    print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
