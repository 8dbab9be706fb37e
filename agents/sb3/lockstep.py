"""Several SB3 on-policy models collecting in lock-step over one PettingZoo env's copies, each into its own
rollout buffer, then updating one after another (agents/sb3/multipolicy.py's backend drives it).

:func:`collect` fills every model's ``RolloutBuffer`` as SB3's ``OnPolicyAlgorithm.collect_rollouts`` fills
it: the policy's forward pass gives actions, values and log-probabilities; a Box action is clipped to its
bounds (or unscaled when squashed); a truncated episode's last reward gets ``gamma`` times the value of its
last observation; each step records the episode starts; the last values bootstrap the returns and
advantages. What differs is the stepping: every policy's actions are staged first, then each policy's vector
env returns its part of one step of the copies (envs/vector/pettingzoo_groups.py).
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.logger import KVWriter
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.utils import obs_as_tensor

from agents.sb3.backend import LinearLR

if TYPE_CHECKING:
    from agents.run.session import Session
    from envs.vector.pettingzoo_groups import PettingZooGroups


@dataclass
class Member:
    """One policy of the map while it trains: its model (with its vector env) and its episode statistics.

    Attributes:
        name: the policy's name (a key of ``policies:``).
        agents: the agent ids it acts for.
        model: the SB3 model; its env is the policy's vector env.
        stats: the episode statistics of its vector env (carried across a checkpoint).
    """

    name: str
    agents: tuple[str, ...]
    model: OnPolicyAlgorithm
    stats: Any


class Prefixed(KVWriter):
    """An SB3 logger output that writes every key under ``prefix`` (``policy/<name>/train/loss``).

    Args:
        inner: the output written to (a ``TensorBoardOutputFormat`` on the run's writer).
        prefix: put before every key.
    """

    def __init__(self, inner: KVWriter, prefix: str) -> None:
        self.inner, self.prefix = inner, prefix

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]],
              step: int = 0) -> None:
        """Write the keys, prefixed."""
        self.inner.write({self.prefix + k: v for k, v in key_values.items()},
                         {self.prefix + k: v for k, v in key_excluded.items()}, step)

    def close(self) -> None:
        """The run's writer is the session's: nothing to close here."""


def start(model: OnPolicyAlgorithm) -> None:
    """What SB3's ``learn`` sets up before its first rollout, for a model that this module drives."""
    model.start_time = time.time_ns()
    model._num_timesteps_at_start = model.num_timesteps
    if model.ep_info_buffer is None:
        model.ep_info_buffer = deque(maxlen=model._stats_window_size)
    if model.ep_success_buffer is None:
        model.ep_success_buffer = deque(maxlen=model._stats_window_size)


def collect(members: Sequence[Member], groups: PettingZooGroups, session: Session,
            global_step: Callable[[], int]) -> bool:
    """One rollout of ``n_steps`` lock-step vector steps into every model's buffer; False when a stop request
    ended it early (the buffers are then incomplete and no model trains, as SB3 does)."""
    for m in members:
        m.model.policy.set_training_mode(False)
        m.model.rollout_buffer.reset()
    n_steps = members[0].model.n_steps
    for _ in range(n_steps):
        forward = {}
        for m in members:
            forward[m.name] = _act(m.model)
            groups.stage(m.name, forward[m.name][1])
        infos: list[dict[str, Any]] = []
        for m in members:
            infos.extend(_step(m.model, *forward[m.name]))
        returns = [e["r"] for m in members for e in (m.model.ep_info_buffer or [])]
        if not session.tick(global_step(), infos, float(np.mean(returns)) if returns else None):
            return False
    for m in members:
        model = m.model
        with torch.no_grad():
            last = obs_as_tensor(model._last_obs, model.device)  # type: ignore[arg-type]
            values = model.policy.predict_values(last)  # type: ignore[arg-type]
        model.rollout_buffer.compute_returns_and_advantage(values, model._last_episode_starts)  # type: ignore[arg-type]
    return True


def _act(model: OnPolicyAlgorithm) -> tuple[np.ndarray, np.ndarray, torch.Tensor, torch.Tensor]:
    """The policy's forward pass on its last observations: actions, the actions the env gets, values and
    log-probabilities."""
    with torch.no_grad():
        actions_t, values, log_probs = model.policy(obs_as_tensor(model._last_obs, model.device))  # type: ignore[arg-type]
    actions = actions_t.cpu().numpy()
    clipped = actions
    if isinstance(model.action_space, spaces.Box):
        clipped = (model.policy.unscale_action(actions) if model.policy.squash_output
                   else np.clip(actions, model.action_space.low, model.action_space.high))
    return actions, clipped, values, log_probs


def _step(model: OnPolicyAlgorithm, actions: np.ndarray, clipped: np.ndarray, values: torch.Tensor,
          log_probs: torch.Tensor) -> list[dict[str, Any]]:
    """Step the model's vector env (its part of the copies' step) and add the transition to its buffer;
    the step's infos."""
    env = model.env
    assert env is not None
    new_obs, rewards, dones, infos = env.step(clipped)
    model.num_timesteps += env.num_envs
    model._update_info_buffer(infos, dones)
    if isinstance(model.action_space, spaces.Discrete):
        actions = actions.reshape(-1, 1)
    for idx, done in enumerate(dones):  # a truncated episode: bootstrap with its last observation's value
        info = infos[idx]
        if done and info.get("terminal_observation") is not None and info.get("TimeLimit.truncated", False):
            terminal_obs = model.policy.obs_to_tensor(info["terminal_observation"])[0]
            with torch.no_grad():
                terminal_value = model.policy.predict_values(terminal_obs)[0]  # type: ignore[arg-type]
            rewards[idx] += model.gamma * terminal_value
    model.rollout_buffer.add(model._last_obs, actions, rewards, model._last_episode_starts,  # type: ignore[arg-type]
                             values, log_probs)
    model._last_obs = new_obs  # type: ignore[assignment]
    model._last_episode_starts = dones
    return list(infos)


def update(model: OnPolicyAlgorithm, step: int, total: int) -> None:
    """Train the model on its rollout, then log its ``rollout/``, ``train/`` and ``time/`` figures at the
    global ``step`` (under its policy's prefix)."""
    model._update_current_progress_remaining(step, max(total, 1))
    lr = model.learning_rate  # what nondiff passed; SB3 wraps it into lr_schedule
    if isinstance(lr, LinearLR):
        lr.remaining = max(0.0, 1.0 - step / max(total, 1))
    model.train()
    buf = model.ep_info_buffer
    if buf:
        model.logger.record("rollout/ep_rew_mean", float(np.mean([e["r"] for e in buf])))
        model.logger.record("rollout/ep_len_mean", float(np.mean([e["l"] for e in buf])))
    elapsed = max((time.time_ns() - model.start_time) / 1e9, sys.float_info.epsilon)
    model.logger.record("time/fps", int((model.num_timesteps - model._num_timesteps_at_start) / elapsed))
    model.logger.dump(step=step)
