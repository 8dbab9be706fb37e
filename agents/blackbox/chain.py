"""``--algo chain``: strategies in series, each answer seeding the next (``blackbox.chain``).

E.g. ``blackbox.chain: [amortised, surrogate, cma]``: the amortised network answers with no call, the
surrogate refines that answer (its trust region when ``trust_calls`` > 0, else a free descent through f̂),
and CMA-ES searches from the result with step ``refine_sigma`` and ``calls_per_instance`` calls. A stage
passes the real misfit of its answer on when it measured it, so the next one does not pay for it again.

Training draws one bank of prior pairs per round (``blackbox.batch`` calls) that every learning stage
fits; the stages' own ``refine_calls`` are off (a ``cma`` stage is the chain's refinement). Checkpoints hold
each stage's tensors under its name, and the shared bank once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

import numpy as np
import torch

from agents.blackbox.common import PairBank, Strategy
from envs.errors import UserError

if TYPE_CHECKING:
    from agents.config import BlackBoxSection
    from envs.inverse import Instance, InverseProblem


class ChainStrategy(Strategy):
    """The stages of ``blackbox.chain`` in order; see the module docstring."""

    def __init__(self, problem: InverseProblem, cfg: BlackBoxSection, seed: int) -> None:
        from agents.blackbox import STAGES

        if not cfg.chain:
            raise UserError("--algo chain needs its stages in blackbox.chain, got none; set e.g. "
                            "--set 'blackbox.chain=[amortised, surrogate, cma]'")
        self.stages: list[tuple[str, Strategy]] = []
        super().__init__(problem, cfg, seed)
        stage_cfg = cfg.model_copy(update={"refine_calls": 0})
        self.bank: PairBank = PairBank()
        for name in cfg.chain:
            module, _, cls = STAGES[name].partition(":")
            stage: Strategy = getattr(importlib.import_module(module), cls)(problem, stage_cfg, seed)
            if stage.bank is not None:
                stage.bank = self.bank
            self.stages.append((name, stage))

    @property  # type: ignore[override]
    def problem(self) -> InverseProblem:
        """The problem of every stage (evaluation rebinds it)."""
        return self._problem

    @problem.setter
    def problem(self, problem: InverseProblem) -> None:
        self._problem = problem
        for _, stage in getattr(self, "stages", []):
            stage.problem = problem

    def train_round(self, rng: np.random.Generator) -> dict[str, float]:
        """Draw ``batch`` prior pairs once; every learning stage fits them (a chain of ``cma`` alone solves
        one instance, as ``--algo cma`` does)."""
        learners = [(n, s) for n, s in self.stages if s.bank is not None]
        if not learners:
            return self.stages[0][1].train_round(rng)
        self.bank.draw(self.problem, self.cfg.batch, rng)
        out: dict[str, float] = {}
        for name, stage in learners:
            out.update({f"{k}/{name}": v for k, v in stage.learn(rng).items()})
        return out

    def solve(self, instance: Instance, rng: np.random.Generator, x0: np.ndarray | None = None,
              f0: float | None = None) -> np.ndarray:
        """Each stage from the previous stage's answer (and its misfit, when measured)."""
        x, f = x0, f0
        for _, stage in self.stages:
            x = stage.solve(instance, rng, x, f)
            f = stage.last_misfit
        self.last_misfit = f
        assert x is not None
        return x

    def state(self) -> dict[str, torch.Tensor]:
        out = self.bank.state("bank")
        for name, stage in self.stages:
            out.update({f"{name}/{k}": v for k, v in stage.state().items() if not k.startswith("bank/")})
        return out

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.bank.load(tensors, "bank")
        for name, stage in self.stages:
            prefix = f"{name}/"
            stage.load_state({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
            if stage.bank is not None:
                stage.bank = self.bank
