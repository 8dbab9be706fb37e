"""Protocol 1.1's batched replies: K instances' observations, rewards, flags and infos as stacked arrays,
and 1.2's ``autoreset`` step replies (the finished instances' last observations and reset infos besides).

Every violation raises :class:`~envs.errors.ProtocolError`: a reply for the wrong number of
instances, a stacked array of the wrong shape, a flag that is not a boolean, an ``infos`` list of the wrong
length. Values (dtype, bounds, NaN) are the Guard's checks, applied per instance by the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from envs import errors as E
from envs.bridge import protocol as P
from envs.bridge.messages import RESERVED_INFO_PREFIX


@dataclass(frozen=True)
class BatchReset:
    """A batched ``reset_result``: ``obs`` stacked over the reset instances, one info each."""

    obs: Any
    infos: list[dict[str, Any]]


@dataclass(frozen=True)
class BatchStep:
    """A batched ``step_result`` for ``n`` instances."""

    obs: Any
    rewards: np.ndarray
    """float64 [n]; may hold NaN or inf (the Guard's ``nonfinite`` fault, not a protocol one)."""
    terminated: np.ndarray
    """bool [n]"""
    truncated: np.ndarray
    """bool [n]"""
    infos: list[dict[str, Any]]
    final_obs: Any = None
    """``autoreset`` (1.2): the last observations of the m finished instances, stacked in reply order (their
    ``obs`` rows start the next episode); None when the step did not ask for it."""
    reset_infos: list[dict[str, Any]] | None = None
    """``autoreset`` (1.2): the m finished instances' reset infos, in reply order."""


def conform_batch(space: spaces.Space, value: Any, n: int, where: str) -> Any:
    """Check that ``value`` stacks ``n`` elements of ``space`` (leading axis ``n``); returns it as NumPy
    arrays."""
    if isinstance(space, spaces.Dict):
        if not isinstance(value, dict) or set(value) != set(space.spaces):
            got = sorted(value)[:10] if isinstance(value, dict) else type(value).__name__
            raise E.ProtocolError(f"{where}: expected an object with keys {sorted(space.spaces)}, got {got}")
        return {k: conform_batch(s, value[k], n, f"{where}[{k!r}]") for k, s in space.spaces.items()}
    if isinstance(space, spaces.Tuple):
        if not isinstance(value, list | tuple) or len(value) != len(space.spaces):
            raise E.ProtocolError(f"{where}: expected a list of {len(space.spaces)} stacked arrays")
        return tuple(conform_batch(s, v, n, f"{where}[{i}]")
                     for i, (s, v) in enumerate(zip(space.spaces, value)))
    if not isinstance(value, np.ndarray):
        raise E.ProtocolError(f"{where}: expected a stacked array ({{\"$array\": i}}) for {n} instance(s), "
                              f"got {type(value).__name__}")
    if value.dtype.kind not in "biuf":
        raise E.ProtocolError(f"{where}: expected numbers, got an array of dtype {value.dtype}")
    if isinstance(space, spaces.Discrete) and value.dtype.kind not in "iu":
        raise E.ProtocolError(f"{where}: expected integers for {space}, got dtype {value.dtype}")
    want = (n, *(space.shape or ()))
    if value.shape != want:
        raise E.ProtocolError(f"{where}: shape {list(value.shape)}, expected {list(want)} ({n} instance(s) "
                              f"of the declared shape {list(space.shape or ())})")
    return value


def unstack(space: spaces.Space, stacked: Any, i: int) -> Any:
    """Instance ``i`` of a stacked observation, as a single-instance reply would carry it."""
    if isinstance(space, spaces.Dict):
        return {k: unstack(s, stacked[k], i) for k, s in space.spaces.items()}
    if isinstance(space, spaces.Tuple):
        return tuple(unstack(s, v, i) for s, v in zip(space.spaces, stacked))
    if isinstance(space, spaces.Discrete):
        return np.int64(stacked[i])
    return stacked[i]


def stack_actions(space: spaces.Space, actions: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Actions of several instances as one array of the action space's dtype, leading axis the instances."""
    dtype = np.int64 if isinstance(space, spaces.Discrete) else space.dtype
    arr = np.asarray(actions, dtype=dtype)
    return arr.reshape((len(actions), *(space.shape or ())))


def infos_field(msg: dict[str, Any], n: int, kind: str, key: str = "infos") -> list[dict[str, Any]]:
    """``msg[key]``: a list of ``n`` info objects (absent: all empty), without the reserved ``nondiff_``
    keys."""
    infos = msg.get(key)
    if infos is None:
        return [{} for _ in range(n)]
    if not isinstance(infos, list) or len(infos) != n or not all(isinstance(x, dict) for x in infos):
        got = f"a list of {len(infos)}" if isinstance(infos, list) else type(infos).__name__
        raise E.ProtocolError(f"{kind}.{key}: expected a list of {n} objects, got {got}")
    return [{k: v for k, v in x.items() if not k.startswith(RESERVED_INFO_PREFIX)} for x in infos]


def vector_field(msg: dict[str, Any], key: str, n: int, kind: str, flags: bool) -> np.ndarray:
    """``msg[key]``: ``n`` booleans (``flags``; absent: all false) or ``n`` numbers (required), from an array
    or a JSON list."""
    raw = msg.get(key)
    if raw is None:
        if flags:
            return np.zeros(n, dtype=bool)
        raise E.ProtocolError(f"{kind}.{key}: missing")
    if isinstance(raw, list):  # a JSON list is accepted as well as an array
        ok = all(isinstance(x, bool) for x in raw) if flags else all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in raw)
        if not ok:
            raise E.ProtocolError(f"{kind}.{key}: expected a list of {'booleans' if flags else 'numbers'}")
        try:
            raw = np.asarray(raw, dtype=bool if flags else np.float64)
        except OverflowError as e:
            raise E.ProtocolError(f"{kind}.{key}: an integer too large for a float") from e
    if not isinstance(raw, np.ndarray):
        raise E.ProtocolError(f"{kind}.{key}: expected an array of {n}, got {type(raw).__name__}")
    if raw.shape != (n,):
        raise E.ProtocolError(f"{kind}.{key}: shape {list(raw.shape)}, expected [{n}] (one per instance)")
    if flags:
        if raw.dtype != np.bool_:
            raise E.ProtocolError(f"{kind}.{key}: expected a bool array (\"|b1\"), got dtype {raw.dtype}")
        return raw
    if raw.dtype.kind not in "iuf":
        raise E.ProtocolError(f"{kind}.{key}: expected numbers, got dtype {raw.dtype}")
    return raw.astype(np.float64)


def parse_batch_reset(msg: dict[str, Any], space: spaces.Space, n: int) -> BatchReset:
    """Check a batched ``reset_result`` for ``n`` instances."""
    P.expect(msg, "reset_result")
    if "obs" not in msg:
        raise E.ProtocolError("reset_result.obs: missing")
    return BatchReset(conform_batch(space, msg["obs"], n, "reset_result.obs"),
                      infos_field(msg, n, "reset_result"))


def parse_batch_step(msg: dict[str, Any], space: spaces.Space, n: int, autoreset: bool = False) -> BatchStep:
    """Check a batched ``step_result`` for ``n`` instances (``autoreset``: the step asked the program to reset
    its finished instances, protocol 1.2)."""
    P.expect(msg, "step_result")
    if "obs" not in msg:
        raise E.ProtocolError("step_result.obs: missing")
    obs = conform_batch(space, msg["obs"], n, "step_result.obs")
    terminated = vector_field(msg, "terminated", n, "step_result", True)
    truncated = vector_field(msg, "truncated", n, "step_result", True)
    step = BatchStep(obs, vector_field(msg, "rewards", n, "step_result", False), terminated, truncated,
                     infos_field(msg, n, "step_result"))
    if not autoreset:
        if "final_obs" in msg or "reset_infos" in msg:
            raise E.ProtocolError("step_result.final_obs: sent for a step that did not ask for autoreset; a "
                                  "program resets an instance only when asked (docs/protocol.md, 1.2)")
        return step
    m = int(np.count_nonzero(terminated | truncated))
    if m == 0 and msg.get("final_obs") is None:
        return BatchStep(step.obs, step.rewards, terminated, truncated, step.infos, None, [])
    if "final_obs" not in msg:
        raise E.ProtocolError(f"step_result.final_obs: missing for the {m} finished instance(s) of an "
                              "autoreset step (docs/protocol.md, 1.2)")
    final = conform_batch(space, msg["final_obs"], m, "step_result.final_obs")
    return BatchStep(step.obs, step.rewards, terminated, truncated, step.infos, final,
                     infos_field(msg, m, "step_result", "reset_infos"))
