"""PettingZoo parallel envs: how one is recognised, built and checked, and :class:`TeamEnv`, all its agents as
one Gymnasium env.

An ``--env`` of the form ``module:attr`` is a PettingZoo parallel env when ``attr`` is a ``ParallelEnv``
subclass, a function made by PettingZoo's ``parallel_wrapper_fn`` (every ``parallel_env`` of ``mpe2``,
``pettingzoo.butterfly``, ``pettingzoo.sisl``, ...), or a function annotated to return a ``ParallelEnv``
(:func:`is_parallel_source`). Its agents must share one observation and one action space
(:func:`shared_spaces`): they share one policy. Training steps ``train.num_envs`` copies of it as one vector
env (:class:`~envs.vector.pettingzoo.PettingZooVectorEnv`); evaluation plays all agents of one copy with
that policy (:class:`TeamEnv`).

With a policy map (``policies:``, agent-id patterns per policy), :func:`group_agents` splits the agents into
:class:`AgentGroup` s, each agent in the first policy whose pattern matches it; only the agents of one group
must share their spaces. Training steps each group as a vector env of its own
(:class:`~envs.vector.pettingzoo_groups.PettingZooGroups`), and :class:`TeamEnv` gives evaluation every
group's observations under its policy's name.
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import batch_space, iterate

from envs.batching import stack
from envs.errors import UserError
from envs.repair import placeholder

__all__ = ["AgentGroup", "TeamEnv", "group_agents", "is_parallel_source", "make_parallel", "shared_spaces"]


def pettingzoo_class(target: Any, base: str) -> bool | None:
    """For an imported entry point: whether it is a subclass of PettingZoo's ``base`` class (``ParallelEnv``,
    ``AECEnv``); False without PettingZoo loaded or a target; None when it is no class (look further).

    PettingZoo is never imported here: an entry point that builds one has imported it already.
    """
    pz = sys.modules.get("pettingzoo")
    if pz is None or target is None:
        return False
    return issubclass(target, getattr(pz, base)) if isinstance(target, type) else None


def is_parallel_source(target: Any) -> bool:
    """Whether an imported entry point builds a PettingZoo ``ParallelEnv`` (see the module docstring)."""
    known = pettingzoo_class(target, "ParallelEnv")
    if known is not None:
        return known
    from pettingzoo.utils.conversions import parallel_wrapper_fn

    code = getattr(target, "__code__", None)
    if code is not None and code is getattr(parallel_wrapper_fn(lambda: None), "__code__", None):
        return True
    try:
        returns = inspect.signature(target, eval_str=True).return_annotation
    except Exception:  # no signature, or an annotation that does not evaluate
        return False
    return bool(pettingzoo_class(returns, "ParallelEnv"))


def make_parallel(entry_point: str, kwargs: dict[str, Any]) -> Any:
    """Import ``module:attr`` and call it with ``kwargs``: one PettingZoo parallel env (module-level, so a
    ``functools.partial`` of it pickles)."""
    module, _, attr = entry_point.partition(":")
    return getattr(importlib.import_module(module), attr)(**kwargs)


def shared_spaces(env: Any, name: str) -> tuple[gym.Space, gym.Space]:
    """The observation and action space every agent of ``env`` (``--env name``) shares.

    Raises:
        UserError: two agents differ (one policy cannot serve both yet).
    """
    agents = list(env.possible_agents)
    if not agents:
        raise UserError(f"env {name!r} declares no agents (possible_agents is empty)")
    first = agents[0]
    obs, act = env.observation_space(first), env.action_space(first)
    for agent in agents[1:]:
        o, a = env.observation_space(agent), env.action_space(agent)
        if o != obs or a != act:
            which = "observation" if o != obs else "action"
            mine, theirs = (obs, o) if o != obs else (act, a)
            raise UserError(
                f"env {name!r}: agents {first!r} and {agent!r} have different {which} spaces ({mine} and "
                f"{theirs}), and nondiff trains one policy shared by all agents; pad them to one space "
                "(supersuit's pad_observations_v0 and pad_action_space_v0 in a module:function of yours, "
                "given as --env), or give them policies of their own with a policies: map (README, "
                "Multi-agent)")
    return obs, act


@dataclass(frozen=True)
class AgentGroup:
    """The agents one policy acts for (in ``possible_agents`` order), and the spaces they share.

    Attributes:
        name: the policy's name (a key of ``policies:``).
        agents: its agents' ids.
        observation_space: the observation space every one of them has.
        action_space: the action space every one of them has.
    """

    name: str
    agents: tuple[str, ...]
    observation_space: gym.Space
    action_space: gym.Space


def group_agents(env: Any, patterns: Mapping[str, Sequence[str]], name: str) -> tuple[AgentGroup, ...]:
    """The agents of ``env`` (``--env name``) split by policy: each agent goes to the first policy of
    ``patterns`` (policy name -> fnmatch patterns over agent ids) that has a pattern matching it.

    Raises:
        UserError: an agent no pattern matches, a policy that gets no agent, or two agents of one policy
            whose observation or action spaces differ.
    """
    agents = list(env.possible_agents)
    if not agents:
        raise UserError(f"env {name!r} declares no agents (possible_agents is empty)")
    owner: dict[str, str] = {}
    for agent in agents:
        found = next((p for p, pats in patterns.items() if any(fnmatch.fnmatchcase(agent, x) for x in pats)),
                     None)
        if found is None:
            given = "; ".join(f"{p}: {list(pats)}" for p, pats in patterns.items())
            raise UserError(f"env {name!r}: agent {agent!r} matches no policy's agents patterns ({given}); "
                            f"add a pattern for it to a policy's agents, e.g. {agent!r}, or '*' to the last")
        owner[agent] = found
    groups = []
    for policy, pats in patterns.items():
        mine = [a for a in agents if owner[a] == policy]
        if not mine:
            raise UserError(f"env {name!r}: policy {policy!r} gets no agent (its patterns {list(pats)}; the "
                            f"agents are {agents}, each in the first policy that matches it); fix its "
                            "agents patterns or remove the policy")
        obs, act = env.observation_space(mine[0]), env.action_space(mine[0])
        for agent in mine[1:]:
            o, a = env.observation_space(agent), env.action_space(agent)
            if o != obs or a != act:
                which = "observation" if o != obs else "action"
                theirs = (obs, o) if o != obs else (act, a)
                raise UserError(f"env {name!r}: policy {policy!r} gets agents {mine[0]!r} and {agent!r}, "
                                f"whose {which} spaces differ ({theirs[0]} and {theirs[1]}); one policy "
                                f"needs one space: give {agent!r} a policy of its own (narrow "
                                f"policies.{policy}.agents)")
        groups.append(AgentGroup(policy, tuple(mine), obs, act))
    return tuple(groups)


class TeamEnv(gym.Env):
    """One PettingZoo parallel env as a Gymnasium env whose observation is every agent's, stacked, and whose
    action is one per agent: what evaluation plays with the shared policy.

    The agents are ``possible_agents`` in order; an agent not (or no longer) in the episode sees zeros (the
    space's placeholder) and its action is ignored. The reward is the mean of the agents' rewards, so an
    episode's return is the mean return of the team's agents (the figure training's ``rollout/ep_rew_mean``
    reports per agent). The episode ends when no agent is left, or after ``max_episode_steps`` steps.

    With ``patterns`` (a policy map, :func:`group_agents`) the observation and the action are Dicts keyed by
    policy, each holding its group's agents stacked; the last step's ``info["episode_metrics"]`` gives each
    policy's return as ``policy/<name>/return`` (the mean return of its agents).

    Args:
        entry_point: ``module:attr`` building the parallel env.
        kwargs: its keyword arguments (``render_mode`` included).
        max_episode_steps: truncate after this many steps (None: the env's own end).
        name: the ``--env`` given, for messages.
        patterns: policy name -> agent-id patterns (None: one policy for all agents).

    Raises:
        UserError: the agents do not share their spaces (without ``patterns``), or do not fit ``patterns``.
    """

    def __init__(self, entry_point: str, kwargs: dict[str, Any], max_episode_steps: int | None = None,
                 name: str = "", patterns: Mapping[str, Sequence[str]] | None = None) -> None:
        self.env = make_parallel(entry_point, kwargs)
        self.agents = list(self.env.possible_agents)
        self.groups: tuple[AgentGroup, ...]
        try:
            if patterns is None:
                obs, act = shared_spaces(self.env, name or entry_point)
                self.groups = (AgentGroup("", tuple(self.agents), obs, act),)
            else:
                self.groups = group_agents(self.env, patterns, name or entry_point)
        except BaseException:
            self.env.close()
            raise
        self.grouped = patterns is not None
        if self.grouped:
            self.single_observation_space: gym.Space = spaces.Dict(
                {g.name: g.observation_space for g in self.groups})
            self.single_action_space: gym.Space = spaces.Dict({g.name: g.action_space for g in self.groups})
            self.observation_space = spaces.Dict({g.name: batch_space(g.observation_space, len(g.agents))
                                                  for g in self.groups})
            self.action_space = spaces.Dict({g.name: batch_space(g.action_space, len(g.agents))
                                             for g in self.groups})
        else:
            self.single_observation_space = obs
            self.single_action_space = act
            self.observation_space = batch_space(obs, len(self.agents))
            self.action_space = batch_space(act, len(self.agents))
        self.metadata = dict(getattr(self.env, "metadata", {}) or {})
        self.render_mode = getattr(self.env, "render_mode", None)
        self.max_episode_steps = max_episode_steps
        self._steps = 0
        self._returns = {g.name: 0.0 for g in self.groups}
        self._closed = False

    def _stack(self, obs: dict[str, Any]) -> Any:
        out = {g.name: stack(g.observation_space, [obs[a] if a in obs else placeholder(g.observation_space)
                                                   for a in g.agents]) for g in self.groups}
        return out if self.grouped else out[""]

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Start an episode; every agent's observation, stacked."""
        super().reset(seed=seed)
        obs, infos = self.env.reset(seed=seed, options=options)
        self._steps = 0
        self._returns = {g.name: 0.0 for g in self.groups}
        return self._stack(obs), {"agents": infos}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Every agent in the episode acts; the mean reward over all agents."""
        given = action if self.grouped else {"": action}
        acts = {a: x for g in self.groups
                for a, x in zip(g.agents, iterate(batch_space(g.action_space, len(g.agents)), given[g.name]))}
        live = list(self.env.agents)
        obs, rewards, terms, truncs, infos = self.env.step({a: acts[a] for a in live})
        self._steps += 1
        reward = float(np.sum([float(rewards.get(a, 0.0)) for a in live])) / len(self.agents)
        for g in self.groups:
            self._returns[g.name] += sum(float(rewards.get(a, 0.0)) for a in g.agents) / len(g.agents)
        over = not self.env.agents
        terminated = over and all(bool(terms.get(a, False)) for a in live)
        truncated = (over and not terminated) or (not over and self.max_episode_steps is not None
                                                   and self._steps >= self.max_episode_steps)
        info: dict[str, Any] = {"agents": infos}
        if self.grouped and (terminated or truncated):
            info["episode_metrics"] = {f"policy/{k}/return": v for k, v in self._returns.items()}
        return self._stack(obs), reward, terminated, truncated, info

    def render(self) -> Any:
        """The parallel env's frame."""
        return self.env.render()

    def close(self) -> None:
        """Close the parallel env (idempotent)."""
        if not self._closed:
            self._closed = True
            self.env.close()
