"""Memory bounds checked before a big allocation: a replay buffer's bytes against a share of the machine's
memory.

:func:`check_replay` runs where a backend has the spaces and the number of envs but has not built its
algorithm yet (SB3's SAC/TD3 allocate the whole buffer at once; RLlib's SAC fills its buffer as it goes, and
would exhaust the machine later instead). Over :data:`MEMORY_SHARE` of the machine's memory it raises a
:class:`~envs.errors.UserError` with the size, the limit and the fix (exit code 2).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from envs.errors import UserError

MEMORY_SHARE = 0.5
"""The share of the machine's memory (MemTotal, or a smaller cgroup limit) one replay buffer may take."""
ROW_SCALARS = 3
"""float32 scalars each transition stores beside observations and actions: reward, done, timeout."""


def machine_memory() -> tuple[int, str]:
    """Bytes of memory this process may use, and where the number comes from.

    The smaller of ``MemTotal`` in /proc/meminfo and a cgroup (v2 or v1) limit, when there is one; without
    /proc (not Linux), the physical pages that ``os.sysconf`` reports.
    """
    total, source = 0, "MemTotal"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        total = 0
    if not total:
        total, source = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "physical memory"
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            limit = int(Path(limit_file).read_text().strip())
        except (OSError, ValueError):  # absent, or "max" (no limit)
            continue
        if 0 < limit < total:
            total, source = limit, f"the cgroup limit ({limit_file})"
    return total, source


def value_bytes(space: Any, *, float_actions: bool = False) -> int:
    """Bytes one value of ``space`` takes in a replay buffer (SB3's layout: a Discrete value is one int64).

    Args:
        space: a Box, Discrete, MultiDiscrete, MultiBinary, or a Dict of them.
        float_actions: cast float64 to float32, as SB3 stores actions.
    """
    from gymnasium import spaces

    if isinstance(space, spaces.Dict):
        return sum(value_bytes(s, float_actions=float_actions) for s in space.spaces.values())
    if isinstance(space, spaces.Tuple):
        return sum(value_bytes(s, float_actions=float_actions) for s in space.spaces)
    if isinstance(space, spaces.Discrete):
        return 8
    dtype = np.dtype(space.dtype)
    if float_actions and dtype == np.float64:
        dtype = np.dtype(np.float32)
    return math.prod(space.shape or ()) * dtype.itemsize


def replay_bytes(observation_space: Any, action_space: Any, rows: int, n_envs: int, *,
                 next_observations: bool = True) -> int:
    """Bytes of a replay buffer of ``rows`` × ``n_envs`` transitions.

    Each transition holds an observation, a next observation (unless ``next_observations`` is False: SB3's
    ``optimize_memory_usage``, or a buffer that keeps episodes), an action and :data:`ROW_SCALARS` float32s.
    """
    obs = value_bytes(observation_space)
    per = (obs * (2 if next_observations else 1) + value_bytes(action_space, float_actions=True)
           + 4 * ROW_SCALARS)
    return rows * n_envs * per


def human(n: float) -> str:
    """A byte count in binary units: ``1.09 TiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"


def check_replay(observation_space: Any, action_space: Any, buffer_size: int, n_envs: int, *,
                 rows: int | None = None, next_observations: bool = True, checkpointed: bool = False) -> int:
    """Refuse a replay buffer over :data:`MEMORY_SHARE` of the machine's memory, before it is allocated.

    Args:
        observation_space: the env's observation space.
        action_space: the env's action space.
        buffer_size: ``agent.buffer_size``: transitions in all.
        n_envs: the envs that add a transition each per vector step.
        rows: the buffer's rows (SB3: ``max(buffer_size // n_envs, 1)``, of ``n_envs`` transitions each);
            None: ``buffer_size`` rows of one transition (a buffer that counts transitions).
        next_observations: False where the buffer stores each observation once.
        checkpointed: checkpoints hold the buffer (``train.checkpoint_replay``): writing one serialises it
            into memory, as much again.

    Returns:
        The buffer's bytes.

    Raises:
        UserError: the size, the limit and the fix (a smaller ``agent.buffer_size``, or
            ``train.checkpoint_replay: false`` where that alone makes it fit).
    """
    width = n_envs if rows is not None else 1
    rows = rows if rows is not None else buffer_size
    size = replay_bytes(observation_space, action_space, rows, width, next_observations=next_observations)
    total, source = machine_memory()
    limit = int(total * MEMORY_SHARE)
    need = size * (2 if checkpointed else 1)
    if need <= limit:
        return size
    per_transition = max(1, size // max(rows * width, 1))
    fits = limit // (per_transition * (2 if checkpointed else 1))
    what = (f"the replay buffer of agent.buffer_size={buffer_size:,} transitions needs {human(size)} "
            f"(observations{', next observations' if next_observations else ''}, actions, rewards, dones and "
            f"timeouts, {human(per_transition)} per transition{f', {n_envs} envs' if width > 1 else ''})")
    if checkpointed:
        what += ", and writing it into a checkpoint as much again"
    fix = f"set agent.buffer_size to at most {fits:,}" if fits > 0 else "use a smaller observation space"
    if checkpointed and size <= limit:
        fix += (", or train.checkpoint_replay: false (checkpoints then leave the buffer out; a resume is not "
                "exact)")
    raise UserError(f"{what}; the limit is {human(limit)}, {MEMORY_SHARE:.0%} of this machine's "
                    f"{human(total)} ({source}); {fix}")
