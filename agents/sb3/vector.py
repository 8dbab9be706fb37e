"""SB3's side of the vector layer: a Gymnasium vector env from envs/vector/ as an SB3 ``VecEnv``, and the
run's training envs (:func:`make_vec_env`).

:class:`SB3VecEnv` keeps SB3's contract: same-step auto-reset, one info dict per env with
``info["terminal_observation"]`` and ``info["TimeLimit.truncated"]`` on a finished step, the reset's info in
``reset_infos``, and the episode statistics' ``info["episode"]`` where SB3's ``ep_info_buffer`` reads it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from agents.config import RunConfig
from agents.run.envfactory import make_vector_env
from agents.run.resolved import ResolvedEnv, is_image_space
from envs.vector.base import step_rows, unbatch_all
from envs.vector.episode_stats import EpisodeStatistics
from envs.wrappers import is_image

log = logging.getLogger(__name__)


class SB3VecEnv(VecEnv):
    """A Gymnasium vector env with same-step auto-reset (envs/vector/) as an SB3 ``VecEnv``.

    Args:
        venv: the vector env, wrappers included.
    """

    def __init__(self, venv: gym.vector.VectorEnv) -> None:
        self.venv, self.base = venv, venv.unwrapped
        self._actions: Any = None
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)

    def reset(self) -> Any:
        """Reset every env with the seeds and options given beforehand (SB3's ``seed``/``set_options``)."""
        options = self._options[0]
        if any(o != options for o in self._options):
            raise ValueError("set_options gave the envs different reset options; give every env the same "
                             "ones")
        obs, infos = self.venv.reset(seed=list(self._seeds), options=options or None)  # type: ignore[arg-type]
        self.reset_infos = unbatch_all(infos, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """Keep the actions for :meth:`step_wait`."""
        self._actions = actions

    def step_wait(self) -> Any:
        """One vector step as SB3 expects it: float32 rewards, dones, one info dict per env."""
        obs, rewards, terminated, truncated, out, finals = step_rows(self.venv, self._actions)
        for i, info in enumerate(out):
            final = finals.get(i)
            if final is None:
                info["TimeLimit.truncated"] = False
                continue
            self.reset_infos[i] = info
            out[i] = info = dict(final[1])
            info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            info["terminal_observation"] = final[0]
        return obs, rewards.astype(np.float32), terminated | truncated, out

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        """An attribute of each env."""
        return self.base.get_attr_at(list(self._get_indices(indices)), attr_name)  # type: ignore[no-any-return]

    def has_attr(self, attr_name: str) -> bool:
        """Whether every env has ``attr_name`` (asked in the envs' own processes: SB3's default fetches the
        whole env, which need not pickle)."""
        return all(self.base.call_at(None, "has_wrapper_attr", attr_name))

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        """Set an attribute on each env."""
        self.base.set_attr_at(list(self._get_indices(indices)), attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None,
                   **method_kwargs: Any) -> list[Any]:
        """Call a method of each env."""
        return self.base.call_at(list(self._get_indices(indices)), method_name,  # type: ignore[no-any-return]
                                 *method_args, **method_kwargs)

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: Any = None) -> list[bool]:
        """Whether each env is wrapped in ``wrapper_class`` (the vector-level episode statistics count as
        SB3's ``Monitor``)."""
        if wrapper_class is Monitor and _has(self.venv, EpisodeStatistics):
            return [True for _ in self._get_indices(indices)]
        return self.base.is_wrapped_at(list(self._get_indices(indices)), wrapper_class)  # type: ignore[no-any-return]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """One frame per env."""
        return self.base.call_at(None, "render")  # type: ignore[no-any-return]

    def close(self) -> None:
        """Close the vector env (idempotent)."""
        self.venv.close()


def make_vec_env(cfg: RunConfig, env: ResolvedEnv) -> VecEnv:
    """SB3's vectorised training envs: ``train.num_envs`` envs with episode statistics, then ``VecNormalize``
    if the agent normalises observations or rewards."""
    return normalized(SB3VecEnv(make_vector_env(cfg, env)), cfg)


def normalized(venv: SB3VecEnv, cfg: RunConfig) -> VecEnv:
    """``venv`` under ``VecNormalize`` if ``cfg.agent`` normalises observations or rewards, else itself (a
    ``policies:`` map calls it once per policy, with that policy's config)."""
    if not (cfg.agent.normalize_obs or cfg.agent.normalize_reward):
        return venv
    keys = normalized_keys(venv.observation_space)
    norm_obs = cfg.agent.normalize_obs and keys != []
    if cfg.agent.normalize_obs and not norm_obs:
        log.warning("normalize_obs ignored: nothing to normalise (images are scaled to [0, 1] by the policy, "
                    "discrete observations are one-hot)")
    elif norm_obs and keys:
        log.info("normalize_obs: per-key statistics for %s (images and discrete keys excluded)",
                 ", ".join(keys))
    return VecNormalize(venv, norm_obs=norm_obs, norm_reward=cfg.agent.normalize_reward,
                        gamma=cfg.agent.gamma, norm_obs_keys=keys or None)


def _has(venv: gym.vector.VectorEnv, wrapper_class: type) -> bool:
    while isinstance(venv, gym.vector.VectorWrapper):
        if isinstance(venv, wrapper_class):
            return True
        venv = venv.env
    return False


def normalized_keys(space: gym.Space) -> list[str] | None:
    """What ``normalize_obs`` normalises: None for the whole (non-image) Box, the float keys of a Dict, or
    ``[]`` for nothing (an image, or a Dict without float keys)."""
    if isinstance(space, gym.spaces.Dict):
        return [k for k, s in space.spaces.items() if isinstance(s, gym.spaces.Box) and not is_image(s)
                and not is_image_space(s)]
    return [] if is_image_space(space) or not isinstance(space, gym.spaces.Box) else None
