"""The ``selfplay:`` section: how a two-player turn-based game is trained against a league of past selves
(agents/run/selfplay/)."""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Literal

from pydantic import Field, field_validator

from agents.config.section import Section

FIXED_OPPONENTS = ("random", "lookahead")
"""The scripted opponents nondiff ships (envs/selfplay.py); a checkpoint path is the other kind."""
MAX_TEMPERATURES = 16
"""The most values ``selfplay.temperature`` may list."""


class SelfPlaySection(Section):
    """Self-play on a two-player turn-based PettingZoo game (``--env module:env`` of an AEC env).

    Every ``snapshot_every`` env steps the learner's policy joins the league as an ordinary checkpoint under
    ``league/`` in the run dir; each game's opponent is the newest member with probability ``latest``, one of
    the ``fixed`` opponents with probability ``fixed_share``, else an older member drawn by ``sampler``.
    """

    snapshot_every: int = Field(default=20_000, gt=0)
    """Env steps between two snapshots of the learner."""
    latest: float = Field(default=0.5, ge=0.0, le=1.0)
    """Share of games against the newest snapshot."""
    sampler: Literal["uniform", "prioritized"] = "prioritized"
    """How an older snapshot is drawn: uniformly, or weighted by (1 − the learner's score against it)²."""
    fixed: list[str] = Field(default_factory=lambda: ["random"])
    """Opponents that never change: ``random``, ``lookahead`` (envs/selfplay.py), or a checkpoint file of
    another run (loaded for inference only: a checkpoint that needs pickle is refused), which plays under its
    file's stem: one of its own (not another's, ``step_<N>``, ``random`` or ``lookahead``)."""
    fixed_share: float = Field(default=0.2, ge=0.0, le=1.0)
    """Share of games against a fixed opponent (all of them before the first snapshot)."""
    temperature: float | list[float] = 1.0
    """How a snapshot opponent picks its moves: legal moves with probabilities ∝ p^(1/temperature), p the
    snapshot's policy. 1 samples the policy as it is; below 1 plays its likelier moves more often (fewer of
    the random blunders a learner would learn to wait for), toward its greedy move as it nears 0; above 1
    spreads its moves toward uniform (more varied games, while a move the snapshot is sure of stays likely:
    p = 0.9 among 7 moves keeps 0.55 at 2). Applies wherever a checkpoint plays the other seat (training,
    ``evaluate.py --opponent``, the tournament). A list (each in (0, 10]), e.g. ``[0.1, 2.0]``: each
    training game against a checkpoint draws one of them uniformly (the league's generator), so some games
    face a near-greedy past self and some a more varied one; ``evaluate.py --opponent`` and the tournament
    play at the list's first."""
    opening_moves: int = Field(default=0, ge=0, le=100)
    """Each training game begins with 0 to this many uniformly random moves (drawn per game, either side's),
    so that the learner meets positions beyond its own and its league's openings; a game that these moves
    (or the opponent's reply) end starts again from the rules' start. Evaluation (``evaluate.py``, the
    periodic evaluation) and the tournament always start from the rules' start."""
    pool_moves: bool = False
    """Make the opponents' moves of one vector step together: one forward pass of each snapshot's network for
    every training env that faces it, instead of one per env and move (envs/selfplay.py ``step_ahead``): in
    nondiff's in-process vector envs, ``train.vec_env`` dummy or thread (RLlib's ``sync`` env runners step
    their seats one by one). Each env plays the moves it would play one by one, drawing from its own
    generator, but a batch's probabilities may differ from single passes in their last bits, so a run
    trained with it need not replay a run trained without it bit for bit (each replays itself, and resumes
    exactly). docs/results.md, "Pooled moves", gives the speed-up."""
    seat: Literal["alternate", "first", "second"] = "alternate"
    """The learner's seat: alternating every game, or always the first or the second player."""
    elo_k: float = Field(default=16.0, gt=0.0, le=400.0)
    """The Elo update's K factor (ratings start at 1000; ``random`` stays at 1000, the anchor). At most 400:
    one game moves a rating by up to K, and far beyond that ``10 ** (difference / 400)`` overflows (1e6
    stopped a run with an OverflowError after its first games; inf saved a NaN rating no resume accepts)."""

    @field_validator("temperature")
    @classmethod
    def _temperatures(cls, v: float | list[float]) -> float | list[float]:
        values = v if isinstance(v, list) else [v]
        if not 1 <= len(values) <= MAX_TEMPERATURES or not all(0.0 < t <= 10.0 for t in values):
            raise ValueError(f"selfplay.temperature takes a number in (0, 10] or a list of 1 to "
                             f"{MAX_TEMPERATURES} of them, got {v!r}; e.g. 1.0 or [1.0, 0.1]")
        return v

    @property
    def temperatures(self) -> tuple[float, ...]:
        """:attr:`temperature` as a tuple (one value, or the list drawn from per game)."""
        return tuple(self.temperature) if isinstance(self.temperature, list) else (self.temperature,)

    @field_validator("fixed")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        named: dict[str, str] = {}
        for name in v:
            if name not in FIXED_OPPONENTS and not name.endswith(".safetensors"):
                raise ValueError(f"selfplay.fixed takes {', '.join(FIXED_OPPONENTS)} or a checkpoint file "
                                 f"(*.safetensors), got {name!r}")
            if name in named.values():
                raise ValueError(f"selfplay.fixed lists {name!r} twice; list each opponent once")
            # a checkpoint plays under its file's stem: two of one name were one member (the second never
            # played), and a snapshot's name (step_<N>) or random's was taken over by the league's own
            stem = name if name in FIXED_OPPONENTS else PurePath(name).stem
            if stem in named:
                clash = f"{named[stem]!r} has that name too"
            elif re.fullmatch(r"step_\d+", stem) or stem in FIXED_OPPONENTS and stem != name:
                clash = "that is the name of one of the league's own members"
            else:
                clash = "it holds '@', which marks a temperature" if "@" in stem else ""
            if clash:
                raise ValueError(f"selfplay.fixed plays {name!r} under the name {stem!r}, but {clash}; give "
                                 "each checkpoint a file name of its own (copy or link it, e.g. champion_a"
                                 ".safetensors)")
            named[stem] = name
        return v
