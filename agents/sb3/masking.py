"""Action masks on SB3: sb3-contrib's MaskablePPO trains on an env that gives masks, and evaluation acts
only on legal actions.

The env side is framework-neutral: agents/run/masks.py resolves ``env.action_mask`` once, and every env of
the run answers ``action_masks()`` (envs/masks.py ``ActionMasks``), which is where MaskablePPO reads them
(``VecEnv.env_method``). The backend (agents/sb3/backend.py) calls the hooks below when it builds the model
or the evaluation policy and when it predicts. Checkpoints are the same tensors as PPO's: MaskablePPO's
policy has the same networks, and the config says to rebuild it as MaskablePPO on ``--resume`` and in
``evaluate.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm

from agents.config import RunConfig
from agents.run.masks import masked
from envs.masks import METHOD

log = logging.getLogger(__name__)

_told: set[str] = set()

MaskFn = Callable[[], np.ndarray]


def algorithm(cfg: RunConfig, default: type[BaseAlgorithm]) -> type[BaseAlgorithm]:
    """MaskablePPO when the run's env gives masks (the probe refused every algorithm but PPO), else
    ``default``."""
    if not masked(cfg):
        return default
    from sb3_contrib import MaskablePPO

    return MaskablePPO  # type: ignore[no-any-return]


def say_once(cfg: RunConfig) -> None:
    """One console line: this run trains with masks, and from where."""
    if masked(cfg) and cfg.env.action_mask not in _told:
        _told.add(cfg.env.action_mask)
        log.warning("env %r gives action masks (env.action_mask: %s): training sb3-contrib's MaskablePPO, "
                    "which samples legal actions only; evaluation picks legal actions only",
                    cfg.env.id, cfg.env.action_mask)


def policy_kwargs(cfg: RunConfig, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` without what MaskablePPO's policies do not take (``log_std_init``: no Gaussian)."""
    if not masked(cfg):
        return kwargs
    return {k: v for k, v in kwargs.items() if k != "log_std_init"}


def states_hold_masks(cfg: RunConfig) -> bool:
    """Whether restored env states (``get_state()``) bring their masks back: yes unless the mask comes from
    the last info or observation, which ``ActionMasks`` keeps and env states leave out. Such a run resumes
    from fresh episodes instead (not bit-exact, and the resume says so)."""
    return cfg.env.action_mask not in ("info", "obs")


def mask_fn(cfg: RunConfig, env: Any) -> MaskFn | None:
    """The bound evaluation env's ``action_masks`` when the run is masked, else None."""
    return env.get_wrapper_attr(METHOD) if masked(cfg) else None  # type: ignore[no-any-return]


def predict_kwargs(masks: MaskFn | None) -> dict[str, Any]:
    """``action_masks=`` for MaskablePPO's ``policy.predict``: the legal actions of the env now."""
    return {} if masks is None else {"action_masks": masks()}
