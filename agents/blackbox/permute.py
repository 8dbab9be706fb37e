"""``permute``: a chain stage that tries the previous answer with interchangeable parts exchanged.

Several objects in one picture can be told apart only weakly: an answer with two of them exchanged (place,
turn and colour) may explain the data almost as well as the truth, a local optimum that a local search does
not leave. A problem names such parts in :meth:`~envs.inverse.InverseProblem.interchangeable` (groups of
parameter blocks); this stage renders the answer with the blocks of each group permuted, at most
``blackbox.permutations`` of them (every ordering of the group when there are no more, else every exchange of
two blocks), one counted forward call each, and keeps the one of lowest real misfit. The answer's own misfit
costs one more call unless the previous stage measured it. A problem without such groups costs nothing.

E.g. ``blackbox.chain: [surrogate, permute, cma]``, or in a benchmark row: the surrogate's inverse network
(no call), its 5 other orderings of 3 objects (6 calls), then the trust region from the best one.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

import numpy as np

from agents.blackbox.common import Strategy

if TYPE_CHECKING:
    from envs.inverse import Instance


def orderings(k: int, limit: int) -> list[tuple[int, ...]]:
    """The orderings of ``k`` blocks other than the identity: all ``k! − 1`` when they are at most ``limit``,
    else the ``k (k − 1) / 2`` exchanges of two blocks (the first ``limit`` of them)."""
    if k < 2:
        return []
    if math.factorial(k) - 1 <= limit:
        return [p for p in itertools.permutations(range(k)) if p != tuple(range(k))]
    swaps = []
    for i, j in itertools.combinations(range(k), 2):
        p = list(range(k))
        p[i], p[j] = j, i
        swaps.append(tuple(p))
    return swaps[:limit]


def candidates(x: np.ndarray, groups: list[np.ndarray], limit: int) -> list[np.ndarray]:
    """``x`` with the blocks of one group at a time reordered (each group's orderings, ``limit`` in all)."""
    out: list[np.ndarray] = []
    for blocks in groups:
        blocks = np.asarray(blocks, dtype=np.int64)
        for order in orderings(len(blocks), limit - len(out)):
            y = np.array(x, dtype=np.float64, copy=True)
            y[blocks.ravel()] = x[blocks[list(order)].ravel()]
            out.append(y)
    return out[:limit]


class PermuteStrategy(Strategy):
    """Exchange interchangeable parts of the previous answer; keep the best (see the module docstring)."""

    def train_round(self, rng: np.random.Generator) -> dict[str, float]:
        """Nothing to learn."""
        return {}

    def solve(self, instance: Instance, rng: np.random.Generator, x0: np.ndarray | None = None,
              f0: float | None = None) -> np.ndarray:
        """The best of ``x0`` (default: the problem's first guess) and its permutations, by real misfit."""
        x = np.asarray(self.problem.start() if x0 is None else x0, dtype=np.float64)
        others = candidates(x, self.problem.interchangeable(), self.cfg.permutations)
        if not others:
            self.last_misfit = f0
            return x
        best_x, best_f = x, self.problem.misfit(x, instance) if f0 is None else f0
        for y in others:
            f = self.problem.misfit(y, instance)
            if f < best_f:
                best_x, best_f = y, f
        self.last_misfit = best_f
        return best_x
