"""Self-play on RLlib (issue 31): where the league's games are played and how their results reach it.

The league (agents/run/selfplay/) hands each training env its opponents in the process that steps the envs.
With ``rllib.num_env_runners: 0`` that is the local env runner, in the driver: :func:`local_envs` finds its
envs and the league draws for them directly. Remote env runners (``num_env_runners`` > 0) step their envs
elsewhere, each with a replica of the league that the driver keeps up to date (agents/rllib/league_remote.py;
:func:`runner_envs` finds a runner's envs there). A finished game's :class:`~envs.selfplay.GameResult` (in the
last step's ``info``) is counted by the env runner's callback into RLlib's metrics (:func:`log_game`), one
sum per opponent, seat and outcome; after each ``algo.train()`` the backend turns those sums back into results
(:func:`games_from_metrics`) for the league's ratings, in the order opponent, seat, score (RLlib aggregates
the counts per iteration, not the games' order, which a vector env does not fix either).
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from agents.rllib.masking import MaskedObservations
from envs.selfplay import GAME_KEY, GameResult

GAMES = ("nondiff", "games")
"""Where the env runners' game counts are in RLlib's metrics: ``nondiff/games/<opponent>/<seat>/<won>``."""
OUTCOMES = {1.0: "won", 0.5: "drawn", 0.0: "lost"}
"""A game's score for the learner, by the name its count has in the metrics."""


def log_game(info: dict[str, Any], metrics_logger: Any) -> None:
    """Count the game that ended with ``info`` (an env runner's last info of an episode), if one did."""
    result = info.get(GAME_KEY)
    if isinstance(result, GameResult):
        metrics_logger.log_value((*GAMES, result.opponent, result.seat, OUTCOMES[result.score]), 1,
                                 reduce="sum")


def games_from_metrics(nondiff: dict[str, Any]) -> list[GameResult]:
    """The games of one iteration from the runners' ``nondiff`` metrics (:func:`log_game`'s counts)."""
    scores = {name: score for score, name in OUTCOMES.items()}
    out: list[GameResult] = []
    for opponent, seats in (nondiff.get(GAMES[1]) or {}).items():
        for seat, outcomes in (seats or {}).items():
            for outcome, count in (outcomes or {}).items():
                # RLlib reports a sum that saw no value in this iteration as NaN
                n = int(count) if isinstance(count, int | float | np.number) and np.isfinite(count) else 0
                out.extend([GameResult(str(opponent), scores[outcome], str(seat))] * n)
    return out


def local_envs(algo: Any) -> list[gym.Env]:
    """The envs the local env runner steps (``rllib.num_env_runners: 0``, :func:`runner_envs`); ``[]`` when
    remote env runners step them."""
    group = algo.env_runner_group
    if group.num_remote_env_runners() > 0:
        return []
    return runner_envs(group.local_env_runner)


def runner_envs(runner: Any) -> list[gym.Env]:
    """The envs an env runner steps, each as the env factory built it (beneath
    :class:`~agents.rllib.masking.MaskedObservations`: the observations ``predict`` takes, which a league
    opponent is shown)."""
    venv = getattr(runner, "env", None)
    return [_policy_env(e) for e in getattr(getattr(venv, "unwrapped", None), "envs", [])]


def _policy_env(env: gym.Env) -> gym.Env:
    """``env`` below the runner's mask-in-the-observation wrapper, if it has one."""
    e: Any = env
    while isinstance(e, gym.Wrapper):
        if isinstance(e, MaskedObservations):
            return e.env
        e = e.env
    return env
