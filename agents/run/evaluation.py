"""Backend-neutral policy evaluation: run N seeded episodes and summarise them."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

Policy = Callable[[Any], np.ndarray]


def run_episodes(env: gym.Env, policy: Policy, episodes: int, seed: int,
                 on_frame: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Play ``episodes`` episodes with seeds ``seed, seed+1, …`` and summarise them.

    Args:
        env: a single (not vectorised) env; its raw rewards are what is reported.
        policy: maps one raw observation to one action.
        episodes: how many episodes.
        seed: seed of the first episode.
        on_frame: called with ``env.render()`` after reset and every step (for video).

    Returns:
        ``mean_reward, std_reward, min_reward, max_reward, mean_length, success_rate, episodes``, plus the
        per-episode lists ``returns``, ``lengths`` and ``successes`` (from the last step's
        ``info["is_success"]``, or ``info["success"]`` as gymnasium-robotics reports it; None where neither is), and ``metrics``: the mean of each scalar an adapter reports in
        ``info["episode_metrics"]`` on an episode's last step (for example the final IoU of a renderer).
    """
    returns, lengths, successes = [], [], []
    metrics: dict[str, list[float]] = {}
    for ep in range(episodes):
        obs, info = env.reset(seed=seed + ep)
        if on_frame is not None:
            on_frame(env.render())
        total, length, done = 0.0, 0, False
        while not done:
            obs, reward, terminated, truncated, info = env.step(policy(obs))
            total += float(reward)
            length += 1
            done = terminated or truncated
            if on_frame is not None:
                on_frame(env.render())
        returns.append(total)
        lengths.append(length)
        successes.append(success_of(info))
        for key, value in (info.get("episode_metrics") or {}).items():
            metrics.setdefault(str(key), []).append(float(value))
    known = [s for s in successes if s is not None]
    return {
        "mean_reward": float(np.mean(returns)), "std_reward": float(np.std(returns)),
        "min_reward": float(np.min(returns)), "max_reward": float(np.max(returns)),
        "mean_length": float(np.mean(lengths)),
        "success_rate": float(np.mean(known)) if known else None,
        "metrics": {k: float(np.mean(v)) for k, v in metrics.items()},
        "episodes": episodes, "returns": returns, "lengths": lengths, "successes": successes,
    }


def success_of(info: dict[str, Any]) -> bool | None:
    """An episode's success from its last ``info``: ``is_success`` (SB3, nondiff) or ``success``; else None."""
    for key in ("is_success", "success"):
        if key in info and info[key] is not None:
            return bool(np.asarray(info[key]).any())
    return None


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` of :func:`run_episodes` without its per-episode lists (what evaluations.jsonl stores)."""
    return {k: v for k, v in result.items() if k not in ("returns", "lengths", "successes")}


def eval_scalars(summary: dict[str, Any]) -> dict[str, float]:
    """The ``eval/…`` scalars both backends write to TensorBoard for one periodic evaluation."""
    out = {"eval/mean_reward": summary["mean_reward"], "eval/mean_ep_length": summary["mean_length"]}
    if summary["success_rate"] is not None:
        out["eval/success_rate"] = summary["success_rate"]
    out.update({f"eval/{k}": v for k, v in summary.get("metrics", {}).items()})
    return out


def random_policy(space: gym.Space, seed: int) -> Policy:
    """A uniform-random policy on ``space``, seeded for repeatability."""
    space = copy.deepcopy(space)
    space.seed(seed)
    return lambda _obs: space.sample()
