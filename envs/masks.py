"""Action masks: which actions are legal now, read the way an env offers them, behind one method.

Envs tell their legal actions in one of three ways (:class:`MaskSource`): a method ``action_masks()``
(sb3-contrib's convention), ``info["action_mask"]`` after each reset and step, or an ``action_mask`` key of a
Dict observation (PettingZoo classic's convention), preferred in that order. :func:`find_source` tells
which one an env uses, and :class:`ActionMasks` answers ``action_masks()`` from it, as a boolean vector with
one entry per action (Discrete) or per value of each sub-action (MultiDiscrete). Nothing here imports an
RL library: the learner that samples only legal actions is the backend's (agents/sb3/masking.py).
"""

from __future__ import annotations

import logging
from enum import Enum
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.errors import InvalidOutputError

log = logging.getLogger(__name__)

__all__ = ["MASK_KEY", "METHOD", "ActionMasks", "MaskSource", "as_mask", "find_source", "mask_size", "offers"]

MASK_KEY = "action_mask"
"""The info key and the Dict observation key that carry a mask."""
METHOD = "action_masks"
"""The env method that returns a mask (sb3-contrib's ``EXPECTED_METHOD_NAME``)."""


class MaskSource(str, Enum):
    """Where an env's action mask comes from (the values ``env.action_mask`` takes)."""

    METHOD = "method"
    """``env.action_masks()``, found through the env's wrappers."""
    INFO = "info"
    """``info["action_mask"]`` of the last reset or step."""
    OBS = "obs"
    """The ``action_mask`` key of the last (Dict) observation."""


def mask_size(space: gym.Space) -> int | None:
    """Entries of a mask for ``space``: ``n`` for Discrete, the sum of ``nvec`` for MultiDiscrete; None for
    an action space that takes no mask."""
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.MultiDiscrete):
        return int(np.sum(space.nvec))
    return None


def _has_method(env: gym.Env) -> bool:
    try:
        return callable(env.get_wrapper_attr(METHOD))
    except AttributeError:
        return False


def offers(env: gym.Env, source: MaskSource, info: dict[str, Any] | None = None) -> bool:
    """Whether ``env`` gives a mask by ``source`` (for :attr:`MaskSource.INFO`: in ``info``, a reset's)."""
    if source is MaskSource.METHOD:
        return _has_method(env)
    if source is MaskSource.INFO:
        return info is not None and MASK_KEY in info
    obs_space = env.observation_space
    return isinstance(obs_space, spaces.Dict) and MASK_KEY in obs_space.spaces


def find_source(env: gym.Env, info: dict[str, Any] | None = None) -> MaskSource | None:
    """How ``env`` gives its mask, in this order of preference: a method, (given the ``info`` of a reset) its
    info, its Dict observation's key; None when it gives none of these."""
    return next((s for s in MaskSource if offers(env, s, info)), None)


def as_mask(value: Any, size: int) -> np.ndarray:
    """``value`` as a boolean mask of ``size`` entries.

    Raises:
        ValueError: it does not hold exactly ``size`` entries, in one line saying what came.
    """
    mask = np.asarray(value)
    if mask.size != size:
        raise ValueError(f"expected {size} entries (one per action), got shape {mask.shape}")
    return mask.reshape(size).astype(bool)


class ActionMasks(gym.Wrapper):
    """Answers ``action_masks()`` from wherever the env gives its mask (:class:`MaskSource`).

    A mask with no legal action at all is taken as "every action legal" for that step (a learner cannot
    sample from an empty set), with one warning per process.

    Args:
        env: the env (Discrete or MultiDiscrete actions).
        source: where its mask comes from.

    Raises:
        ValueError: the action space takes no mask.
    """

    _empty_told = False

    def __init__(self, env: gym.Env, source: MaskSource | str) -> None:
        super().__init__(env)
        size = mask_size(env.action_space)
        if size is None:
            raise ValueError(f"action masks need a Discrete or MultiDiscrete action space, got "
                             f"{env.action_space}")
        self.size, self.source = size, MaskSource(source)
        self._last: Any = None

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset, keeping the new episode's first mask."""
        obs, info = self.env.reset(seed=seed, options=options)
        self._keep(obs, info)
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step, keeping the mask for the next step."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._keep(obs, info)
        return obs, reward, terminated, truncated, info

    def take(self, obs: Any, info: dict[str, Any]) -> None:
        """Keep the mask of a reset or step that reached the env below without this wrapper (the probe's)."""
        self._keep(obs, info)

    def _keep(self, obs: Any, info: dict[str, Any]) -> None:
        if self.source is MaskSource.INFO:
            self._last = info.get(MASK_KEY)
        elif self.source is MaskSource.OBS:
            self._last = obs.get(MASK_KEY) if isinstance(obs, dict) else None

    def action_masks(self) -> np.ndarray:
        """The legal actions now, as booleans (one per action).

        Raises:
            InvalidOutputError: the env gave no mask where it gives one, or one of another size.
        """
        raw = self.env.get_wrapper_attr(METHOD)() if self.source is MaskSource.METHOD else self._last
        if raw is None:
            raise InvalidOutputError(f"env {self._name()} gave no action mask by its {self.source.value} "
                                     "(reset it first; every reset and step must carry one)")
        try:
            mask = as_mask(raw, self.size)
        except ValueError as e:
            raise InvalidOutputError(f"env {self._name()}: its action mask ({self.source.value}) is wrong: "
                                     f"{e}") from e
        if not mask.any():
            if not ActionMasks._empty_told:
                ActionMasks._empty_told = True
                log.warning("env %s gave an action mask with no legal action; every action is allowed for "
                            "such a step", self._name())
            mask[:] = True
        return mask

    def _name(self) -> str:
        spec = self.env.spec
        return repr(spec.id if spec is not None else type(self.env.unwrapped).__name__)
