"""``selfplay.pool_moves``: the opponents' moves of one vector step made together (envs/selfplay.py
``step_ahead``), on real connect four games in the real in-process vector env. The opponents here are small
fixtures; tests/test_cli_selfplay.py trains with real snapshots pooled and resumes them exactly."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
from pettingzoo.classic import connect_four_v3
from pettingzoo.classic.connect_four.connect_four import raw_env

from agents.run.selfplay.opponents import PolicyOpponent
from envs.guard import Guard
from envs.selfplay import SeatEnv, legal_moves, step_ahead
from envs.vector.batch_guard import BatchGuard
from envs.vector.sync import SyncVectorEnv


class Poolable:
    """An opponent whose moves can be made together: a random legal move from the seat's generator."""

    name = "poolable"

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.singles = 0
        self.pool = self.moves

    def act(self, game, agent, rng) -> int:
        self.singles += 1
        return int(rng.choice(legal_moves(game, agent)))

    def moves(self, moves) -> list[int]:
        self.batches.append(len(moves))
        return [int(rng.choice(legal_moves(game, agent))) for _, game, agent, rng in moves]


def seats(n: int, opponent, pooled: bool) -> SyncVectorEnv:
    def make() -> SeatEnv:
        seat = SeatEnv(connect_four_v3.env(), "c4", opponents=lambda: opponent)
        seat.pooled = pooled
        return seat
    return SyncVectorEnv([make] * n)


def test_pooled_seats_play_exactly_what_they_play_one_by_one_in_fewer_calls():
    pooled_opp, single_opp = Poolable(), Poolable()
    a, b = seats(6, pooled_opp, True), seats(6, single_opp, False)
    obs_a, _ = a.reset(seed=0)
    obs_b, _ = b.reset(seed=0)
    rng, games = np.random.default_rng(1), 0
    for _ in range(300):
        masks = obs_a["action_mask"].astype(bool)
        np.testing.assert_array_equal(masks, obs_b["action_mask"].astype(bool))
        acts = np.array([rng.choice(np.flatnonzero(m)) for m in masks])
        obs_a, r_a, term_a, trunc_a, _ = a.step(acts)
        obs_b, r_b, term_b, trunc_b, _ = b.step(acts)
        np.testing.assert_array_equal(obs_a["observation"], obs_b["observation"])
        np.testing.assert_array_equal(r_a, r_b)
        np.testing.assert_array_equal(term_a | trunc_a, term_b | trunc_b)
        games += int(term_a.sum())
    assert games > 20  # many games ended, and every reset drew the same openings
    # the same moves, made together: one call per vector step that needed moves, up to 6 moves in each
    assert sum(pooled_opp.batches) == single_opp.singles - pooled_opp.singles
    assert len(pooled_opp.batches) == a.pooled_calls <= 300 and max(pooled_opp.batches) == 6
    assert single_opp.batches == [] and b.pooled_calls == 0
    assert pooled_opp.singles > 0  # the opponent's first move of a game (the learner second) is made alone


class Failing(Poolable):
    def moves(self, moves) -> list[int]:
        raise RuntimeError("the opponent's network failed")


def test_an_error_in_a_pooled_call_is_raised_by_each_of_its_seats_own_step():
    failing, fine = Failing(), Poolable()
    pairs = []
    for k, opponent in enumerate((failing, failing, fine)):
        seat = SeatEnv(connect_four_v3.env(), "c4", opponents=lambda o=opponent: o, seat="first")
        seat.reset(seed=k)
        pairs.append((seat, 3))
    assert step_ahead(pairs) == 2  # one call per opponent's pool
    for seat, move in pairs[:2]:
        with pytest.raises(RuntimeError, match="network failed"):  # inside the seat's wrappers (the Guard)
            seat.step(move)
    obs, reward, terminated, _, _ = pairs[2][0].step(3)
    assert not terminated and obs["observation"].sum() == 2  # the learner's move and the opponent's reply
    seat = pairs[2][0]
    step_ahead([(seat, 4)])
    with pytest.raises(RuntimeError, match="stepped ahead with move 4, then asked for 5"):
        seat.step(5)
    step_ahead([(seat, 4)])
    seat.reset(seed=9)  # the step played ahead was never asked for: a new game forgets it
    obs, *_ = seat.step(5)
    assert obs["observation"].sum() == 2


class Exiting(Poolable):
    def moves(self, moves) -> list[int]:
        raise SystemExit(3)  # what the Guard contains, like any error of the env's own


def test_a_pooled_call_that_exits_is_raised_in_the_seats_step_not_in_the_vector_env():
    seat = SeatEnv(connect_four_v3.env(), "c4", opponents=Exiting, seat="first")
    seat.reset(seed=0)
    step_ahead([(seat, 0)])
    with pytest.raises(SystemExit):
        seat.step(0)


class Probs:
    """A backend fixture: uniform probabilities over the legal moves, one call per batch."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def bind_env(self, env) -> None:
        pass

    def action_probs(self, obs, legal):
        self.calls.append(len(legal))
        return legal / legal.sum(axis=1, keepdims=True)


def test_a_policy_and_its_tempered_copies_pool_into_one_forward_pass_with_the_same_moves():
    backend = Probs()
    policy = PolicyOpponent("step_1", backend, view=lambda obs: obs)  # type: ignore[arg-type]
    hot = policy.tempered("step_1@2", 2.0)
    assert hot.pool == policy.pool
    games = []
    for k in range(4):
        game = connect_four_v3.env()
        game.reset(seed=k)
        games.append(game)
    rngs = [np.random.default_rng(k) for k in range(4)]
    alone = [(policy if k % 2 else hot).act(g, g.agent_selection, copy.deepcopy(r))
             for k, (g, r) in enumerate(zip(games, rngs))]
    assert backend.calls == [1, 1, 1, 1]
    together = policy.pool([((policy if k % 2 else hot), g, g.agent_selection, r)
                            for k, (g, r) in enumerate(zip(games, rngs))])
    assert together == alone and backend.calls[4:] == [4]


class BoardOnly(raw_env):
    """Connect four observed as its board alone (a Box): what the batched Guard checks in one pass."""

    def observation_space(self, agent):
        return gym.spaces.Box(0, 1, (6, 7, 2), np.int8)

    def observe(self, agent):
        return super().observe(agent)["observation"]


class LegalPoolable(Poolable):
    """:class:`Poolable` for a game whose observation has no mask: the legal moves from the game itself."""

    def act(self, game, agent, rng) -> int:
        self.singles += 1
        return int(rng.choice(game.unwrapped._legal_moves()))

    def moves(self, moves) -> list[int]:
        self.batches.append(len(moves))
        return [int(rng.choice(game.unwrapped._legal_moves())) for _, game, _, rng in moves]


def test_under_the_batched_guard_pooled_seats_step_ahead_and_play_as_one_by_one():
    def guarded(opponent, pooled: bool) -> BatchGuard:
        def make() -> Guard:
            seat = SeatEnv(BoardOnly(), "c4-board", opponents=lambda: opponent, seat="first")
            seat.pooled = pooled
            return Guard(seat)
        return BatchGuard(SyncVectorEnv([make] * 4), True)

    pooled_opp, single_opp = LegalPoolable(), LegalPoolable()
    a, b = guarded(pooled_opp, True), guarded(single_opp, False)
    assert a.active and b.active  # the adapters step ahead of their Guards, judged in one pass
    obs_a, _ = a.reset(seed=0)
    obs_b, _ = b.reset(seed=0)
    rng = np.random.default_rng(2)
    for _ in range(60):
        raw = [e.unwrapped.game.unwrapped for e in a.env.envs]  # type: ignore[attr-defined]
        acts = np.array([rng.choice(g._legal_moves()) for g in raw])
        obs_a, r_a, term_a, _, _ = a.step(acts)
        obs_b, r_b, term_b, _, _ = b.step(acts)
        np.testing.assert_array_equal(obs_a, obs_b)
        np.testing.assert_array_equal(r_a, r_b)
        np.testing.assert_array_equal(term_a, term_b)
    assert len(pooled_opp.batches) == 60 and max(pooled_opp.batches) == 4 and a.vouched > 0
    assert single_opp.batches == [] and single_opp.singles == sum(pooled_opp.batches)
