"""Building the vector env of bridge programs (:class:`~envs.vector.bridge.BridgeVectorEnv`): how many
programs ``num_envs`` needs, started side by side (an engine takes a while to start) or awaited in connect
mode, and the wrappers around it.

The Guard's checks, ``env.max_episode_steps`` and the episode statistics are the vector wrappers around it
(:func:`wrap_bridge`), as for ALE's vector env; per-env wrappers (``env.wrappers``, ``env.drop_keys``) cannot
apply to a batch and are refused in one line (:func:`make_bridge_vector_env`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gymnasium as gym
from gymnasium import spaces

from envs.bridge import listen as L
from envs.bridge.batch import BatchProgram
from envs.errors import StartupError, UserError
from envs.vector.bridge import BridgeVectorEnv
from envs.vector.row_guard import RowGuard
from envs.vector.time_limit import TimeLimit

FLAT_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


def batchable_space(space: gym.Space) -> bool:
    """Box, Discrete, MultiDiscrete, MultiBinary, or a Dict of them: what a K-instance vector env batches."""
    if isinstance(space, spaces.Dict):
        return all(isinstance(s, FLAT_SPACES) for s in space.spaces.values())
    return isinstance(space, FLAT_SPACES)


def wrap_bridge(venv: BridgeVectorEnv, nan_policy: str = "truncate", max_episode_steps: int | None = None,
                bounds_policy: str = "clip") -> gym.vector.VectorEnv:
    """The programs under their time limit and the Guard's batched checks."""
    inner: gym.vector.VectorEnv = venv if max_episode_steps is None else TimeLimit(venv, max_episode_steps)
    return RowGuard(inner, nan_policy, bounds_policy, None)


def make_bridge_vector_env(kwargs: dict[str, Any], num_envs: int, token: str | None,
                           instances: int | None = None, per_env_wrappers: str = "",
                           nan_policy: str = "truncate", max_episode_steps: int | None = None,
                           bounds_policy: str = "clip",
                           check_programs: Callable[[int, int], None] | None = None
                           ) -> gym.vector.VectorEnv | None:
    """The vector env for K-instance programs (K > 1) or connect mode (``listen``); None otherwise.

    ``kwargs``: the bridge adapter's keyword arguments. ``instances``: the ``num_instances`` the start-up
    probe read, if it ran in this process. Otherwise spawn mode starts one program to read it; with K = 1 and
    no ``listen`` it is closed again and the caller builds its usual vector env. ``num_envs`` envs need
    ``ceil(num_envs / K)`` programs (rounded up: the vector env has programs × K envs). ``per_env_wrappers``:
    the per-env wrappers configured (e.g. ``env.wrappers``), which cannot apply to a batch.
    ``check_programs(n, k)``: called before ``n`` programs of ``k`` instances are started (spawn mode), to
    refuse more than the machine can hold (``--num-envs 100000`` started 6,250 Godots side by side).

    Raises:
        UserError: a program cannot start as configured, nobody connected in time, the address is taken, or
            per-env wrappers are configured.
    """
    kwargs = {k: v for k, v in kwargs.items() if k not in ("render_mode",)}
    listen = kwargs.get("listen")
    if instances == 1 and listen is None:
        return None
    if token:
        kwargs["token"] = token
    deadline = time.monotonic() + float(kwargs.get("connect_timeout", 60.0))
    programs: list[BatchProgram] = []
    try:
        spawned = kwargs.get("command") is not None  # with listen: each program has a listener of its own
        if listen is not None and not spawned:  # envs, not programs: ceil(num_envs / K) programs
            L.listener(listen, token or "").expected = num_envs
        if spawned and listen is not None and instances is not None:  # K known: all programs start at once
            if check_programs is not None:
                check_programs(math.ceil(num_envs / instances), instances)
            _side_by_side(programs, math.ceil(num_envs / instances), kwargs, None)
        else:
            programs.append(BatchProgram(**kwargs))
        k = programs[0].num_instances
        if k == 1 and listen is None:
            programs[0].close()
            return None
        space = programs[0].observation_space
        if per_env_wrappers or not batchable_space(space):
            raise UserError(f"programs with num_instances > 1 or env.listen are stepped as one batch, so "
                            f"per-env wrappers cannot apply; they support Box, Discrete, MultiDiscrete and "
                            f"MultiBinary observations (or a Dict of them) without "
                            f"{per_env_wrappers or 'other spaces'}; this one "
                            f"declares {space} (use a single-instance program for the rest)")
        n = math.ceil(num_envs / k)
        if spawned and check_programs is not None:
            check_programs(n, k)
        if n * k != num_envs:
            print(f"nondiff: train.num_envs={num_envs} with {k} instances per program: {n} program(s), "
                  f"{n * k} envs", flush=True)
        if spawned:  # started side by side: an engine takes a while to start
            _side_by_side(programs, n - len(programs), kwargs, programs[0].spec_reply)
        while len(programs) < n:
            if listen is not None:
                kwargs["connect_timeout"] = max(0.1, deadline - time.monotonic())
            programs.append(BatchProgram(expect=programs[0].spec_reply, **kwargs))
        return wrap_bridge(BridgeVectorEnv(programs), nan_policy, max_episode_steps, bounds_policy)
    except StartupError as e:
        for p in programs:
            p.close()
        raise UserError(str(e)) from e
    except BaseException:
        for p in programs:
            p.close()
        raise


def _side_by_side(programs: list[BatchProgram], count: int, kwargs: dict[str, Any], expect: Any) -> None:
    """Start ``count`` more spawned programs concurrently, appending every one that started to ``programs``
    (so that a failure closes them all); the first failure is raised once all have finished."""
    if count <= 0:
        return
    with ThreadPoolExecutor(count, "nondiff-launch") as pool:
        futures = [pool.submit(BatchProgram, expect=expect, **kwargs) for _ in range(count)]
    failed: BaseException | None = None
    for future in futures:
        try:
            programs.append(future.result())
        except BaseException as e:
            failed = failed or e
    if failed is not None:
        raise failed
