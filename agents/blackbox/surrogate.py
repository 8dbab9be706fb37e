"""``--algo surrogate``: a differentiable surrogate of the black box, frozen, then gradient descent through it.

The founding documents' second strategy. Each training round calls the black box on ``blackbox.batch``
parameter sets from the prior (``sample_instance``: one counted call each) and fits an MLP
``f̂(params, context) ≈ features(forward(params))``. To answer an instance, f̂ is frozen and
``‖f̂(x) − features(d_obs)‖²`` (standardised features) is minimised by Adam from ``blackbox.starts`` points
(the first guess and prior draws) for ``blackbox.gd_steps`` steps; each end point is checked with one real
forward call and the best real misfit wins, then ``blackbox.refine_calls`` CMA-ES calls refine it.

A surrogate can be right in its outputs and wrong in its gradients. Each round measures that: the cosine
between f̂'s directional derivative and a central finite difference of the real black box along a random
direction, at ``blackbox.grad_checks`` prior points (2 counted calls each), logged as
``train/grad_cosine``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from agents.blackbox.common import PairBank, Standardiser, Strategy, fit, mlp, refine

if TYPE_CHECKING:
    from agents.config import BlackBoxSection
    from envs.inverse import Instance, InverseProblem


class Surrogate(nn.Module):
    """``f̂(x, c)`` in standardised feature units (``out_norm`` maps raw features there)."""

    def __init__(self, n_params: int, n_ctx: int, n_feat: int, hidden: list[int]) -> None:
        super().__init__()
        self.body = mlp(n_params + n_ctx, hidden, n_feat)
        self.out_norm = Standardiser(n_feat)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Predicted standardised features."""
        return self.body(torch.cat([x, c], dim=1))


class SurrogateStrategy(Strategy):
    """Fit f̂ on black-box calls; answer by gradient descent through the frozen f̂, checked on the real one."""

    def __init__(self, problem: InverseProblem, cfg: BlackBoxSection, seed: int) -> None:
        super().__init__(problem, cfg, seed)
        probe = problem.sample_instance(np.random.default_rng(seed))  # sizes; one counted call
        self.n_ctx = len(problem.context_features(probe.context))
        self.n_feat = len(problem.features(probe.data))
        torch.manual_seed(seed)
        self.net = Surrogate(problem.param_dim, self.n_ctx, self.n_feat, cfg.hidden)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.learning_rate)
        self.bank = PairBank()
        self.gen = torch.Generator().manual_seed(seed)

    def train_round(self, rng: np.random.Generator) -> dict[str, float]:
        """Call the black box on ``batch`` prior draws, refit f̂, measure its gradients."""
        self.bank.draw(self.problem, self.cfg.batch, rng)
        x, c, f = self.bank.tensors()
        self.net.out_norm.fit(f)
        inputs = torch.cat([x, c], dim=1)
        loss = fit(self.net.body, inputs, self.net.out_norm(f), self.opt, self.cfg.epochs, self.cfg.minibatch,
                   self.gen)
        out = {"train/loss": loss, "train/pairs": float(len(x))}
        if self.cfg.grad_checks:
            out["train/grad_cosine"] = self.gradient_cosine(rng, self.cfg.grad_checks)
        return out

    def gradient_cosine(self, rng: np.random.Generator, points: int, h: float = 0.01) -> float:
        """Mean cosine between f̂'s and the real black box's directional derivatives (2 calls per point)."""
        cos = []
        for _ in range(points):
            inst = self.problem.sample_instance(rng)  # a prior point and its context (one call)
            x0 = np.clip(inst.known_truth(), h, 1 - h)
            v = rng.standard_normal(len(x0))
            v /= np.linalg.norm(v)
            fd = (self.problem.features(self.problem.forward(x0 + h * v, inst.context))
                  - self.problem.features(self.problem.forward(x0 - h * v, inst.context))) / (2 * h)
            fd_t = torch.as_tensor(fd) / self.net.out_norm.std
            c = torch.as_tensor(self.problem.context_features(inst.context))[None]
            _, jvp = torch.autograd.functional.jvp(lambda z, c=c: self.net(z, c)[0], torch.as_tensor(x0[None],
                                                   dtype=torch.float32), torch.as_tensor(v[None], dtype=torch.float32))
            cos.append(float(nn.functional.cosine_similarity(jvp, fd_t.float(), dim=0)))
        return float(np.mean(cos))

    def descend(self, instance: Instance, starts: np.ndarray, steps: int | None = None) -> np.ndarray:
        """Adam on ``‖f̂(x) − features(d_obs)‖²`` through the frozen f̂, from each row of ``starts``; no real call."""
        target = self.net.out_norm(torch.as_tensor(self.problem.features(instance.data))[None])
        c = torch.as_tensor(self.problem.context_features(instance.context))[None].expand(len(starts), -1)
        x = torch.tensor(starts, dtype=torch.float32, requires_grad=True)
        opt = torch.optim.Adam([x], lr=self.cfg.gd_lr)
        self.net.requires_grad_(False)
        try:
            for _ in range(self.cfg.gd_steps if steps is None else steps):
                loss = ((self.net(x, c) - target) ** 2).mean(1).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    x.clamp_(0.0, 1.0)
        finally:
            self.net.requires_grad_(True)
        return x.detach().double().numpy()

    def solve(self, instance: Instance, rng: np.random.Generator) -> np.ndarray:
        """Descend from ``starts`` points, keep the best by real misfit (one call each), refine with CMA-ES."""
        starts = np.vstack([self.problem.start(), rng.uniform(0.0, 1.0, (self.cfg.starts - 1, self.problem.param_dim))])
        ends = self.descend(instance, starts)
        misfits = [self.problem.misfit(x, instance) for x in ends]
        i = int(np.argmin(misfits))
        return refine(self.problem, instance, ends[i], self.cfg, int(rng.integers(2**31)), misfits[i])

    def state(self) -> dict[str, torch.Tensor]:
        return {**{f"net/{k}": v for k, v in self.net.state_dict().items()}, **self.bank.state("bank")}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net/")})
        self.bank.load(tensors, "bank")

