"""Symmetries of an answer: the ``permute`` stage puts swapped identities right (on an analytic black box and
through a real Blender); declared periods of symmetric turns in the surrogate's and the amortised network's
encodings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bumps import Bumps
from test_strategies import settings

from agents.blackbox.amortised import AngleHead
from agents.blackbox.chain import ChainStrategy
from agents.blackbox.permute import PermuteStrategy, candidates, orderings
from agents.blackbox.surrogate import Surrogate
from envs.adapters.blender import BlenderProblem


class TwoBumps(Bumps):
    """Two bumps on a line at positions ``x[0]`` (height 1) and ``x[1]`` (height 0.8): the answer with the
    positions exchanged fits almost as well, and a local search from it stays there."""

    heights = (1.0, 0.8)

    def score(self, x, instance):
        return {"param_error": float(np.abs(x - instance.known_truth()).mean())}


def test_orderings_of_three_are_the_five_others_and_many_fall_back_to_swaps():
    assert sorted(orderings(3, 24)) == [(0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
    assert orderings(1, 24) == []
    swaps = orderings(5, 24)  # 5! - 1 = 119 > 24: the 10 exchanges of two
    assert len(swaps) == 10 and all(sum(i != p for i, p in enumerate(s)) == 2 for s in swaps)
    x = np.arange(6.0)
    ys = candidates(x, [np.array([[0, 1], [2, 3], [4, 5]])], 2)
    assert len(ys) == 2 and ys[0].tolist() == [2, 3, 0, 1, 4, 5]  # 5 > 2 orderings: swaps; blocks move whole


@pytest.mark.parametrize("f0_known", [True, False], ids=["f0-known", "f0-measured"])
def test_permute_puts_a_swapped_answer_right_and_counts_its_calls(f0_known):
    pb = TwoBumps()
    inst = pb.sample_instance(np.random.default_rng(3))
    swapped = inst.known_truth()[::-1].copy()
    f0 = pb.data_misfit(pb.simulate(swapped), inst) if f0_known else None
    c0 = pb.forward_calls
    stage = PermuteStrategy(pb, settings(), 0)
    x = stage.solve(inst, np.random.default_rng(0), swapped, f0)
    assert pb.forward_calls - c0 == (1 if f0_known else 2)  # 2! - 1 orderings, plus the seed's own misfit
    assert np.allclose(x, inst.known_truth()) and stage.last_misfit == pytest.approx(0.0, abs=1e-12)
    right = stage.solve(inst, np.random.default_rng(0), inst.known_truth().copy(), 0.0)
    assert np.array_equal(right, inst.known_truth())  # an answer already right is kept


def test_a_chain_with_permute_leaves_a_problem_without_groups_alone():
    pb = TwoBumps()
    pb.interchangeable = lambda: []  # type: ignore[method-assign]
    chain = ChainStrategy(pb, settings(chain=["permute"]), 0)
    inst = pb.sample_instance(np.random.default_rng(3))
    c0 = pb.forward_calls
    x0 = inst.known_truth()[::-1].copy()
    assert np.array_equal(chain.solve(inst, np.random.default_rng(0), x0), x0)
    assert pb.forward_calls == c0


def test_surrogate_encoding_repeats_with_the_declared_period():
    torch.manual_seed(0)
    net = Surrogate(2, 0, 3, [16], np.array([0.25, 0.0]))
    x = torch.tensor([[0.1, 0.3]])
    same, other = torch.tensor([[0.35, 0.3]]), torch.tensor([[0.2, 0.3]])
    c = torch.zeros(1, 0)
    assert torch.allclose(net(x, c), net(same, c), atol=1e-5)
    assert not torch.allclose(net(x, c), net(other, c), atol=1e-3)


def test_amortised_head_reads_equivalent_turns_as_one_answer():
    head = AngleHead(np.array([0.0, 0.25, 1.0]))  # a full turn stays a plain output (see its docstring)
    x = torch.tensor([[0.3, 0.05, 0.98], [0.3, 0.30, 0.98], [0.7, 0.24, 0.01]])
    y = head.encode(x)
    assert y.shape == (3, 4) and torch.allclose(y[0], y[1], atol=1e-5)  # a quarter turn of a box: one target
    back = head.decode(y)
    assert torch.allclose(back[0], torch.tensor([0.3, 0.05, 0.98]), atol=1e-5)
    assert torch.allclose(back[2], x[2], atol=1e-5)  # near the seam, read back where it was
    assert torch.all(head(torch.full((1, 4), 9.0))[0, :2] < 1)  # plain outputs pass a sigmoid


def test_permute_puts_swapped_objects_right_through_a_real_blender():
    """Two objects (a box and a prism) with place, turn and colour exchanged: a worse fit, put right with
    two renders."""
    pb = BlenderProblem(n_objects=2, threads=1)
    try:
        assert pb.periods().tolist() == [0, 0, 0.25, 0, 0, 0, 0, 0, 1 / 3, 0, 0, 0, 1.0, 0]
        truth = np.array([0.25, 0.3, 0.1, 0.9, 0.3, 0.3, 0.75, 0.7, 0.2, 0.3, 0.4, 0.95, 0.3, 0.5])
        inst = pb.make_instance(truth, pb.simulate(truth))
        swapped = np.concatenate([truth[6:12], truth[:6], truth[12:]])
        assert pb.score(swapped, inst)["position_error"] > 0.2
        c0 = pb.forward_calls
        stage = PermuteStrategy(pb, settings(), 0)
        x = stage.solve(inst, np.random.default_rng(0), swapped)
        assert pb.forward_calls - c0 == 2
        assert np.array_equal(x, truth) and pb.score(x, inst)["iou"] == 1.0
    finally:
        pb.close()
