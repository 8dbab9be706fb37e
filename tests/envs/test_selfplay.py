"""One seat of a real two-player PettingZoo game as a Gymnasium env (envs/selfplay.py): seats, opponents'
moves, rewards, legal moves, the scripted opponents and the saved game state."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from mpe2 import simple_spread_v3  # a parallel env: not turn-based
from pettingzoo.classic import connect_four_v3, tictactoe_v3

from envs.selfplay import (
    GAME_KEY,
    LookaheadOpponent,
    RandomOpponent,
    SeatEnv,
    is_turn_based_source,
    legal_moves,
)


def play(env: SeatEnv, policy, games: int, seed: int = 0) -> list[float]:
    scores = []
    rng = np.random.default_rng(seed)
    for g in range(games):
        env.reset(seed=seed + g)
        done = False
        while not done:
            move = policy.act(env.game, env.learner, rng)
            assert env.action_masks()[move], "the policy chose a move the mask calls illegal"
            _, reward, terminated, truncated, info = env.step(move)
            done = terminated or truncated
        scores.append(info[GAME_KEY].score)
        assert reward == {1.0: 1.0, 0.0: -1.0, 0.5: 0.0}[info[GAME_KEY].score]
        assert info["is_success"] == (info[GAME_KEY].score == 1.0)
    return scores


def test_turn_based_sources_are_told_apart():
    assert is_turn_based_source(connect_four_v3.env) and is_turn_based_source(tictactoe_v3.env)
    assert not is_turn_based_source(simple_spread_v3.parallel_env)
    assert not is_turn_based_source(np.zeros)


def test_seats_alternate_and_the_opponent_moves_first_in_the_second_seat():
    env = SeatEnv(connect_four_v3.env(), "c4")
    obs, _ = env.reset(seed=1)
    assert env.learner == "player_0" and obs["observation"].sum() == 0  # the learner opens: empty board
    obs, _ = env.reset(seed=2)
    assert env.learner == "player_1" and obs["observation"].sum() == 1  # the opponent has played once
    np.testing.assert_array_equal(env.action_masks(), obs["action_mask"].astype(bool))
    _, reward, terminated, _, info = env.step(3)
    assert reward == 0.0 and not terminated and GAME_KEY not in info
    assert env.game.unwrapped.board.count(0) == 42 - 3  # the learner's move and the opponent's reply


def test_each_seat_sees_its_own_pieces_first_and_scores_its_own_result():
    """Both seats learn one policy, so each must see the board from its own side (its pieces in plane 0),
    and its reward must be its own result; the last step says which seat the learner held."""

    class Column:  # the same column every move: with seats from either side, someone gets four there
        name = "column"

        def __init__(self, column: int) -> None:
            self.column = column

        def act(self, game, agent, rng):
            return self.column

    env = SeatEnv(connect_four_v3.env(), "c4", opponents=lambda: Column(1))
    outcomes = {}
    for game in range(2):
        obs, _ = env.reset(seed=game)
        seat = "first" if game == 0 else "second"
        mine = obs["observation"][..., 0].sum()
        theirs = obs["observation"][..., 1].sum()
        assert (mine, theirs) == ((0, 0) if seat == "first" else (0, 1))  # the opponent opened in column 1
        done = False
        while not done:
            obs, reward, done, _, info = env.step(0)  # column 0, over and over
            if not done:  # the learner's pieces are in column 0, the opponent's in column 1, from its view
                board = obs["observation"]
                assert board[:, 0, 0].sum() == board[..., 0].sum()
                assert board[:, 1, 1].sum() == board[..., 1].sum()
        outcomes[seat] = (reward, info[GAME_KEY].seat, info["episode_metrics"])
    # the first player completes column 0 first and wins; from the second seat the opponent gets there first
    assert outcomes["first"] == (1.0, "first", {"won/first_seat": 1.0, "lost/first_seat": 0.0})
    assert outcomes["second"] == (-1.0, "second", {"won/second_seat": 0.0, "lost/second_seat": 1.0})


def test_lookahead_beats_random_and_takes_a_win_and_blocks_one():
    assert np.mean(play(SeatEnv(connect_four_v3.env(), "c4"), LookaheadOpponent(), 40)) >= 0.9
    game = connect_four_v3.env()
    game.reset(seed=0)
    for move in (0, 6, 0, 6, 0):  # player_0 has three in column 0; player_1 must block it
        game.step(move)
    assert LookaheadOpponent().act(game, "player_1", np.random.default_rng(0)) == 0
    game.step(5)  # player_1 does not block: player_0 wins at once in column 0
    assert LookaheadOpponent().act(game, "player_0", np.random.default_rng(0)) == 0
    assert legal_moves(game, "player_0").tolist() == list(range(7))


def test_a_saved_game_goes_on_exactly_after_set_state():
    first, second = SeatEnv(connect_four_v3.env(), "c4"), SeatEnv(connect_four_v3.env(), "c4")
    first.reset(seed=3)
    first.step(2)
    state = json.loads(json.dumps(first.get_state()))  # through JSON, as a checkpoint stores it
    second.reset(seed=99)
    second.set_state(state)
    assert second.pending == "random" and second.learner == first.learner
    rng = np.random.default_rng(5)
    for _ in range(3):
        move = int(rng.choice(legal_moves(first.game, first.learner)))
        a, b = first.step(move), second.step(move)  # the random opponents draw from the restored generator
        np.testing.assert_array_equal(a[0]["observation"], b[0]["observation"])
        assert a[1:4] == b[1:4]
        if a[2]:
            break


def test_random_opponent_plays_only_legal_moves_to_the_end():
    scores = play(SeatEnv(tictactoe_v3.env(), "ttt"), RandomOpponent(), 20)
    assert len(scores) == 20 and set(scores) <= {0.0, 0.5, 1.0}


def test_games_with_other_than_two_seats_or_moves_are_refused():
    from envs.errors import UserError

    class Three:
        possible_agents = ["a", "b", "c"]

    with pytest.raises(UserError, match="two-player"):
        SeatEnv(Three(), "three")

    class Uneven:  # two seats whose moves differ
        possible_agents = ["a", "b"]

        def observation_space(self, agent):
            return gym.spaces.Box(0, 1, (2,))

        def action_space(self, agent):
            return gym.spaces.Discrete(3 if agent == "a" else 4)

    with pytest.raises(UserError, match="different spaces"):
        SeatEnv(Uneven(), "uneven")

    class Steering(Uneven):  # continuous moves
        def action_space(self, agent):
            return gym.spaces.Box(-1, 1, (1,))

    with pytest.raises(UserError, match="Discrete moves"):
        SeatEnv(Steering(), "steering")


def test_random_openings_vary_the_start_and_never_end_the_game():
    """``opening``: 0 to N random moves before the learner's turn; without it the start is the rules' own."""
    plain, opened = SeatEnv(connect_four_v3.env(), "c4", seat="first"), SeatEnv(connect_four_v3.env(), "c4",
                                                                                 seat="first")
    opened.opening = 5
    pieces = set()
    for g in range(40):
        obs, _ = plain.reset(seed=g)
        assert obs["observation"].sum() == 0  # the learner opens on an empty board
        obs, _ = opened.reset(seed=g)
        n = int(obs["observation"].sum())
        assert 0 <= n <= 6 and opened.game.agent_selection == opened.learner and not opened._over()
        pieces.add(n)
    assert pieces == {0, 2, 4, 6}, pieces  # 0..5 random moves, plus the opponent's reply after an odd count
    scores = play(opened, RandomOpponent(), 10)  # games from an opening play out as usual
    assert all(s in (0.0, 0.5, 1.0) for s in scores)
    tic = SeatEnv(tictactoe_v3.env(), "ttt")
    tic.opening = 9  # 5 or more random moves may win tic-tac-toe: such openings start over, untouched
    for g in range(60):
        tic.reset(seed=g)
        assert not tic._over() and tic.game.agent_selection == tic.learner


def test_envs_check_passes_on_a_turn_based_game():
    """``python -m envs check`` on a PettingZoo classic game: Gymnasium's same-seed step check failed
    ('np_random is not properly been updated') because the seat alternates with every game; the seat env is
    registered as nondeterministic, so that check is skipped and the others run."""
    import subprocess
    import sys

    from conftest import ROOT

    game = "pettingzoo.classic.tictactoe_v3:env"
    proc = subprocess.run([sys.executable, "-m", "envs", "check", game, "--steps", "50"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "all checks passed" in proc.stdout, proc.stdout + proc.stderr
    assert "PASS  gymnasium check_env" in proc.stdout
