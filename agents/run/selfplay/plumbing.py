"""Self-play in the training loop and in ``evaluate.py``: build or restore the league, hand it to the
envs, snapshot the learner, record results."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gymnasium as gym

from agents.run.selfplay.league import League, fixed_opponent
from agents.run.selfplay.opponents import foreign_view, loader, observation_view, seat_of
from envs.errors import UserError

if TYPE_CHECKING:
    from agents.config import RunConfig
    from agents.run.backend import Backend
    from agents.run.resolved import ResolvedEnv
    from agents.run.session import Session
    from envs.selfplay import SeatEnv


def start(session: Session, backend: Backend, env: ResolvedEnv) -> League | None:
    """The run's league (restored to the checkpoint the run resumes from), handed to every training env;
    None when the env is not a turn-based game.

    Envs stepped in other processes (RLlib's remote env runners) get replicas of the league from the backend
    (:meth:`~agents.run.backend.Backend.host_league`); this league stays the one that rates and snapshots.

    Raises:
        UserError: the training envs are not in this process and the backend cannot take the league to them.
    """
    cfg = session.cfg
    if not env.turn_based:
        if cfg.selfplay != type(cfg.selfplay)():
            session.say(f"warning: the selfplay: settings are ignored: env {cfg.env.id!r} is not a "
                        "two-player turn-based game (a PettingZoo AEC env such as pettingzoo.classic's); "
                        "drop them")
        return None
    envs = backend.train_envs()
    seats = [seat_of(e) for e in envs]
    if any(s is None for s in seats):
        raise envs_elsewhere(cfg, backend.envs_elsewhere(cfg))
    league = League(session.run.league, cfg.selfplay, int(cfg.meta.get("seed") or 0),
                    loader(cfg, env, observation_view(envs[0]) if envs else _made_view(cfg, env)))
    for member in [m for m in league.members.values() if m.step is None]:
        league.opponent_named(member.name)  # a bad fixed opponent: one line now, not a fault in every game
    if not envs and not backend.host_league(league):
        raise envs_elsewhere(cfg, backend.envs_elsewhere(cfg))
    if session.start_step:
        found = league.restore(session.start_step)
        if found != session.start_step:
            session.say(f"warning: the self-play league's state of step {session.start_step:,} is missing "
                        f"from {league.folder}; going on with "
                        + ("a fresh league" if found is None else f"the league of step {found:,}")
                        + " (not an exact resume)")
    for seat in seats:
        assert seat is not None
        attach(seat, league)
        if seat.pending is not None:  # a game restored mid-way goes on against the same opponent
            seat.opponent, seat.pending = league.opponent_named(seat.pending), None
    session.league = league
    return league


def attach(seat: SeatEnv, league: League) -> None:
    """Make ``seat`` a training seat of ``league``: its opponents drawn from it, its seat, random openings and
    pooled moves as the league's ``selfplay:`` section sets them."""
    seat.opponents, seat.seat, seat.opening = league.draw, league.cfg.seat, league.cfg.opening_moves
    seat.pooled = league.cfg.pool_moves


def _made_view(cfg: RunConfig, env: ResolvedEnv) -> Callable[[Any], Any]:
    """The observation view of an env built here, built at its first use (the driver of remote envs loads
    fixed opponents to check them and never plays them)."""
    built: list[Callable[[Any], Any]] = []

    def view(obs: Any) -> Any:
        if not built:
            built.append(foreign_view(cfg, env))
        return built[0](obs)
    return view


def envs_elsewhere(cfg: RunConfig, fix: str) -> UserError:
    """The one-line error of a turn-based game whose training envs are stepped in another process (``fix``:
    what came and how to bring them here, :meth:`~agents.run.backend.Backend.envs_elsewhere`)."""
    return UserError(f"env {cfg.env.id!r} is a turn-based game, whose opponents (the self-play league) play "
                     f"in the training process; {fix}")


def after_iteration(league: League, step: int, backend: Backend, session: Session) -> None:
    """Snapshot the learner when one is due, and log the league's ratings."""
    if league.due(step):
        member = league.add_snapshot(step, backend.save)
        session.say(f"self-play: snapshot {member.name} joins the league (rating {member.rating:.0f}, "
                    f"{len(league.snapshots())} snapshots)")
    session.log(league.scalars(), step)


def pit(cfg: RunConfig, env: ResolvedEnv, made: gym.Env, opponent: str) -> None:
    """``evaluate.py --opponent``: the evaluation env ``made`` plays every game against ``opponent``
    (``random``, ``lookahead`` or a checkpoint file such as a league snapshot).

    Raises:
        UserError: the env is not a turn-based game, or the opponent is not one of those.
    """
    seat = seat_of(made)
    if seat is None:
        raise UserError(f"--opponent {opponent!r}: env {cfg.env.id!r} is not a two-player turn-based game; "
                        "drop --opponent")
    fixed = fixed_opponent(opponent, loader(cfg, env, observation_view(made)), "--opponent")
    seat.opponents = lambda: fixed
