"""The board network's trunk, shared by both backends (``agent.extractor: board_cnn``): a few 3×3
convolutions that keep the board's size, then one linear layer. SB3 wraps it as a features extractor
(agents/sb3/board.py), RLlib as its RLModule's encoder (agents/rllib/board.py); the layers are the same.

The board is a rank-3 observation (connect four's 6×7×2 planes, tic-tac-toe's 3×3×2), whichever way its
planes lie: the smallest axis is taken as the planes (channels).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

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
