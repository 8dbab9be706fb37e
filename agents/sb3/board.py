"""A small CNN for board-game observations (``agent.extractor: board_cnn``): a few 3×3 convolutions that
keep the board's size, for boards far smaller than the 36×36 SB3's NatureCNN needs (connect four's 6×7×2
planes, tic-tac-toe's 3×3×2).

The board is the observation's rank-3 Box (a Dict's rank-3 key, or the whole observation), whichever way its
planes lie: the smallest axis is taken as the planes (channels). The observation's other keys (e.g. the
action mask) are flattened beside the board's features.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.preprocessing import get_flattened_obs_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from envs.errors import UserError

CHANNELS = 32
"""Feature maps of each convolution."""
LAYERS = 3
"""3×3 convolutions (padding 1: the board keeps its size, so a line of four is seen wherever it lies)."""
FEATURES = 256
"""Features of the linear layer after the convolutions."""


def board_keys(space: gym.Space) -> list[str]:
    """The keys of ``space`` that hold a board (rank-3 Boxes); ``[""]`` when the space is one.

    Raises:
        UserError: no board in the space.
    """
    if isinstance(space, gym.spaces.Dict):
        keys = [k for k, s in space.spaces.items() if isinstance(s, gym.spaces.Box) and len(s.shape) == 3]
    else:
        keys = [""] if isinstance(space, gym.spaces.Box) and len(space.shape or ()) == 3 else []
    if not keys:
        raise UserError(f"agent.extractor board_cnn takes an observation with a board (a rank-3 Box, such as "
                        f"connect four's 6×7×2 planes), got {space}; use agent.extractor auto")
    return keys


class BoardTrunk(torch.nn.Module):
    """The convolutions and linear layer over one board.

    Args:
        shape: the board's shape (planes on its smallest axis).
        channels, layers, features: see :data:`CHANNELS`, :data:`LAYERS`, :data:`FEATURES`.
    """

    def __init__(self, shape: tuple[int, ...], channels: int = CHANNELS, layers: int = LAYERS,
                 features: int = FEATURES) -> None:
        super().__init__()
        self.planes_axis = int(np.argmin(shape)) + 1  # in the batch's axes
        planes = shape[self.planes_axis - 1]
        height, width = (s for i, s in enumerate(shape) if i != self.planes_axis - 1)
        nn = torch.nn
        convs: list[nn.Module] = []
        for i in range(layers):
            convs += [nn.Conv2d(planes if i == 0 else channels, channels, 3, padding=1), nn.ReLU()]
        self.convs = nn.Sequential(*convs, nn.Flatten())
        self.linear = nn.Sequential(nn.Linear(channels * height * width, features), nn.ReLU())

    def forward(self, board: torch.Tensor) -> torch.Tensor:
        """Features of a batch of boards."""
        if self.planes_axis != 1:
            board = board.movedim(self.planes_axis, 1)
        return self.linear(self.convs(board.float()))  # type: ignore[no-any-return]


class BoardCNN(BaseFeaturesExtractor):
    """Each board through a :class:`BoardTrunk`, the other keys flattened, all concatenated.

    Args:
        observation_space: a Dict with one or more rank-3 Box keys, or a rank-3 Box.
        channels, layers, features: the trunk's sizes.
    """

    def __init__(self, observation_space: gym.Space, channels: int = CHANNELS, layers: int = LAYERS,
                 features: int = FEATURES) -> None:
        super().__init__(observation_space, features_dim=1)
        boards = set(board_keys(observation_space))
        spaces: dict[str, Any] = {"": observation_space}
        if isinstance(observation_space, gym.spaces.Dict):
            spaces = dict(observation_space.spaces)
        parts: dict[str, torch.nn.Module] = {}
        total = 0
        for key, sub in spaces.items():
            if key in boards:
                parts[key or "board"] = BoardTrunk(tuple(sub.shape), channels, layers, features)
                total += features
            else:
                parts[key] = torch.nn.Flatten()
                total += get_flattened_obs_dim(sub)
        self.parts = torch.nn.ModuleDict(parts)
        self._keys = list(spaces)
        self._features_dim = total

    def forward(self, observations: Any) -> torch.Tensor:
        """The features of a batch of observations (a dict of tensors, or one tensor)."""
        if not isinstance(observations, dict):
            return self.parts["board"](observations)  # type: ignore[no-any-return]
        return torch.cat([self.parts[k](observations[k]) for k in self._keys], dim=1)
