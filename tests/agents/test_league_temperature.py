"""A list of opponent temperatures (``selfplay.temperature: [1.0, 0.1]``): each game against a checkpoint
draws one from the league's generator, plays it for the whole game (a saved game in progress keeps it, by
name) and counts for the member it was drawn from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pettingzoo.classic import connect_four_v3
from pydantic import ValidationError
from test_policy_opponent import backend

from agents.config.selfplay import SelfPlaySection
from agents.run.selfplay.league import League
from agents.run.selfplay.opponents import PolicyOpponent, TemperedOpponent
from envs.selfplay import GameResult, Opponent


def temperature(opponent: Opponent) -> float:
    assert isinstance(opponent, TemperedOpponent), opponent
    return opponent.temperature


def league(tmp_path: Path, temperature: float | list[float]) -> League:
    b = backend()  # one real policy for every snapshot: what matters here is the temperature it plays at
    with torch.no_grad():  # clear preferences (a fresh policy is nearly uniform)
        b.policy.action_net.bias.copy_(torch.linspace(-1.0, 1.0, 7))
    cfg = SelfPlaySection(temperature=temperature, fixed=["random"], fixed_share=0.2, latest=0.5)
    lg = League(tmp_path / "league", cfg, seed=5,
                load=lambda path, name: PolicyOpponent(name, b, lambda o: o))
    for step in (100, 200):
        lg.add_snapshot(step, lambda path: path.write_bytes(b"weights"))
    return lg


def test_each_game_draws_a_temperature_and_is_recorded_for_its_member(tmp_path):
    lg = league(tmp_path, [1.0, 0.1])
    drawn = [lg.draw() for _ in range(400)]
    names = [o.name for o in drawn]
    assert "random" in names and all("@" not in n for n in names if n.startswith("random"))  # scripted
    tagged = [o for o in drawn if o.name.startswith("step_")]
    assert all(o.name.rpartition("@")[2] in {"1.0", "0.1"} for o in tagged), set(names)
    assert {temperature(o) for o in tagged} == {1.0, 0.1}
    share = np.mean([temperature(o) == 0.1 for o in tagged])
    assert share == pytest.approx(0.5, abs=0.08)
    assert lg.opponent_named("step_000000200@0.1").name == "step_000000200@0.1"  # a saved game goes on
    assert temperature(lg.opponent_named("step_000000200@0.1")) == 0.1
    assert lg.opponent_named("step_000000200@0.7").name != "step_000000200@0.7"  # not in the list: drawn
    lg.record(GameResult("step_000000200@0.1", 1.0))
    lg.record(GameResult("step_000000200@1.0", 0.0))
    assert lg.members["step_000000200"].games == 2 and lg.members["step_000000200"].score == 1.0
    assert set(lg.members) == {"random", "step_000000100", "step_000000200"}


def test_a_tempered_draw_plays_at_its_temperature_and_a_restored_league_draws_the_same(tmp_path):
    lg = league(tmp_path, [1.0, 0.05])
    game = connect_four_v3.env()
    game.reset(seed=0)
    cold = lg.opponent_named("step_000000100@0.05")
    moves = {cold.act(game, game.agent_selection, np.random.default_rng(k)) for k in range(40)}
    warm = lg.opponent_named("step_000000100@1.0")
    spread = {warm.act(game, game.agent_selection, np.random.default_rng(k)) for k in range(40)}
    assert len(moves) == 1 and len(spread) > 3  # near-greedy, and sampled as the policy is
    lg.save_state(200)
    ahead = [lg.draw().name for _ in range(30)]
    back = league(tmp_path / "again", [1.0, 0.05])
    back.folder = lg.folder
    assert back.restore(200) == 200
    assert [back.draw().name for _ in range(30)] == ahead


def test_one_temperature_draws_untagged_names_and_bad_lists_are_one_line(tmp_path):
    lg = league(tmp_path, 0.5)
    assert all("@" not in lg.draw().name for _ in range(50))
    assert SelfPlaySection(temperature=[1.0, 0.1]).temperatures == (1.0, 0.1)
    for bad in ([], [1.0, 0.0], [11.0], 0.0):
        with pytest.raises(ValidationError, match=r"selfplay.temperature takes a number in \(0, 10\]"):
            SelfPlaySection(temperature=bad)
