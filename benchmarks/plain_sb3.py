"""Plain stable-baselines3, no nondiff layer: the reference side of P1 (time to solve) and P2 (overhead).

    python benchmarks/plain_sb3.py --hp zoo|defaults|robot-yaml --env nondiff/Robot-v0 --timesteps N
                                   [--eval-every N --eval-episodes 20 --threshold-success 0.9]

The env is made with ``gymnasium.make`` (nondiff's adapters are registered by ``import envs``, but no
Guard or other nondiff wrapper is added). Prints JSON lines: one per evaluation, then a final summary
with the steps/s of ``model.learn``. The parent measures wall time on its own clock.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import yaml
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# RL Zoo's tuned PPO entry for MuJoCo Reacher-v2: DLR-RM/rl-baselines3-zoo, hyperparams/ppo.yml, key
# "Reacher-v2" (read at commit 00128b5d46d497b772f3bd891ae9f520919e8971). "normalize: true" is
# VecNormalize on observations and rewards; n_envs 1; n_timesteps 1e6.
ZOO_REACHER: dict[str, Any] = {"n_envs": 1, "normalize": True, "batch_size": 32, "n_steps": 512, "gamma": 0.9,
               "learning_rate": 0.000104019, "ent_coef": 7.52585e-08, "clip_range": 0.3, "n_epochs": 5,
               "gae_lambda": 1.0, "max_grad_norm": 0.9, "vf_coef": 0.950368}


# RL Zoo's SAC entries (DLR-RM/rl-baselines3-zoo, hyperparams/sac.yml, same commit): "ReacherBulletEnv-v0",
# the arm-reaching task, takes the tuned "&pybullet-defaults" block; the MuJoCo envs
# ("HalfCheetah-v3: &mujoco-defaults") take SAC's defaults with learning_starts 10000. Both: one env, no
# normalisation.
ZOO_SAC_REACHER: dict[str, Any] = {
    "algo": "sac", "n_envs": 1, "normalize": False, "learning_rate": 7.3e-4, "buffer_size": 300_000,
    "batch_size": 256, "ent_coef": "auto", "gamma": 0.98, "tau": 0.02, "train_freq": 8, "gradient_steps": 8,
    "learning_starts": 10_000, "use_sde": True, "policy_kwargs": {"log_std_init": -3, "net_arch": [400, 300]}}
ZOO_SAC_MUJOCO: dict[str, Any] = {"algo": "sac", "n_envs": 1, "normalize": False, "learning_starts": 10_000}


def hyperparameters(kind: str) -> dict[str, Any]:
    """``zoo``: RL Zoo's PPO Reacher-v2; ``zoo-sac``: RL Zoo's SAC ReacherBulletEnv-v0; ``zoo-sac-mujoco``: RL
    Zoo's SAC MuJoCo defaults; ``defaults``: PPO() defaults, one env (SB3's quick start); ``robot-yaml``:
    configs/robot.yaml translated by hand into plain SB3 arguments."""
    if kind == "zoo":
        return dict(ZOO_REACHER)
    if kind == "zoo-sac":
        return {**ZOO_SAC_REACHER, "policy_kwargs": dict(ZOO_SAC_REACHER["policy_kwargs"])}
    if kind == "zoo-sac-mujoco":
        return dict(ZOO_SAC_MUJOCO)
    if kind == "defaults":
        return {"n_envs": 1, "normalize": False}
    if kind == "robot-yaml":
        from agents.config import select_algo

        cfg = yaml.safe_load((ROOT / "configs" / "robot.yaml").read_text())
        select_algo(cfg, "ppo", "configs/robot.yaml")  # the file's PPO entry of its algos: map
        a, t = cfg["agent"], cfg["train"]
        lr = float(a["learning_rate"])
        return {"n_envs": t["num_envs"], "normalize": a["normalize_obs"], "n_steps": a["n_steps"],
                "batch_size": a["batch_size"], "n_epochs": a["n_epochs"], "gamma": a["gamma"],
                "gae_lambda": a["gae_lambda"],
                "learning_rate": (lambda p: p * lr) if a["lr_schedule"] == "linear"
                else lr, "policy_kwargs": {"net_arch": a["net_arch"]}}
    raise SystemExit(f"--hp must be zoo, zoo-sac, zoo-sac-mujoco, defaults or robot-yaml, got {kind!r}")


class PeriodicEval(BaseCallback):
    """Every ``every`` steps, ``episodes`` deterministic episodes on another env; stops at the threshold."""

    def __init__(self, env_id: str, every: int, episodes: int, success: float | None,
                 ret: float | None) -> None:
        super().__init__()
        self.env = gym.make(env_id)
        self.every, self.episodes, self.success, self.ret = every, episodes, success, ret
        self.next = every

    def _on_step(self) -> bool:
        if self.num_timesteps < self.next:
            return True
        self.next += self.every
        venv = self.model.get_env()
        returns, successes = [], []
        for ep in range(self.episodes):
            obs, info = self.env.reset(seed=1_000_000 + ep)
            total, done = 0.0, False
            while not done:
                o = venv.normalize_obs(obs) if isinstance(venv, VecNormalize) else obs
                action, _ = self.model.predict(o, deterministic=True)
                obs, r, term, trunc, info = self.env.step(action)
                total += float(r)
                done = term or trunc
            returns.append(total)
            successes.append(float(info.get("is_success", False)))
        row: dict[str, Any] = {"event": "eval", "step": self.num_timesteps,
                               "mean_reward": float(np.mean(returns)),
                               "success_rate": float(np.mean(successes))}
        print(json.dumps(row), flush=True)
        solved = (self.success is not None and row["success_rate"] >= self.success) or \
                 (self.ret is not None and row["mean_reward"] >= self.ret)
        return not solved


class Progress(BaseCallback):
    """One JSON line at the start of every rollout (after the previous update): the parent times them."""

    def _on_rollout_start(self) -> None:
        print(json.dumps({"event": "progress", "step": self.num_timesteps}), flush=True)

    def _on_step(self) -> bool:
        return True


def main(argv: list[str] | None = None) -> int:
    """Train plain SB3 PPO (or SAC, for the zoo-sac entries) and print JSON lines."""
    p = argparse.ArgumentParser()
    p.add_argument("--hp", required=True)
    p.add_argument("--env", default="nondiff/Robot-v0")
    p.add_argument("--timesteps", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--threshold-success", type=float)
    p.add_argument("--threshold-return", type=float)
    p.add_argument("--n-steps", type=int, help="override n_steps (smoke tests)")
    args = p.parse_args(argv)
    import envs  # noqa: F401  (registers nondiff/Robot-v0 with Gymnasium; nothing else)

    torch.set_num_threads(args.threads)
    hp = hyperparameters(args.hp)
    n_envs, normalize, algo = hp.pop("n_envs"), hp.pop("normalize"), hp.pop("algo", "ppo")
    if args.n_steps:
        hp["n_steps"], hp["batch_size"] = args.n_steps, min(hp.get("batch_size", 64), args.n_steps * n_envs)
    venv = make_vec_env(args.env, n_envs=n_envs, seed=args.seed, vec_env_cls=DummyVecEnv)
    if normalize:
        venv = VecNormalize(venv, gamma=hp.get("gamma", 0.99))
    model = (SAC if algo == "sac" else PPO)("MlpPolicy", venv, seed=args.seed, device="cpu", verbose=0, **hp)
    # SB3's default logger here has no outputs either, but first creates /tmp/SB3-<time>/ for them
    model.set_logger(Logger(folder=None, output_formats=[]))
    callback = (PeriodicEval(args.env, args.eval_every, args.eval_episodes, args.threshold_success,
                             args.threshold_return) if args.eval_every else Progress())
    t = time.perf_counter()
    model.learn(args.timesteps, callback=callback)
    dt = time.perf_counter() - t
    print(json.dumps({"event": "done", "steps": model.num_timesteps, "learn_s": dt,
                      "steps_per_s": model.num_timesteps / dt}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
