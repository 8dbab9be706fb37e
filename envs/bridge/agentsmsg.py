"""Protocol 1.3's agents on the wire: a spec that declares a scene's agents in policy groups, the step request
that carries the live agents' actions, and the checked replies (docs/protocol.md, "Agents (1.3)").

A program whose ``challenge`` says 1.3 or later may declare, instead of one pair of spaces, ``groups`` (each
with its own observation and action space) and ``agents`` (each an id and a group). Its connection then
hosts one scene: ``reset`` starts every agent's episode, ``step`` names the live agents, and each reply
names the agents it covers, with each group's observations stacked. Every violation raises
:class:`~envs.errors.ProtocolError` (a reply) or :class:`~envs.errors.SpecError` (the spec): an unknown
agent id, an agent that had finished, a group's array of the wrong shape, a list of the wrong length.
Values (dtype, bounds, NaN) are the Guard's checks, applied by the vector env per agent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from envs import errors as E
from envs.bridge import protocol as P
from envs.bridge.batchmsg import conform_batch, infos_field, stack_actions, unstack, vector_field
from envs.bridge.messages import AgentDecl, SpecReply, render_fps, wire_bytes
from envs.spaces import MAX_SPACE_ELEMENTS, space_from_json

__all__ = ["AGENTS_MINOR", "PARALLEL_ENV", "SceneReply", "parse_agents_spec", "parse_scene_reset",
           "parse_scene_step", "step_request"]

AGENTS_MINOR = 3
"""The protocol MINOR from which a program may declare agents."""
MAX_GROUPS = 64
"""The most policy groups one program may declare."""
NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
"""What an agent id and a group name look like: 1 to 64 letters, digits, ``_ . : -``."""
PARALLEL_ENV = "envs.bridge.parallel:BridgeParallelEnv"
"""The ``--env`` that trains a program which declares agents."""
_ACTION_TYPES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


@dataclass(frozen=True)
class SceneReply:
    """A checked ``reset_result`` or ``step_result`` of a scene, for the agents it covers, in order.

    Attributes:
        agents: the agents the reply covers (a reset: every declared agent; a step: the ones it acted for).
        obs: each agent's observation, by id (a step's finished agents: their last one).
        infos: each agent's info, by id (``nondiff_`` keys dropped).
        rewards: float64, one per agent (None for a reset).
        terminated: bool, one per agent (None for a reset).
        truncated: bool, one per agent (None for a reset).
    """

    agents: tuple[str, ...]
    obs: dict[str, Any]
    infos: dict[str, dict[str, Any]]
    rewards: np.ndarray | None = None
    terminated: np.ndarray | None = None
    truncated: np.ndarray | None = None


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise E.SpecError(f"{where}: expected 1 to 64 letters, digits or _ . : -, got {str(value)[:70]!r}")
    return value


def parse_agents_spec(msg: dict[str, Any], max_elements: int = MAX_SPACE_ELEMENTS,
                      max_message: int | None = None) -> SpecReply:
    """Check a ``spec`` that declares agents; every size is bounded before anything is allocated.

    ``max_elements`` caps each group's agents × the elements of its spaces; ``max_message`` (None: not
    checked) the smallest ``step_result`` and ``step`` of the whole scene.

    Raises:
        SpecError: naming the first bad field, or the size over its limit and how to fix it.
    """
    P.expect(msg, "spec")
    for key in ("num_instances", "observation_space", "action_space"):
        if key in msg:
            raise E.SpecError(f"spec.{key}: a spec that declares agents gives each group's spaces in "
                              "spec.groups and hosts one scene per connection; drop spec."
                              f"{key} (docs/protocol.md, Agents)")
    groups, agents = msg.get("groups"), msg.get("agents")
    if not isinstance(groups, dict) or not 1 <= len(groups) <= MAX_GROUPS:
        got = f"{len(groups)} groups" if isinstance(groups, dict) else type(groups).__name__
        raise E.SpecError(f"spec.groups: expected an object of 1 to {MAX_GROUPS} policy groups, got {got}")
    if not isinstance(agents, list) or not 1 <= len(agents) <= P.MAX_INSTANCES:
        got = f"{len(agents)} agents" if isinstance(agents, list) else type(agents).__name__
        raise E.SpecError(f"spec.agents: expected a list of 1 to {P.MAX_INSTANCES} agents, got {got}")
    decls: list[AgentDecl] = []
    seen: set[str] = set()
    for i, a in enumerate(agents):
        if not isinstance(a, dict):
            raise E.SpecError(f"spec.agents[{i}]: expected an object {{\"id\": ..., \"group\": ...}}")
        aid = _name(a.get("id"), f"spec.agents[{i}].id")
        group = _name(a.get("group"), f"spec.agents[{i}].group")
        if aid in seen:
            raise E.SpecError(f"spec.agents[{i}].id: {aid!r} is declared twice; agent ids are unique")
        if group not in groups:
            raise E.SpecError(f"spec.agents[{i}].group: {group!r} is not in spec.groups "
                              f"({sorted(groups)[:10]})")
        seen.add(aid)
        decls.append(AgentDecl(aid, group))
    obs: dict[str, spaces.Space] = {}
    act: dict[str, spaces.Space] = {}
    for group, g in groups.items():
        where = f"spec.groups.{_name(group, 'spec.groups')}"
        count = sum(d.group == group for d in decls)
        if count == 0:
            raise E.SpecError(f"{where}: no agent is in this group; drop it or put an agent in it")
        if not isinstance(g, dict):
            raise E.SpecError(f"{where}: expected an object with observation_space and action_space")
        obs[group] = space_from_json(g.get("observation_space"), max_elements,
                                     where=f"{where}.observation_space", instances=count)
        act[group] = space_from_json(g.get("action_space"), max_elements, where=f"{where}.action_space",
                                     instances=count)
        if not isinstance(act[group], _ACTION_TYPES):
            raise E.SpecError(f"{where}.action_space: a group's actions travel stacked, so it needs a Box, "
                              "Discrete, MultiDiscrete or MultiBinary space, got "
                              f"{type(act[group]).__name__}")
    if max_message is not None:
        _check_size(decls, obs, act, max_message)
    return SpecReply(str(msg.get("env", ""))[:200], str(msg.get("version", ""))[:20], spaces.Dict(obs),
                     spaces.Dict(act), {"render_fps": render_fps(msg)}, 1, False, tuple(decls))


def _check_size(decls: list[AgentDecl], obs: dict[str, spaces.Space], act: dict[str, spaces.Space],
                max_message: int) -> None:
    """Refuse a scene whose smallest ``step_result`` (every agent's observation, a float64 reward and two
    flags) or ``step`` (every agent's action) is over ``max_message`` bytes."""
    reply = sum(wire_bytes(obs[d.group]) + 10 for d in decls)
    request = sum(wire_bytes(act[d.group]) for d in decls)
    for what, size in (("step_result", reply), ("step request", request)):
        if size > max_message:
            raise E.SpecError(f"spec: every {what} of this scene would carry at least {size:,} bytes for "
                              f"its {len(decls):,} agents, over the {max_message:,}-byte limit "
                              "(env.max_message); declare fewer agents or smaller spaces, or raise "
                              "env.max_message")


def _by_group(spec: SpecReply, ids: Sequence[str]) -> dict[str, list[str]]:
    """``ids`` split by group, each in the order of ``ids``; groups in order of first appearance."""
    group = {d.id: d.group for d in spec.agents}
    out: dict[str, list[str]] = {}
    for a in ids:
        out.setdefault(group[a], []).append(a)
    return out


def step_request(spec: SpecReply, actions: dict[str, Any]) -> dict[str, Any]:
    """The ``step`` of the agents in ``actions`` (ids, in declaration order): their ids, and each group's
    actions stacked in that order."""
    ids = [d.id for d in spec.agents if d.id in actions]
    act = spec.action_space
    assert isinstance(act, spaces.Dict)
    stacked = {g: stack_actions(act[g], [actions[a] for a in mine])
               for g, mine in _by_group(spec, ids).items()}
    return {"type": "step", "agents": ids, "actions": stacked}


def _agents(msg: dict[str, Any], spec: SpecReply, expected: Sequence[str], kind: str) -> tuple[str, ...]:
    got = msg.get("agents")
    if not isinstance(got, list) or not all(isinstance(a, str) for a in got):
        raise E.ProtocolError(f"{kind}.agents: expected the list of agent ids the reply covers, got "
                              f"{type(got).__name__}")
    known = {d.id for d in spec.agents}
    unknown = next((a for a in got if a not in known), None)
    if unknown is not None:
        raise E.ProtocolError(f"{kind}.agents: {unknown[:64]!r} is not an agent this program declared")
    if got != list(expected):
        extra = next((a for a in got if a not in expected), None)
        if extra is not None:
            raise E.ProtocolError(f"{kind}.agents: {extra!r} is not in this episode any more (it finished at "
                                  "an earlier step); a reply covers exactly the agents the request named")
        raise E.ProtocolError(f"{kind}.agents: {got[:8]}{'…' if len(got) > 8 else ''}, expected "
                              f"{list(expected)[:8]}{'…' if len(expected) > 8 else ''} in that order")
    return tuple(got)


def _obs(msg: dict[str, Any], spec: SpecReply, ids: Sequence[str], kind: str) -> dict[str, Any]:
    """Each agent's observation from the reply's ``obs``: an object of its groups' stacked arrays."""
    where, split = f"{kind}.obs", _by_group(spec, ids)
    value = msg.get("obs")
    if not isinstance(value, dict) or set(value) != set(split):
        got = sorted(value)[:10] if isinstance(value, dict) else type(value).__name__
        raise E.ProtocolError(f"{where}: expected an object with one stacked entry per group of the agents "
                              f"the reply covers, keys {sorted(split)}, got {got}")
    space = spec.observation_space
    assert isinstance(space, spaces.Dict)
    out: dict[str, Any] = {}
    for g, mine in split.items():
        stacked = conform_batch(space[g], value[g], len(mine), f"{where}[{g!r}]")
        for j, a in enumerate(mine):
            out[a] = unstack(space[g], stacked, j)
    return out


def parse_scene_reset(msg: dict[str, Any], spec: SpecReply) -> SceneReply:
    """Check a scene's ``reset_result``: every declared agent, in declaration order."""
    P.expect(msg, "reset_result")
    ids = _agents(msg, spec, [d.id for d in spec.agents], "reset_result")
    infos = infos_field(msg, len(ids), "reset_result")
    return SceneReply(ids, _obs(msg, spec, ids, "reset_result"), dict(zip(ids, infos)))


def parse_scene_step(msg: dict[str, Any], spec: SpecReply, asked: Sequence[str]) -> SceneReply:
    """Check a scene's ``step_result`` for the agents the step named (``asked``, in that order)."""
    P.expect(msg, "step_result")
    ids = _agents(msg, spec, asked, "step_result")
    n = len(ids)
    obs = _obs(msg, spec, ids, "step_result")
    rewards = vector_field(msg, "rewards", n, "step_result", False)
    terminated = vector_field(msg, "terminated", n, "step_result", True)
    truncated = vector_field(msg, "truncated", n, "step_result", True)
    return SceneReply(ids, obs, dict(zip(ids, infos_field(msg, n, "step_result"))), rewards, terminated,
                      truncated)
