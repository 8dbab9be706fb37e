"""evaluate.py's random baseline: uniform over the legal moves when the run's env gives action masks."""

import gymnasium as gym
import numpy as np

from agents.run.evaluation import random_policy


def test_the_masked_random_baseline_plays_only_legal_moves_and_every_one_of_them():
    legal = np.array([0, 1, 0, 1, 1, 0, 0], dtype=bool)
    act = random_policy(gym.spaces.Discrete(7), seed=3, masks=lambda: legal)
    moves = [int(act(None)) for _ in range(300)]
    assert set(moves) == {1, 3, 4}
    unmasked = random_policy(gym.spaces.Discrete(7), seed=3)
    assert set(int(unmasked(None)) for _ in range(300)) == set(range(7))  # the control: no mask, every move


def test_a_multidiscrete_mask_is_split_per_dimension():
    space = gym.spaces.MultiDiscrete([3, 4])
    mask = np.array([1, 0, 0, 0, 0, 1, 1], dtype=bool)  # dimension 0: {0}; dimension 1: {2, 3}
    act = random_policy(space, seed=0, masks=lambda: mask)
    seen = {tuple(int(v) for v in act(None)) for _ in range(200)}
    assert seen == {(0, 2), (0, 3)}
