"""A problem's declared mirror (``InverseProblem.mirror``) and ``blackbox.amortised_mirror``: the amortised
network trains on each pair and its mirror image, flipped as the problem declares (no Blender needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_strategies import Quadratic, settings

from agents.blackbox.amortised import AmortisedStrategy, mirrored
from envs.errors import UserError
from envs.inverse import Instance, InverseProblem, Mirror, flip_picture

S = 8


class Blob(InverseProblem):
    """A Gaussian blob at ``(x, y)`` on an 8 × 8 picture, a turn (periodic, unseen) and a brightness: its
    mirror is exact (x → 1 − x, turn → 1 − turn, the picture flipped left-right)."""

    score_key = "param_error"

    def __init__(self, extra: int = 0) -> None:
        super().__init__()
        self.param_dim, self.extra = 4, extra

    def periodic(self) -> np.ndarray:
        return np.array([False, False, True, False])

    def mirror(self) -> Mirror:
        return Mirror(reflect=(0, 2), centre=(1.0, 1.0), axis=1)

    def simulate(self, x, context=None):
        c = (np.arange(S) + 0.5) / S
        pic = x[3] * np.exp(-((c[None, :] - x[0]) ** 2 + (c[:, None] - x[1]) ** 2) / 0.02)
        return pic[..., None].astype(np.float32)

    def data_misfit(self, data, instance):
        return float(np.linalg.norm(data - instance.data))

    def sample_instance(self, rng):
        x = rng.uniform([0.2, 0.2, 0.0, 0.5], [0.8, 0.8, 1.0, 1.0])
        return Instance(self.forward(x), x)

    def score(self, x, instance):
        return {"param_error": float(np.abs(x - instance.known_truth()).mean())}

    def features(self, data):
        return np.concatenate([np.asarray(data, np.float32).ravel(), np.zeros(self.extra, np.float32)])

    def feature_image(self):
        return (S, S, 1)


def test_the_declared_mirror_renders_the_flipped_picture_and_is_its_own_inverse():
    pb, rng = Blob(), np.random.default_rng(0)
    for _ in range(5):
        x = pb.sample_instance(rng).known_truth()
        xm = pb.mirror_params(x)
        assert xm[0] == pytest.approx(1 - x[0]) and xm[1] == x[1] and xm[3] == x[3]
        assert 0 <= xm[2] < 1 and (xm[2] + x[2]) % 1 == pytest.approx(0, abs=1e-12)  # turn → −turn, wrapped
        np.testing.assert_allclose(pb.mirror_params(xm), x, atol=1e-12)
        data = pb.simulate(x)
        assert np.abs(data - pb.mirror_data(data)).max() > 0.05  # the blob is off-centre: the flip shows
        np.testing.assert_allclose(pb.simulate(xm), pb.mirror_data(data), atol=1e-6)
        np.testing.assert_allclose(pb.mirror_features(pb.features(data)), pb.features(pb.simulate(xm)),
                                   atol=1e-6)


def test_the_augmentation_doubles_the_pairs_and_flips_each_one():
    pb, rng = Blob(), np.random.default_rng(1)
    insts = [pb.sample_instance(rng) for _ in range(6)]
    x = torch.as_tensor(np.stack([i.known_truth() for i in insts]), dtype=torch.float32)
    f = torch.as_tensor(np.stack([pb.features(i.data) for i in insts]))
    c = torch.zeros(6, 0)
    x2, c2, f2 = mirrored(pb, x, c, f)
    assert x2.shape == (12, 4) and f2.shape == (12, S * S) and c2.shape == (12, 0)
    assert torch.equal(x2[:6], x) and torch.equal(f2[:6], f)
    for k, inst in enumerate(insts):
        twin = pb.simulate(pb.mirror_params(inst.known_truth()))  # what the mirrored scene renders
        np.testing.assert_allclose(f2[6 + k].numpy(), pb.features(twin), atol=1e-6)
        np.testing.assert_allclose(x2[6 + k].numpy(), pb.mirror_params(inst.known_truth()), atol=1e-6)


def test_the_amortised_strategy_trains_on_twice_the_pairs_without_a_forward_call():
    torch.set_num_threads(1)
    pb = Blob()
    strat = AmortisedStrategy(pb, settings(batch=64, epochs=2, hidden=[16], amortised_mirror=True), 0)
    calls = pb.forward_calls
    out = strat.train_round(np.random.default_rng(0))
    assert out["train/pairs"] == 128 and pb.forward_calls - calls == 64
    plain = AmortisedStrategy(pb, settings(batch=64, epochs=2, hidden=[16]), 0)
    assert plain.train_round(np.random.default_rng(0))["train/pairs"] == 64


def test_a_problem_without_a_mirror_is_refused_in_one_line():
    refused = r"amortised_mirror .* Quadratic declares no mirror .*amortised_mirror=false"
    with pytest.raises(UserError, match=refused):
        AmortisedStrategy(Quadratic(), settings(amortised_mirror=True), 0)
    with pytest.raises(ValueError, match="declares no mirror"):
        Quadratic().mirror_params(np.zeros(3))
    with pytest.raises(NotImplementedError, match="must override mirror_features"):
        Blob(extra=3).mirror_features(np.zeros(S * S + 3, np.float32))
    with pytest.raises(ValueError, match="one entry each"):
        Mirror(reflect=(0, 1), centre=(1.0,), axis=1)


def test_flip_picture_flips_rows_of_features_and_keeps_the_tail():
    f = np.arange(2 * (2 * 3 * 2 + 1), dtype=np.float32).reshape(2, 13)  # two rows: a 2 × 3 × 2 picture + 1
    out = flip_picture(f, (2, 3, 2), 1)
    np.testing.assert_array_equal(out[:, :12].reshape(2, 2, 3, 2), f[:, :12].reshape(2, 2, 3, 2)[:, :, ::-1])
    np.testing.assert_array_equal(out[:, 12], f[:, 12])
