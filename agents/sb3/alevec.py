"""SB3 vector env over ALE's native ``AtariVectorEnv`` (C++ threads and preprocessing): ``train.vec_env: ale``.

:class:`AleVecEnv` gives the learner what ``train.vec_env: dummy`` gives it for ``--env game``, at less CPU per
step (docs/results.md, "ALE's vector env"):

- the observations of the eval path (the ``game`` adapter through ``envs.make``): ``uint8[stack, S, S]``, the
  same frames; ALE pads a fresh stack with zeros where Gymnasium's ``FrameStackObservation`` repeats the
  reset frame, so the padding is filled here with the oldest real frame;
- SB3's same-step auto-reset (``info["terminal_observation"]``, ``info["TimeLimit.truncated"]``), SB3
  ``Monitor``'s ``info["episode"]`` and ``env.max_episode_steps``;
- the Guard's checks, once per vector step over the stacked arrays (:class:`~envs.checks.RowCheck`,
  :func:`~envs.checks.valid_rewards`); a row they do not vouch for goes through the Guard's own decision
  (:func:`envs.guard.judge_step`, :func:`~envs.guard.judge_reset`) with ``env.nan_policy`` and
  ``env.bounds_policy``, its fault under ``info["nondiff_fault"]`` of that env only;
- ``info["nondiff_step_ms"]``: the vector step's round trip (all envs at once), on each env, as the
  K-instance bridge vector env reports it.

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
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from envs.adapters.game import rom_id
from envs.checks import RowCheck, valid_rewards
from envs.faults import LATENCY_KEY, add_fault
from envs.guard import judge_reset, judge_step

ALE_KEYS = ("game", "frame_size", "frame_stack", "frame_skip", "noop_max", "sticky_actions", "clip_rewards",
            "episodic_life")
"""The ``env:`` keys of the ``game`` adapter that :class:`AleVecEnv` takes (``render_mode`` is the eval path's)."""

PROGRAM = "ale-vector"
"""The ``program`` named in this vector env's faults."""


class AleVecEnv(VecEnv):
    """``num_envs`` copies of one ALE game stepped by ``AtariVectorEnv`` as one SB3 vector env.

    Args:
        num_envs: envs in the vector.
        threads: ALE's worker threads (at most ``num_envs``).
        game: ALE game name, as ``env.game``.
        frame_size, frame_stack, frame_skip, noop_max, sticky_actions, clip_rewards, episodic_life: as the
            ``game`` adapter's keyword arguments.
        nan_policy, bounds_policy: the Guard's policies (``env.nan_policy``, ``env.bounds_policy``).
        max_episode_steps: truncate an episode after this many agent steps (None: ALE's 108,000 frames).
    """

    def __init__(self, num_envs: int, threads: int = 1, *, game: str = "Pong", frame_size: int = 84,
                 frame_stack: int = 4, frame_skip: int = 4, noop_max: int = 30, sticky_actions: bool = False,
                 clip_rewards: bool = False, episodic_life: bool = False, nan_policy: str = "truncate",
                 bounds_policy: str = "clip", max_episode_steps: int | None = None) -> None:
        try:
            from ale_py.vector_env import AtariVectorEnv
        except ImportError as e:  # pragma: no cover - ale-py is a core dependency
            raise gym.error.DependencyNotInstalled("ale-py is not installed: pip install 'nondiff'") from e
        self.ale = AtariVectorEnv(rom_id(game), num_envs, num_threads=max(1, min(threads, num_envs)),
                                  img_height=frame_size, img_width=frame_size, grayscale=True, stack_num=frame_stack,
                                  frameskip=frame_skip, maxpool=True, noop_max=noop_max,
                                  repeat_action_probability=0.25 if sticky_actions else 0.0, episodic_life=episodic_life,
                                  reward_clipping=clip_rewards, use_fire_reset=False, autoreset_mode="SameStep",
                                  max_num_frames_per_episode=108_000)
        self.nan_policy, self.bounds_policy, self.max_episode_steps = nan_policy, bounds_policy, max_episode_steps
        self.render_mode = None
        super().__init__(num_envs, self.ale.single_observation_space, self.ale.single_action_space)
        self.stack = frame_stack
        self._rows = RowCheck(self.observation_space)
        self._obs = np.zeros((num_envs, frame_stack, frame_size, frame_size), dtype=np.uint8)
        self._since = np.zeros(num_envs, dtype=np.int64)  # agent steps since each env's reset (the stack's fill)
        self._ep_ret = np.zeros(num_envs)
        self._ep_len = np.zeros(num_envs, dtype=np.int64)
        self._actions = np.zeros(num_envs, dtype=np.int64)
        self._t0 = time.time()
        self._closed = False

    # -- the stack's padding and the checks -------------------------------------------------------------
    def _fill(self, obs: np.ndarray, since: np.ndarray) -> None:
        """Replace ALE's zero padding of young stacks (``since`` steps after a reset) by the reset frame."""
        for i in np.flatnonzero(since < self.stack - 1):
            first = self.stack - 1 - int(since[i])
            obs[i, :first] = obs[i, first]

    def _validate(self, obs: np.ndarray, rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
                  infos: list[dict[str, Any]]) -> np.ndarray:
        """The Guard's checks over the whole step at once; rows not vouched for get the Guard's decision.

        Repairs ``obs`` and ``rewards`` in place and returns the envs cut short by ``truncate`` (their
        observation is the last valid one, their reward 0, ``truncated`` set and ``terminated`` cleared, as the
        Guard returns them).
        """
        ok = self._rows.valid(obs) & valid_rewards(rewards)
        cut = np.zeros(len(ok), dtype=bool)
        if ok.all():
            return cut
        for row in np.flatnonzero(~ok):
            i = int(row)
            v = judge_step(self.observation_space, obs[i], float(rewards[i]), self._obs[i], self.nan_policy,
                           self.bounds_policy, PROGRAM)
            for fault in v.faults:
                add_fault(infos[i], fault)
            obs[i], rewards[i] = v.obs, v.reward
            if v.cut:  # truncate: the last valid observation, reward 0; ALE's env is reset below
                terminated[i], truncated[i], cut[i] = False, True, True
        return cut

    # -- VecEnv API ---------------------------------------------------------------------------------------
    def reset(self) -> np.ndarray:
        """Reset every env (env i with ``seed + i`` after :meth:`seed`, as DummyVecEnv)."""
        seeds = None if all(s is None for s in self._seeds) else np.array(
            [-1 if s is None else int(s) for s in self._seeds], dtype=np.int64)
        obs: np.ndarray = self.ale.reset(seed=seeds)[0]
        self._since[:] = 0
        self._fill(obs, self._since)
        self._obs[:] = obs
        self._ep_ret[:], self._ep_len[:] = 0.0, 0
        self.reset_infos = [{} for _ in range(self.num_envs)]
        self._reset_seeds()
        self._reset_options()
        return self._obs.copy()

    def step_async(self, actions: np.ndarray) -> None:
        """Keep the actions for :meth:`step_wait`."""
        self._actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)

    def step_wait(self) -> Any:
        """One step of every env in ALE's threads, the batched checks, then SB3's same-step auto-reset."""
        t = time.perf_counter()
        obs, raw_rew, term, trunc, ale_info = self.ale.step(self._actions)
        ms = (time.perf_counter() - t) * 1e3
        infos: list[dict[str, Any]] = [{LATENCY_KEY: ms} for _ in range(self.num_envs)]
        rewards = raw_rew.astype(np.float32)
        term, trunc = np.asarray(term, dtype=bool), np.array(trunc, dtype=bool)
        ended = term | trunc  # ALE has reset these already: obs is the new episode's, final_obs the last one's
        since = self._since + 1
        final = ale_info.get("final_obs")
        last = obs.copy() if final is None else np.where(ended[:, None, None, None], final, obs)
        self._fill(last, since)
        self._validate(last, rewards, term, trunc, infos)  # the rows cut short: truncated, reset below
        self._ep_ret += rewards
        self._ep_len += 1
        if self.max_episode_steps is not None:
            trunc |= self._ep_len >= self.max_episode_steps
        dones = term | trunc
        again = dones & ~ended  # ended here (cut short, or the time limit), not in ALE: reset them now
        if again.any():
            fresh: np.ndarray = self.ale.reset(options={"reset_mask": again})[0]
            obs[again] = fresh[again]
        since[dones] = 0
        self._fill(obs, since)
        if dones.any():
            self._check_resets(obs, dones, infos)
        for i in np.flatnonzero(dones):
            infos[i]["terminal_observation"] = last[i]
            infos[i]["episode"] = {"r": round(float(self._ep_ret[i]), 6), "l": int(self._ep_len[i]),
                                   "t": round(time.time() - self._t0, 6)}
        for k, info in enumerate(infos):
            info["TimeLimit.truncated"] = bool(trunc[k] and not term[k])
        self._ep_ret[dones], self._ep_len[dones] = 0.0, 0
        self._since = since
        self._obs[:] = np.where(dones[:, None, None, None], obs, last)
        return self._obs.copy(), rewards, dones, infos

    def _check_resets(self, obs: np.ndarray, dones: np.ndarray, infos: list[dict[str, Any]]) -> None:
        """The reset observations of the finished envs, checked as the Guard checks a reset."""
        ok = self._rows.valid(obs)
        for i in np.flatnonzero(dones & ~ok):
            obs[i], fault = judge_reset(self.observation_space, obs[i], self._obs[i], self.nan_policy,
                                        self.bounds_policy, PROGRAM)
            if fault is not None:
                add_fault(infos[i], fault)

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        """``render_mode`` (None) or an attribute of this vector env, once per env."""
        return [getattr(self, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        """Set an attribute of this vector env (ALE's envs have none of their own)."""
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any) -> list[Any]:
        """ALE's envs are not Python objects: no per-env method can be called."""
        raise AttributeError(f"train.vec_env: ale has no per-env objects; {method_name!r} cannot be called")

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: Any = None) -> list[bool]:
        """True for SB3's ``Monitor`` (its episode statistics are in the infos), False for any other wrapper."""
        return [wrapper_class is Monitor for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Not rendered: the eval path (``evaluate.py``, the video) uses the ``game`` adapter."""
        return [None for _ in range(self.num_envs)]

    def close(self) -> None:
        """Stop ALE's threads; safe to call twice."""
        if not self._closed:
            self._closed = True
            self.ale.close()


def make_ale_vec_env(cfg: Any) -> AleVecEnv:
    """``train.vec_env: ale`` from a run config: the ``game`` adapter's ``env:`` keys, ``train.num_envs`` envs,
    ``train.env_workers`` threads (at most ``num_envs``)."""
    kwargs = {k: v for k, v in cfg.env.adapter_kwargs().items() if k in ALE_KEYS}  # env.crop: refused by the schema
    return AleVecEnv(cfg.train.num_envs, cfg.train.env_workers, nan_policy=cfg.env.nan_policy,
                     bounds_policy=cfg.env.bounds_policy, max_episode_steps=cfg.env.max_episode_steps, **kwargs)
