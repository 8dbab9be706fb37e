"""Gymnasium spaces as JSON: used by the bridge handshake and by checkpoints."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces


def space_to_json(space: spaces.Space) -> dict[str, Any]:
    """Describe a Gymnasium space in JSON (Box, Discrete, MultiDiscrete, MultiBinary, Dict, Tuple)."""
    if isinstance(space, spaces.Box):
        return {"type": "Box", "low": space.low.tolist(), "high": space.high.tolist(),
                "shape": list(space.shape), "dtype": str(space.dtype)}
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist()}
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "n": np.asarray(space.n).tolist()}
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_to_json(s) for k, s in space.spaces.items()}}
    if isinstance(space, spaces.Tuple):
        return {"type": "Tuple", "spaces": [space_to_json(s) for s in space.spaces]}
    raise TypeError(f"cannot describe space {space!r}")


def space_from_json(d: dict[str, Any]) -> spaces.Space:
    """Inverse of :func:`space_to_json`."""
    kind = d["type"]
    if kind == "Box":
        return spaces.Box(np.array(d["low"], dtype=d["dtype"]), np.array(d["high"], dtype=d["dtype"]), dtype=d["dtype"])
    if kind == "Discrete":
        return spaces.Discrete(d["n"], start=d["start"])
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(d["nvec"])
    if kind == "MultiBinary":
        return spaces.MultiBinary(d["n"])
    if kind == "Dict":
        return spaces.Dict({k: space_from_json(s) for k, s in d["spaces"].items()})
    if kind == "Tuple":
        return spaces.Tuple([space_from_json(s) for s in d["spaces"]])
    raise ValueError(f"unknown space type {kind!r}")
