"""Action masks on RLlib: PPO and APPO sample legal actions only, in training and in evaluation.

RLlib's own way on the new API stack (its ``ActionMaskingTorchRLModule`` example): the env runners' envs
give a Dict observation ``{"action_mask", "observations"}`` and the RLModule sets the logits of illegal
actions to the lowest float before anything samples from them. Here:

- the env side is framework-neutral and already done: agents/run/masks.py resolves ``env.action_mask``
  once and every env of the run answers ``action_masks()`` (envs/masks.py ``ActionMasks``), wherever the env
  gives its mask (a method, ``info`` or a Dict observation key). :class:`MaskedObservations`, the outermost
  wrapper of each env runner's env, adds that answer to the observation;
- :func:`module_class` is the algorithm's default torch RLModule that takes such observations: its networks
  are built for the ``observations`` part (the same weights as the unmasked module, so checkpoints are
  unchanged) and every forward pass (exploration, inference, training, values and APPO's target network)
  masks the logits;
- evaluation (during training and in ``evaluate.py``, without Ray) runs on plain observations: the backend
  keeps the evaluation env's ``action_masks`` (:func:`mask_fn`) and masks the logits with
  :func:`mask_logits`.

``agent.normalize_obs`` is refused with masks: RLlib's MeanStdFilter would normalise the mask too.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from importlib import import_module
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.config import RunConfig
from agents.run.masks import masked
from envs.errors import UserError
from envs.masks import METHOD, mask_size

log = logging.getLogger(__name__)

MASK = "action_mask"
"""The observation key of the mask (RLlib's convention, as in its example module)."""
OBSERVATIONS = "observations"
"""The observation key of the env's own observation."""
LOWEST = float(torch.finfo(torch.float32).min)
"""The logit an illegal action gets: its probability is exactly 0 after the softmax."""

MaskFn = Callable[[], np.ndarray]

_told: set[str] = set()


class MaskedObservations(gym.ObservationWrapper):
    """The observation as ``{"action_mask": legal actions as 0/1 floats, "observations": the env's own}``,
    read from the ``action_masks()`` of the :class:`~envs.masks.ActionMasks` below.

    Args:
        env: an env of a masked run (``ActionMasks`` somewhere beneath).
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        size = mask_size(env.action_space)
        if size is None:
            raise ValueError(f"action masks need a Discrete or MultiDiscrete action space, got "
                             f"{env.action_space}")
        self._masks: MaskFn = env.get_wrapper_attr(METHOD)
        self.observation_space = gym.spaces.Dict({
            MASK: gym.spaces.Box(0.0, 1.0, (size,), np.float32), OBSERVATIONS: env.observation_space})

    def observation(self, observation: Any) -> dict[str, Any]:
        """The env's observation with the mask of the same step."""
        return {MASK: np.asarray(self._masks(), dtype=np.float32), OBSERVATIONS: observation}


def check(cfg: RunConfig) -> None:
    """Refuse what RLlib cannot combine with masks, before Ray starts.

    Raises:
        UserError: ``agent.normalize_obs`` on a masked run.
    """
    if masked(cfg) and cfg.agent.normalize_obs:
        raise UserError(f"env {cfg.env.id!r} gives action masks, and --backend rllib cannot normalise "
                        "observations that carry a mask (RLlib's MeanStdFilter would scale the mask too): "
                        "set agent.normalize_obs: false, or use --backend sb3")


def say_once(cfg: RunConfig) -> None:
    """One console line: this run trains with masks, and from where."""
    if masked(cfg) and cfg.env.action_mask not in _told:
        _told.add(cfg.env.action_mask)
        log.warning("env %r gives action masks (env.action_mask: %s): RLlib %s samples legal actions only "
                    "(illegal logits masked in its RLModule); evaluation picks legal actions only",
                    cfg.env.id, cfg.env.action_mask, cfg.agent.algo.upper())


def outer(cfg: RunConfig, scale: Callable[[gym.Env], gym.Env] | None) -> Callable[[gym.Env], gym.Env] | None:
    """The env runners' outermost per-env wrapper: ``scale`` (reward scaling, or None), then
    :class:`MaskedObservations` when the run is masked."""
    if not masked(cfg):
        return scale
    return functools.partial(_outer, scale)


def _outer(scale: Callable[[gym.Env], gym.Env] | None, env: gym.Env) -> gym.Env:
    return MaskedObservations(scale(env) if scale is not None else env)


def mask_fn(cfg: RunConfig, env: Any) -> MaskFn | None:
    """The bound evaluation env's ``action_masks`` when the run is masked, else None."""
    return env.get_wrapper_attr(METHOD) if masked(cfg) else None  # type: ignore[no-any-return]


def mask_logits(logits: torch.Tensor, mask: Any) -> torch.Tensor:
    """``logits`` with every illegal action's at :data:`LOWEST` (``mask``: 0/1 or booleans, broadcast)."""
    legal = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask) > 0.5
    return logits.masked_fill(~legal.to(logits.device), LOWEST)


def _split(batch: dict[str, Any], obs_key: str) -> tuple[Any, dict[str, Any]]:
    """(the mask or None, the batch with the env's own observations); the batch given is left as it is."""
    obs = batch.get(obs_key)
    if isinstance(obs, dict) and MASK in obs:
        return obs[MASK], {**batch, obs_key: obs[OBSERVATIONS]}
    return None, batch


@functools.cache
def module_class(base_path: str) -> type:
    """The torch RLModule class at ``base_path`` (``module:Class``, PPO's or APPO's default) taking masked
    observations: its networks see ``observations``, and each forward pass masks the logits.

    Plain observations pass through unmasked: the backend's own ``predict`` masks those itself.
    """
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.apis import TARGET_NETWORK_ACTION_DIST_INPUTS

    module, _, name = base_path.partition(":")
    base: type = getattr(import_module(module), name)
    logits_key = Columns.ACTION_DIST_INPUTS

    def apply(out: dict[str, Any], mask: Any, key: str = logits_key) -> dict[str, Any]:
        if mask is not None:
            out[key] = mask_logits(out[key], mask)
        return out

    class Masked(base):  # type: ignore[valid-type,misc]
        def __init__(self, *, observation_space: gym.Space | None = None, **kwargs: Any) -> None:
            with_mask = observation_space
            if isinstance(observation_space, gym.spaces.Dict) and MASK in observation_space.spaces:
                observation_space = observation_space[OBSERVATIONS]
            super().__init__(observation_space=observation_space, **kwargs)
            self.observation_space = with_mask  # what the env runners check against: the masked Dict

        def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
            mask, batch = _split(batch, Columns.OBS)
            return apply(super()._forward(batch, **kwargs), mask)

        def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
            mask, batch = _split(batch, Columns.OBS)
            return apply(super()._forward_train(batch, **kwargs), mask)

        def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> Any:
            return super().compute_values(_split(batch, Columns.OBS)[1], embeddings)

        if hasattr(base, "forward_target"):  # APPO: the target (old) policy's logits, masked the same way
            def forward_target(self, batch: dict[str, Any]) -> dict[str, Any]:
                mask, batch = _split(batch, Columns.OBS)
                return apply(super().forward_target(batch), mask, TARGET_NETWORK_ACTION_DIST_INPUTS)

    Masked.__name__ = Masked.__qualname__ = f"Masked{name}"
    return Masked
