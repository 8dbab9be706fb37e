"""Two-player turn-based games (PettingZoo AEC envs such as ``pettingzoo.classic``'s connect four) as one
player's Gymnasium env: the learner takes a seat, an opponent plays the other.

An ``--env`` of the form ``module:attr`` that builds a PettingZoo ``AECEnv`` with two agents is turn-based
(:func:`is_turn_based_source`). :class:`SeatEnv` puts the learner in one seat (alternating every episode by
default, so it learns both sides) and plays the other seat's turns with an :class:`Opponent` drawn anew for
each episode from ``opponents`` (a callable; the run's league in self-play, agents/run/selfplay/). A step is
one move of the learner and every opponent move up to the learner's next turn; its reward is what the game
gave the learner over those moves. The learner's legal moves are ``action_masks()`` (the Dict observation's
``action_mask`` of PettingZoo classic), so a masking learner never plays an illegal move. The last step of a
game puts a :class:`GameResult` into ``info[GAME_KEY]``: who the opponent was, the learner's seat and how it
scored; and ``info["episode_metrics"]`` ``won/<seat>_seat`` and ``lost/<seat>_seat`` (1 or 0), which
evaluation averages over the games of each seat (``evaluate.py`` prints them beside the random player's).

Opponents here need no network: :class:`RandomOpponent` (a uniformly random legal move) and
:class:`LookaheadOpponent` (wins now if it can, never leaves a win to the other side in one move when it can
avoid it, else prefers the middle moves; a generic heuristic for games whose state deep-copies).
"""

from __future__ import annotations

import copy
import importlib
import sys
from collections.abc import Callable, Generator, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import gymnasium as gym
import numpy as np

from envs.errors import UserError
from envs.gamestate import SHARED, decode, encode
from envs.multiagent import pettingzoo_class

__all__ = ["GAME_KEY", "GameResult", "LookaheadOpponent", "Move", "Opponent", "RandomOpponent", "SeatEnv",
           "is_turn_based_source", "legal_moves", "make_seat", "play", "step_ahead"]

GAME_KEY = "nondiff_game"
"""The info key of a finished game's :class:`GameResult`."""


@dataclass(frozen=True)
class GameResult:
    """How one game ended for the learner."""

    opponent: str
    """The opponent's name (a league member, ``random``, ``lookahead``, ...)."""
    score: float
    """1 a win, 0.5 a draw, 0 a loss (the sign of the learner's return)."""
    seat: str = "first"
    """The learner's seat in that game: ``first`` (it moved first) or ``second``."""


class Opponent(Protocol):
    """Plays the other seat: a legal move for ``agent`` in ``game`` (a PettingZoo AEC env at its turn),
    drawing any randomness from ``rng`` (the seat's generator, saved with its state, so that a resumed run
    plays the same moves)."""

    name: str

    def act(self, game: Any, agent: str, rng: np.random.Generator) -> int:
        """The move ``agent`` makes now."""
        ...


Step = tuple[Any, float, bool, bool, dict[str, Any]]
"""A Gymnasium step: observation, reward, terminated, truncated, info."""

Move = tuple[Opponent, Any, str, np.random.Generator]
"""A move to be made: the opponent, the game at its turn, the agent to move, the seat's generator."""

T = TypeVar("T")


def play(moves: Sequence[Move]) -> tuple[list[int | BaseException], int]:
    """Make these moves: those of opponents that share a ``pool`` (an optional attribute: a callable that
    makes a list of moves at once, e.g. one forward pass of a network for all) by one call of it, the others
    one by one with ``act``. Returns each move (or the error that making it raised) and the number of pool
    calls."""
    out: list[int | BaseException] = [0] * len(moves)
    pools: dict[Hashable, list[int]] = {}
    for k, (opponent, game, agent, rng) in enumerate(moves):
        pool = getattr(opponent, "pool", None)
        if pool is not None:
            pools.setdefault(pool, []).append(k)
            continue
        try:
            out[k] = int(opponent.act(game, agent, rng))
        except (Exception, SystemExit) as e:  # raised in that seat's step
            out[k] = e
    for pool, ks in pools.items():
        try:
            made: list[int | BaseException] = list(pool([moves[k] for k in ks]))  # type: ignore[operator]
        except (Exception, SystemExit) as e:  # raised in each of these seats' steps
            made = [e] * len(ks)
        for k, m in zip(ks, made, strict=True):
            out[k] = m
    return out, len(pools)


def _drive(turns: Generator[str, int, T], act: Callable[[str], int]) -> T:
    """Run a generator of turns to its end, each move it asks for made by ``act``; its result."""
    try:
        agent = next(turns)
        while True:
            agent = turns.send(act(agent))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def step_ahead(seats: Sequence[tuple[SeatEnv, Any]]) -> int:
    """Play the step of each (seat, learner's move) now, the opponents' moves of all of them made together
    by :func:`play`, round by round; each seat's next ``step`` with that move returns what was played (an
    error of the step is raised there, inside the seat's wrappers). A seat plays what its own ``step`` would
    play, drawing from its generator in the same order; only a pooled network's probabilities may differ from
    one-by-one calls in their last bits. Returns the number of pool calls."""
    waiting: list[tuple[SeatEnv, Generator[str, int, None], str]] = []
    for seat, action in seats:
        turns = seat._ahead_turns(int(action))
        agent = next(turns, None)
        if agent is not None:
            waiting.append((seat, turns, agent))
    calls = 0
    while waiting:
        moves, n = play([(seat.opponent, seat.game, agent, seat.np_random) for seat, _, agent in waiting])
        calls += n
        still = []
        for (seat, turns, _), move in zip(waiting, moves, strict=True):
            try:
                agent = turns.throw(move) if isinstance(move, BaseException) else turns.send(move)
            except StopIteration:
                continue
            still.append((seat, turns, agent))
        waiting = still
    return calls


def legal_moves(game: Any, agent: str) -> np.ndarray:
    """The legal moves of ``agent`` now: the ``action_mask`` of its observation, else every move."""
    obs = game.observe(agent)
    if isinstance(obs, dict) and "action_mask" in obs:
        return np.flatnonzero(np.asarray(obs["action_mask"]))
    return np.arange(int(game.action_space(agent).n))


class RandomOpponent:
    """A uniformly random legal move."""

    name = "random"

    def act(self, game: Any, agent: str, rng: np.random.Generator) -> int:
        """A random legal move."""
        return int(rng.choice(legal_moves(game, agent)))


class LookaheadOpponent:
    """One move ahead: win now if a move wins; else avoid every move after which the other side can win at
    once; among the rest, the moves nearest the middle of the action range, ties broken at random."""

    name = "lookahead"

    def act(self, game: Any, agent: str, rng: np.random.Generator) -> int:
        """The heuristic's move (see the class docstring)."""
        raw = game.unwrapped
        moves = legal_moves(game, agent).tolist()
        safe = []
        for move in moves:
            after = _played(raw, move)
            if after.rewards.get(agent, 0) > 0:
                return int(move)
            if not _done(after) and not any(_played(after, reply).rewards.get(after.agent_selection, 0) > 0
                                            for reply in legal_moves(after, after.agent_selection).tolist()):
                safe.append(move)
        pool = safe or moves
        middle = (int(game.action_space(agent).n) - 1) / 2
        best = min(abs(m - middle) for m in pool)
        return int(rng.choice([m for m in pool if abs(m - middle) == best]))


def _played(raw: Any, move: int) -> Any:
    """A copy of the game ``raw`` with ``move`` played (its state copied attribute by attribute: PettingZoo's
    envs pickle, and so deep-copy, as fresh games built from their arguments)."""
    after = object.__new__(type(raw))
    after.__dict__.update({k: v if k in SHARED else copy.deepcopy(v) for k, v in raw.__dict__.items()})
    after.step(int(move))
    return after


def _done(game: Any) -> bool:
    return not game.agents or all(game.terminations.get(a, False) or game.truncations.get(a, False)
                                  for a in game.agents)


def is_turn_based_source(target: Any) -> bool:
    """Whether an imported entry point builds a PettingZoo ``AECEnv`` (an ``AECEnv`` subclass, or the
    ``env`` function of a module whose ``raw_env`` is one, as every ``pettingzoo.classic`` game has)."""
    known = pettingzoo_class(target, "AECEnv")
    if known is not None:
        return known
    raw = getattr(sys.modules.get(getattr(target, "__module__", ""), None), "raw_env", None)
    return bool(pettingzoo_class(raw, "AECEnv")) and getattr(target, "__name__", "") == "env"


def make_seat(entry: str, **kwargs: Any) -> SeatEnv:
    """The :class:`SeatEnv` of ``module:attr`` built with ``kwargs`` (the Gymnasium entry point of a
    turn-based ``--env``, registered by envs/registry.py)."""
    module, _, attr = entry.partition(":")
    return SeatEnv(getattr(importlib.import_module(module), attr)(**kwargs), entry)


class SeatEnv(gym.Env):
    """One seat of a two-player turn-based PettingZoo game (see the module docstring).

    Args:
        game: the AEC env.
        name: the ``--env`` it came from (for messages).
        opponents: draws the opponent of each new game (default: a random legal move).
        seat: ``alternate`` (the learner moves first in even games), ``first`` or ``second``.

    Raises:
        UserError: the game does not have two agents, or their spaces differ.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, game: Any, name: str, opponents: Callable[[], Opponent] | None = None,
                 seat: str = "alternate") -> None:
        self.game, self.seat = game, seat
        self.players = list(game.possible_agents)
        if len(self.players) != 2:
            raise UserError(f"env {name!r} is turn-based with {len(self.players)} agents; nondiff plays "
                            "two-player turn-based games (one seat learns, the other is an opponent)")
        first, second = self.players
        if game.observation_space(first) != game.observation_space(second) or \
                game.action_space(first) != game.action_space(second):
            raise UserError(f"env {name!r}: its two players have different spaces, and one policy plays "
                            "both seats; pick a game whose seats share them")
        if not isinstance(game.action_space(first), gym.spaces.Discrete):
            raise UserError(f"env {name!r}: nondiff plays turn-based games with Discrete moves, got "
                            f"{game.action_space(first)}")
        self.observation_space = game.observation_space(first)
        self.action_space = game.action_space(first)
        self.opponents: Callable[[], Opponent] = opponents or RandomOpponent
        self.opponent: Opponent = RandomOpponent()
        self.pending: str | None = None
        """The opponent named by :meth:`set_state`, until the league hands over the object."""
        self.learner = first
        self.games = 0
        self._return = 0.0
        self.pooled = False
        """Under :func:`step_ahead`, whether this seat steps ahead (``selfplay.pool_moves``)."""
        self._ahead: tuple[int, Step | BaseException] | None = None
        self.opening = 0
        """Each game begins with 0 to ``opening`` uniformly random moves (either side's), drawn from the
        seat's generator, before the learner's first turn (``selfplay.opening_moves`` of training games)."""

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """A new game against a newly drawn opponent, played up to the learner's first turn."""
        super().reset(seed=seed)
        self._ahead = None  # a step played ahead that its wrappers never asked for (none in the vector envs)
        self.game.reset(seed=seed)
        order = {"first": 0, "second": 1}.get(self.seat, self.games % 2)
        self.learner = self.players[order]
        self.games += 1
        self.opponent = self.opponents()
        opened = self._random_opening() if self.opening else 0.0
        if opened is None:  # the opening ended the game: this one starts as the rules do
            self.game.reset(seed=seed)
            opened = 0.0
        self._return = opened + self._opponent_moves()
        return self.game.observe(self.learner), {}

    def _random_opening(self) -> float | None:
        """Play 0 to :attr:`opening` random legal moves, then the opponent's up to the learner's turn: the
        learner's reward meanwhile, or None if the game ended before that turn."""
        game = self.game
        for _ in range(int(self.np_random.integers(0, self.opening + 1))):
            game.step(int(self.np_random.choice(legal_moves(game, game.agent_selection))))
            if not game.agents or any(game.terminations.values()) or any(game.truncations.values()):
                return None
        reward = self._opponent_moves()
        return None if self._over() else reward

    def step(self, action: Any) -> Step:
        """The learner's move, then the opponent's up to the learner's next turn (or what
        :func:`step_ahead` played for this move)."""
        if self._ahead is not None:
            (move, outcome), self._ahead = self._ahead, None
            if move != int(action):
                raise RuntimeError(f"stepped ahead with move {move}, then asked for {action}")
            if isinstance(outcome, BaseException):
                raise outcome  # where an error of the step itself is raised: inside the Guard
            return outcome
        return _drive(self._turns(int(action)), self._act)

    def _turns(self, action: int) -> Generator[str, int, Step]:
        """:meth:`step` as a generator: yields each opponent agent whose move it needs, is sent the move."""
        self.game.step(action)
        reward = float(self.game.rewards.get(self.learner, 0.0))
        if not self._over():
            reward += yield from self._opponent_turns()
        self._return += reward
        terminated = bool(self.game.terminations.get(self.learner, True))
        truncated = bool(self.game.truncations.get(self.learner, False)) and not terminated
        info: dict[str, Any] = {}
        if terminated or truncated:
            score = 1.0 if self._return > 0 else 0.0 if self._return < 0 else 0.5
            seat = "first" if self.learner == self.players[0] else "second"
            info[GAME_KEY] = GameResult(self.opponent.name, score, seat)
            info["is_success"] = score == 1.0  # evaluation's success rate is the share of games won
            # evaluation's per-seat figures: each is the mean over the games played from that seat
            info["episode_metrics"] = {f"won/{seat}_seat": float(score == 1.0),
                                       f"lost/{seat}_seat": float(score == 0.0)}
        return self.game.observe(self.learner), reward, terminated, truncated, info

    def _ahead_turns(self, action: int) -> Generator[str, int, None]:
        """:meth:`_turns`, its outcome (or error) kept for the next :meth:`step` (:func:`step_ahead`)."""
        try:
            outcome: Step | BaseException = yield from self._turns(action)
        except (Exception, SystemExit) as e:  # raised again by step(), inside the Guard, which contains both
            outcome = e
        self._ahead = (action, outcome)

    def _act(self, agent: str) -> int:
        return int(self.opponent.act(self.game, agent, self.np_random))

    def action_masks(self) -> np.ndarray:
        """The learner's legal moves now, one flag per move."""
        mask = np.zeros(int(self.game.action_space(self.learner).n), dtype=np.bool_)
        if not self._over():
            mask[legal_moves(self.game, self.learner)] = True
        else:
            mask[:] = True  # the game is over: any move is as good (the step is never taken)
        return mask

    def _over(self) -> bool:
        return self.learner not in self.game.agents or bool(self.game.terminations.get(self.learner)) or \
            bool(self.game.truncations.get(self.learner))

    def _opponent_moves(self) -> float:
        """Play the opponent until the learner's turn or the game's end; the learner's reward meanwhile."""
        return _drive(self._opponent_turns(), self._act)

    def _opponent_turns(self) -> Generator[str, int, float]:
        """:meth:`_opponent_moves` as a generator: yields the agent to move, is sent its move."""
        reward = 0.0
        while self.game.agents and self.game.agent_selection != self.learner and not self._over():
            agent = self.game.agent_selection
            if self.game.terminations.get(agent) or self.game.truncations.get(agent):
                self.game.step(None)
            else:
                self.game.step(int((yield agent)))
            reward += float(self.game.rewards.get(self.learner, 0.0))
        return reward

    def get_state(self) -> dict[str, Any]:
        """The game in progress as JSON (for an exact resume): the game's own state, the seat, the opponent's
        name and the seat's random generator."""
        return {"game": encode({k: v for k, v in self.game.unwrapped.__dict__.items() if k not in SHARED}),
                "learner": self.learner, "games": self.games, "return": self._return,
                "opponent": self.opponent.name, "rng": encode(self.np_random.bit_generator.state)}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue the game :meth:`get_state` saved (the opponent is found by name when the league is
        attached: :attr:`pending`)."""
        raw = self.game.unwrapped
        for key, value in state["game"].items():
            setattr(raw, key, decode(value, getattr(raw, key, None)))
        self.learner, self.games, self._return = state["learner"], int(state["games"]), float(state["return"])
        self.np_random.bit_generator.state = state["rng"]
        self.pending = str(state["opponent"])
        self._ahead = None

    def close(self) -> None:
        """Close the game."""
        self.game.close()
