"""A checkpoint in the other seat (agents/run/selfplay/opponents.py ``PolicyOpponent``): its moves come from
the policy's probabilities of the legal moves (``SB3Backend.action_probs``, one lean forward pass), drawn
from the seat's generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pettingzoo.classic import connect_four_v3
from pydantic import ValidationError
from sb3_contrib import MaskablePPO

from agents.config import load_yaml, validate
from agents.config.selfplay import SelfPlaySection
from agents.run.selfplay.opponents import PolicyOpponent
from agents.sb3.backend import SB3Backend, hyperparameters
from agents.sb3.board import BoardCNN
from envs.selfplay import SeatEnv


def backend() -> SB3Backend:
    env = {"id": "pettingzoo.classic.connect_four_v3:env", "action_mask": "method"}
    cfg = validate({**load_yaml("configs/connect_four.yaml"), "env": env}, "c4.yaml")
    space = SeatEnv(connect_four_v3.env(), "c4").observation_space
    torch.manual_seed(0)
    kwargs = {**hyperparameters(cfg)["policy_kwargs"], "features_extractor_class": BoardCNN}
    moves = connect_four_v3.env().action_space("player_0")
    policy = MaskablePPO.policy_aliases["MultiInputPolicy"](space, moves, lambda _: 0.0, **kwargs)
    return SB3Backend(cfg, 0, None, policy.eval(), None, (space, policy.action_space))


def test_action_probs_are_the_masked_policy_distribution_and_zero_on_illegal_moves():
    b = backend()
    game = connect_four_v3.env()
    game.reset(seed=0)
    for move in (3, 3, 3, 3, 3, 3, 2):  # column 3 full
        game.step(move)
    obs = game.observe(game.agent_selection)
    legal = np.asarray(obs["action_mask"]).astype(bool)
    probs = b.action_probs({k: np.asarray(v)[None] for k, v in obs.items()}, legal[None])
    assert probs is not None and probs.shape == (1, 7)
    tensor, _ = b.policy.obs_to_tensor(obs)
    expected = b.policy.get_distribution(tensor, action_masks=legal).distribution.probs.detach().numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    assert probs[0, 3] == 0.0 and abs(probs.sum() - 1.0) < 1e-9


def test_the_opponent_draws_legal_moves_from_the_seat_generator_by_the_policy_probabilities():
    b = backend()
    opponent = PolicyOpponent("step_1", b, view=lambda obs: obs)
    game = connect_four_v3.env()
    game.reset(seed=0)
    for move in (3, 3, 3, 3, 3, 3):
        game.step(move)
    agent = game.agent_selection
    draws = [opponent.act(game, agent, np.random.default_rng(7)) for _ in range(3)]
    assert len(set(draws)) == 1  # the same generator state, the same move: a resumed run replays it
    rng = np.random.default_rng(1)
    moves = np.array([opponent.act(game, agent, rng) for _ in range(1500)])
    assert not (moves == 3).any()  # the full column is never played
    obs = game.observe(agent)
    probs = b.action_probs({k: np.asarray(v)[None] for k, v in obs.items()},
                           np.asarray(obs["action_mask"]).astype(bool)[None])[0]
    freq = np.bincount(moves, minlength=7) / len(moves)
    assert np.abs(freq - probs).max() < 0.05, (freq, probs)


def test_a_tempered_opponent_plays_its_likelier_moves_more_often():
    b = backend()
    with torch.no_grad():  # a policy with clear preferences (a fresh one is nearly uniform)
        b.policy.action_net.bias.copy_(torch.linspace(-1.0, 1.0, 7))
    game = connect_four_v3.env()
    game.reset(seed=0)
    agent = game.agent_selection
    obs = game.observe(agent)
    probs = b.action_probs({k: np.asarray(v)[None] for k, v in obs.items()},
                           np.asarray(obs["action_mask"]).astype(bool)[None])[0]
    sharp = probs ** 2 / (probs ** 2).sum()
    assert np.abs(sharp - probs).max() > 0.03  # the test can tell the two apart
    opponent = PolicyOpponent("step_1", b, view=lambda o: o, temperature=0.5)
    rng = np.random.default_rng(2)
    freq = np.bincount([opponent.act(game, agent, rng) for _ in range(1500)], minlength=7) / 1500
    assert np.abs(freq - sharp).max() < 0.04, (freq, sharp, probs)


def test_the_temperature_is_checked_in_one_line():
    with pytest.raises(ValidationError, match="temperature"):
        SelfPlaySection(temperature=0.0)


def test_a_checkpoint_of_another_game_is_refused_as_an_opponent_in_one_line():
    """A league snapshot swapped for another run's checkpoint (or one given to evaluate.py --opponent): was
    loaded and fed connect-four boards (evaluate.py exit 0 with every game over after one move; the tournament
    exit 1 with an AssertionError traceback from SB3)."""
    from conftest import ROOT

    from agents.run.envfactory import probed
    from agents.run.selfplay.opponents import loader
    from envs.errors import CheckpointError

    cfg = validate({**load_yaml("configs/connect_four.yaml")}, "c4.yaml")
    env = probed(cfg, SB3Backend)
    cartpole = ROOT / "tests" / "fixtures" / "runs_v0" / "cartpole_sb3" / "final" / "model.safetensors"
    with pytest.raises(CheckpointError) as e:
        loader(cfg, env, lambda obs: obs)(cartpole, "step_000002048")
    text = str(e.value)
    assert text.startswith(f"self-play opponent {str(cartpole)!r}: the checkpoint was trained with "
                           "observation space Box(") and "but the env has Dict('action_mask'" in text
    assert "evaluate it with the env and settings it was trained on" in text


def test_a_damaged_opponent_checkpoint_names_the_file_as_the_fix_not_evaluate_flags(tmp_path):
    """The tournament, --opponent and selfplay.fixed have no --checkpoint to pick another one."""
    from conftest import ROOT

    from agents.run.envfactory import probed
    from agents.run.selfplay.opponents import loader
    from envs.errors import CheckpointError

    cfg = validate({**load_yaml("configs/connect_four.yaml")}, "c4.yaml")
    whole = ROOT / "tests" / "fixtures" / "runs_v0" / "cartpole_sb3" / "final" / "model.safetensors"
    cut = tmp_path / "step_000000384.safetensors"
    cut.write_bytes(whole.read_bytes()[:500])  # a snapshot cut short
    with pytest.raises(CheckpointError) as e:
        loader(cfg, probed(cfg, SB3Backend), lambda obs: obs)(cut, cut.stem)
    text = str(e.value)
    assert text.startswith(f"self-play opponent: checkpoint {str(cut)!r} is corrupted: header length ")
    assert text.endswith("; restore the file from its run, or give another checkpoint file")
    assert "--checkpoint" not in text
