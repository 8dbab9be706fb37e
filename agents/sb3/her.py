"""Hindsight Experience Replay for goal-conditioned envs: when SAC/TD3 use SB3's ``HerReplayBuffer``, and its
episode bookkeeping in a checkpoint.

A goal-conditioned env (gymnasium-robotics, panda-gym) observes a Dict with ``observation``,
``achieved_goal`` and ``desired_goal`` and offers ``compute_reward(achieved_goal, desired_goal, info)``.
:func:`choose` reads the observation's keys and calls ``compute_reward`` once through the training vector env,
the way the buffer will (``env_method``), so a run either has HER that works or says why it has none.
``agent.her`` (``auto``, ``true``, ``false``), ``agent.her_n_sampled_goal`` and
``agent.her_goal_selection_strategy`` set it. On-policy algorithms never use it.

A checkpoint of a HER run holds, beside the replay fields that :mod:`agents.sb3.offpolicy` saves, the
buffer's episode index (``her/ep_start``, ``her/ep_length`` for the saved rows, ``her/current_ep_start`` per
env) and the header field ``off_policy.her``, so a resumed run relabels the same episodes.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.her.her_replay_buffer import HerReplayBuffer

from agents.run.header import corrupted
from envs.errors import CheckpointError, UserError

if TYPE_CHECKING:
    from pathlib import Path

    from stable_baselines3.common.buffers import ReplayBuffer
    from stable_baselines3.common.vec_env import VecEnv

    from agents.config import RunConfig
    from agents.run.resolved import ResolvedEnv

log = logging.getLogger(__name__)

GOAL_KEYS = ("observation", "achieved_goal", "desired_goal")
"""The Dict keys of a goal-conditioned observation (Gymnasium-Robotics' ``GoalEnv``)."""
OFF_POLICY = ("sac", "td3")
"""The algorithms that take a replay buffer, hence HER."""


@dataclass(frozen=True)
class HerChoice:
    """Whether a run uses HER, and what it told the user.

    Attributes:
        enabled: the replay buffer is SB3's ``HerReplayBuffer``.
        learning_starts: the ``learning_starts`` the model gets (raised to one episode of every env when HER
            is on and the config's is shorter); None leaves the config's.
        note: the console line said about it; empty when there was nothing to say.
    """

    enabled: bool
    learning_starts: int | None = None
    note: str = ""

    def hyperparameters(self, cfg: RunConfig) -> dict[str, Any]:
        """The SB3 keyword arguments that put HER into SAC/TD3 (none when it is off)."""
        if not self.enabled:
            return {}
        a = cfg.agent
        kwargs = {"n_sampled_goal": a.her_n_sampled_goal,
                  "goal_selection_strategy": a.her_goal_selection_strategy}
        hp: dict[str, Any] = {"replay_buffer_class": HerReplayBuffer, "replay_buffer_kwargs": kwargs}
        if self.learning_starts is not None:
            hp["learning_starts"] = self.learning_starts
        return hp


def goal_keys_missing(space: gym.Space) -> str | None:
    """Why ``space`` is not a goal-conditioned observation (a phrase), or None when it is one."""
    if not isinstance(space, gym.spaces.Dict):
        return f"its observation is a {type(space).__name__}, not a Dict"
    missing = [k for k in GOAL_KEYS if k not in space.spaces]
    if missing:
        return f"its Dict observation has keys {sorted(space.spaces)}, without {', '.join(missing)}"
    achieved, desired = space["achieved_goal"], space["desired_goal"]
    if not isinstance(achieved, gym.spaces.Box) or achieved.shape != desired.shape:
        return (f"its achieved_goal ({achieved}) and desired_goal ({desired}) are not Boxes of one shape")
    return None


def reward_unreachable(venv: VecEnv, space: gym.spaces.Dict) -> str | None:
    """Why ``compute_reward`` cannot be called through ``venv`` as the buffer calls it (a phrase), or None.

    One call with a batch of two sampled goals, through ``env_method`` on env 0: the wrappers and the vector
    env (in-process or a worker process) must pass it on, and it must return one reward per goal.
    """
    achieved = np.stack([space["achieved_goal"].sample() for _ in range(2)])
    desired = np.stack([space["desired_goal"].sample() for _ in range(2)])
    try:
        out = venv.env_method("compute_reward", achieved, desired, [{}, {}], indices=[0])[0]
        rewards = np.asarray(out, dtype=np.float64)
    except Exception as e:  # any failure of someone else's method means: no HER with it
        first = (str(e).splitlines() or [""])[0][:120]
        return f"compute_reward cannot be called through the vector env ({type(e).__name__}: {first})"
    if rewards.shape != (2,):
        return f"compute_reward on a batch of 2 goals returned shape {rewards.shape}, expected (2,)"
    return None


def choose(cfg: RunConfig, env: ResolvedEnv, venv: VecEnv) -> HerChoice:
    """Decide HER for this run from ``agent.her``, the algorithm, the observation's keys and
    ``compute_reward``, and say the outcome once on the console (a warning-level log line).

    Raises:
        UserError: ``agent.her: true`` on an env that is not goal-conditioned, in one line naming why.
    """
    a = cfg.agent
    if a.algo not in OFF_POLICY or a.her is False:
        if a.her is False and goal_keys_missing(venv.observation_space) is None:
            return HerChoice(False, note=_say("goal-conditioned env: HER off (agent.her: false)"))
        return HerChoice(False)
    why = goal_keys_missing(venv.observation_space)
    if why is None:
        assert isinstance(venv.observation_space, gym.spaces.Dict)
        why = reward_unreachable(venv, venv.observation_space)
    if why is not None:
        if a.her is True:
            raise UserError(f"agent.her: true needs a goal-conditioned env (a Dict observation with "
                            f"{', '.join(GOAL_KEYS)} and compute_reward), but env {cfg.env.id!r}: {why}; set "
                            "agent.her: auto or false")
        if goal_keys_missing(venv.observation_space) is None:  # the keys are there, the reward is not
            return HerChoice(False, note=_say(f"HER off for env {cfg.env.id!r}: {why}"))
        return HerChoice(False)
    horizon = cfg.env.max_episode_steps or env.spec.max_episode_steps
    starts, extra = None, ""
    if horizon is None:
        extra = ("; the env has no time limit, so agent.learning_starts must pass the end of a first episode "
                 "(HER samples goals from finished episodes)")
    elif a.learning_starts < horizon * cfg.train.num_envs:
        starts = horizon * cfg.train.num_envs
        extra = (f"; learning starts at step {starts:,} (one {horizon}-step episode of each of the "
                 f"{cfg.train.num_envs} envs) instead of agent.learning_starts={a.learning_starts:,}")
    note = (f"goal-conditioned env: {a.algo.upper()} with HER (SB3 HerReplayBuffer, "
            f"{a.her_goal_selection_strategy}, {a.her_n_sampled_goal} sampled goals; agent.her: false turns "
            f"it off){extra}")
    return HerChoice(True, starts, _say(note))


def configure(cfg: RunConfig, env: ResolvedEnv, venv: VecEnv, hp: dict[str, Any]) -> HerChoice:
    """:func:`choose`, then HER's keyword arguments into ``hp``; ``venv`` is closed when the run is
    refused."""
    try:
        choice = choose(cfg, env, venv)
    except BaseException:
        venv.close()
        raise
    hp.update(choice.hyperparameters(cfg))
    return choice


def _say(note: str) -> str:
    log.warning(note)
    return note


# -- checkpoint state -----------------------------------------------------------------------------------
def save_state(buf: ReplayBuffer | None, tensors: dict[str, torch.Tensor],
               rows: int) -> dict[str, Any] | None:
    """Add a HER buffer's episode index to ``tensors`` (its first ``rows`` rows); the header field
    ``off_policy.her`` (None for another buffer)."""
    if not isinstance(buf, HerReplayBuffer):
        return None
    tensors["her/ep_start"] = torch.from_numpy(np.ascontiguousarray(buf.ep_start[:rows]))
    tensors["her/ep_length"] = torch.from_numpy(np.ascontiguousarray(buf.ep_length[:rows]))
    tensors["her/current_ep_start"] = torch.from_numpy(buf._current_ep_start.copy())
    return {"n_sampled_goal": int(buf.n_sampled_goal),
            "goal_selection_strategy": buf.goal_selection_strategy.name.lower()}


def load_state(buf: ReplayBuffer | None, tensors: dict[str, torch.Tensor], meta: dict[str, Any] | None,
               rows: int, path: Path) -> None:
    """Restore what :func:`save_state` wrote into a fresh buffer of the same config, checking every tensor.

    Raises:
        CheckpointError: a HER checkpoint resumed without HER or the other way round, or an episode index of
            the wrong shape, dtype or range.
    """
    her = isinstance(buf, HerReplayBuffer)
    if meta is None and not her:
        return
    if meta is None or not her:
        has, builds = ("holds", "builds none") if meta is not None else ("holds no", "uses it")
        raise CheckpointError(f"checkpoint {str(path)!r} {has} HER replay state, and this config {builds} "
                              "(agent.her changed, or the env's observation keys did); resume with the "
                              "config and env it was trained with")
    assert isinstance(buf, HerReplayBuffer)
    size, n_envs = buf.buffer_size, buf.n_envs
    for name, shape in (("ep_start", (rows, n_envs)), ("ep_length", (rows, n_envs)),
                        ("current_ep_start", (n_envs,))):
        key = f"her/{name}"
        t = tensors.get(key)
        if t is None:
            raise corrupted(path, f"tensor {key!r} is missing")
        if tuple(t.shape) != shape or t.dtype != torch.int64:
            raise corrupted(path, f"tensor {key!r} is {str(t.dtype)[6:]} {list(t.shape)}, expected int64 "
                                  f"{list(shape)}")
        limit = size if name != "ep_length" else size + 1
        if bool(((t < 0) | (t >= limit)).any()):
            raise corrupted(path, f"tensor {key!r} holds values outside [0, {limit:,})")
    buf.ep_start[:rows] = tensors["her/ep_start"].numpy()
    buf.ep_length[:rows] = tensors["her/ep_length"].numpy()
    buf._current_ep_start[:] = tensors["her/current_ep_start"].numpy()


def fresh_episodes(buf: ReplayBuffer | None) -> None:
    """End a HER buffer's unfinished episodes where a resumed run restarts its envs from fresh episodes, so
    that no relabelled goal is drawn across the restart (SB3's ``truncate_last_trajectory``, without its
    warning)."""
    if isinstance(buf, HerReplayBuffer):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            buf.truncate_last_trajectory()
