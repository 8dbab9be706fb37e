"""The inverse-problem interface: counted forward calls, scores, and the adapters built on it."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the adapters)
from envs.inverse import InverseProblem, inverse_adapters, problem_of


@pytest.mark.parametrize("name", ["Renderer", "Seismic"], ids=["renderer", "seismic"])
def test_adapter_problem_counts_calls_and_scores_its_truth(name):
    env = gym.make(f"nondiff/{name}-v0")
    problem = problem_of(env)
    assert isinstance(problem, InverseProblem)
    inst = problem.sample_instance(np.random.default_rng(0))
    calls = problem.forward_calls
    assert problem.misfit(inst.known_truth(), inst) == pytest.approx(0.0, abs=1e-9)
    assert problem.forward_calls == calls + 1
    assert problem.solved(problem.score(inst.known_truth(), inst))
    assert problem.forward_calls == calls + 1  # scoring is not a query
    assert problem.misfit(problem.start(), inst) > 0.01
    with pytest.raises(ValueError, match=f"{problem.param_dim} finite numbers"):
        problem.forward(np.full(problem.param_dim + 1, 0.5))


def test_env_instance_is_the_problem_instance_and_action_towards_reaches_it():
    env = gym.make("nondiff/Seismic-v0")
    env.reset(seed=3)
    u = env.unwrapped
    truth = u.instance.known_truth()
    done = False
    while not done:
        _, _, term, trunc, info = env.step(u.action_towards(truth))
        done = term or trunc
    assert info["episode_metrics"]["rel_model_error"] < 1e-6


def test_inverse_adapters_lists_renderer_and_seismic_only():
    names = inverse_adapters()
    assert "renderer" in names and "seismic" in names and "robot" not in names
