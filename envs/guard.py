"""Per-step validation of what an adapter returns: shape, dtype, bounds and finiteness, every step."""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


def obs_problem(space: spaces.Space, obs: Any, path: str = "observation") -> str | None:
    """Why ``obs`` does not belong to ``space``, in words; None when it does.

    Unlike ``space.contains`` it names the cause (dtype, shape, bounds, NaN/inf), and unlike Gymnasium's
    checker it is cheap enough to run on every step.
    """
    if isinstance(space, spaces.Box):
        arr = np.asarray(obs)
        if arr.shape != space.shape:
            return f"{path} has shape {arr.shape}, the space declares {space.shape}"
        if arr.dtype != space.dtype:
            return (f"{path} has dtype {arr.dtype}, the space declares {space.dtype}; "
                    f"return np.asarray(obs, dtype=np.{space.dtype})")
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            bad = "NaN" if np.isnan(arr).any() else "inf"
            return f"{path} contains {bad}"
        if not (np.all(arr >= space.low) and np.all(arr <= space.high)):
            idx = int(np.argmax((arr < space.low) | (arr > space.high)))
            return (f"{path} is out of bounds at flat index {idx}: {arr.ravel()[idx]!r} not in "
                    f"[{space.low.ravel()[idx]!r}, {space.high.ravel()[idx]!r}]")
        return None
    if isinstance(space, spaces.Dict):
        if not isinstance(obs, dict) or set(obs) != set(space.spaces):
            got = sorted(obs) if isinstance(obs, dict) else type(obs).__name__
            return f"{path} must be a dict with keys {sorted(space.spaces)}, got {got}"
        for key, sub in space.spaces.items():
            problem = obs_problem(sub, obs[key], f"{path}[{key!r}]")
            if problem:
                return problem
        return None
    if isinstance(space, spaces.Tuple):
        if not isinstance(obs, tuple) or len(obs) != len(space.spaces):
            return f"{path} must be a tuple of {len(space.spaces)} elements"
        for i, sub in enumerate(space.spaces):
            problem = obs_problem(sub, obs[i], f"{path}[{i}]")
            if problem:
                return problem
        return None
    return None if space.contains(obs) else f"{path} {obs!r} is not in {space}"


def reward_problem(reward: Any) -> str | None:
    """Why ``reward`` is not a finite real number; None when it is."""
    try:
        value = float(reward)
    except (TypeError, ValueError):
        return f"reward {reward!r} is not a number"
    if np.ndim(reward) != 0:
        return f"reward has shape {np.shape(reward)}, expected a scalar"
    if not np.isfinite(value):
        return f"reward is {value}"
    return None


NAN_POLICIES = ("truncate", "clip", "raise")


class InvalidOutputError(RuntimeError):
    """An adapter returned an invalid observation or reward and the policy is ``raise``."""


def sanitize(space: spaces.Space, obs: Any) -> Any:
    """Force ``obs`` into ``space``: NaN → 0, ±inf and out-of-bounds values clipped, dtype cast."""
    if isinstance(space, spaces.Box):
        arr = np.nan_to_num(np.asarray(obs, dtype=np.float64).reshape(space.shape), nan=0.0)
        return np.clip(arr, space.low, space.high).astype(space.dtype)
    if isinstance(space, spaces.Dict):
        return {k: sanitize(s, obs[k]) for k, s in space.spaces.items()}
    return obs


class Guard(gym.Wrapper):
    """Checks every transition of any adapter and applies the NaN/garbage policy; times every step.

    Policies for an invalid observation or reward (wrong shape, dtype, out of bounds, NaN or inf):
    ``truncate`` (default) ends the episode with the last valid observation and reward 0; ``clip``
    repairs the values and goes on; ``raise`` stops. Either way ``info["nondiff_fault"]`` records it,
    and no invalid value reaches the learner. ``info["nondiff_step_ms"]`` carries the step latency.
    """

    def __init__(self, env: gym.Env, nan_policy: str = "truncate") -> None:
        if nan_policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
        super().__init__(env)
        self.nan_policy = nan_policy
        self._last_obs: Any = None

    def _problem(self, obs: Any, reward: Any | None) -> str | None:
        return obs_problem(self.observation_space, obs) or (None if reward is None else reward_problem(reward))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        problem = self._problem(obs, None)
        if problem:
            if self.nan_policy == "raise":
                raise InvalidOutputError(f"reset: {problem}")
            obs = sanitize(self.observation_space, obs)
            info = {**info, "nondiff_fault": {"kind": _kind(problem), "detail": f"reset: {problem}",
                                              "restart": False}}
        self._last_obs = obs
        return obs, info

    def step(self, action):
        t = time.perf_counter()
        obs, reward, terminated, truncated, info = self.env.step(action)
        info = dict(info)
        info["nondiff_step_ms"] = (time.perf_counter() - t) * 1e3
        problem = self._problem(obs, reward)
        if problem is None:
            self._last_obs = obs
            return obs, float(reward), bool(terminated), bool(truncated), info
        if self.nan_policy == "raise":
            raise InvalidOutputError(f"step: {problem}")
        info["nondiff_fault"] = {**info.get("nondiff_fault", {}), "kind": _kind(problem), "detail": problem,
                                 "restart": bool(info.get("nondiff_fault", {}).get("restart", False))}
        if self.nan_policy == "clip":
            obs = sanitize(self.observation_space, obs)
            self._last_obs = obs
            return obs, _repair_reward(reward), bool(terminated), bool(truncated), info
        # truncate: end the episode on the last valid observation; nothing invalid reaches the learner
        return self._last_obs, 0.0, False, True, info


def _repair_reward(reward: Any) -> float:
    try:
        value = float(np.asarray(reward, dtype=np.float64).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return 0.0
    return 0.0 if np.isnan(value) else float(np.clip(value, -1e6, 1e6))


def _kind(problem: str) -> str:
    return "nonfinite" if ("NaN" in problem or "inf" in problem) else "invalid_output"
