"""Mid-episode state of a vector env's in-process envs, for an exact resume from a checkpoint (JSON).

Each env's adapter must offer ``get_state()``/``set_state()``; the state also carries the env's Gymnasium
``TimeLimit`` count and the :class:`~envs.vector.episode_stats.EpisodeStatistics` tally of its unfinished
episode (under ``"monitor"``, the form SB3's ``Monitor`` state had).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import gymnasium as gym

from envs.vector.episode_stats import EpisodeStatistics

log = logging.getLogger(__name__)
_TOLD: dict[str, bool] = {}  # warnings given once per process


def _parts(venv: gym.vector.VectorEnv) -> tuple[list[gym.Env] | None, EpisodeStatistics | None]:
    """The in-process envs under ``venv`` (None when they live elsewhere) and its episode statistics."""
    stats, e = None, venv
    while isinstance(e, gym.vector.VectorWrapper):
        if isinstance(e, EpisodeStatistics):
            stats = e
        e = e.env
    return getattr(e, "envs", None), stats


def env_states(venv: gym.vector.VectorEnv) -> list[dict[str, Any]] | None:
    """Mid-episode state of every in-process env whose adapter offers ``get_state()``; None otherwise."""
    envs, stats = _parts(venv)
    if envs is None:
        return None
    states: list[dict[str, Any]] = []
    for i, env in enumerate(envs):
        if not hasattr(env.unwrapped, "get_state"):
            return None
        try:  # an env's private state must never cost the checkpoint: it is left out when it is not JSON
            state: dict[str, Any] = {"env": env.unwrapped.get_state()}
            json.dumps(state["env"])
        except Exception as err:
            if not _TOLD.get("env_state"):
                _TOLD["env_state"] = True
                log.warning("env state left out of checkpoints: %s.get_state() gave no JSON (%s: %s); the "
                            "weights, optimiser and counters are saved, and a resume starts the envs' "
                            "episodes afresh (not an exact resume)", type(env.unwrapped).__name__,
                            type(err).__name__, str(err).splitlines()[0][:200] if str(err) else "")
            return None
        e: Any = env
        while isinstance(e, gym.Wrapper):
            if isinstance(e, gym.wrappers.TimeLimit):
                state["elapsed"] = e._elapsed_steps
            e = e.env
        if stats is not None:
            state["monitor"] = stats.get_state(i)
        states.append(state)
    return states


def set_env_states(venv: gym.vector.VectorEnv, states: list[dict[str, Any]]) -> bool:
    """Restore :func:`env_states`' states; False when ``venv`` has no in-process envs to take them."""
    envs, stats = _parts(venv)
    if envs is None or len(envs) != len(states):
        return False
    for i, (env, state) in enumerate(zip(envs, states)):
        env.reset()  # the wrappers' order enforcement and checkers expect a reset before a step
        env.unwrapped.set_state(state["env"])  # type: ignore[attr-defined]
        e: Any = env
        while isinstance(e, gym.Wrapper):
            if isinstance(e, gym.wrappers.TimeLimit):
                e._elapsed_steps = state.get("elapsed", 0)
            e = e.env
        if stats is not None and "monitor" in state:
            stats.set_state(i, state["monitor"])
    return True
