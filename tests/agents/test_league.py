"""The self-play league (agents/run/selfplay/league.py): Elo, the opponent draw, snapshots, saved state."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from agents.config.selfplay import SelfPlaySection
from agents.run.selfplay.league import MAX_STATE_BYTES, League
from envs.errors import UserError
from envs.selfplay import GameResult, RandomOpponent


class Named(RandomOpponent):
    def __init__(self, name: str) -> None:
        self.name = name


def league(tmp_path: Path, **cfg) -> League:
    return League(tmp_path / "league", SelfPlaySection(**cfg), seed=3, load=lambda path, name: Named(name))


def snapshot(lg: League, step: int) -> None:
    lg.add_snapshot(step, lambda path: path.write_bytes(b"weights"))


def test_elo_moves_the_learner_and_the_opponent_but_never_the_anchor(tmp_path):
    lg = league(tmp_path, elo_k=16)
    lg.record(GameResult("random", 1.0))
    assert lg.rating == pytest.approx(1008.0) and lg.members["random"].rating == 1000.0
    snapshot(lg, 100)
    start = lg.rating
    lg.record(GameResult("step_000000100", 0.0))  # lost to an equal: K/2 each way
    assert lg.rating == pytest.approx(start - 8.0)
    assert lg.members["step_000000100"].rating == pytest.approx(start + 8.0)
    assert lg.members["step_000000100"].learner_rate == 0.0


def test_the_draw_follows_the_shares_and_the_priorities(tmp_path):
    lg = league(tmp_path, latest=0.5, fixed_share=0.2, sampler="prioritized")
    assert {lg.draw().name for _ in range(20)} == {"random"}  # no snapshot yet: only the fixed opponents
    for step in (100, 200, 300):
        snapshot(lg, step)
    for _ in range(50):  # the learner always beats the oldest, never the second
        lg.record(GameResult("step_000000100", 1.0))
        lg.record(GameResult("step_000000200", 0.0))
    names = [lg.draw().name for _ in range(4000)]
    share = {n: names.count(n) / len(names) for n in set(names)}
    assert share["random"] == pytest.approx(0.2, abs=0.03)
    assert share["step_000000300"] == pytest.approx(0.4, abs=0.03)  # latest: half of the rest
    assert share["step_000000200"] > 0.35 and share.get("step_000000100", 0.0) < 0.01
    assert lg.snapshots()[-1].rating == lg.members["step_000000300"].rating
    assert lg.due(300 + 20_000) and not lg.due(300 + 19_999)


def test_a_restored_league_draws_what_the_original_draws(tmp_path):
    lg = league(tmp_path)
    snapshot(lg, 100)
    snapshot(lg, 200)
    for score in (1.0, 0.0, 0.5):
        lg.record(GameResult("step_000000100", score))
    lg.save_state(200)
    ahead = [lg.draw().name for _ in range(30)]
    snapshot(lg, 400)  # taken after the checkpoint: the restored league does not know it
    lg.save_state(400)
    back = league(tmp_path)
    assert back.restore(399) == 200  # the newest state at or before the checkpoint's step
    assert [back.draw().name for _ in range(30)] == ahead
    assert back.rating == pytest.approx(league_rating_after(tmp_path))
    assert "step_000000400" not in back.members
    assert league(tmp_path / "elsewhere").restore(10) is None


def league_rating_after(tmp_path: Path) -> float:
    lg = league(tmp_path / "replay")
    snapshot(lg, 100)
    snapshot(lg, 200)
    for score in (1.0, 0.0, 0.5):
        lg.record(GameResult("step_000000100", score))
    return lg.rating


def test_a_game_restored_against_an_unknown_opponent_gets_a_drawn_one(tmp_path):
    lg = league(tmp_path, fixed=["random"])
    assert lg.opponent_named("random").name == "random"
    assert lg.opponent_named("step_000001024").name == "random"  # its state was lost: a draw, not an error


def test_a_damaged_state_is_one_line(tmp_path):
    lg = league(tmp_path)
    lg.save_state(5)
    (tmp_path / "league" / "state_000000005.json").write_text("{not json")
    with pytest.raises(UserError, match="expected the league's state"):
        league(tmp_path).restore(5)


def test_the_elo_k_is_bounded_so_that_ratings_stay_finite(tmp_path):
    from pydantic import ValidationError

    for k in (float("inf"), 1e6):  # was: a NaN rating saved (inf), an OverflowError mid-run (1e6)
        with pytest.raises(ValidationError, match="less than or equal to 400"):
            SelfPlaySection(elo_k=k)
    lg = league(tmp_path, elo_k=400)
    snapshot(lg, 100)
    for score in [1.0] * 3000 + [0.0] * 3000:  # the learner beats a snapshot, then loses to it, every game
        lg.record(GameResult("step_000000100", score))
    assert all(abs(r) < 1e5 for r in (lg.rating, lg.members["step_000000100"].rating))


@pytest.mark.parametrize(("fixed", "says"), [
    (["/a/final/model.safetensors", "/b/final/model.safetensors"],  # was: one member, b never played
     "plays '/b/final/model.safetensors' under the name 'model', but '/a/final/model.safetensors' has that"),
    (["/a/league/step_000000128.safetensors"],  # was: replaced by the run's own snapshot of step 128
     "under the name 'step_000000128', but that is the name of one of the league's own members"),
    (["/a/random.safetensors"], "under the name 'random', but that is the name of one of the league's own"),
    (["/a/champ@1.0.safetensors"], "under the name 'champ@1.0', but it holds '@', which marks a temperature"),
    (["random", "random"], "selfplay.fixed lists 'random' twice; list each opponent once"),
])
def test_fixed_opponents_that_would_share_a_name_in_the_league_are_refused(fixed, says):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=re.escape(says)):
        SelfPlaySection(fixed=fixed)
    assert SelfPlaySection(fixed=["random", "/a/champ.safetensors", "/b/final/model.safetensors"])


def test_fixed_opponents_are_checked(tmp_path):
    with pytest.raises(ValueError, match="selfplay.fixed takes random, lookahead or a checkpoint file"):
        SelfPlaySection(fixed=["minimax"])
    lg = league(tmp_path, fixed=[str(tmp_path / "missing.safetensors")])
    with pytest.raises(UserError, match="no such file"):
        lg.draw()


def test_an_opponent_that_is_a_directory_or_no_safetensors_file_is_named_as_such(tmp_path):
    from agents.run.selfplay.league import fixed_opponent

    (tmp_path / "step_000000128.json").write_text("{}")  # a league snapshot's header, beside its checkpoint

    def load(path, name):
        raise AssertionError(f"loaded {path}")  # was read as a checkpoint: "is corrupted: header length"

    for given, why in ((tmp_path, "a directory"),
                       (tmp_path / "step_000000128.json", "not a .safetensors file"),
                       (tmp_path / "gone.safetensors", "no such file")):
        with pytest.raises(UserError) as e:
            fixed_opponent(str(given), load, "--opponent")
        assert str(e.value) == (f"--opponent: expected random, lookahead or a checkpoint file, got "
                                f"{str(given)!r} ({why}); give the path of a model.safetensors or "
                                "step_<N>.safetensors")


def test_a_checkpoint_as_fixed_opponent_keeps_one_member_under_its_name(tmp_path):
    ckpt = tmp_path / "champion.safetensors"
    ckpt.write_bytes(b"weights")
    lg = league(tmp_path, fixed=[str(ckpt)])
    assert lg.draw().name == "champion"
    lg.record(GameResult("champion", 1.0))
    assert list(lg.members) == ["champion"] and lg.members["champion"].games == 1


def test_pitting_a_run_that_is_no_game_is_one_line():
    import gymnasium as gym

    from agents.config import validate
    from agents.run.selfplay.plumbing import pit

    cfg = validate({"env": {"id": "CartPole-v1"}}, "test")
    with pytest.raises(UserError, match="not a two-player turn-based game; drop --opponent"):
        pit(cfg, None, gym.make("CartPole-v1"), "lookahead")  # type: ignore[arg-type]


def test_states_older_than_the_oldest_kept_checkpoint_are_pruned(tmp_path):
    lg = league(tmp_path)
    for step in (100, 200, 300):
        lg.save_state(step)
    gone = lg.prune(200)  # the run keeps the checkpoints of steps 200 and 300
    assert [p.name for p in gone] == ["state_000000100.json"]
    assert sorted(p.name for p in (tmp_path / "league").glob("state_*.json")) == [
        "state_000000200.json", "state_000000300.json"]
    assert lg.restore(250) == 200 and lg.restore(300) == 300 and lg.restore(150) is None


def test_the_tournament_fit_recovers_known_elo_ratings_with_random_at_1000():
    import numpy as np

    from agents.run.selfplay.tournament import fit_elo

    truth = np.array([1000.0, 1200.0, 1500.0, 1450.0])
    expected = 1 / (1 + 10 ** ((truth[None, :] - truth[:, None]) / 400))  # i's expected score against j
    games = np.full((4, 4), 10_000.0) - np.diag(np.full(4, 10_000.0))
    fitted = fit_elo(expected * games, games)
    assert fitted[0] == 1000.0  # the anchor
    assert np.allclose(fitted, truth, atol=2.0)  # 10,000 games a pair: the virtual draws hardly count
    unbeaten = fit_elo(np.array([[0.0, 0.0], [20.0, 0.0]]), np.array([[0.0, 20.0], [20.0, 0.0]]))
    assert 1400 < unbeaten[1] < 1700  # won all 20: finite, thanks to the one virtual draw


def _state_with(tmp_path: Path, edit) -> Path:
    """A saved league of one snapshot (its file written) and one game against random, edited by ``edit``."""
    lg = league(tmp_path)
    snapshot(lg, 100)
    lg.record(GameResult("step_000000100", 1.0))
    lg.record(GameResult("random", 0.5))
    path = lg.save_state(100)
    text = path.read_text()
    edited = edit(json.loads(text))
    path.write_text(edited if isinstance(edited, str) else json.dumps(edited))
    return path


def _member(state: dict, **fields) -> dict:
    """The state with the snapshot's member changed."""
    next(m for m in state["members"] if m["step"] == 100).update(fields)
    return state


@pytest.mark.parametrize("edit, says", [
    (lambda s: json.dumps({**s, "rating": float("nan")}), "rating is nan, not a finite number"),
    (lambda s: _member(s, score=float("inf")), "impossible number"),
    (lambda s: _member(s, score=5.0), "impossible number"),  # more than its games
    (lambda s: _member(s, rating="high"), "impossible number"),
    (lambda s: _member(s, games=-1), "impossible number"),
    (lambda s: _member(s, step=-100), "impossible number"),
    (lambda s: _member(s, name="../../../etc/passwd"), "is not named step_000000100"),
    (lambda s: _member(s, name="/etc/x", step=None), "neither a snapshot step_<N> nor one of selfplay.fixed"),
    (lambda s: {**s, "members": [s["members"][0]] * 2}, "two members have the same name"),
    (lambda s: {**s, "members": {"a": 1}}, "expected a list of at most 100,000"),
    (lambda s: {**s, "members": [1]}, "member 0 is 1, not an object"),
    (lambda s: {**s, "rng": {"bit_generator": "PCG64", "state": {"state": -1, "inc": 1}}}, "no PCG64 state"),
    (lambda s: "[" * 100_000, "RecursionError"),
])
def test_a_state_file_from_elsewhere_is_checked_before_any_of_it_is_used(tmp_path, edit, says):
    path = _state_with(tmp_path, edit)
    back = league(tmp_path)
    before = (dict(back.members), back.rng.bit_generator.state)
    with pytest.raises(UserError, match=re.escape(says)) as e:
        back.restore(100)
    assert str(e.value).startswith(f"{path}: expected the league's state")
    assert str(e.value).endswith("restore the file from the run or start a new run")
    assert (back.members, back.rng.bit_generator.state) == before  # nothing of it was taken


def test_a_snapshot_file_that_is_gone_or_outside_the_run_dir_is_refused(tmp_path):
    path = _state_with(tmp_path, lambda s: s)
    snap = tmp_path / "league" / "step_000000100.safetensors"
    snap.unlink()
    with pytest.raises(UserError, match="snapshot step_000000100 has no checkpoint file"):
        league(tmp_path).restore(100)
    (tmp_path.parent / "outside.safetensors").write_bytes(b"weights")
    snap.symlink_to(tmp_path.parent / "outside.safetensors")
    with pytest.raises(UserError, match="snapshot step_000000100 has no checkpoint file"):
        league(tmp_path).restore(100)
    snap.unlink()
    snap.write_bytes(b"weights")
    assert league(tmp_path).restore(100) == 100 and path.is_file()  # as saved: restored


@pytest.mark.parametrize("kind", ["fifo", "devzero", "huge"])
def test_a_state_that_is_no_regular_file_or_too_large_is_refused_without_reading_it(tmp_path, kind):
    path = _state_with(tmp_path, lambda s: s)
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)  # reading it would block for ever
    elif kind == "devzero":
        path.symlink_to("/dev/zero")  # reading it would fill the memory
    else:
        with open(path, "wb") as f:
            f.truncate(MAX_STATE_BYTES + 1)
    says = "larger than 32 MiB" if kind == "huge" else "it is no regular file"
    with pytest.raises(UserError, match=says):
        league(tmp_path).restore(100)


def test_a_missing_opponent_file_names_the_flag_that_gave_it(tmp_path):
    from pettingzoo.classic import connect_four_v3

    from agents.config import load_yaml, validate
    from agents.run.selfplay.plumbing import pit
    from envs.selfplay import SeatEnv

    cfg = validate(load_yaml("configs/connect_four.yaml"), "c4.yaml")
    missing = str(tmp_path / "nope.safetensors")
    with pytest.raises(UserError, match=r"^--opponent: expected random, lookahead or a checkpoint file"):
        pit(cfg, None, SeatEnv(connect_four_v3.env(), "c4"), missing)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_a_tournament_seed_out_of_range_is_one_line(capsys, tmp_path, seed):
    from agents.run.selfplay.tournament import main

    # was: exit 1, NumPy's "ValueError: expected non-negative integer" traceback after the league loaded
    assert main([str(tmp_path), "--seed", seed]) == 2
    assert capsys.readouterr().err == f"error: --seed takes 0 to 2**32 - 1, got {seed}; e.g. --seed 0\n"
