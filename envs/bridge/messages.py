"""Typed replies of a bridge program: each parser checks one message and names the first bad field.

Every violation raises :class:`~envs.errors.ProtocolError` (or
:class:`~envs.errors.SpecError` for the spec), so the watchdog can treat any bad reply as a
``protocol`` fault of that program.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium import spaces

from envs import errors as E
from envs.bridge import protocol as P
from envs.spaces import MAX_SPACE_ELEMENTS, space_from_json

RESERVED_INFO_PREFIX = "nondiff_"
"""``info`` keys a program may not set (the trainer's own fault and latency records); they are dropped."""


@dataclass(frozen=True)
class AgentDecl:
    """One agent a program declares (protocol 1.3): its id and its policy group."""

    id: str
    group: str


@dataclass(frozen=True)
class SpecReply:
    """The program's ``spec`` message."""

    env: str
    version: str
    """The protocol version the program speaks: its ``challenge``'s once the handshake has run."""
    observation_space: spaces.Space
    action_space: spaces.Space
    metadata: dict[str, Any] = field(default_factory=dict)
    num_instances: int = 1
    """Env instances behind the connection (protocol 1.1); 1 for a 1.0 program."""
    batched: bool = False
    """True when the spec declared ``num_instances``: requests and replies then use the batched form."""
    agents: tuple[AgentDecl, ...] = ()
    """The agents of the program's scene, in declaration order (protocol 1.3, :mod:`envs.bridge.agentsmsg`);
    empty for a program without agents. With agents, ``observation_space`` and ``action_space`` are Dicts
    keyed by policy group, each value the space every agent of that group has."""


@dataclass(frozen=True)
class ResetReply:
    """A ``reset_result``."""

    obs: Any
    info: dict[str, Any]


@dataclass(frozen=True)
class StepReply:
    """A ``step_result``."""

    obs: Any
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]


@dataclass(frozen=True)
class RenderReply:
    """A ``render_result``: an RGB frame."""

    frame: np.ndarray


def parse_spec(msg: dict[str, Any], max_elements: int = MAX_SPACE_ELEMENTS,
               max_message: int | None = None) -> SpecReply:
    """Check a ``spec`` message and parse its spaces, bounding every size before anything is allocated.

    Args:
        msg: the message.
        max_elements: the most scalar elements a space may declare for all of the program's instances
            together: ``num_instances`` × the elements of one instance (``env.max_space_elements``).
        max_message: the trainer's frame limit (``env.max_message``); a spec whose smallest ``step_result``
            or ``step`` would be over it is refused (:func:`check_message_size`). None: not checked.

    Raises:
        SpecError: naming the first bad field, or the size over its limit and how to fix it.
    """
    P.expect(msg, "spec")
    batched = "num_instances" in msg
    k = msg.get("num_instances", 1)
    if type(k) is not int or not 1 <= k <= P.MAX_INSTANCES:
        raise E.SpecError(f"spec.num_instances: expected an integer from 1 to {P.MAX_INSTANCES} (env "
                          f"instances this program hosts), got {str(k)[:40]}")
    obs_space = space_from_json(msg.get("observation_space"), max_elements, where="spec.observation_space",
                                instances=k)
    act_space = space_from_json(msg.get("action_space"), max_elements, where="spec.action_space", instances=k)
    fps = render_fps(msg)
    if batched and not isinstance(act_space, spaces.Box | spaces.Discrete | spaces.MultiDiscrete
                                  | spaces.MultiBinary):
        raise E.SpecError("spec.action_space: a program with num_instances needs a Box, Discrete, "
                          "MultiDiscrete or MultiBinary action space (actions travel stacked), got "
                          f"{type(act_space).__name__}")
    if max_message is not None:
        check_message_size(obs_space, act_space, k, batched, max_message)
    return SpecReply(str(msg.get("env", ""))[:200], str(msg.get("version", ""))[:20], obs_space, act_space,
                     {"render_fps": fps}, k, batched)


def render_fps(msg: dict[str, Any]) -> float:
    """A spec's ``metadata.render_fps`` (default 30), checked."""
    metadata = msg.get("metadata", {})
    if not isinstance(metadata, dict):
        raise E.SpecError(f"spec.metadata: expected an object, got {type(metadata).__name__}")
    fps = metadata.get("render_fps", 30)
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not 0 < fps < 1e4:
        raise E.SpecError(f"spec.metadata.render_fps: expected a positive number of frames per second, got "
                          f"{str(fps)[:40]}")
    return fps


def wire_bytes(space: spaces.Space) -> int:
    """The fewest bytes one value of ``space`` takes in a frame's arrays: its elements × its dtype's size (a
    Discrete value travels as an int64, a MultiBinary one as int8), summed over a Dict's or Tuple's parts."""
    if isinstance(space, spaces.Dict):
        return sum(wire_bytes(s) for s in space.spaces.values())
    if isinstance(space, spaces.Tuple):
        return sum(wire_bytes(s) for s in space.spaces)
    if isinstance(space, spaces.Discrete):
        return 8
    return math.prod(space.shape or ()) * np.dtype(space.dtype).itemsize


def check_message_size(obs_space: spaces.Space, act_space: spaces.Space, instances: int, batched: bool,
                       max_message: int) -> None:
    """Refuse a spec whose smallest ``step_result`` or ``step`` frame is over ``max_message`` bytes.

    A batched reply carries ``instances`` stacked observations, a float64 reward and two flags each; a
    request carries ``instances`` actions. Refused at the handshake, before any reply is read or allocated.

    Raises:
        SpecError: with the size, the limit and the fix.
    """
    per = wire_bytes(obs_space) + (10 if batched else 0)
    act = wire_bytes(act_space)
    for what, each, space in (("step_result", per, "observation"), ("step request", act, "action")):
        if instances * each > max_message:
            raise E.SpecError(f"spec: every {what} of this program would carry at least {instances * each:,} "
                              f"bytes ({instances:,} instance(s) × {each:,}), over the {max_message:,}-byte "
                              f"limit (env.max_message); declare fewer num_instances or a smaller {space} "
                              "space, or raise env.max_message")


def _info(msg: dict[str, Any], kind: str) -> dict[str, Any]:
    info = msg.get("info", {})
    if not isinstance(info, dict):
        raise E.ProtocolError(f"{kind}.info: expected an object, got {type(info).__name__}")
    return {k: v for k, v in info.items() if not k.startswith(RESERVED_INFO_PREFIX)}


def _bool(msg: dict[str, Any], key: str, kind: str) -> bool:
    value = msg.get(key, False)
    if not isinstance(value, bool):
        raise E.ProtocolError(f"{kind}.{key}: expected true or false, got {str(value)[:40]}")
    return value


def conform(space: spaces.Space, value: Any, where: str) -> Any:
    """Check that ``value`` has the structure and shape of ``space``; values and dtype are the Guard's job.

    Returns the value as Gymnasium expects it (NumPy arrays, tuples for Tuple spaces, ints for Discrete).
    """
    if isinstance(space, spaces.Dict):
        if not isinstance(value, dict) or set(value) != set(space.spaces):
            got = sorted(value)[:10] if isinstance(value, dict) else type(value).__name__
            raise E.ProtocolError(f"{where}: expected an object with keys {sorted(space.spaces)}, got {got}")
        return {k: conform(s, value[k], f"{where}[{k!r}]") for k, s in space.spaces.items()}
    if isinstance(space, spaces.Tuple):
        if not isinstance(value, list | tuple) or len(value) != len(space.spaces):
            raise E.ProtocolError(f"{where}: expected a list of {len(space.spaces)} values")
        return tuple(conform(s, v, f"{where}[{i}]") for i, (s, v) in enumerate(zip(space.spaces, value)))
    if isinstance(space, spaces.Discrete):
        if isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "iu":
            value = value.item()
        if type(value) is not int:
            raise E.ProtocolError(f"{where}: expected an integer for {space}, got {str(value)[:40]}")
        if not -(2**63) <= value < 2**63:
            raise E.ProtocolError(f"{where}: integer {str(value)[:40]} does not fit in 64 bits")
        return np.int64(value)
    if isinstance(space, spaces.Box | spaces.MultiDiscrete | spaces.MultiBinary):
        try:
            arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        except (ValueError, OverflowError, TypeError) as e:
            raise E.ProtocolError(f"{where}: not a numeric array ({e})") from e
        if arr.dtype.kind not in "biuf":
            raise E.ProtocolError(f"{where}: expected numbers, got an array of dtype {arr.dtype}")
        if arr.shape != space.shape:
            raise E.ProtocolError(f"{where}: shape {list(arr.shape)}, the declared space has shape "
                                  f"{list(space.shape or ())}")
        return arr
    return value


def _obs(msg: dict[str, Any], space: spaces.Space, kind: str) -> Any:
    if "obs" not in msg:
        raise E.ProtocolError(f"{kind}.obs: missing")
    return conform(space, msg["obs"], f"{kind}.obs")


def parse_reset_result(msg: dict[str, Any], space: spaces.Space) -> ResetReply:
    """Check a ``reset_result`` against the declared observation space."""
    P.expect(msg, "reset_result")
    return ResetReply(_obs(msg, space, "reset_result"), _info(msg, "reset_result"))


def parse_step_result(msg: dict[str, Any], space: spaces.Space) -> StepReply:
    """Check a ``step_result`` against the declared observation space; the reward must be a JSON number."""
    P.expect(msg, "step_result")
    obs = _obs(msg, space, "step_result")
    if "reward" not in msg:
        raise E.ProtocolError("step_result.reward: missing")
    raw = msg["reward"]
    if isinstance(raw, np.ndarray) and raw.shape == () and raw.dtype.kind in "iuf":
        raw = raw.item()
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise E.ProtocolError(f"step_result.reward: expected a number, got {type(raw).__name__}")
    try:
        reward = float(raw)
    except OverflowError as e:
        raise E.ProtocolError("step_result.reward: an integer too large for a float") from e
    if isinstance(raw, int) and math.isinf(reward):
        raise E.ProtocolError("step_result.reward: an integer too large for a float")
    return StepReply(obs, reward, _bool(msg, "terminated", "step_result"),
                     _bool(msg, "truncated", "step_result"), _info(msg, "step_result"))


def parse_render_result(msg: dict[str, Any]) -> RenderReply:
    """Check a ``render_result``: a uint8 array of shape [H, W, 3]."""
    P.expect(msg, "render_result")
    frame = msg.get("frame")
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        got = f"{frame.dtype} {list(frame.shape)}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise E.ProtocolError(f"render_result.frame: expected a uint8 array of shape [H, W, 3], got {got}")
    return RenderReply(frame)
