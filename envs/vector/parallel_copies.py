"""C copies of a PettingZoo parallel env as slots, one per agent of each copy: what the PettingZoo vector envs
(envs/vector/pettingzoo.py, envs/vector/pettingzoo_groups.py) step.

Slot ``c * N + k`` is agent k (of ``possible_agents``, in order) of copy c. :meth:`ParallelCopies.step` steps
every copy once with its live agents' actions and returns one :class:`~envs.vector.base.Transition` per slot;
:meth:`ParallelCopies.reset` resets copies, or benches slots. Each agent keeps its own spaces here (its idle
observation is its own space's placeholder), so slots of different spaces can sit side by side; a vector env
above batches the slots that share a space.

Agents that finish early, as PettingZoo defines them: an agent whose step reports ``terminated`` or
``truncated`` ends its slot's episode at that step (its last observation is the transition's final one, so
its return and length are its own). Its slot then idles until the copy's episode ends (no agent left, or
``max_episode_steps``): observation zeros (the space's placeholder), reward 0, neither terminated nor
truncated, ``info["nondiff_idle"] = True``, its actions ignored. An agent that is in ``possible_agents`` but
not in the episode yet idles the same way until it appears. When the copy's episode ends, the copy is reset
in the same step and every slot starts its next episode (same-step auto-reset); an idle slot does so without
an end of its own, so its idle steps count in its next episode's length (not its return).

A benched slot (the Guard cutting it short) idles as an agent that finished early, its agent still in the
copy's episode acting with the action space's placeholder (0, zeros), until the copy's episode ends.

:meth:`ParallelCopies.fresh_states` and :meth:`~ParallelCopies.set_fresh_states` carry the copies across a
checkpoint taken where every copy has just started an episode (JSON: the seed of that reset, or the state of
the env's NumPy generator ``np_random`` before it), so that a resume replays the same episodes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from envs.repair import placeholder
from envs.vector.base import Transition

IDLE_KEY = "nondiff_idle"
"""Info key of a slot whose agent is not in its copy's episode (finished early, or not yet there)."""


class ParallelCopies:
    """C copies of a parallel env, one slot per agent of each copy (see the module docstring).

    Args:
        env_fns: one zero-argument constructor per copy, each returning a ``ParallelEnv``.
        max_episode_steps: truncate every agent of a copy after this many steps (None: the env's own end).
    """

    def __init__(self, env_fns: Sequence[Callable[[], Any]], max_episode_steps: int | None = None) -> None:
        self.envs: list[Any] = []
        try:
            for fn in env_fns:
                self.envs.append(fn())
        except BaseException:
            self.close()
            raise
        first = self.envs[0]
        self.agents: list[str] = list(first.possible_agents)
        self.n = len(self.agents)
        self.num_slots = len(self.envs) * self.n
        self.render_mode = getattr(first, "render_mode", None)
        self.max_episode_steps = max_episode_steps
        self.blank = [placeholder(first.observation_space(a)) for a in self.agents]
        """Each agent's idle observation."""
        self.noop = [placeholder(first.action_space(a)) for a in self.agents]
        """The action of each agent while its slot is benched."""
        self.cur: list[Any] = [self.blank[i % self.n] for i in range(self.num_slots)]
        """Each slot's latest observation."""
        self.live = np.zeros(self.num_slots, dtype=bool)
        """Slots whose agent is in its copy's episode."""
        self.steps = np.zeros(len(self.envs), dtype=np.int64)
        self._origin: list[dict[str, Any] | None] = [None for _ in self.envs]
        """How each copy's episode started: the reset's seed, or the generator state before it."""
        self._closed = False

    def _start(self, c: int, obs: dict[str, Any]) -> None:
        """Copy c's episode started with ``obs``: each slot's observation and whether it is live."""
        live = set(self.envs[c].agents)
        for k, agent in enumerate(self.agents):
            i = c * self.n + k
            self.live[i] = agent in live
            self.cur[i] = obs[agent] if agent in obs and agent in live else self.blank[k]
        self.steps[c] = 0

    def reset_copy(self, c: int, seed: int | None = None,
                   options: dict[str, Any] | None = None) -> dict[int, dict[str, Any]]:
        """Reset copy c; each of its slots' reset info, by slot."""
        env = self.envs[c]
        self._origin[c] = {"seed": seed} if seed is not None else _generator_state(env)
        obs, agent_infos = env.reset(seed=seed, options=options)
        self._start(c, obs)
        return {c * self.n + k: dict(agent_infos.get(a) or {}) for k, a in enumerate(self.agents)}

    def bench(self, slots: Sequence[int]) -> None:
        """Slots that idle until their copy's episode ends (the Guard cut them short)."""
        for i in slots:
            self.live[i], self.cur[i] = False, self.blank[i % self.n]

    def step(self, acts: Sequence[Any]) -> list[Transition]:
        """Step every copy once with ``acts`` (one action per slot; an idle slot's is ignored): each slot's
        transition, in slot order."""
        return [t for c in range(len(self.envs)) for t in self._step_copy(c, acts)]

    def _step_copy(self, c: int, acts: Sequence[Any]) -> list[Transition]:
        """Step copy c with its live agents' actions; reset it in the same step when its episode ended."""
        env, lo = self.envs[c], c * self.n
        before = list(env.agents)
        slot = {a: lo + self.agents.index(a) for a in before}
        obs, rewards, terms, truncs, infos = env.step(
            {a: acts[slot[a]] if self.live[slot[a]] else self.noop[slot[a] - lo] for a in before})
        self.steps[c] += 1
        limit = self.max_episode_steps is not None and self.steps[c] >= self.max_episode_steps
        left = set(env.agents)
        over = limit or not left
        out: list[Transition] = []
        for k, agent in enumerate(self.agents):
            i = lo + k
            if not self.live[i]:  # idle; an agent that appears now starts here
                appears = agent in left and agent not in before and agent in obs
                self.live[i] = appears
                self.cur[i] = obs[agent] if appears else self.blank[k]
                info = dict(infos.get(agent) or {}) if appears else {IDLE_KEY: True}
                out.append((self.cur[i], 0.0, False, False, info, None))
                continue
            o, info = obs.get(agent, self.cur[i]), dict(infos.get(agent) or {})
            te = bool(terms.get(agent, False))
            tr = not te and (bool(truncs.get(agent, False)) or agent not in left or over)
            r = float(rewards.get(agent, 0.0))
            if te or tr:
                self.live[i], self.cur[i] = False, self.blank[k]
                out.append((self.blank[k], r, te, tr, {IDLE_KEY: True}, (o, info)))
            else:
                self.cur[i] = o
                out.append((o, r, False, False, info, None))
        if over:
            fresh = self.reset_copy(c)
            for k in range(self.n):
                o, r, te, tr, _, final = out[k]
                out[k] = (self.cur[lo + k], r, te, tr, fresh[lo + k], final)
        return out

    def fresh_states(self) -> list[dict[str, Any]] | None:
        """How each copy's current episode started (JSON), when every copy has just started one (no step
        since its reset) and each reset was seeded or its env keeps its randomness in a NumPy ``Generator``
        ``np_random``; else None."""
        if self.steps.any() or any(o is None for o in self._origin):
            return None
        return [dict(o) for o in self._origin if o is not None]

    def set_fresh_states(self, states: list[dict[str, Any]]) -> bool:
        """Start every copy's episode again as :meth:`fresh_states` recorded it; False where they do not
        fit."""
        if len(states) != len(self.envs):
            return False
        for c, (env, state) in enumerate(zip(self.envs, states)):
            if "seed" in state:
                self.reset_copy(c, int(state["seed"]))
                continue
            gen = getattr(env.unwrapped, "np_random", None)
            if not isinstance(gen, np.random.Generator) or "rng" not in state:
                return False
            gen.bit_generator.state = state["rng"]
            self.reset_copy(c)
        return True

    def close(self) -> None:
        """Close every copy (idempotent)."""
        if not getattr(self, "_closed", False):
            self._closed = True
            for env in self.envs:
                env.close()


def _generator_state(env: Any) -> dict[str, Any] | None:
    """The state of a parallel env's NumPy generator (``np_random``), or None where it keeps none."""
    gen = getattr(getattr(env, "unwrapped", env), "np_random", None)
    if not isinstance(gen, np.random.Generator):
        return None
    return {"rng": copy.deepcopy(gen.bit_generator.state)}
