"""A batch of a space's items: what every vector env and the PettingZoo adapter stack observations with.

It sits below both (envs/vector/ and envs/multiagent.py import it), so neither reaches into the other for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import create_empty_array


def stack(space: gym.Space, items: Sequence[Any]) -> Any:
    """The observations of every env in a fresh batch of ``space`` (assigned per env, cast to its dtype)."""
    if isinstance(space, gym.spaces.Dict):
        return {k: stack(s, [item[k] for item in items]) for k, s in space.spaces.items()}
    out = create_empty_array(space, len(items), fn=np.empty)
    if not isinstance(out, np.ndarray):  # Tuple, Text, Graph, ...: Gymnasium's own batching
        from gymnasium.vector.utils import concatenate

        return concatenate(space, items, out)
    for k, item in enumerate(items):
        out[k] = item
    return out
