"""What the black-box strategies share: the Strategy interface, CMA-ES search, MLPs and standardisers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from agents.config import BlackBoxSection
    from envs.inverse import Instance, InverseProblem


class Strategy(ABC):
    """One way to invert a black box: optional training rounds, then a per-instance answer.

    Every forward call a strategy makes goes through ``problem`` and is counted there.

    Args:
        problem: the inverse problem.
        cfg: the ``blackbox:`` config section.
        seed: the run's seed.
    """

    bank: PairBank | None = None
    """The prior pairs a learning strategy trains on (None: it learns nothing); a chain shares one."""

    def __init__(self, problem: InverseProblem, cfg: BlackBoxSection, seed: int) -> None:
        self.problem, self.cfg, self.seed = problem, cfg, seed
        self.last_misfit: float | None = None

    @abstractmethod
    def train_round(self, rng: np.random.Generator) -> dict[str, float]:
        """One generation or epoch of training; returns ``train/…`` scalars."""

    def learn(self, rng: np.random.Generator) -> dict[str, float]:
        """Fit on :attr:`bank` as it stands (learning strategies; a chain draws the pairs once for all)."""
        return {}

    @abstractmethod
    def solve(self, instance: Instance, rng: np.random.Generator, x0: np.ndarray | None = None,
              f0: float | None = None) -> np.ndarray:
        """Normalised parameters for ``instance`` (its forward calls are counted by the problem).

        ``x0`` is a previous strategy's answer (a chain's seed) and ``f0`` its real misfit when known. A
        strategy sets :attr:`last_misfit` to the real misfit of its answer when it measured it (else None),
        so that the next stage need not re-measure.
        """

    def state(self) -> dict[str, torch.Tensor]:
        """The tensors a checkpoint stores (networks, data sets); none by default."""
        return {}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:  # noqa: B027 - nothing to restore by default
        """Restore what :meth:`state` returned."""


def cma_search(problem: InverseProblem, instance: Instance, x0: np.ndarray, sigma0: float, budget: int,
               seed: int, popsize: int | None = None) -> tuple[np.ndarray, float]:
    """CMA-ES (the ``cma`` package) on the data misfit, from ``x0``, with at most ``budget`` forward calls.

    Returns:
        The best parameters seen and their misfit.
    """
    import cma

    opts: dict[str, Any] = {"bounds": [0.0, 1.0], "maxfevals": budget, "seed": seed % 2**31 + 1,
                            "verbose": -9}
    if popsize:
        opts["popsize"] = popsize
    es = cma.CMAEvolutionStrategy(np.clip(x0, 0.0, 1.0), sigma0, opts)
    best_x, best_f, used = np.clip(np.asarray(x0, dtype=np.float64), 0.0, 1.0), float("inf"), 0
    while not es.stop() and used < budget:
        xs = es.ask()[: budget - used]
        losses = [problem.misfit(np.asarray(x), instance) for x in xs]
        used += len(xs)
        i = int(np.argmin(losses))
        if losses[i] < best_f:
            best_x, best_f = np.asarray(xs[i], dtype=np.float64), float(losses[i])
        if len(xs) < es.popsize:
            break  # the budget ended inside a generation
        es.tell(xs, losses)
    return best_x, best_f


def refine(problem: InverseProblem, instance: Instance, x0: np.ndarray, cfg: BlackBoxSection,
           seed: int, f0: float | None = None) -> tuple[np.ndarray, float | None]:
    """``x0`` improved by ``cfg.refine_calls`` CMA-ES calls with step ``cfg.refine_sigma``, kept if better.

    Returns:
        The answer and its real misfit (None when ``refine_calls`` is 0 and ``f0`` was not given).
    """
    if cfg.refine_calls <= 0:
        return x0, f0
    f0 = problem.misfit(x0, instance) if f0 is None else f0
    x, f = cma_search(problem, instance, x0, cfg.refine_sigma, cfg.refine_calls, seed)
    return (x, f) if f < f0 else (x0, f0)


def mlp(n_in: int, hidden: list[int], n_out: int) -> nn.Sequential:
    """A ReLU multilayer perceptron."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(n_in, h), nn.ReLU()]
        n_in = h
    return nn.Sequential(*layers, nn.Linear(n_in, n_out))


class Standardiser(nn.Module):
    """``(v − mean) / std`` with statistics fitted on a data set (stored in checkpoints as buffers)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, v: torch.Tensor) -> None:
        """Set the statistics from the rows of ``v``."""
        self.mean.copy_(v.mean(0))
        self.std.copy_(v.std(0).clamp_min(1e-6) if len(v) > 1 else torch.ones_like(self.std))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """Standardised ``v``."""
        return (v - self.mean) / self.std


class PairBank:
    """Synthetic ``(params, context, features)`` triples drawn from the prior, each one counted forward
    call."""

    def __init__(self) -> None:
        self.x: list[np.ndarray] = []
        self.c: list[np.ndarray] = []
        self.f: list[np.ndarray] = []
        self._cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def draw(self, problem: InverseProblem, n: int, rng: np.random.Generator) -> None:
        """Add ``n`` instances of the prior (``problem.sample_instance``)."""
        self._cache = None
        for _ in range(n):
            inst = problem.sample_instance(rng)
            self.x.append(inst.known_truth().astype(np.float32))
            self.c.append(problem.context_features(inst.context))
            self.f.append(problem.features(inst.data))

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The bank as three float32 tensors (rows aligned; cached until the next draw or load)."""
        if self._cache is None:
            self._cache = (torch.as_tensor(np.stack(self.x)), torch.as_tensor(np.stack(self.c)),
                           torch.as_tensor(np.stack(self.f)))
        return self._cache

    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        """The bank as checkpoint tensors."""
        if not self.x:
            return {}
        x, c, f = self.tensors()
        return {f"{prefix}/x": x, f"{prefix}/c": c, f"{prefix}/f": f}

    def load(self, tensors: dict[str, torch.Tensor], prefix: str) -> None:
        """Restore :meth:`state`."""
        if f"{prefix}/x" in tensors:
            self._cache = None
            self.x = list(tensors[f"{prefix}/x"].numpy())
            self.c = list(tensors[f"{prefix}/c"].numpy())
            self.f = list(tensors[f"{prefix}/f"].numpy())


def fit(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, opt: torch.optim.Optimizer, epochs: int,
        batch: int, gen: torch.Generator,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.mse_loss) -> float:
    """``epochs`` passes of minibatch regression (``loss_fn(outputs, targets)``, by default the mean squared
    error); returns the last epoch's mean loss."""
    loss_sum, n = 0.0, len(inputs)
    for _ in range(epochs):
        loss_sum = 0.0
        for idx in torch.randperm(n, generator=gen).split(batch):
            loss = loss_fn(net(inputs[idx]), targets[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
    return loss_sum / max(n, 1)
