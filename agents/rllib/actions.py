"""Actions from an RLlib module's action-distribution inputs, per action space: what ``predict`` returns
(evaluation, self-play opponents). RLlib trains Discrete, MultiDiscrete and Box actions on this backend; any
other space is refused before training (agents/config/algos.py)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from envs.errors import UserError


def pick(space: gym.Space, inputs: torch.Tensor, deterministic: bool, squashed: bool) -> np.ndarray:
    """A batch of actions of ``space`` from the module's inputs to its action distribution.

    Discrete: one logit per action. MultiDiscrete: one block of logits per part (RLlib's MultiCategorical).
    Box: a diagonal Gaussian's means then log-stds; ``squashed`` (SAC) maps it through tanh onto the bounds,
    as RLlib does. ``deterministic``: the mode, else a sample.
    """
    if isinstance(space, gym.spaces.Discrete):
        return _categorical(inputs, deterministic).numpy() + int(space.start)  # type: ignore[no-any-return]
    if isinstance(space, gym.spaces.MultiDiscrete):
        parts = inputs.split([int(n) for n in space.nvec.ravel()], dim=-1)
        flat = torch.stack([_categorical(p, deterministic) for p in parts], -1).numpy()
        return (flat.reshape(-1, *space.shape) + space.start).astype(space.dtype)  # type: ignore[no-any-return]
    if isinstance(space, gym.spaces.Box):
        mean, log_std = inputs.chunk(2, dim=-1)
        a = mean if deterministic else mean + log_std.exp() * torch.randn_like(mean)
        out = a.numpy().reshape(-1, *space.shape)
        if squashed:
            out = space.low + (np.tanh(out) + 1.0) * (space.high - space.low) / 2.0
        return np.clip(out, space.low, space.high).astype(space.dtype)  # type: ignore[no-any-return]
    raise UserError(f"rllib backend: action space {space} is not supported for predict")


def _categorical(logits: torch.Tensor, deterministic: bool) -> torch.Tensor:
    return logits.argmax(-1) if deterministic else torch.distributions.Categorical(logits=logits).sample()
