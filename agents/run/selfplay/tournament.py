"""A round robin over a self-play run's league, rated after the fact: ``python -m
agents.run.selfplay.tournament RUN_DIR [--games 20] [--every 1]``.

The Elo the league logs during training moves one game at a time, and only when the learner happens to draw a
snapshot, so it drifts (a snapshot keeps the learner's rating of the moment it joined). This plays every pair
of snapshots (every ``every``-th one, the newest always among them) and the random player ``games`` times,
seats alternating, moves sampled from each policy's legal moves, and fits one Elo rating to each by maximum
likelihood (draws count half), the random player fixed at 1000. One virtual draw of every player against the
random player keeps a rating finite when a player wins every game. Its ratings in step order say whether the
league's strength rises monotonically.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from envs.selfplay import Opponent, RandomOpponent

ANCHOR_RATING = 1000.0


@dataclass(frozen=True)
class Standings:
    """The tournament's result."""

    names: list[str]
    """The players: ``random``, then the snapshots oldest first."""
    ratings: list[float]
    """Their fitted Elo ratings (``random`` 1000)."""
    scores: np.ndarray
    """``scores[i, j]``: player i's mean score against j (1 a win, 0.5 a draw), NaN on the diagonal."""
    games: int
    """Games per pair."""

    @property
    def drops(self) -> list[tuple[str, str, float]]:
        """Each snapshot rated below the one before it: (earlier, later, by how much)."""
        snaps = list(zip(self.names[1:], self.ratings[1:], strict=True))
        return [(a, b, ra - rb) for (a, ra), (b, rb) in zip(snaps, snaps[1:], strict=False) if rb < ra]


def play(first: Opponent, second: Opponent, game: Any, seed: int, rng: np.random.Generator) -> float:
    """One game of ``game`` (a two-player PettingZoo AEC env): the first player's score (1, 0.5 or 0)."""
    game.reset(seed=seed)
    one, two = game.possible_agents
    players, total = {one: first, two: second}, 0.0
    while game.agents:
        agent = game.agent_selection
        if game.terminations.get(agent) or game.truncations.get(agent):
            game.step(None)
        else:
            game.step(int(players[agent].act(game, agent, rng)))
        total += float(game.rewards.get(one, 0.0))
    return 1.0 if total > 0 else 0.0 if total < 0 else 0.5


def fit_elo(wins: np.ndarray, games: np.ndarray, anchor: int = 0, steps: int = 4000) -> np.ndarray:
    """Elo ratings that maximise the likelihood of ``wins[i, j]`` (i's total score against j) out of
    ``games[i, j]``, ``anchor`` held at 1000; one virtual draw against the anchor for every other player."""
    wins, games = wins.astype(float).copy(), games.astype(float).copy()
    n = len(wins)
    for i in range(n):
        if i != anchor:
            wins[i, anchor] += 0.5
            wins[anchor, i] += 0.5
            games[i, anchor] += 1
            games[anchor, i] += 1
    r = np.zeros(n)  # in natural units: Elo = 1000 + r * 400 / ln 10
    for _ in range(steps):  # Zermelo/MM iteration on strengths exp(r), the anchor pinned
        p = np.exp(r)
        denom = (games / (p[:, None] + p[None, :])).sum(1)
        new = np.log(np.maximum(wins.sum(1), 1e-12) / np.maximum(denom, 1e-12))
        new -= new[anchor]
        if np.max(np.abs(new - r)) < 1e-9:
            r = new
            break
        r = new
    return ANCHOR_RATING + r * 400.0 / np.log(10.0)


def tournament(run_dir: str | Path, games: int = 20, every: int = 1, seed: int = 0) -> Standings:
    """Play the round robin of a self-play run's league (see the module docstring).

    Raises:
        UserError: not a run dir, or a run without a league.
    """
    import torch

    from agents.run.envfactory import env_factory
    from agents.run.scoring import load_policy
    from agents.run.selfplay.opponents import loader, observation_view, seat_of
    from envs.errors import UserError

    loaded = load_policy(run_dir, "latest")
    env = env_factory(loaded.cfg, loaded.env, for_eval=True)()
    seat = seat_of(env)
    folder = Path(run_dir) / "league"
    files = sorted(folder.glob("step_*.safetensors"))
    if seat is None or not files:
        raise UserError(f"{run_dir}: expected a self-play run with snapshots under league/, found none; "
                        "give the run dir of a two-player game trained by train.py")
    picked = files[::-1][::every][::-1]  # every every-th, counted back from the newest
    load = loader(loaded.cfg, loaded.env, observation_view(env))
    players: list[Opponent] = [RandomOpponent(), *(load(f, f.stem) for f in picked)]
    n = len(players)
    wins, played = np.zeros((n, n)), np.zeros((n, n))
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    for i in range(n):
        for j in range(i + 1, n):
            for g in range(games):
                a, b = (i, j) if g % 2 == 0 else (j, i)
                score = play(players[a], players[b], seat.game, seed + g, rng)
                wins[a, b] += score
                wins[b, a] += 1.0 - score
                played[a, b] += 1
                played[b, a] += 1
    env.close()
    with np.errstate(invalid="ignore"):
        scores = wins / played
    ratings = fit_elo(wins, played)
    return Standings([p.name for p in players], [float(r) for r in ratings], scores, games)


def main(argv: list[str] | None = None) -> int:
    """Entry point: print each player's fitted rating and score against random, and the drops."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--games", type=int, default=20, help="games per pair, seats alternating (default 20)")
    p.add_argument("--every", type=int, default=1, help="every N-th snapshot, the newest kept (default 1)")
    p.add_argument("--seed", type=int, default=0, help="the first game's seed, 0 to 2**32 - 1 (default 0)")
    args = p.parse_args(argv)
    from envs.errors import UserError

    if args.games <= 0 or args.every <= 0:
        print(f"error: --games and --every must be positive, got {args.games} and {args.every}",
              file=sys.stderr)
        return 2
    if not 0 <= args.seed < 2**32:  # NumPy's generator takes no negative seed: a traceback, exit 1
        print(f"error: --seed takes 0 to 2**32 - 1, got {args.seed}; e.g. --seed 0", file=sys.stderr)
        return 2
    try:
        res = tournament(args.run_dir, args.games, args.every, args.seed)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{'player':<16} {'elo':>7} {'vs random':>10}")
    for k, (name, rating) in enumerate(zip(res.names, res.ratings, strict=True)):
        vs = "-" if k == 0 else f"{res.scores[k, 0]:.2f}"
        print(f"{name:<16} {rating:>7.0f} {vs:>10}")
    drops = res.drops
    print(f"{len(drops)} drops between consecutive snapshots" + "".join(
        f"\n  {a} -> {b}: -{d:.0f}" for a, b, d in drops))
    return 0


if __name__ == "__main__":
    sys.exit(main())
