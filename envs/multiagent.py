"""PettingZoo parallel envs: how one is recognised, built and checked, and :class:`TeamEnv`, all its agents as
one Gymnasium env.

An ``--env`` of the form ``module:attr`` is a PettingZoo parallel env when ``attr`` is a ``ParallelEnv``
subclass, a function made by PettingZoo's ``parallel_wrapper_fn`` (every ``parallel_env`` of ``mpe2``,
``pettingzoo.butterfly``, ``pettingzoo.sisl``, ...), or a function annotated to return a ``ParallelEnv``
(:func:`is_parallel_source`). Its agents must share one observation and one action space
(:func:`shared_spaces`): they share one policy. Training steps ``train.num_envs`` copies of it as one vector
env (:class:`~envs.vector.pettingzoo.PettingZooVectorEnv`); evaluation plays all agents of one copy with
that policy (:class:`TeamEnv`).
"""

from __future__ import annotations

import importlib
import inspect
import sys
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import batch_space, iterate

from envs.errors import UserError
from envs.repair import placeholder
from envs.vector.base import stack

__all__ = ["TeamEnv", "is_parallel_source", "make_parallel", "shared_spaces"]


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
                "given as --env), or pick an env whose agents share them (a policies: map for several "
                "policies is not there yet)")
    return obs, act


class TeamEnv(gym.Env):
    """One PettingZoo parallel env as a Gymnasium env whose observation is every agent's, stacked, and whose
    action is one per agent: what evaluation plays with the shared policy.

    The agents are ``possible_agents`` in order; an agent not (or no longer) in the episode sees zeros (the
    space's placeholder) and its action is ignored. The reward is the mean of the agents' rewards, so an
    episode's return is the mean return of the team's agents (the figure training's ``rollout/ep_rew_mean``
    reports per agent). The episode ends when no agent is left, or after ``max_episode_steps`` steps.

    Args:
        entry_point: ``module:attr`` building the parallel env.
        kwargs: its keyword arguments (``render_mode`` included).
        max_episode_steps: truncate after this many steps (None: the env's own end).
        name: the ``--env`` given, for messages.

    Raises:
        UserError: the agents do not share their spaces.
    """

    def __init__(self, entry_point: str, kwargs: dict[str, Any], max_episode_steps: int | None = None,
                 name: str = "") -> None:
        self.env = make_parallel(entry_point, kwargs)
        self.agents = list(self.env.possible_agents)
        try:
            self.single_observation_space, self.single_action_space = shared_spaces(self.env, name or
                                                                                     entry_point)
        except BaseException:
            self.env.close()
            raise
        self.observation_space = batch_space(self.single_observation_space, len(self.agents))
        self.action_space = batch_space(self.single_action_space, len(self.agents))
        self.metadata = dict(getattr(self.env, "metadata", {}) or {})
        self.render_mode = getattr(self.env, "render_mode", None)
        self.max_episode_steps = max_episode_steps
        self._steps = 0
        self._closed = False

    def _stack(self, obs: dict[str, Any]) -> Any:
        space = self.single_observation_space
        return stack(space, [obs[a] if a in obs else placeholder(space) for a in self.agents])

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Start an episode; every agent's observation, stacked."""
        super().reset(seed=seed)
        obs, infos = self.env.reset(seed=seed, options=options)
        self._steps = 0
        return self._stack(obs), {"agents": infos}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Every agent in the episode acts; the mean reward over all agents."""
        acts = list(iterate(self.action_space, action))
        live = list(self.env.agents)
        obs, rewards, terms, truncs, infos = self.env.step({a: acts[self.agents.index(a)] for a in live})
        self._steps += 1
        reward = float(np.sum([float(rewards.get(a, 0.0)) for a in live])) / len(self.agents)
        over = not self.env.agents
        terminated = over and all(bool(terms.get(a, False)) for a in live)
        truncated = (over and not terminated) or (not over and self.max_episode_steps is not None
                                                   and self._steps >= self.max_episode_steps)
        return self._stack(obs), reward, terminated, truncated, {"agents": infos}

    def render(self) -> Any:
        """The parallel env's frame."""
        return self.env.render()

    def close(self) -> None:
        """Close the parallel env (idempotent)."""
        if not self._closed:
            self._closed = True
            self.env.close()
