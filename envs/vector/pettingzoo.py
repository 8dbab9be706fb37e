"""PettingZoo parallel envs as one Gymnasium vector env: each agent of each copy is one env slot.

:class:`PettingZooVectorEnv` holds C copies of a parallel env whose N agents (``possible_agents``, in order)
share one observation and one action space (:func:`envs.multiagent.shared_spaces`); slot ``c * N + k`` is
agent k of copy c, so ``num_envs = C × N``, and one vector step steps every copy once with its agents'
actions, as the K-instance bridge steps its programs (parameter sharing: one policy acts for every slot).

Agents that finish early, as PettingZoo defines them: an agent whose step reports ``terminated`` or
``truncated`` ends its slot's episode at that step (its last observation is ``final_obs``, so its return and
length are its own). Its slot then idles until the copy's episode ends (no agent left, or
``max_episode_steps``): observation zeros (the space's placeholder), reward 0, neither terminated nor
truncated, ``info["nondiff_idle"] = True``, its actions ignored. An agent that is in ``possible_agents`` but
not in the episode yet idles the same way until it appears. When the copy's episode ends, the copy is reset
in the same step and every slot starts its next episode (same-step auto-reset); an idle slot does so without
an end of its own, so its idle steps count in its next episode's length (not its return).

``options["reset_mask"]`` (the Guard cutting a slot short) benches the slots it names: each idles as an agent
that finished early, its agent still in the copy's episode acting with the action space's placeholder (0,
zeros), until the copy's episode ends. A copy whose every live slot is named is reset instead (a parallel env
cannot reset one agent; this way no other slot's episode changes under it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from gymnasium.vector.utils import iterate

from envs.multiagent import shared_spaces
from envs.repair import placeholder
from envs.vector.base import Indices, Transition, VectorEnvBase, add_info, stack

IDLE_KEY = "nondiff_idle"
"""Info key of a slot whose agent is not in its copy's episode (finished early, or not yet there)."""


class PettingZooVectorEnv(VectorEnvBase):
    """C copies of a PettingZoo parallel env, one vector env slot per agent (see the module docstring).

    Args:
        env_fns: one zero-argument constructor per copy, each returning a ``ParallelEnv``.
        max_episode_steps: truncate every agent of a copy after this many steps (None: the env's own end).
        name: the ``--env`` given, for messages.

    Raises:
        UserError: the agents do not share one observation and one action space.
    """

    def __init__(self, env_fns: Sequence[Callable[[], Any]], max_episode_steps: int | None = None,
                 name: str = "") -> None:
        self.envs: list[Any] = []
        try:
            for fn in env_fns:
                self.envs.append(fn())
            first = self.envs[0]
            obs_space, act_space = shared_spaces(first, name or type(first).__name__)
        except BaseException:
            for env in self.envs:
                env.close()
            raise
        self.agents: list[str] = list(first.possible_agents)
        self.n = len(self.agents)
        super().__init__(len(self.envs) * self.n, obs_space, act_space)
        self.render_mode = getattr(first, "render_mode", None)
        self.max_episode_steps = max_episode_steps
        self._blank = placeholder(obs_space)
        self._noop = placeholder(act_space)
        """The action of a benched slot's agent."""
        self._cur: list[Any] = [self._blank for _ in range(self.num_envs)]
        """Each slot's latest observation."""
        self._live = np.zeros(self.num_envs, dtype=bool)
        """Slots whose agent is in its copy's episode."""
        self._steps = np.zeros(len(self.envs), dtype=np.int64)

    def _start(self, c: int, obs: dict[str, Any]) -> None:
        """Copy c's episode started with ``obs``: each slot's observation and whether it is live."""
        live = set(self.envs[c].agents)
        for k, agent in enumerate(self.agents):
            i = c * self.n + k
            self._live[i] = agent in live
            self._cur[i] = obs[agent] if agent in obs and agent in live else self._blank
        self._steps[c] = 0

    def reset(self, *, seed: int | Sequence[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset every copy (copy c with the seed of its first slot: ``seed + c * N`` for an int), or the
        copies of the slots in ``options["reset_mask"]``."""
        mask = (options or {}).get("reset_mask")
        seeds = self._seeds(seed)
        rest = {k: v for k, v in (options or {}).items() if k != "reset_mask"} or None
        infos: dict[str, Any] = {}
        for c, env in enumerate(self.envs):
            lo = c * self.n
            if mask is not None:
                named = np.asarray(mask[lo:lo + self.n], dtype=bool)
                if not named.any():
                    continue
                live = self._live[lo:lo + self.n]
                if (live & ~named).any():  # others play on: bench the named slots
                    for k in np.flatnonzero(named).tolist():
                        self._live[lo + k], self._cur[lo + k] = False, self._blank
                        infos = add_info(infos, {IDLE_KEY: True}, lo + k, self.num_envs)
                    continue
            obs, agent_infos = env.reset(seed=None if mask is not None else seeds[lo], options=rest)
            self._start(c, obs)
            for k, agent in enumerate(self.agents):
                infos = add_info(infos, dict(agent_infos.get(agent) or {}), lo + k, self.num_envs)
        return stack(self.single_observation_space, self._cur), infos

    def _step_copy(self, c: int, acts: list[Any]) -> list[Transition]:
        """Step copy c with its live agents' actions; reset it in the same step when its episode ended."""
        env, lo = self.envs[c], c * self.n
        before = list(env.agents)
        slot = {a: lo + self.agents.index(a) for a in before}
        obs, rewards, terms, truncs, infos = env.step(
            {a: acts[slot[a]] if self._live[slot[a]] else self._noop for a in before})
        self._steps[c] += 1
        limit = self.max_episode_steps is not None and self._steps[c] >= self.max_episode_steps
        left = set(env.agents)
        over = limit or not left
        out: list[Transition] = []
        for k, agent in enumerate(self.agents):
            i = lo + k
            if not self._live[i]:  # idle; an agent that appears now starts here
                appears = agent in left and agent not in before and agent in obs
                self._live[i] = appears
                self._cur[i] = obs[agent] if appears else self._blank
                info = dict(infos.get(agent) or {}) if appears else {IDLE_KEY: True}
                out.append((self._cur[i], 0.0, False, False, info, None))
                continue
            o, info = obs.get(agent, self._cur[i]), dict(infos.get(agent) or {})
            te = bool(terms.get(agent, False))
            tr = not te and (bool(truncs.get(agent, False)) or agent not in left or over)
            r = float(rewards.get(agent, 0.0))
            if te or tr:
                self._live[i], self._cur[i] = False, self._blank
                out.append((self._blank, r, te, tr, {IDLE_KEY: True}, (o, info)))
            else:
                self._cur[i] = o
                out.append((o, r, False, False, info, None))
        if over:
            fresh, fresh_infos = env.reset()
            self._start(c, fresh)
            for k, agent in enumerate(self.agents):
                o, r, te, tr, _, final = out[k]
                info = dict(fresh_infos.get(agent) or {})
                out[k] = (self._cur[lo + k], r, te, tr, info, final)
        return out

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every copy once; a copy whose episode ended is reset in the same step."""
        acts = list(iterate(self.action_space, actions))
        return self.collect([t for c in range(len(self.envs)) for t in self._step_copy(c, acts)])

    def call_at(self, indices: Indices, name: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Call method ``name`` of each slot's copy."""
        return [getattr(self.envs[i // self.n], name)(*args, **kwargs) for i in self._indices(indices)]

    def get_attr_at(self, indices: Indices, name: str) -> list[Any]:
        """Attribute ``name`` of each slot's copy."""
        return [getattr(self.envs[i // self.n], name) for i in self._indices(indices)]

    def set_attr_at(self, indices: Indices, name: str, value: Any) -> None:
        """Set attribute ``name`` on each slot's copy."""
        for i in self._indices(indices):
            setattr(self.envs[i // self.n], name, value)

    def is_wrapped_at(self, indices: Indices, wrapper_class: type) -> list[bool]:
        """No slot is a Gymnasium wrapper stack."""
        return [False for _ in self._indices(indices)]

    def render(self) -> tuple[Any, ...] | None:
        """Each slot's copy's frame (one render per copy)."""
        frames = [env.render() for env in self.envs]
        return tuple(frames[i // self.n] for i in range(self.num_envs))

    def close_extras(self, **kwargs: Any) -> None:
        """Close every copy."""
        for env in self.envs:
            env.close()
