"""Python SDK, protocol 1.3: serve a scene whose agents are in policy groups (docs/protocol.md, "Agents").

:func:`envs.bridge.sdk.serve` serves a scene over every transport (pipes, TCP, connect mode) when the env it
is given has ``agent_groups``; this module is its scene half (NumPy alone, like the SDK). A scene has::

    agent_groups: dict[str, str]            # agent id -> policy group, in the order the agents are declared
    group_spaces: dict[str, tuple[Space, Space]]   # group -> (observation space, action space)
    reset(seed=None, options=None) -> (obs, infos)              # every agent's, by agent id
    step(actions) -> (obs, rewards, terminated, truncated, infos)
        # actions: by agent id, the live agents only; each result by agent id, for exactly those agents
    render() -> uint8 array [H, W, 3]       # optional

Spaces are Gymnasium spaces or their JSON descriptions (dicts). An agent whose ``terminated`` or
``truncated`` is true has finished: the trainer sends no action for it until the next ``reset``. A scene whose
reply leaves out or adds an agent is answered with an ``error`` (the trainer restarts the program), never
sent half-checked.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.bridge import protocol as P
from envs.bridge.sdk_base import answer_requests, handshake, jsonable, stack
from envs.spaces import space_to_json

__all__ = ["is_scene", "scene_session", "scene_spec"]

AGENTS_VERSION = "1.3"
"""The protocol version a scene needs from the trainer."""


def is_scene(env: Any) -> bool:
    """Whether ``env`` is a scene of agents (protocol 1.3) rather than a single-agent env."""
    return hasattr(env, "agent_groups") and hasattr(env, "group_spaces")


def scene_spec(scene: Any, name: str) -> dict[str, Any]:
    """The ``spec`` message of ``scene``: its groups' spaces and its agents, in order."""
    groups = {str(g): {"observation_space": space_to_json(obs), "action_space": space_to_json(act)}
              for g, (obs, act) in scene.group_spaces.items()}
    agents = [{"id": str(a), "group": str(g)} for a, g in scene.agent_groups.items()]
    return {"type": "spec", "env": name, "version": P.VERSION, "groups": groups, "agents": agents,
            "metadata": {"render_fps": getattr(scene, "metadata", {}).get("render_fps", 30)}}


def _by_group(scene: Any, ids: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for a in ids:
        out.setdefault(scene.agent_groups[a], []).append(a)
    return out


def _covered(result: dict[str, Any], ids: list[str], what: str) -> None:
    """A scene's result must be keyed by exactly the agents it was asked for."""
    if not isinstance(result, dict) or set(result) != set(ids):
        got = sorted(result)[:8] if isinstance(result, dict) else type(result).__name__
        raise ValueError(f"the scene's {what} must be keyed by exactly the agents {ids[:8]}, got {got}")


def _reply(scene: Any, kind: str, ids: list[str], obs: dict[str, Any],
           infos: dict[str, Any]) -> dict[str, Any]:
    _covered(obs, ids, "observations")
    infos = infos or {}
    return {"type": kind, "agents": ids,
            "obs": {g: stack([obs[a] for a in mine]) for g, mine in _by_group(scene, ids).items()},
            "infos": [jsonable(infos.get(a) or {}) for a in ids]}


def _serve_scene(chan: P.Channel, scene: Any, max_size: int, served: list[int]) -> None:
    """Answer a scene's requests until ``close`` or the end of the stream; counts them in ``served[0]``."""
    order = list(scene.agent_groups)
    live: list[str] = []

    def answer(kind: str, msg: dict[str, Any]) -> dict[str, Any]:
        nonlocal live
        if kind == "reset":
            obs, infos = scene.reset(seed=msg.get("seed"), options=msg.get("options") or None)
            live = list(order)
            return _reply(scene, "reset_result", live, obs, infos)
        ids = msg.get("agents")
        if not isinstance(ids, list) or any(a not in live for a in ids):
            raise ValueError(f"step.agents must name live agents of this episode ({live[:8]}), got "
                             f"{str(ids)[:120]}")
        acts = {g: msg["actions"][g] for g in _by_group(scene, ids)}
        rows = {g: 0 for g in acts}
        given = {}
        for a in ids:
            g = scene.agent_groups[a]
            given[a], rows[g] = acts[g][rows[g]], rows[g] + 1
        obs, rewards, terms, truncs, infos = scene.step(given)
        for part, what in ((rewards, "rewards"), (terms, "terminated"), (truncs, "truncated")):
            _covered(part, ids, what)
        reply = _reply(scene, "step_result", ids, obs, infos)
        reply["rewards"] = np.array([float(rewards[a]) for a in ids])
        reply["terminated"] = np.array([bool(terms[a]) for a in ids])
        reply["truncated"] = np.array([bool(truncs[a]) for a in ids])
        live = [a for a in live if a not in ids or not (terms[a] or truncs[a])]
        return reply

    answer_requests(chan, max_size, served, answer, lambda: scene.render())


def scene_session(chan: P.Channel, scene: Any, name: str, token: str, timeout: float, max_size: int,
                  served: list[int]) -> None:
    """One connection of a scene: the handshake (refusing a trainer older than 1.3), then its requests."""
    handshake(chan, scene, name, token, timeout, spec=scene_spec(scene, name))
    _serve_scene(chan, scene, max_size, served)
