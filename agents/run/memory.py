"""Memory bounds checked before a big allocation: a replay buffer's, a rollout's or the networks' bytes
against a share of the machine's memory.

:func:`check_replay` (SAC/TD3) and :func:`check_rollout` (PPO, A2C, APPO) run where a backend has the spaces
and the number of envs but has not built its algorithm yet (SB3 allocates the whole buffer at once; RLlib
fills its buffer or train batch as it goes, and would exhaust the machine later instead);
:func:`check_networks` runs where a new run's config is built, for every backend. Over :data:`MEMORY_SHARE`
of the machine's memory each raises a :class:`~envs.errors.UserError` with the size, the limit and the fix
(exit code 2).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from envs.errors import UserError

MEMORY_SHARE = 0.5
"""The share of the machine's memory (MemTotal, or a smaller cgroup limit) one replay buffer, one rollout or
the networks may take."""
ROW_SCALARS = 3
"""float32 scalars each transition stores beside observations and actions: reward, done, timeout."""
ROLLOUT_SCALARS = 6
"""float32 scalars each step of a rollout stores beside its observation and action: reward, return, episode
start, value, log-probability, advantage (SB3's RolloutBuffer)."""
NETWORK_COPIES = 4
"""float32 copies of each weight while training: the weight, its gradient and Adam's two moments."""


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
            return f"{n:.0f} {unit}" if unit == "B" or n >= 999.5 else f"{n:.3g} {unit}"
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


def _limit() -> tuple[int, str]:
    """The bytes one allocation may take, and the words that say where that number comes from."""
    total, source = machine_memory()
    limit = int(total * MEMORY_SHARE)
    return limit, (f"the limit is {human(limit)}, {MEMORY_SHARE:.0%} of this machine's {human(total)} "
                   f"({source})")


def mask_entries(action_space: Any) -> int:
    """Entries of one action mask as MaskablePPO's rollout buffer stores them (float32 each)."""
    from gymnasium import spaces

    if isinstance(action_space, spaces.Discrete):
        return int(action_space.n)
    if isinstance(action_space, spaces.MultiDiscrete):
        return int(sum(int(n) for n in np.asarray(action_space.nvec).ravel()))
    if isinstance(action_space, spaces.MultiBinary):
        return 2 * math.prod(int(n) for n in np.atleast_1d(action_space.n))
    return 0


def rollout_bytes(observation_space: Any, action_space: Any, n_steps: int, n_envs: int, *,
                  masks: bool = False) -> int:
    """Bytes of a rollout buffer of ``n_steps`` × ``n_envs`` steps (SB3's RolloutBuffer: observations and
    actions in their spaces' dtypes and :data:`ROLLOUT_SCALARS` float32s per step, and with ``masks``
    MaskablePPO's float32 action mask)."""
    per = (value_bytes(observation_space) + value_bytes(action_space)
           + 4 * (ROLLOUT_SCALARS + (mask_entries(action_space) if masks else 0)))
    return n_steps * n_envs * per


def check_rollout(observation_space: Any, action_space: Any, n_steps: int, n_envs: int, *,
                  masks: bool = False) -> int:
    """Refuse an on-policy rollout (``agent.n_steps`` × ``n_envs`` steps held at once) over
    :data:`MEMORY_SHARE` of the machine's memory, before it is allocated.

    Args:
        observation_space: the env's observation space.
        action_space: the env's action space.
        n_steps: ``agent.n_steps`` (the algorithm's default where the config leaves it out).
        n_envs: the envs that add a step each per vector step.
        masks: the buffer keeps each step's action mask (MaskablePPO).

    Returns:
        The rollout's bytes.

    Raises:
        UserError: the size, the limit and the fix (a smaller ``agent.n_steps``).
    """
    return check_rollouts([(observation_space, action_space, n_envs)], n_steps, masks=masks)


def check_rollouts(parts: Sequence[tuple[Any, Any, int]], n_steps: int, *, masks: bool = False) -> int:
    """:func:`check_rollout` for the buffers of several models that collect in lock-step (a ``policies:``
    map): ``parts`` holds each one's observation space, action space and envs; their bytes add up."""
    size = sum(rollout_bytes(obs, act, n_steps, n, masks=masks) for obs, act, n in parts)
    limit, says = _limit()
    if size <= limit:
        return size
    n_envs = sum(n for _, _, n in parts)
    per_step = max(1, size // max(n_steps * n_envs, 1))
    fits = limit // (per_step * n_envs)
    fix = (f"set agent.n_steps to at most {fits:,}" if fits > 0
           else "use fewer envs or a smaller observation space")
    raise UserError(f"the rollout of agent.n_steps={n_steps:,} steps × {n_envs:,} envs needs {human(size)} "
                    f"(observations, actions{', action masks' if masks else ''}, rewards, returns, episode "
                    f"starts, values, log-probabilities and advantages, {human(per_step)} per step); {says}; "
                    f"{fix}")


def network_weights(net_arch: list[int], inputs: int = 1) -> int:
    """Weights and biases of ``net_arch``'s hidden layers fed by ``inputs`` features: a lower bound of a
    network built from them (its heads, and the separate copies some algorithms build, left out)."""
    sizes = [max(int(inputs), 1), *(int(n) for n in net_arch)]
    return sum((a + 1) * b for a, b in zip(sizes, sizes[1:], strict=False))


def check_networks(layers: dict[str, list[int]], inputs: int = 1, copies: int = 1) -> int:
    """Refuse networks whose training state (:data:`NETWORK_COPIES` float32 copies of every weight) would
    exceed :data:`MEMORY_SHARE` of the machine's memory, before any is built.

    Args:
        layers: each model's hidden layer sizes, by the config key that gives them (``agent.net_arch``, or
            ``policies.<name>.net_arch``: one model each, all in this process).
        inputs: the features that feed each network's first layer (1 where unknown: a lower bound).
        copies: the networks each model builds from its layers (an actor and a critic: 2).

    Returns:
        The bytes the networks take at least.

    Raises:
        UserError: naming the key(s), the bytes needed and the memory available.
    """
    weights = copies * sum(network_weights(arch, inputs) for arch in layers.values())
    size = weights * 4 * NETWORK_COPIES
    limit, says = _limit()
    if size <= limit:
        return size
    what = ", ".join(f"{key} {list(arch)}" for key, arch in layers.items())
    nets = f"{copies} networks{' per model' if len(layers) > 1 else ''}" if copies > 1 else "the network"
    raise UserError(f"{what} {'need' if len(layers) > 1 else 'needs'} at least {human(size)} to train "
                    f"({weights:,} float32 weights in {nets} fed by {inputs:,} input{'s' * (inputs > 1)}, "
                    f"each with its gradient and Adam's two moments); {says}; use smaller layers")


WORKER_BYTES = 48 * 2**20
"""The memory one env worker process takes at least (``train.vec_env: subproc`` on CartPole-v1: 52 MB RSS)."""


def check_workers(n: int, what: str, fix: str) -> None:
    """Refuse ``n`` worker processes that would need over :data:`MEMORY_SHARE` of the machine's memory at
    :data:`WORKER_BYTES` each, before any starts (``--num-envs 100000`` with subproc forked until killed).

    Raises:
        UserError: ``what`` (the setting that asks for them), their memory, the limit and ``fix``.
    """
    limit, words = _limit()
    if n * WORKER_BYTES > limit:
        raise UserError(f"{what} start {n:,} worker processes, at least {human(n * WORKER_BYTES)} at "
                        f"{human(WORKER_BYTES)} each; {words}; {fix} (at most {limit // WORKER_BYTES:,} "
                        "here)")


def resident_bytes() -> int:
    """This process's resident memory now (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def check_env_copies(n: int, each: int, env_id: str, where: str = "built in this process",
                     setting: str = "train.num_envs (--num-envs)", per: int = 1) -> None:
    """Refuse ``n`` copies of an env when ``each`` (the bytes the last copies built in this process took,
    measured) times ``n`` passes :data:`MEMORY_SHARE` of the machine: 100,000 ``robot`` envs took 57 GB,
    25 minutes of silence, then the kernel's OOM killer. ``where`` the copies will live, for the message;
    ``setting`` asks for ``n // per`` of them (``rllib.envs_per_runner``: ``per`` is the number of runners).

    Raises:
        UserError: the count, the measured size per copy, the limit and the fix.
    """
    limit, words = _limit()
    if n * each > limit:
        name = setting.split(" ")[0]
        raise UserError(f"{name}={n // per:,}: each {env_id!r} env {where} takes about "
                        f"{human(each)} (measured on the first ones), {human(n * each)} in all; {words}; "
                        f"lower {setting} to at most {max(limit // max(each, 1) // per, 1):,}")
