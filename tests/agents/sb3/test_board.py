"""``agent.extractor: board_cnn`` (agents/sb3/board.py): the small board CNN is built for a board game's
observation, in either plane layout, keeps the other keys, and is refused in one line where it cannot be."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from pettingzoo.classic import connect_four_v3

from agents.config import validate
from agents.sb3.board import BoardCNN, BoardTrunk
from agents.sb3.policies import select_policy
from envs.errors import UserError
from envs.selfplay import SeatEnv

BOARD_CNN = {"agent": {"extractor": "board_cnn"}}


def test_connect_four_gets_the_board_cnn_and_its_features_see_where_the_pieces_are():
    space = SeatEnv(connect_four_v3.env(), "c4").observation_space
    name, extra = select_policy(validate(BOARD_CNN, "x.yaml"), space)
    assert name == "MultiInputPolicy" and extra == {"features_extractor_class": BoardCNN}
    assert select_policy(validate({}, "x.yaml"), space)[1].get("features_extractor_class") is not BoardCNN
    torch.manual_seed(0)
    net = BoardCNN(space)
    assert net.features_dim == 256 + 7  # the board's features and the flattened action mask
    boards = torch.zeros(2, 6, 7, 2)
    boards[0, 5, 0, 0] = 1  # one piece of mine, bottom left
    boards[1, 5, 6, 0] = 1  # bottom right
    out = net({"observation": boards, "action_mask": torch.ones(2, 7)})
    assert out.shape == (2, 263) and not torch.allclose(out[0], out[1])


def test_planes_first_or_last_give_the_same_features():
    last = BoardTrunk((6, 7, 2))
    first = BoardTrunk((2, 6, 7))
    first.load_state_dict(last.state_dict())  # the same weights: only the layout differs
    board = torch.from_numpy(np.random.default_rng(0).integers(0, 2, (3, 6, 7, 2)).astype(np.float32))
    torch.testing.assert_close(last(board), first(board.movedim(3, 1)))


def test_observations_without_a_board_and_other_backends_are_refused_in_one_line():
    with pytest.raises(UserError, match="board_cnn takes an observation with a board"):
        select_policy(validate(BOARD_CNN, "x.yaml"), gym.spaces.Box(-1, 1, (8,)))
    for agent in ({"backend": "rllib", "algo": "sac"}, {"backend": "blackbox", "algo": "cma"}):
        with pytest.raises(UserError, match="use one of those or agent.extractor auto"):
            validate({"agent": {"extractor": "board_cnn", **agent}}, "x.yaml")
    assert validate({"agent": {"extractor": "board_cnn", "backend": "rllib"}}, "x.yaml").agent.algo == "ppo"
