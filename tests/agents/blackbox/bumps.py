"""Two bumps on a line: an inverse problem whose two positions the data cannot (or can hardly) tell apart,
shared by the set-loss tests (test_conv.py) and the ``permute`` tests (test_symmetry.py)."""

from __future__ import annotations

import numpy as np

from envs.inverse import Instance, InverseProblem

GRID = np.linspace(0.0, 1.0, 50)


class Bumps(InverseProblem):
    """Bumps on :data:`GRID` at positions ``x[0]`` and ``x[1]``, of heights :attr:`heights`; the exchange of
    the two positions is declared interchangeable."""

    param_dim = 2
    heights = (1.0, 1.0)

    def simulate(self, x, context=None):
        first, second = self.heights
        return first * np.exp(-((GRID - x[0]) / 0.05) ** 2) + second * np.exp(-((GRID - x[1]) / 0.05) ** 2)

    def data_misfit(self, data, instance):
        return float(np.sum((data - instance.data) ** 2))

    def sample_instance(self, rng):
        x = rng.uniform(0.1, 0.9, 2)
        return Instance(self.forward(x), x)

    def interchangeable(self):
        return [np.array([[0], [1]])]
