"""``--algo cma``: per-instance CMA-ES on the data misfit, with a forward-call budget per instance."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from agents.blackbox.common import Strategy, cma_search

if TYPE_CHECKING:
    from envs.inverse import Instance


class CMAStrategy(Strategy):
    """CMA-ES from the problem's first guess, ``blackbox.calls_per_instance`` calls, step ``blackbox.sigma0``.

    It has nothing to learn: a training round solves one fresh synthetic instance, so that TensorBoard shows
    its calls and error while the loop runs.
    """

    def train_round(self, rng: np.random.Generator) -> dict[str, float]:
        """Solve one synthetic instance; report its misfit and score."""
        inst = self.problem.sample_instance(rng)
        x = self.solve(inst, rng)
        metrics = self.problem.score(x, inst)
        return {f"train/{self.problem.score_key}": metrics[self.problem.score_key]}

    def solve(self, instance: Instance, rng: np.random.Generator) -> np.ndarray:
        """CMA-ES from ``problem.start()``."""
        x, _ = cma_search(self.problem, instance, self.problem.start(), self.cfg.sigma0, self.cfg.calls_per_instance,
                          int(rng.integers(2**31)), self.cfg.popsize)
        return x
