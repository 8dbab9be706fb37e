"""PettingZoo parallel envs as one Gymnasium vector env: each agent of each copy is one env slot.

:class:`PettingZooVectorEnv` holds C copies of a parallel env whose N agents (``possible_agents``, in order)
share one observation and one action space (:func:`envs.multiagent.shared_spaces`); slot ``c * N + k`` is
agent k of copy c, so ``num_envs = C × N``, and one vector step steps every copy once with its agents'
actions, as the K-instance bridge steps its programs (parameter sharing: one policy acts for every slot).
The copies and their agents' lifecycle (agents that finish early idle, agents that appear later join,
same-step auto-reset) are :class:`~envs.vector.parallel_copies.ParallelCopies`'.

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

from envs.batching import stack
from envs.multiagent import shared_spaces
from envs.vector.base import Indices, VectorEnvBase, add_info
from envs.vector.parallel_copies import IDLE_KEY, ParallelCopies

__all__ = ["IDLE_KEY", "PettingZooVectorEnv"]


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
        self.copies = ParallelCopies(env_fns, max_episode_steps)
        try:
            first = self.copies.envs[0]
            obs_space, act_space = shared_spaces(first, name or type(first).__name__)
        except BaseException:
            self.copies.close()
            raise
        self.envs, self.agents, self.n = self.copies.envs, self.copies.agents, self.copies.n
        super().__init__(self.copies.num_slots, obs_space, act_space)
        self.render_mode = self.copies.render_mode
        self.max_episode_steps = max_episode_steps

    def reset(self, *, seed: int | Sequence[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset every copy (copy c with the seed of its first slot: ``seed + c * N`` for an int), or the
        copies of the slots in ``options["reset_mask"]``."""
        mask = (options or {}).get("reset_mask")
        seeds = self._seeds(seed)
        rest = {k: v for k, v in (options or {}).items() if k != "reset_mask"} or None
        infos: dict[str, Any] = {}
        for c in range(len(self.envs)):
            lo = c * self.n
            if mask is not None:
                named = np.asarray(mask[lo:lo + self.n], dtype=bool)
                if not named.any():
                    continue
                live = self.copies.live[lo:lo + self.n]
                if (live & ~named).any():  # others play on: bench the named slots
                    benched = (lo + np.flatnonzero(named)).tolist()
                    self.copies.bench(benched)
                    for i in benched:
                        infos = add_info(infos, {IDLE_KEY: True}, i, self.num_envs)
                    continue
            for i, info in self.copies.reset_copy(c, None if mask is not None else seeds[lo], rest).items():
                infos = add_info(infos, info, i, self.num_envs)
        return stack(self.single_observation_space, self.copies.cur), infos

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every copy once; a copy whose episode ended is reset in the same step."""
        return self.collect(self.copies.step(list(iterate(self.action_space, actions))))

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
        self.copies.close()
