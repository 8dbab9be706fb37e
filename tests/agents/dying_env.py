"""An env for the runner-crash tests: CartPole that kills its own process (``os._exit``) after a few steps,
at every start or once."""

from __future__ import annotations

import os
import sys
import time
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
        once_marker: a file path: die only while it does not exist, creating it first (one death per run);
            None: die in every process.
        fail_to_build: raise in the constructor outside the trainer: every runner fails as it starts.
        old_api: outside the trainer, return Gym's old 4-tuple from ``step`` instead of dying: every step is
            a crash fault, and the Guard ends the runner with EnvGaveUp after 100 in a row.
        hang: outside the trainer, a ``step`` that never returns instead of dying.
    """

    def __init__(self, die_after: int = 20, once_marker: str | None = None, fail_to_build: bool = False,
                 old_api: bool = False, hang: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.die_after, self.once_marker, self.old_api, self.hang = die_after, once_marker, old_api, hang
        self._in_trainer = Path(sys.argv[0]).name == "train.py"
        if fail_to_build and not self._in_trainer:  # an env that cannot be built in a runner (no display)
            raise RuntimeError("no display in this process")

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        global _steps_in_this_process
        _steps_in_this_process += 1
        if self.hang and not self._in_trainer:
            time.sleep(3600)
        if self.old_api and not self._in_trainer:
            obs, reward, terminated, truncated, info = super().step(action)
            return obs, reward, terminated or truncated, info  # type: ignore[return-value]
        if not self._in_trainer and _steps_in_this_process > self.die_after:
            if self.once_marker is None:
                os._exit(3)
            marker = Path(self.once_marker)
            if not marker.exists():
                marker.touch()
                os._exit(3)
        return super().step(action)
