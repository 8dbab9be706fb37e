"""A small CNN for board-game observations (``agent.extractor: board_cnn``): a few 3×3 convolutions that
keep the board's size, for boards far smaller than the 36×36 SB3's NatureCNN needs (connect four's 6×7×2
planes, tic-tac-toe's 3×3×2). The convolutions are agents/boardnet.py's :class:`BoardTrunk`, which RLlib's
board encoder uses too (agents/rllib/board.py).

The board is the observation's rank-3 Box (a Dict's rank-3 key, or the whole observation), whichever way its
planes lie: the smallest axis is taken as the planes (channels). The observation's other keys (e.g. the
action mask) are flattened beside the board's features.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from stable_baselines3.common.preprocessing import get_flattened_obs_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from agents.boardnet import CHANNELS, FEATURES, LAYERS, BoardTrunk, board_keys

__all__ = ["CHANNELS", "FEATURES", "LAYERS", "BoardCNN", "BoardTrunk", "board_keys"]


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
