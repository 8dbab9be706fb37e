"""The Guard's repairs: what stands in for a bad observation or reward (:func:`sanitize`,
:func:`clip_to_bounds`, :func:`placeholder`, :func:`repair_reward`). None of them raises, whatever an adapter
returned. envs/guard.py re-exports them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from envs.value_checks import obs_problem

__all__ = ["clip_to_bounds", "placeholder", "repair_reward", "sanitize"]


def placeholder(space: spaces.Space) -> Any:
    """A valid element of ``space`` without sampling: zeros clipped into the bounds, the first action, …"""
    if isinstance(space, spaces.Box):
        return np.clip(np.zeros(space.shape), space.low, space.high).astype(space.dtype)
    if isinstance(space, spaces.Discrete):
        return np.int64(space.start)
    if isinstance(space, spaces.MultiDiscrete):
        return np.asarray(getattr(space, "start", np.zeros(space.shape)), dtype=space.dtype).copy()
    if isinstance(space, spaces.MultiBinary):
        return np.zeros(space.shape, dtype=space.dtype)
    if isinstance(space, spaces.Dict):
        return {k: placeholder(s) for k, s in space.spaces.items()}
    if isinstance(space, spaces.Tuple):
        return tuple(placeholder(s) for s in space.spaces)
    return space.sample()  # Text, Graph, Sequence: no canonical element


def sanitize(space: spaces.Space, obs: Any, fallback: Any = None) -> Any:
    """Force ``obs`` into ``space``: NaN → 0, ±inf and out-of-bounds values clipped, dtype cast. Never raises.

    What cannot be repaired (a wrong shape, a string, a missing key) becomes ``fallback`` when that belongs
    to ``space`` (the last valid observation), else :func:`placeholder`.
    """
    try:
        if isinstance(space, spaces.Box):
            arr = np.asarray(obs)
            if arr.shape == space.shape and arr.dtype.kind in "biuf":
                out = np.clip(np.nan_to_num(arr.astype(np.float64), nan=0.0), space.low,
                              space.high).astype(space.dtype)
                if obs_problem(space, out) is None:
                    return out
        elif isinstance(space, spaces.Dict):
            if isinstance(obs, dict):
                fbd = fallback if isinstance(fallback, dict) else {}
                return {k: sanitize(s, obs.get(k), fbd.get(k)) for k, s in space.spaces.items()}
        elif isinstance(space, spaces.Tuple):
            if isinstance(obs, tuple) and len(obs) == len(space.spaces):
                fbt = fallback if isinstance(fallback, tuple) else (None,) * len(obs)
                return tuple(sanitize(s, o, f) for s, o, f in zip(space.spaces, obs, fbt))
        elif obs_problem(space, obs) is None:
            return obs
    except Exception:
        pass
    return fallback if fallback is not None and obs_problem(space, fallback) is None else placeholder(space)


def clip_to_bounds(space: spaces.Space, obs: Any) -> Any:
    """``obs`` with every Box value of the right shape clipped onto its bounds (nothing else changed).
    Never raises."""
    try:
        if isinstance(space, spaces.Box):
            arr = np.asarray(obs)
            if arr.shape != space.shape:
                return obs
            return np.clip(arr, space.low, space.high).astype(space.dtype)
        if isinstance(space, spaces.Dict) and isinstance(obs, dict):
            return {k: clip_to_bounds(space.spaces[k], v) if k in space.spaces else v for k, v in obs.items()}
        if isinstance(space, spaces.Tuple) and isinstance(obs, tuple) and len(obs) == len(space.spaces):
            return tuple(clip_to_bounds(s, o) for s, o in zip(space.spaces, obs))
    except Exception:
        pass
    return obs


def repair_reward(reward: Any) -> float:
    """``reward`` as a finite float within ±1e6: its first element, NaN and non-numbers as 0. Never raises."""
    try:
        arr = np.asarray(reward)
        value = float(arr.astype(np.float64).reshape(-1)[0]) if arr.dtype.kind in "biuf" else 0.0
    except Exception:
        return 0.0
    return 0.0 if np.isnan(value) else float(np.clip(value, -1e6, 1e6))
