"""Action masks at the start of a run: ``env.action_mask: auto`` resolved once, on the probe's env.

The probe (:func:`agents.run.envfactory.probe`) hands its env here. What is found (envs/masks.py) goes into
the config, so config.yaml records it and a resumed run or ``evaluate.py`` builds the same stack without a
probe; the probe's env gets the same :class:`~envs.masks.ActionMasks` wrapper the env builder puts on every
other env of the run (on top, or beneath the observation adapter where that flattened a Dict observation's
mask into one vector: the rllib backend's). A backend or algorithm that cannot apply masks is refused here,
before anything runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import gymnasium as gym

from envs.errors import InvalidOutputError, UserError
from envs.masks import ActionMasks, MaskSource, find_source, mask_size, offers

if TYPE_CHECKING:
    from agents.config import RunConfig
    from agents.run.backend import Backend
    from agents.run.resolved import ResolvedEnv

_HOW = {MaskSource.METHOD: "an action_masks() method", MaskSource.INFO: 'info["action_mask"]',
        MaskSource.OBS: "a Dict observation key 'action_mask'"}


def masked(cfg: RunConfig) -> bool:
    """Whether the run's envs give action masks (``env.action_mask`` resolved to a source)."""
    return cfg.env.action_mask not in ("auto", "none")


def resolve_masks(cfg: RunConfig, env: ResolvedEnv, made: gym.Env, backend: type[Backend]) -> gym.Env:
    """Resolve ``cfg.env.action_mask`` on the probe's env ``made`` (reset once) and return it, wrapped when
    masked; the caller closes it.

    Raises:
        UserError: a source named in the config that the env does not give, a mask of the wrong size, masks
            where envs are not built one by one (batched programs, PettingZoo, ``vec_env: ale``), or a
            backend/algorithm that cannot apply them (the line names the algorithms that can).
    """
    wanted = cfg.env.action_mask
    if wanted == "none":
        return made
    name = cfg.env.id
    one_by_one = not env.multi_agent and not env.batched(cfg) and cfg.train.vec_env != "ale"
    if mask_size(made.action_space) is None or not one_by_one:
        if wanted != "auto":
            where = ("its action space is " + str(made.action_space) if one_by_one else
                     "its envs are stepped as one batch here (no per-env wrappers)")
            raise UserError(f"env.action_mask: {wanted}: env {name!r} cannot take a mask ({where}); expected "
                            "a Discrete or MultiDiscrete env built one by one: set env.action_mask: none")
        cfg.env.action_mask = "none"
        return made
    obs, info = made.reset()
    beneath = _flattened_mask(made)
    if wanted == "auto":
        source = find_source(made, info) or (MaskSource.OBS if beneath is not None else None)
    elif offers(made, MaskSource(wanted), info) or (wanted == "obs" and beneath is not None):
        source = MaskSource(wanted)
    else:
        how = _HOW[MaskSource(wanted)]
        raise UserError(f"env.action_mask: {wanted}: env {name!r} gives no mask by {how}; set "
                        "env.action_mask: auto (any of the three ways) or none")
    if source is None:
        cfg.env.action_mask = "none"
        return made
    if source is MaskSource.OBS and beneath is not None:  # where the env builder puts it: under the adapter
        beneath.env = masks = ActionMasks(beneath.env, source)
        made.reset()  # again, through the masks, which keep the first observation's
        wrapped = made
    else:
        wrapped = masks = ActionMasks(made, source)
        masks.take(obs, info)
    try:
        masks.action_masks()
    except InvalidOutputError as e:
        raise UserError(f"{e}; fix the env's mask, or set env.action_mask: none to train without") from e
    if cfg.agent.algo not in backend.masking_algos:
        fix = ("use " + " or ".join(f"--algo {a}" for a in backend.masking_algos) if backend.masking_algos
               else "use --backend sb3 --algo ppo")
        raise UserError(f"env {name!r} gives action masks ({_HOW[source]}), which --backend "
                        f"{cfg.agent.backend} --algo {cfg.agent.algo} cannot apply: {fix}, or set "
                        "env.action_mask: none to train without them")
    cfg.env.action_mask = source.value
    return wrapped


def _flattened_mask(made: gym.Env) -> gym.Wrapper | None:
    """The wrapper of ``made`` right above an env whose Dict observations carry ``action_mask``, when the
    observation adapter above flattened them into one vector (``--backend rllib``); None where ``made``'s own
    observations carry it, or nothing does."""
    if offers(made, MaskSource.OBS):
        return None
    env = made
    while isinstance(env, gym.Wrapper):
        if offers(env.env, MaskSource.OBS):
            return env
        env = env.env
    return None
