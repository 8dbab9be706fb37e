"""ALE's native ``AtariVectorEnv`` (C++ threads and preprocessing) as a nondiff vector env:
``train.vec_env: ale``.

:class:`AleVectorEnv` gives what ``train.vec_env: dummy`` gives for ``--env game``, at less CPU per step
(docs/results.md, "ALE's vector env"): the observations of the eval path (the ``game`` adapter through
``envs.make``): ``uint8[stack, S, S]``, the same frames. ALE pads a fresh stack with zeros where Gymnasium's
``FrameStackObservation`` repeats the reset frame, so the padding is filled here with the oldest real frame.
``info["nondiff_step_ms"]`` is the vector step's round trip (all envs at once), on each env. Envs of
``options["reset_mask"]`` reset alone. The Guard's checks, the time limit and the episode statistics are the
vector wrappers around it (:func:`make_ale_vector_env`).

The ``game`` adapter's keys map onto ALE's (``frame_size`` → ``img_height``/``img_width``, ``frame_stack`` →
``stack_num``, ``frame_skip`` → ``frameskip`` with max-pooling, ``sticky_actions`` → repeat probability 0.25,
``clip_rewards`` → ``reward_clipping``, ``episodic_life`` (a life loss ends the episode and the next one
starts a new game, as Gymnasium's ``AtariPreprocessing`` does)); no FIRE at reset, as the adapter.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from envs.adapters.game import rom_id
from envs.faults import LATENCY_KEY
from envs.vector.base import Indices, VectorEnvBase, add_info

ALE_KEYS = ("game", "frame_size", "frame_stack", "frame_skip", "noop_max", "sticky_actions", "clip_rewards",
            "episodic_life")
"""The ``env:`` keys of the ``game`` adapter that :class:`AleVectorEnv` takes (``render_mode`` is the eval
path's)."""

PROGRAM = "ale-vector"
"""The ``program`` named in this vector env's faults."""


class AleVectorEnv(VectorEnvBase):
    """``num_envs`` copies of one ALE game stepped by ``AtariVectorEnv``.

    Args:
        num_envs: envs in the vector.
        threads: ALE's worker threads (at most ``num_envs``).
        game: ALE game name, as ``env.game``.
        frame_size, frame_stack, frame_skip, noop_max, sticky_actions, clip_rewards, episodic_life: as the
            ``game`` adapter's keyword arguments.
    """

    def __init__(self, num_envs: int, threads: int = 1, *, game: str = "Pong", frame_size: int = 84,
                 frame_stack: int = 4, frame_skip: int = 4, noop_max: int = 30, sticky_actions: bool = False,
                 clip_rewards: bool = False, episodic_life: bool = False) -> None:
        try:
            from ale_py.vector_env import AtariVectorEnv
        except ImportError as e:  # pragma: no cover - ale-py is a core dependency
            raise gym.error.DependencyNotInstalled("ale-py is not installed: pip install 'nondiff'") from e
        self.ale = AtariVectorEnv(rom_id(game), num_envs, num_threads=max(1, min(threads, num_envs)),
                                  img_height=frame_size, img_width=frame_size, grayscale=True,
                                  stack_num=frame_stack, frameskip=frame_skip, maxpool=True,
                                  noop_max=noop_max,
                                  repeat_action_probability=0.25 if sticky_actions else 0.0,
                                  episodic_life=episodic_life, reward_clipping=clip_rewards,
                                  use_fire_reset=False, autoreset_mode="SameStep",
                                  max_num_frames_per_episode=108_000)
        super().__init__(num_envs, self.ale.single_observation_space, self.ale.single_action_space)
        self.render_mode = None
        self.stack = frame_stack
        # agent steps since each env's reset (the stack's fill)
        self._since = np.zeros(num_envs, dtype=np.int64)

    def _fill(self, obs: np.ndarray, since: np.ndarray) -> None:
        """Replace ALE's zero padding of young stacks (``since`` steps after a reset) by the reset frame."""
        for i in np.flatnonzero(since < self.stack - 1):
            first = self.stack - 1 - int(since[i])
            obs[i, :first] = obs[i, first]

    def reset(self, *, seed: int | Sequence[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset every env (env ``i`` with ``seed + i``), or those of ``options["reset_mask"]``."""
        mask = (options or {}).get("reset_mask")
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            obs: np.ndarray = np.array(self.ale.reset(options={"reset_mask": mask})[0], copy=True)
            self._since[mask] = 0
            self._fill(obs, np.where(mask, 0, self.stack))
            return obs, {}
        seeds = self._seeds(seed)
        ale_seeds = None if all(s is None for s in seeds) else np.array(
            [-1 if s is None else int(s) for s in seeds], dtype=np.int64)
        obs = np.array(self.ale.reset(seed=ale_seeds)[0], copy=True)
        self._since[:] = 0
        self._fill(obs, self._since)
        return obs, {}

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """One step of every env in ALE's threads; ALE resets the finished ones in the same step."""
        t = time.perf_counter()
        obs, rewards, term, trunc, ale_info = self.ale.step(
            np.asarray(actions, dtype=np.int64).reshape(self.num_envs))
        ms = (time.perf_counter() - t) * 1e3
        obs = np.array(obs, copy=True)
        terminated, truncated = np.array(term, dtype=bool), np.array(trunc, dtype=bool)
        ended = terminated | truncated  # ALE has reset these already: obs is the new episode's
        since = self._since + 1
        final = ale_info.get("final_obs")
        last = obs.copy() if final is None else np.where(ended[:, None, None, None], final, obs)
        self._fill(last, since)
        since[ended] = 0
        self._fill(obs, since)
        self._since = since
        infos: dict[str, Any] = {}
        for i in range(self.num_envs):
            if ended[i]:
                infos = add_info(infos, {"final_obs": last[i], "final_info": {LATENCY_KEY: ms}}, i,
                                 self.num_envs)
            else:
                infos = add_info(infos, {LATENCY_KEY: ms}, i, self.num_envs)
        return obs, np.asarray(rewards, dtype=np.float32).astype(np.float64), terminated, truncated, infos

    def call_at(self, indices: Indices, name: str, *args: Any, **kwargs: Any) -> list[Any]:
        """ALE's envs are not Python objects: no per-env method can be called."""
        raise AttributeError(f"train.vec_env: ale has no per-env objects; {name!r} cannot be called")

    def get_attr_at(self, indices: Indices, name: str) -> list[Any]:
        """``render_mode`` (None) or an attribute of this vector env, once per env."""
        return [getattr(self, name) for _ in self._indices(indices)]

    def set_attr_at(self, indices: Indices, name: str, value: Any) -> None:
        """Set an attribute of this vector env (ALE's envs have none of their own)."""
        setattr(self, name, value)

    def is_wrapped_at(self, indices: Indices, wrapper_class: type) -> list[bool]:
        """No env here is a Gymnasium wrapper stack."""
        return [False for _ in self._indices(indices)]

    def render(self) -> tuple[Any, ...] | None:
        """Not rendered: the eval path (``evaluate.py``, the video) uses the ``game`` adapter."""
        return tuple(None for _ in range(self.num_envs))

    def close_extras(self, **kwargs: Any) -> None:
        """Stop ALE's threads."""
        self.ale.close()


def make_ale_vector_env(num_envs: int, threads: int, kwargs: dict[str, Any], nan_policy: str = "truncate",
                        bounds_policy: str = "clip",
                        max_episode_steps: int | None = None) -> gym.vector.VectorEnv:
    """ALE's vector env with its time limit (None: ALE's 108,000 frames) and the Guard's batched checks.

    ``kwargs``: the ``game`` adapter's keys (others are left out).
    """
    from envs.vector.row_guard import RowGuard
    from envs.vector.time_limit import TimeLimit

    venv: gym.vector.VectorEnv = AleVectorEnv(num_envs, threads,
                                              **{k: v for k, v in kwargs.items() if k in ALE_KEYS})
    if max_episode_steps is not None:
        venv = TimeLimit(venv, max_episode_steps)
    return RowGuard(venv, nan_policy, bounds_policy, PROGRAM)
