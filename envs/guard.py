"""Per-step validation of what an adapter returns: shape, dtype, bounds and finiteness, every step."""

from __future__ import annotations

from typing import Any

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
