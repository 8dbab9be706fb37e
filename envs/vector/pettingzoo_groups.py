"""PettingZoo parallel envs split by policy: each policy's agents, over every copy, as a vector env of their
own, all stepped in lock-step.

:class:`PettingZooGroups` holds C copies of a parallel env
(:class:`~envs.vector.parallel_copies.ParallelCopies`) and the agents split into groups
(:func:`envs.multiagent.group_agents`, a ``policies:`` map). Each group is a :class:`GroupView`: a Gymnasium
vector env whose slots are its agents in every copy (view slot ``c * G + m`` is the group's agent m of copy
c), with the spaces its agents share. Groups may differ in spaces.

One step of the copies needs every group's actions, so a step goes in two moves:
:meth:`PettingZooGroups.stage` each group's actions, then step each view (any wrappers above it included).
The first view stepped steps every copy once; each view returns its own slots' transitions, once. A reset
without a mask works the same way: the first view reset resets every copy, the others return their part of
it. ``options["reset_mask"]`` (the Guard cutting a slot short) benches the named slots until their copy's
episode ends (a copy is never reset under another group's agents).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium.vector.utils import iterate

from envs.batching import stack
from envs.multiagent import AgentGroup, group_agents
from envs.vector.base import Indices, Transition, VectorEnvBase, add_info
from envs.vector.parallel_copies import IDLE_KEY, ParallelCopies

__all__ = ["GroupView", "PettingZooGroups"]


class PettingZooGroups:
    """C copies of a parallel env whose agents are split by policy, one :class:`GroupView` per policy.

    Args:
        env_fns: one zero-argument constructor per copy, each returning a ``ParallelEnv``.
        patterns: policy name -> fnmatch patterns over agent ids (each agent goes to the first that matches).
        max_episode_steps: truncate every agent of a copy after this many steps (None: the env's own end).
        name: the ``--env`` given, for messages.

    Attributes:
        copies: the copies and their slots.
        groups: each policy's agents and spaces, in ``patterns`` order.
        views: each policy's vector env, by name.

    Raises:
        UserError: an agent no pattern matches, a policy without agents, or spaces that differ in a group.
    """

    def __init__(self, env_fns: Sequence[Callable[[], Any]], patterns: Mapping[str, Sequence[str]],
                 max_episode_steps: int | None = None, name: str = "") -> None:
        self.copies = ParallelCopies(env_fns, max_episode_steps)
        try:
            first = self.copies.envs[0]
            self.groups = group_agents(first, patterns, name or type(first).__name__)
        except BaseException:
            self.copies.close()
            raise
        index = {a: k for k, a in enumerate(self.copies.agents)}
        n, copies = self.copies.n, len(self.copies.envs)
        self.views = {g.name: GroupView(self, g, [c * n + index[a] for c in range(copies) for a in g.agents])
                      for g in self.groups}
        self._staged: dict[str, Any] = {}
        self._steps: dict[str, list[Transition]] = {}
        """Each view's part of the last step of the copies, until it takes it."""
        self._resets: dict[str, dict[int, dict[str, Any]]] = {}
        """Each view's part of the last reset of the copies (reset infos by slot), until it takes it."""
        self.closed = False

    def stage(self, name: str, actions: Any) -> None:
        """Group ``name``'s actions (a batch of its view's action space) for the next step of the copies."""
        self._staged[name] = actions

    def step_view(self, name: str, actions: Any) -> list[Transition]:
        """Group ``name``'s transitions of this step: the first view stepped steps every copy with the staged
        actions (``actions`` replacing its own), the others take their part.

        Raises:
            RuntimeError: a group's actions were not staged, or a view skipped its part of the last step.
        """
        if name in self._steps:
            return self._steps.pop(name)
        if self._steps:
            raise RuntimeError(f"policy group(s) {sorted(self._steps)} did not take their part of the last "
                               "step; step every view once per step")
        self._staged[name] = actions
        missing = [g for g in self.views if g not in self._staged]
        if missing:
            raise RuntimeError(f"stage the actions of policy group(s) {missing} (PettingZooGroups.stage) "
                               "before stepping a view")
        acts: list[Any] = list(self.copies.noop) * len(self.copies.envs)
        for g, view in self.views.items():
            for slot, act in zip(view.slots, iterate(view.action_space, self._staged[g])):
                acts[slot] = act
        self._staged = {}
        self._resets = {}
        out = self.copies.step(acts)
        self._steps = {g: [out[i] for i in view.slots] for g, view in self.views.items() if g != name}
        return [out[i] for i in self.views[name].slots]

    def reset_view(self, name: str, seed: int | Sequence[int | None] | None,
                   options: dict[str, Any] | None) -> dict[int, dict[str, Any]]:
        """Group ``name``'s reset infos by slot: the first view reset resets every copy (copy c with the seed
        of this view's first slot of it), the others take their part."""
        if name in self._resets:
            return self._resets.pop(name)
        view = self.views[name]
        seeds = view.seeds_of(seed)
        infos: dict[int, dict[str, Any]] = {}
        for c in range(len(self.copies.envs)):
            infos.update(self.copies.reset_copy(c, seeds[c * len(view.group.agents)], options))
        self._steps, self._staged = {}, {}
        self._resets = {g: infos for g in self.views if g != name}
        return infos

    def fresh_states(self) -> list[dict[str, Any]] | None:
        """The copies' states where every one has just started an episode (for an exact resume), else None."""
        return self.copies.fresh_states()

    def set_fresh_states(self, states: list[dict[str, Any]]) -> bool:
        """Restart the copies' episodes as :meth:`fresh_states` recorded them; False where they do not fit.
        Every view's next reset must not be called: the views' observations are the restored ones."""
        self._steps, self._staged, self._resets = {}, {}, {}
        return self.copies.set_fresh_states(states)

    def close(self) -> None:
        """Close every copy (idempotent)."""
        self.closed = True
        self.copies.close()


class GroupView(VectorEnvBase):
    """One policy group of a :class:`PettingZooGroups` as a vector env (see the module docstring).

    Args:
        owner: the groups it belongs to.
        group: its agents and spaces.
        slots: the copies' slots it holds, in view order.
    """

    def __init__(self, owner: PettingZooGroups, group: AgentGroup, slots: list[int]) -> None:
        super().__init__(len(slots), group.observation_space, group.action_space)
        self.owner, self.group, self.slots = owner, group, slots
        self.render_mode = owner.copies.render_mode

    def seeds_of(self, seed: int | Sequence[int | None] | None) -> list[int | None]:
        """One seed per slot of this view (``seed + j`` for an int)."""
        return self._seeds(seed)

    def observations(self) -> Any:
        """The latest observation of each of this view's slots, batched."""
        return stack(self.single_observation_space, [self.owner.copies.cur[i] for i in self.slots])

    def reset(self, *, seed: int | Sequence[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset every copy (see :meth:`PettingZooGroups.reset_view`), or bench the slots of
        ``options["reset_mask"]``."""
        mask = (options or {}).get("reset_mask")
        infos: dict[str, Any] = {}
        if mask is not None:
            named = np.flatnonzero(np.asarray(mask, dtype=bool)).tolist()
            self.owner.copies.bench([self.slots[j] for j in named])
            for j in named:
                infos = add_info(infos, {IDLE_KEY: True}, j, self.num_envs)
            return self.observations(), infos
        rest = {k: v for k, v in (options or {}).items() if k != "reset_mask"} or None
        by_slot = self.owner.reset_view(self.group.name, seed, rest)
        for j, i in enumerate(self.slots):
            infos = add_info(infos, by_slot.get(i, {}), j, self.num_envs)
        return self.observations(), infos

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """This group's part of one step of every copy (its actions staged beside the other groups')."""
        return self.collect(self.owner.step_view(self.group.name, actions))

    def call_at(self, indices: Indices, name: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Call method ``name`` of each slot's copy."""
        n = self.owner.copies.n
        return [getattr(self.owner.copies.envs[self.slots[j] // n], name)(*args, **kwargs)
                for j in self._indices(indices)]

    def get_attr_at(self, indices: Indices, name: str) -> list[Any]:
        """Attribute ``name`` of each slot's copy."""
        n = self.owner.copies.n
        return [getattr(self.owner.copies.envs[self.slots[j] // n], name) for j in self._indices(indices)]

    def set_attr_at(self, indices: Indices, name: str, value: Any) -> None:
        """Set attribute ``name`` on each slot's copy."""
        n = self.owner.copies.n
        for j in self._indices(indices):
            setattr(self.owner.copies.envs[self.slots[j] // n], name, value)

    def is_wrapped_at(self, indices: Indices, wrapper_class: type) -> list[bool]:
        """No slot is a Gymnasium wrapper stack."""
        return [False for _ in self._indices(indices)]

    def render(self) -> tuple[Any, ...] | None:
        """Each slot's copy's frame."""
        return tuple(self.call_at(None, "render"))

    def close_extras(self, **kwargs: Any) -> None:
        """Close the copies (every view shares them)."""
        self.owner.close()
