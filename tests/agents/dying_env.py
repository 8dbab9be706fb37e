"""An env for the runner-crash tests: CartPole that kills its own process (``os._exit``) after a few steps."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from gymnasium.envs.classic_control.cartpole import CartPoleEnv

_steps_in_this_process = 0


class DyingCartPole(CartPoleEnv):
    """CartPole that ends its process at its ``die_after``-th step (counted over every instance of the
    process): an env runner that crashes, and crashes again each time it is restarted.

    It dies only outside the trainer (``train.py``), i.e. in the Ray env runners: the trainer's own probe
    and evaluation envs step normally.

    Args:
        die_after: steps the process lives through; ``os._exit(3)`` at the next one.
    """

    def __init__(self, die_after: int = 20, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.die_after = die_after
        self._in_trainer = Path(sys.argv[0]).name == "train.py"

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        global _steps_in_this_process
        _steps_in_this_process += 1
        if not self._in_trainer and _steps_in_this_process > self.die_after:
            os._exit(3)
        return super().step(action)
