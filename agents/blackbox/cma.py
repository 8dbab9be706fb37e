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

    def solve(self, instance: Instance, rng: np.random.Generator, x0: np.ndarray | None = None,
              f0: float | None = None) -> np.ndarray:
        """CMA-ES from ``problem.start()``, or from a seed ``x0`` with step ``refine_sigma`` (kept if better).

        From a seed the budget ``calls_per_instance`` includes the one call that measures the seed's misfit
        when ``f0`` is not given.
        """
        seed = int(rng.integers(2**31))
        if x0 is None:
            x, self.last_misfit = cma_search(self.problem, instance, self.problem.start(), self.cfg.sigma0,
                                             self.cfg.calls_per_instance, seed, self.cfg.popsize)
            return x
        budget = self.cfg.calls_per_instance
        if f0 is None:
            f0, budget = self.problem.misfit(x0, instance), budget - 1
        x, f = cma_search(self.problem, instance, x0, self.cfg.refine_sigma, budget, seed, self.cfg.popsize)
        x, self.last_misfit = (x, f) if f < f0 else (np.asarray(x0, dtype=np.float64), f0)
        return x
