"""A checkpoint as an opponent: the policy plays the other seat, seeing the game as the learner sees it and
choosing among the legal moves only."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from envs.selfplay import Move, SeatEnv, legal_moves

if TYPE_CHECKING:
    from agents.config import RunConfig
    from agents.run.backend import Backend
    from agents.run.resolved import ResolvedEnv


def seat_of(env: gym.Env) -> SeatEnv | None:
    """The :class:`~envs.selfplay.SeatEnv` at the bottom of ``env``'s wrappers, or None."""
    inner = env.unwrapped
    return inner if isinstance(inner, SeatEnv) else None


def observation_view(env: gym.Env) -> Callable[[Any], Any]:
    """What ``env``'s wrappers do to an observation of the game below them (their ``observation`` methods,
    innermost first): how a policy trained on ``env`` must see the other seat's observation."""
    steps: list[Callable[[Any], Any]] = []
    e: Any = env
    while isinstance(e, gym.Wrapper):
        if isinstance(e, gym.ObservationWrapper):
            steps.append(e.observation)
        e = e.env
    steps.reverse()

    def view(obs: Any) -> Any:
        for step in steps:
            obs = step(obs)
        return obs
    return view


class PolicyOpponent:
    """A loaded policy in the other seat (moves sampled from the policy, legal ones only).

    Args:
        name: its name in the league.
        backend: the policy, loaded for inference (``Backend.load``).
        view: turns the game's observation into what the policy was trained on (:func:`observation_view`).
        temperature: moves are drawn with probabilities ∝ p^(1/temperature) (``selfplay.temperature``).
    """

    def __init__(self, name: str, backend: Backend, view: Callable[[Any], Any],
                 temperature: float = 1.0) -> None:
        self.name, self.backend, self.view, self.temperature = name, backend, view, temperature
        self._mask: np.ndarray | None = None
        self._lock = threading.Lock()  # envs stepped in threads share one opponent
        self.pool = self.moves  # under selfplay.pool_moves, one call for every env's move (envs/selfplay.py)
        backend.bind_env(self)  # a masking backend asks this object for the legal moves

    def get_wrapper_attr(self, name: str) -> Any:
        """``action_masks`` (the legal moves of the position being played), as an env would answer it."""
        if name == "action_masks":
            return lambda: self._mask
        raise AttributeError(name)

    def act(self, game: Any, agent: str, rng: np.random.Generator) -> int:
        """The policy's move for ``agent``, drawn from ``rng`` by the policy's probabilities of the legal
        moves (tempered) where the backend gives them (``Backend.action_probs``), else sampled by
        ``predict`` untempered (a random legal move should that pick an illegal one)."""
        return self.move(game, agent, rng, self.temperature)

    def tempered(self, name: str, temperature: float) -> TemperedOpponent:
        """This policy playing at ``temperature`` under the name ``name`` (one game's draw of a
        ``selfplay.temperature`` list), sharing the loaded network."""
        return TemperedOpponent(name, self, temperature)

    def move(self, game: Any, agent: str, rng: np.random.Generator, temperature: float) -> int:
        """:meth:`act` at ``temperature``."""
        return self._moves([(game, agent, rng, temperature)])[0]

    def moves(self, moves: list[Move]) -> list[int]:
        """The moves of every (opponent, game, agent, generator) at once, the opponents this policy or its
        tempered copies: one forward pass for all (``play``'s ``pool``: ``selfplay.pool_moves``)."""
        return self._moves([(game, agent, rng, getattr(opponent, "temperature", self.temperature))
                            for opponent, game, agent, rng in moves])

    def _moves(self, positions: list[tuple[Any, str, np.random.Generator, float]]) -> list[int]:
        masks, seen = [], []
        for game, agent, _, _ in positions:
            mask = np.zeros(int(game.action_space(agent).n), dtype=np.bool_)
            mask[legal_moves(game, agent)] = True
            masks.append(mask)
            seen.append(self.view(game.observe(agent)))
        batch = ({k: np.stack([np.asarray(o[k]) for o in seen]) for k in seen[0]} if isinstance(seen[0], dict)
                 else np.stack([np.asarray(o) for o in seen]))
        probs = self.backend.action_probs(batch, np.stack(masks))
        out = []
        for k, (_, _, rng, temperature) in enumerate(positions):
            mask = masks[k]
            if probs is None:  # predict, untempered; a random legal move should it pick an illegal one
                with self._lock:
                    self._mask = mask
                    predicted = self.backend.predict(seen[k], deterministic=False)
                action = int(np.asarray(predicted).reshape(-1)[0])
                out.append(action if mask[action] else int(rng.choice(np.flatnonzero(mask))))
                continue
            p = probs[k] if temperature == 1.0 else probs[k] ** (1.0 / temperature)
            out.append(int(rng.choice(len(mask), p=p / p.sum())))
        return out


class TemperedOpponent:
    """A :class:`PolicyOpponent` at another temperature, under its own name (the league's tagged name of a
    game's draw, which a saved game in progress keeps, so a resumed game plays on at the same temperature).
    """

    def __init__(self, name: str, policy: PolicyOpponent, temperature: float) -> None:
        self.name, self.policy, self.temperature = name, policy, temperature
        self.pool = policy.pool  # pooled with the policy's other temperatures

    def act(self, game: Any, agent: str, rng: np.random.Generator) -> int:
        """The policy's move at this temperature (:meth:`PolicyOpponent.move`)."""
        return self.policy.move(game, agent, rng, self.temperature)


def loader(cfg: RunConfig, env: ResolvedEnv,
           view: Callable[[Any], Any]) -> Callable[[Path, str], PolicyOpponent]:
    """Loads a checkpoint file as a :class:`PolicyOpponent` (for inference: a checkpoint that needs pickle is
    refused, as ``evaluate.py`` refuses it without ``--trust-checkpoint``). A checkpoint of another backend
    (another run's, as a fixed opponent) builds its network from its own config and sees this run's game as
    its backend's envs show it (:func:`foreign_view`)."""

    def load(path: Path, name: str) -> PolicyOpponent:
        import torch

        from agents.config import validate
        from agents.run import checkpoint, tensorcheck
        from agents.run.backend import get_backend
        from agents.run.header import CORRUPTED_FIX
        from envs.errors import CheckpointError

        try:
            ckpt = checkpoint.load(path, trust=False)
        except CheckpointError as e:  # no --checkpoint to pick another: the file itself is the fix
            text = str(e)
            if not text.endswith(CORRUPTED_FIX):
                raise
            raise CheckpointError(f"self-play opponent: {text.removesuffix(CORRUPTED_FIX)}restore the file "
                                  "from its run, or give another checkpoint file") from e
        kind = get_backend(ckpt.header.backend)
        # its network from its own config (data only, checked by the schema: another run's net_arch or
        # extractor fits its tensors); the game it is shown from this run's env section, never the
        # checkpoint's: a checkpoint from elsewhere imports nothing
        own_cfg, own_view = validate(dict(ckpt.header.config), f"checkpoint {str(path)!r}"), view
        if ckpt.header.backend == cfg.agent.backend:  # the rest (threads, device) as this run has it
            own_cfg, spaces = cfg.model_copy(update={"agent": own_cfg.agent}), env.spaces
        else:
            own_view, spaces = _foreign(cfg, dataclasses.replace(env, channels_first=kind.channels_first))
        # a checkpoint of another game (a league snapshot swapped, --opponent given another run's): one line,
        # not a policy fed observations it was never built for
        checkpoint.check_spaces(ckpt.header, *spaces, f"self-play opponent {str(path)!r}")
        if kind.builds_net_arch:  # its own config allocates nothing absurd
            tensorcheck.check_net_arch(ckpt, own_cfg.agent.net_arch)
        with torch.random.fork_rng():  # building a policy draws initial weights: not from the run's generator
            return PolicyOpponent(name, kind.load(ckpt, own_cfg, env), own_view,
                                  cfg.selfplay.temperatures[0])
    return load


def foreign_view(cfg: RunConfig, env: ResolvedEnv) -> Callable[[Any], Any]:
    """:func:`observation_view` of the env ``cfg`` (this run's) builds for ``env`` (another backend's
    checkpoint: that backend's image layout and observation adapter)."""
    return _foreign(cfg, env)[0]


def _foreign(cfg: RunConfig, env: ResolvedEnv) -> tuple[Callable[[Any], Any], tuple[gym.Space, gym.Space]]:
    """:func:`foreign_view`, and the spaces a policy of that backend acts in there."""
    from agents.run.envfactory import env_factory, policy_spaces

    made = env_factory(cfg, env)()
    try:
        return observation_view(made), policy_spaces(made)
    finally:
        made.close()
