"""Self-play through train.py and evaluate.py on a real PettingZoo game (connect four): the league in the run
dir, its ratings in TensorBoard, learning against random, pitting snapshots, exact kill-and-resume, and the
one-line refusals."""

from __future__ import annotations

import json
import re

import torch
from conftest import run_cli
from measure import one_line
from test_cli import scalars
from test_resume_exact import straight_and_resumed

from agents.run.selfplay.tournament import tournament

C4 = "pettingzoo.classic.connect_four_v3:env"
COMMON = ["--env", C4, "--num-envs", "4", "--quiet", "--set", "agent.n_steps=128",
          "--set", "agent.batch_size=128", "--set", "selfplay.snapshot_every=2048"]


def win_rate(out: str) -> float:
    """The trained policy's success column (games won) of evaluate.py's table."""
    row = next(line for line in out.splitlines() if line.startswith("trained"))
    return float(row.split()[-1])


def seat_rates(out: str) -> dict[str, float]:
    """evaluate.py's per-seat rows: the trained policy's share of games won from each seat."""
    rows = re.finditer(r"^won/(\w+)_seat\s+trained\s+(\S+)", out, re.M)
    return {m.group(1): float(m.group(2)) for m in rows}


def test_self_play_builds_a_league_that_learns_and_can_be_pitted(tmp_path):
    run = tmp_path / "c4"
    run_cli("train.py", *COMMON, "--timesteps", "10240", "--seed", "1", "--run-dir", str(run),
            "--set", "eval.every=0", check=True)
    league = run / "league"
    snaps = sorted(league.glob("step_*.safetensors"))
    assert len(snaps) == 5, snaps  # every 2,048 steps: ordinary checkpoints
    state = json.loads(sorted(league.glob("state_*.json"))[-1].read_text())
    names = {m["name"]: m for m in state["members"]}
    assert names["random"]["rating"] == 1000.0 and names["random"]["games"] > 50
    assert state["rating"] > 1000.0  # the learner rates above the random anchor
    ratings = scalars(run, "league/rating")
    assert len(ratings) >= 4 and abs(ratings[-1][1] - state["rating"]) < 1e-3  # TensorBoard, read back

    out = run_cli("evaluate.py", str(run), "--episodes", "60", check=True).stdout
    assert win_rate(out) >= 0.75  # against a random opponent, after 10k steps (0.92 measured)
    hard = run_cli("evaluate.py", str(run), "--episodes", "10", "--opponent", "lookahead", check=True).stdout
    assert win_rate(hard) < win_rate(out) - 0.3  # the same seeds against lookahead: a different opponent
    seats = seat_rates(hard)
    assert set(seats) == {"first", "second"}, hard  # each seat's share of games won: 5 games each
    assert all(abs(v * 5 - round(v * 5)) < 1e-3 for v in seats.values()), seats
    assert abs((seats["first"] + seats["second"]) / 2 - win_rate(hard)) < 1e-3  # the seats make the whole
    standings = tournament(run, games=4, every=2)  # the round robin: random, snapshots 1, 3 and 5
    assert standings.names == ["random", snaps[0].stem, snaps[2].stem, snaps[4].stem]
    assert standings.ratings[0] == 1000.0 and standings.games == 4  # random: the anchor
    assert standings.ratings[-1] > 1100.0 and standings.scores[-1, 0] >= 0.75  # the newest beats random
    old = run_cli("evaluate.py", str(run), "--episodes", "10", "--opponent", str(snaps[0]), check=True)
    assert re.search(r"^trained\s", old.stdout, re.M)
    bad = run_cli("evaluate.py", str(run), "--opponent", str(tmp_path / "nope.safetensors"))
    assert bad.returncode == 2 and "no such file" in bad.stderr and "Traceback" not in bad.stderr
    empty = run_cli("evaluate.py", str(run), "--opponent", "")  # not "no opponent named": random
    assert empty.returncode == 2 and "expected random, lookahead or a checkpoint file, got ''" in empty.stderr


def resumed_league(tmp_path, *extra: str) -> dict:
    """A 4,096-step self-play run, straight and killed at 2,048 then resumed (``extra``: more flags): the
    weights and the final league state (ratings, members, the sampler's generator) must be equal; the
    state."""
    common = [*COMMON, "--timesteps", "4096", "--seed", "7", "--set", "train.checkpoint_every=2048",
              "--set", "eval.every=0", "--set", "selfplay.snapshot_every=1024",
              "--set", "selfplay.latest=0.6", *extra]
    a, b = straight_and_resumed(tmp_path, common, 2048)
    params = [k for k in a if k.startswith(("policy/", "optim/"))]
    assert len(params) > 10
    assert not [k for k in params if not torch.equal(a[k], b[k])], "the resumed self-play run diverged"
    final = {d: json.loads((tmp_path / d / "league" / "state_000004096.json").read_text())
             for d in ("straight", "broken")}
    assert final["straight"] == final["broken"]
    return final["straight"]


def test_kill_and_resume_restores_the_league_exactly(tmp_path):
    assert len(resumed_league(tmp_path)["members"]) == 1 + 4


def test_pooled_moves_train_and_resume_exactly(tmp_path):
    """``selfplay.pool_moves``: the snapshots' moves of a vector step in one forward pass each."""
    league = resumed_league(tmp_path, "--set", "selfplay.pool_moves=true")
    assert len(league["members"]) == 1 + 4 and sum(m["games"] for m in league["members"]) > 50


def test_backends_and_vector_envs_that_cannot_play_it_are_one_line(tmp_path):
    sub = run_cli("train.py", "--env", C4, "--timesteps", "64", "--set", "train.vec_env=subproc",
                  "--run-dir", str(tmp_path / "s"))
    assert sub.returncode == 2 and "train.vec_env: dummy" in sub.stderr
    fixed = run_cli("train.py", "--env", C4, "--timesteps", "64", "--set", "selfplay.fixed=[minimax]",
                    "--run-dir", str(tmp_path / "f"))
    assert fixed.returncode == 2 and "selfplay.fixed takes random, lookahead" in fixed.stderr
    gone = run_cli("train.py", "--env", C4, "--timesteps", "64", "--set",  # loaded before the first game:
                   "selfplay.fixed=[/nope.safetensors]", "--run-dir", str(tmp_path / "g"))  # no env fault
    assert gone.returncode == 2 and "got '/nope.safetensors' (no such file)" in one_line(gone.stderr)
    assert "the env failed" not in gone.stderr
    assert not (tmp_path / "g").exists()  # refused before its first step: the same --run-dir works again


def test_a_board_cnn_run_trains_and_loads_for_evaluation(tmp_path):
    run = tmp_path / "cnn"
    run_cli("train.py", *COMMON, "--timesteps", "512", "--seed", "2", "--run-dir", str(run),
            "--set", "eval.every=0", "--set", "agent.extractor=board_cnn", check=True)
    out = run_cli("evaluate.py", str(run), "--episodes", "2", check=True).stdout
    assert set(seat_rates(out)) == {"first", "second"}, out  # the checkpoint rebuilt as the board CNN
    mlp = tmp_path / "mlp"  # another run's network as the opponent: built from that run's own agent section
    run_cli("train.py", *COMMON, "--timesteps", "128", "--run-dir", str(mlp), "--set", "eval.every=0",
            "--set", "agent.net_arch=[16]", check=True)
    out = run_cli("evaluate.py", str(run), "--episodes", "2", "--opponent",
                  str(mlp / "final" / "model.safetensors"), check=True).stdout
    assert set(seat_rates(out)) == {"first", "second"}, out


def test_the_shipped_config_trains_by_self_play_alone_with_the_board_cnn():
    from agents.config import load_yaml, validate

    cfg = validate(load_yaml("configs/connect_four.yaml"), "configs/connect_four.yaml")
    assert cfg.env.id == C4 and cfg.agent.extractor == "board_cnn"
    assert cfg.selfplay.fixed == [] and cfg.selfplay.fixed_share == 0.0  # no scripted opponent in the league


def test_selfplay_settings_on_a_game_that_is_not_turn_based_are_said_to_be_ignored(tmp_path):
    """A ``selfplay:`` setting on an env that no league plays (CartPole) was dropped silently."""
    small = ["--timesteps", "64", "--num-envs", "1", "--set", "agent.n_steps=64", "--set",
             "agent.batch_size=64", "--set", "eval.every=0"]
    out = run_cli("train.py", "--env", "CartPole-v1", *small, "--set", "selfplay.latest=0.2", "--run-dir",
                  str(tmp_path / "a"), check=True)
    assert ("warning: the selfplay: settings are ignored: env 'CartPole-v1' is not a two-player turn-based "
            "game") in out.stdout
    out = run_cli("train.py", "--env", "CartPole-v1", *small, "--run-dir", str(tmp_path / "b"), check=True)
    assert "selfplay:" not in out.stdout + out.stderr  # the defaults say nothing
