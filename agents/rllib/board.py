"""``agent.extractor: board_cnn`` on RLlib: SB3's board network (agents/sb3/board.py) as the RLModule's
encoder.

RLlib's env runners give the module one flat float32 vector (envs/wrappers.py flattens a Dict observation
such as connect four's ``{action_mask, observation}``), and RLlib's catalog would put an MLP on it. Here the
module's encoder takes the board back out of that vector as a rank-3 tensor (:class:`BoardLayout`: where it
lies and its shape, read once from a built env by :func:`layout_of`), runs it through the same
:class:`~agents.boardnet.BoardTrunk` as SB3 (three 3×3 convolutions, 256 features), puts the vector's other
parts (the mask) beside the features, and gives that to ``agent.net_arch`` MLPs, one for the policy and one
for the value, as SB3's ``mlp_extractor`` does; RLlib's own pi and vf heads follow.

The layout rides in the module's state as the buffer ``encoder.board_layout``, so a checkpoint carries it and
:func:`layout_from_weights` rebuilds the module without the env (``evaluate.py``, league opponents).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.boardnet import FEATURES, BoardTrunk, board_keys
from envs.errors import UserError

MODEL_KEY = "nondiff_board"
"""The model-config key that carries the :class:`BoardLayout` (as a list of ints) to the module."""
LAYOUT_STATE = "encoder.board_layout"
"""The module-state key of the layout buffer."""


@dataclass(frozen=True)
class BoardLayout:
    """Where the board lies in the module's flat observation vector.

    Attributes:
        offset: its first element's index.
        shape: its shape (the vector holds it in C order, as Gymnasium's ``flatten`` writes it).
    """

    offset: int
    shape: tuple[int, int, int]

    def as_list(self) -> list[int]:
        """``[offset, *shape]``: the form kept in the model config and the module's state."""
        return [self.offset, *self.shape]

    @classmethod
    def from_list(cls, values: Any) -> BoardLayout:
        """The inverse of :meth:`as_list`.

        Raises:
            ValueError: not four integers, a negative offset or a dimension below 1 (a checkpoint's buffer
                edited or damaged).
        """
        flat = [int(v) for v in np.asarray(values).reshape(-1)[:5]]
        if len(flat) != 4 or flat[0] < 0 or min(flat[1:]) < 1:
            raise ValueError(f"a board layout is [offset, height, width, planes], got {flat}")
        return cls(flat[0], (flat[1], flat[2], flat[3]))


def layout_of(env: gym.Env) -> BoardLayout:
    """The board's place in ``env``'s observations: a rank-3 Box observation, or the one rank-3 Box of a
    Dict that a ``FlattenObservation`` wrapper made one vector (the rllib backend's observation adapter).

    Raises:
        UserError: no board, or more than one.
    """
    inner: gym.Env | None = env
    while isinstance(inner, gym.Wrapper) and not isinstance(inner, gym.wrappers.FlattenObservation):
        inner = inner.env
    space = inner.env.observation_space if isinstance(inner, gym.wrappers.FlattenObservation) else \
        env.observation_space
    keys = board_keys(space)
    if len(keys) != 1:
        raise UserError(f"agent.extractor board_cnn on --backend rllib takes one board (a rank-3 Box), the "
                        f"observation has {len(keys)} ({', '.join(keys)}); use --backend sb3")
    if not isinstance(space, gym.spaces.Dict):
        return BoardLayout(0, tuple(space.shape))  # type: ignore[arg-type]
    offset = 0
    for key, sub in space.spaces.items():
        if key == keys[0]:
            return BoardLayout(offset, tuple(sub.shape))  # type: ignore[arg-type]
        offset += int(gym.spaces.flatdim(sub))
    raise AssertionError("unreachable: the board key is one of the space's keys")


def layout_from_weights(weights: dict[str, Any]) -> BoardLayout:
    """The layout a checkpoint's module state carries.

    Raises:
        KeyError: the state holds no board layout (not a board_cnn module).
    """
    return BoardLayout.from_list(weights[LAYOUT_STATE])


class _Critic(torch.nn.Module):
    """The value side of :class:`BoardEncoder` alone (RLlib's ``compute_values`` calls
    ``encoder.critic_encoder``)."""

    def __init__(self, owner: BoardEncoder) -> None:
        super().__init__()
        self.__dict__["_owner"] = owner  # not a submodule: the owner holds the layers

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        from ray.rllib.core.models.base import ENCODER_OUT

        owner: BoardEncoder = self.__dict__["_owner"]
        return {ENCODER_OUT: owner.critic(owner.features(batch))}


class BoardEncoder(torch.nn.Module):
    """The flat observation → the board through :class:`BoardTrunk`, the rest beside it → ``net_arch`` MLPs
    for the policy (``actor``) and, unless ``inference_only``, the value (``critic``).

    Args:
        obs_dim: the flat observation's size.
        layout: where the board lies in it.
        hidden: ``agent.net_arch``.
        activation: the MLPs' activation (a torch module class).
        inference_only: build no value MLP (RLlib's env-runner modules).
    """

    def __init__(self, obs_dim: int, layout: BoardLayout, hidden: list[int], activation: type,
                 inference_only: bool = False) -> None:
        super().__init__()
        size = math.prod(layout.shape)  # Python's ints: numpy's int64 product wraps round to fit a huge board
        if layout.offset + size > obs_dim:
            raise ValueError(f"the board {layout.shape} at {layout.offset} does not fit the observation's "
                             f"{obs_dim} values")
        self.layout = layout
        self.register_buffer("board_layout", torch.tensor(layout.as_list(), dtype=torch.int64))
        self.trunk = BoardTrunk(layout.shape)
        width = FEATURES + obs_dim - size  # the board's features and the vector's other values

        def mlp() -> torch.nn.Sequential:
            layers: list[torch.nn.Module] = []
            for i, n in enumerate(hidden):
                layers += [torch.nn.Linear(hidden[i - 1] if i else width, n), activation()]
            return torch.nn.Sequential(*layers)

        self.actor = mlp()
        if not inference_only:
            self.critic = mlp()
            self.critic_encoder = _Critic(self)

    def features(self, batch: dict[str, Any]) -> torch.Tensor:
        """The board's features with the observation's other values beside them (SB3's order: the parts
        before the board, its features, the parts after)."""
        from ray.rllib.core.columns import Columns

        obs = batch[Columns.OBS]
        flat = obs.reshape(obs.shape[0], -1).float()
        start, end = self.layout.offset, self.layout.offset + int(np.prod(self.layout.shape))
        board = self.trunk(flat[:, start:end].reshape(-1, *self.layout.shape))
        return torch.cat([flat[:, :start], board, flat[:, end:]], dim=1)

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """RLlib's actor-critic encoder output: ``{ENCODER_OUT: {ACTOR: ..., CRITIC: ...}}``."""
        from ray.rllib.core.models.base import ACTOR, CRITIC, ENCODER_OUT

        x = self.features(batch)
        out = {ACTOR: self.actor(x)}
        if hasattr(self, "critic"):
            out[CRITIC] = self.critic(x)
        return {ENCODER_OUT: out}


def model_config(layout: BoardLayout) -> dict[str, Any]:
    """The model-config entries that make :func:`module_class`'s module build the board encoder."""
    return {MODEL_KEY: layout.as_list()}


@functools.cache
def module_class(base: type) -> type:
    """``base`` (PPO's or APPO's torch RLModule, masked or not) with :class:`BoardEncoder` as its encoder
    when the model config carries a layout (:func:`model_config`); the catalog's heads stay."""
    from ray.rllib.models.utils import get_activation_fn

    class Board(base):  # type: ignore[valid-type,misc]
        def setup(self) -> None:
            super().setup()
            layout = self.model_config.get(MODEL_KEY)
            if layout is None:
                return
            hidden = list(self.model_config["fcnet_hiddens"])
            if not hidden:
                raise UserError("agent.extractor board_cnn on --backend rllib needs agent.net_arch layers "
                                "(RLlib's heads follow them), got []")
            obs_dim = int(np.prod(self.observation_space.shape))
            activation = get_activation_fn(self.model_config.get("fcnet_activation", "relu"),
                                           framework="torch")
            self.encoder = BoardEncoder(obs_dim, BoardLayout.from_list(layout), hidden, activation,
                                        inference_only=self.inference_only)

    Board.__name__ = Board.__qualname__ = f"Board{base.__name__}"
    return Board

