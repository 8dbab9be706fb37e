"""``agent.extractor: board_cnn`` on --backend rllib (agents/rllib/board.py): connect four's RLModule has
SB3's board network (the same trunk layers, the mask beside its features, ``net_arch`` after), reads the board
back out of RLlib's flat observation, never gives an illegal move a probability, and a trained checkpoint
loads (without Ray) into the same probabilities as its tensors give by hand.

The trainer joins the session's shared Ray (``shared_ray`` in tests/conftest.py).
"""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, read_checkpoint, run_cli

from agents.config import validate
from agents.rllib import algos, board, masking
from agents.rllib.backend import RLlibBackend
from agents.run.envfactory import env_factory, probed
from agents.run.scoring import load_policy
from agents.sb3.board import BoardCNN
from envs.errors import UserError

C4_MASK, C4_BOARD = 7, (6, 7, 2)  # the flat vector: the sorted Dict keys, action_mask then the board


def _c4_config(**agent):
    raw = yaml.safe_load((ROOT / "configs" / "connect_four.yaml").read_text())
    raw["agent"].update(backend="rllib", **agent)
    return validate(raw, "connect_four.yaml")


@pytest.fixture(scope="module")
def c4():
    """The shipped connect-four config on rllib, its probed env and the board's layout from a built env."""
    cfg = _c4_config()
    env = probed(cfg, RLlibBackend)
    return cfg, env, board.BoardLayout.from_list(algos._board(cfg, env)[board.MODEL_KEY])


def test_the_rllib_board_module_has_sb3s_layers_and_reads_the_board_out_of_the_flat_observation(c4):
    cfg, env, layout = c4
    assert layout == board.BoardLayout(C4_MASK, C4_BOARD)
    assert env.observation_space.shape == (C4_MASK + 6 * 7 * 2,)
    module = algos.build_module(cfg, "ppo", env.spaces, {board.LAYOUT_STATE: layout.as_list()})
    raw = gym.spaces.Dict({"action_mask": gym.spaces.Box(0, 1, (C4_MASK,), np.int8),
                           "observation": gym.spaces.Box(0, 1, C4_BOARD, np.int8)})
    sb3 = BoardCNN(raw)
    trunk = {k: tuple(v.shape) for k, v in sb3.parts["observation"].state_dict().items()}
    assert trunk == {k: tuple(v.shape) for k, v in module.encoder.trunk.state_dict().items()}
    assert trunk["convs.0.weight"] == (32, 2, 3, 3) and trunk["linear.0.weight"] == (256, 32 * 6 * 7)
    width = sb3.features_dim  # 256 board features + the 7 mask values, then net_arch [256, 256] for each
    for mlp in (module.encoder.actor, module.encoder.critic):
        assert [tuple(m.weight.shape) for m in mlp if isinstance(m, torch.nn.Linear)] == \
            [(256, width), (256, 256)]
    assert module.pi.net.mlp[0].weight.shape == (7, 256) and module.vf.net.mlp[0].weight.shape == (1, 256)
    # SB3's trunk weights in the RLlib trunk: the same features from the flat vector as SB3's from the Dict
    module.encoder.trunk.load_state_dict(sb3.parts["observation"].state_dict())
    obs = [raw.sample() for _ in range(5)]
    flat = torch.as_tensor(np.stack([gym.spaces.flatten(raw, o) for o in obs]), dtype=torch.float32)
    as_dict = {k: torch.as_tensor(np.stack([o[k] for o in obs]), dtype=torch.float32) for k in raw.spaces}
    with torch.no_grad():
        torch.testing.assert_close(module.encoder.features({"obs": flat}), sb3(as_dict))
    with pytest.raises(KeyError):  # a checkpoint without the layout cannot build the board module
        algos.build_module(cfg, "ppo", env.spaces, {})


def test_the_masked_board_module_gives_illegal_moves_probability_zero(c4):
    cfg, env, layout = c4
    spaces = (gym.spaces.Dict({masking.MASK: gym.spaces.Box(0.0, 1.0, (7,), np.float32),
                               masking.OBSERVATIONS: env.observation_space}), env.action_space)
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    cls = board.module_class(masking.module_class(algos.ALGOS["ppo"].module_class))
    module = RLModuleSpec(module_class=cls, observation_space=spaces[0], action_space=spaces[1],
                          model_config={**algos.model_config(cfg, spaces[1]), **board.model_config(layout)},
                          inference_only=False).build()
    assert isinstance(module.encoder, board.BoardEncoder)
    rng = np.random.default_rng(0)
    legal = (rng.random((64, 7)) < 0.5).astype(np.float32)
    legal[:, 3] = 1.0
    obs = {masking.MASK: torch.as_tensor(legal),
           masking.OBSERVATIONS: torch.as_tensor(rng.integers(0, 2, (64, 91)), dtype=torch.float32)}
    with torch.no_grad():
        logits = module.forward_exploration({"obs": obs})["action_dist_inputs"]
        probs = torch.softmax(logits, dim=1)
        draws = torch.distributions.Categorical(logits=logits).sample((200,))
    assert bool((probs[legal == 0] == 0).all()) and bool((probs[legal == 1] > 0).all())
    assert bool(torch.as_tensor(legal)[torch.arange(64), draws].eq(1).all())  # 12,800 draws, all legal


def test_board_cnn_is_refused_in_one_line_where_rllib_does_not_build_it(c4):
    cfg, env, _ = c4
    with pytest.raises(UserError, match="use one of those or agent.extractor auto"):
        _c4_config(algo="sac")
    with pytest.raises(UserError, match="takes an observation with a board"):
        board.layout_of(gym.make("CartPole-v1"))


@pytest.mark.parametrize("layout, says", [
    ([-5, 6, 7, 2], "got [-5, 6, 7, 2]"),
    ([7, 6], "got [7, 6]"),
    ([0, 6, 7, 10**6], "the board (6, 7, 1000000) at 0 does not fit the observation's 91 values"),
    # numpy's int64 product of this shape wraps round to 0: it passed the fit check, then torch failed
    # allocating the trunk (exit 1, "unexpected TypeError: ... Overflow when unpacking long long")
    ([0, 2**32, 2**32, 2], "the board (4294967296, 4294967296, 2) at 0 does not fit"),
])
def test_a_board_layout_edited_in_a_checkpoint_is_a_value_error_before_anything_is_built(c4, layout, says):
    cfg, env, _ = c4
    with pytest.raises(ValueError, match=re.escape(says)):  # RLlibBackend.load: "does not fit this policy"
        algos.build_module(cfg, "ppo", env.spaces, {board.LAYOUT_STATE: torch.tensor(layout)})


def _by_hand(t, flat, legal):
    """The policy's probabilities from the checkpoint's tensors alone: the trunk over the board, the mask
    beside it, the actor MLP, the pi head, illegal moves at 0."""
    def w(name):
        return t[f"module/{name}"].float()

    x = torch.as_tensor(flat[:, C4_MASK:], dtype=torch.float32).reshape(-1, *C4_BOARD).movedim(3, 1)
    for i in (0, 2, 4):
        x = torch.relu(torch.nn.functional.conv2d(x, w(f"encoder.trunk.convs.{i}.weight"),
                                                  w(f"encoder.trunk.convs.{i}.bias"), padding=1))
    x = torch.relu(x.flatten(1) @ w("encoder.trunk.linear.0.weight").T + w("encoder.trunk.linear.0.bias"))
    x = torch.cat([torch.as_tensor(flat[:, :C4_MASK], dtype=torch.float32), x], dim=1)
    for i in (0, 2):
        x = torch.relu(x @ w(f"encoder.actor.{i}.weight").T + w(f"encoder.actor.{i}.bias"))
    logits = (x @ w("pi.net.mlp.0.weight").T + w("pi.net.mlp.0.bias")).double().masked_fill(
        torch.as_tensor(legal) == 0, -torch.inf)
    return torch.softmax(logits, dim=1).numpy()


@pytest.mark.ray
def test_a_trained_board_checkpoint_loads_into_the_probabilities_its_tensors_give(tmp_path, shared_ray):
    run = tmp_path / "run"
    proc = run_cli("train.py", "--config", str(ROOT / "configs" / "connect_four.yaml"), "--backend", "rllib",
                   "--timesteps", "256", "--num-envs", "2", "--set", "agent.n_steps=128", "--set",
                   "agent.batch_size=128", "--set", "agent.n_epochs=1", "--set", "eval.every=0", "--quiet",
                   "--seed", "0", "--run-dir", str(run), *shared_ray.flags, env=shared_ray.env)
    assert proc.returncode == 0, proc.stderr
    tensors, header = read_checkpoint(run / "final" / "model.safetensors")
    assert header["num_timesteps"] >= 256 and tensors["module/encoder.board_layout"].tolist() == [7, 6, 7, 2]
    loaded = load_policy(run)  # no Ray: a bare module built from the checkpoint's layout and weights
    state = loaded.backend.module.get_state()
    assert set(state) <= {k[len("module/"):] for k in tensors}  # every weight of the module came from it
    env = env_factory(loaded.cfg, loaded.env)()
    obs, legal = [], []
    o, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    while len(obs) < 32:
        mask = np.asarray(env.get_wrapper_attr("action_masks")(), dtype=np.float32)
        obs.append(o)
        legal.append(mask)
        o, _, term, trunc, _ = env.step(int(rng.choice(np.flatnonzero(mask))))
        if term or trunc:
            o, _ = env.reset()
    flat, legal = np.stack(obs), np.stack(legal)
    probs = loaded.backend.action_probs(flat, legal > 0)  # the league's opponent forward pass
    np.testing.assert_allclose(probs, _by_hand(tensors, flat, legal), rtol=1e-5, atol=1e-7)
    assert (probs[legal == 0] == 0).all() and np.allclose(probs.sum(axis=1), 1.0)
    assert not np.allclose(probs[legal > 0], np.repeat(1 / legal.sum(1), legal.sum(1).astype(int)))
    again = load_policy(run).backend.action_probs(flat, legal > 0)
    np.testing.assert_array_equal(probs, again)
