"""Gymnasium's NEXT_STEP auto-reset over K-instance bridge programs: the order RLlib's env runners expect.

nondiff's vector envs reset a finished env within the step that finished it (``AutoresetMode.SAME_STEP``):
that step returns the reset's observation and keeps the last one in ``infos["final_obs"]``. RLlib's env
runners want the ``NEXT_STEP`` order instead: the finishing step returns the last observation, and the next
step returns the reset's observation with reward 0, the env's action ignored. :class:`NextStep` gives that
order without stepping an env twice or losing a transition: a finished env sits the next step out (the
bridge vector env's ``skip``: its program steps the other instances alone, protocol 1.1's ``instances``),
and that step returns the reset observation the env already holds, with its reset info.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from envs.vector.base import add_info, set_row, unbatch_info

__all__ = ["NextStep"]


class NextStep(gym.vector.VectorWrapper):
    """A SAME_STEP vector env whose innermost env honours ``skip`` (envs/vector/bridge.py), in NEXT_STEP
    order.

    Args:
        env: the vector env (its wrappers: same-step auto-reset; ``env.unwrapped.skip`` and ``.skipped``).
    """

    def __init__(self, env: gym.vector.VectorEnv) -> None:
        super().__init__(env)
        self._bottom = env.unwrapped
        if not hasattr(self._bottom, "skip"):
            raise TypeError(f"{type(self._bottom).__name__} cannot leave envs out of a step (no 'skip')")
        self.metadata = {**env.metadata, "autoreset_mode": AutoresetMode.NEXT_STEP}
        self._ended = np.zeros(self.num_envs, dtype=bool)
        self._reset_infos: dict[int, dict[str, Any]] = {}

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset every env, or those of ``options["reset_mask"]`` (none of them waits to start its next
        episode afterwards)."""
        mask = (options or {}).get("reset_mask")
        chosen = np.ones(self.num_envs, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        self._ended[chosen] = False
        for i in np.flatnonzero(chosen):
            self._reset_infos.pop(int(i), None)
        return self.env.reset(seed=seed, options=options)

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Step the envs that did not finish last step; those that did start their next episode now."""
        waiting = self._ended
        self._bottom.skip = waiting.copy() if waiting.any() else None
        obs, rewards, terminated, truncated, infos = self.env.step(actions)
        ended = terminated | truncated
        self._ended = ended.copy()
        if not ended.any() and not waiting.any():
            return obs, rewards, terminated, truncated, infos
        obs = _copy(obs)
        out: dict[str, Any] = {}
        for i in range(self.num_envs):
            info = unbatch_info(infos, i)
            if ended[i]:  # the last observation now; the reset's (already taken) with the next step
                set_row(obs, i, info.pop("final_obs"))
                self._reset_infos[i] = {k: v for k, v in info.items() if k != "final_info"}
                info = info.get("final_info", {})
            elif waiting[i]:  # sat this step out: its next episode starts here, from the reset it holds
                info = {**self._reset_infos.pop(i, {}), **info}
            out = add_info(out, info, i, self.num_envs)
        return obs, rewards, terminated, truncated, out


def _copy(obs: Any) -> Any:
    """A batch of observations that writes to it cannot pass on to the env below."""
    if isinstance(obs, dict):
        return {k: _copy(v) for k, v in obs.items()}
    return np.array(obs, copy=True)
