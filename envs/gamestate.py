"""A PettingZoo game's state as JSON, for an exact resume of a game in progress (envs/selfplay.py's
``SeatEnv.get_state``): its attributes, arrays tagged with their dtype, objects as their attributes, restored
into the live game's own objects so that a state names no class and imports nothing."""

from __future__ import annotations

from typing import Any

import numpy as np

SHARED = frozenset({"observation_spaces", "action_spaces", "screen", "clock", "render_mode",
                    "possible_agents", "_ezpickle_args", "_ezpickle_kwargs"})
"""Attributes of a PettingZoo game that a move never changes: shared by a copy, left out of a state."""


def encode(value: Any) -> Any:
    """``value`` as JSON: arrays tagged with their dtype, objects as their attributes (restored into the
    live game's objects by :func:`decode`, so a state names no class and imports nothing)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.ndarray):
        return {"__array__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if hasattr(value, "__dict__"):
        return {"__object__": encode(vars(value))}
    raise TypeError(f"cannot save a game attribute of type {type(value).__name__}")


def decode(saved: Any, live: Any) -> Any:
    """The value :func:`encode` saved, rebuilt in the form of ``live`` (the game's current value)."""
    if isinstance(saved, dict) and "__array__" in saved:
        return np.array(saved["__array__"], dtype=np.dtype(saved["dtype"]))
    if isinstance(saved, dict) and "__object__" in saved:
        if live is None or not hasattr(live, "__dict__"):
            raise ValueError("a saved object where the game has none")
        for key, value in saved["__object__"].items():
            setattr(live, key, decode(value, getattr(live, key, None)))
        return live
    if isinstance(saved, dict):
        template = live if isinstance(live, dict) else {}
        return {k: decode(v, template.get(k)) for k, v in saved.items()}
    if isinstance(saved, list):
        items = [decode(v, live[i] if isinstance(live, list | tuple) and i < len(live) else None)
                 for i, v in enumerate(saved)]
        return tuple(items) if isinstance(live, tuple) else items
    return saved
