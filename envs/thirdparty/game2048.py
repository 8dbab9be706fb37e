"""gymnasium-2048's legal moves as an action mask: ``env.wrappers: ["envs.thirdparty.game2048:LegalMoves"]``.

gymnasium-2048 (``gymnasium_2048/TwentyFortyEight-v0``) gives no mask: a move that changes nothing on the
board is illegal, costs a step, earns 0 and spawns no tile, so a policy that keeps making it never ends its
episode. Which moves are legal is knowable from the board, by the env's own rule: its public
``apply_action(board, action)`` says whether a move changes the board. This wrapper asks it for each of the
four moves and answers ``action_masks()`` (sb3-contrib's convention), which nondiff finds by itself
(``env.action_mask: auto``). It changes nothing else: observations, rewards and episode ends are the env's.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class LegalMoves(gym.Wrapper):
    """``action_masks()`` for gymnasium-2048: True for each move (up, right, down, left) that changes the
    board.

    Args:
        env: a gymnasium-2048 ``TwentyFortyEightEnv`` (under any wrappers).

    Raises:
        ValueError: ``env`` is not gymnasium-2048's env (it has no ``board`` or ``apply_action``).
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        inner = env.unwrapped
        if not callable(getattr(type(inner), "apply_action", None)):
            raise ValueError(f"LegalMoves wraps gymnasium-2048's TwentyFortyEightEnv, got "
                             f"{type(inner).__name__}")
        if not isinstance(env.action_space, gym.spaces.Discrete) or env.action_space.n != 4:
            raise ValueError(f"LegalMoves expects gymnasium-2048's 4 moves, got action space "
                             f"{env.action_space}")

    def action_masks(self) -> np.ndarray:
        """One boolean per move: whether it changes the board now (call it after a reset)."""
        inner = self.env.unwrapped
        board = inner.board  # type: ignore[attr-defined]
        return np.array([inner.apply_action(board.copy(), a)[2] for a in range(4)])  # type: ignore[attr-defined]
