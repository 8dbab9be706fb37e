"""``blackbox.amortised_weights``: the amortised network's squared error weighs each parameter as told (a
parameter of weight 0 stays untrained, the rest learn as before), and bad weights are refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_strategies import Quadratic, settings

from agents.blackbox.amortised import AmortisedStrategy
from envs.errors import UserError


def _errors(weights: list[float]) -> np.ndarray:
    """Median absolute error per parameter on 64 fresh instances after one round on 512 prior pairs."""
    torch.set_num_threads(1)
    pb = Quadratic()
    strat = AmortisedStrategy(pb, settings(batch=512, epochs=40, hidden=[64], amortised_weights=weights), 0)
    strat.train_round(np.random.default_rng(0))
    insts = [pb.sample_instance(np.random.default_rng(500 + i)) for i in range(64)]
    return np.median([np.abs(strat.predict_params(i) - i.known_truth()) for i in insts], axis=0)


def test_a_parameter_of_weight_zero_is_left_untrained_and_the_rest_learn():
    equal, first_only = _errors([]), _errors([1.0, 0.0, 0.0])
    assert np.all(equal < 0.05), equal  # every parameter is learned with equal weights
    assert first_only[0] < 0.05, first_only
    # the other two never enter the loss: their answers stay where the untrained network puts them
    assert np.all(first_only[1:] > 3 * equal[1:]) and np.all(first_only[1:] > 0.1), (first_only, equal)


def test_weights_of_the_wrong_length_or_sign_are_refused_in_one_line():
    with pytest.raises(UserError, match=r"amortised_weights has 2 entries, but Quadratic has 3 parameters"):
        AmortisedStrategy(Quadratic(), settings(amortised_weights=[1.0, 2.0]), 0)
    with pytest.raises(UserError, match=r"'blackbox.amortised_weights' .*finite weights >= 0, not all 0"):
        settings(amortised_weights=[1.0, -1.0, 0.0])
    with pytest.raises(UserError, match=r"not all 0"):
        settings(amortised_weights=[0, 0, 0])
