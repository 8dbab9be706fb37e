"""``--algo surrogate``: a differentiable surrogate of the black box, frozen, then gradient descent through it.

The founding documents' second strategy. Each training round calls the black box on ``blackbox.batch``
parameter sets from the prior (``sample_instance``: one counted call each) and fits an MLP
``f̂(params, context) ≈ features(forward(params))`` (standardised features). Then, per instance:

- **start:** by default ``blackbox.starts`` points (the first guess and prior draws) descend by Adam on
  ``‖f̂(x) − features(d_obs)‖²`` through the frozen f̂ for ``blackbox.gd_steps`` steps; with several, each end
  point is checked with one real call and the best real misfit wins. With ``blackbox.inverse_epochs`` > 0
  (**surrogate (a)**) an inverse network g(data) → params, trained by backprop through the frozen f̂ on the
  data-consistency loss ``‖f̂(g(d)) − d‖²`` (no truth: it works on field data too), answers instead, with
  no call; a chain's seed takes its place likewise.
- **(b) trust region:** with ``blackbox.trust_calls`` > 0, :func:`agents.blackbox.trust.trust_region` checks
  every descent step on the real black box, refits f̂ locally and adapts its radius.
- ``blackbox.refine_calls`` CMA-ES calls refine the answer last.

A surrogate can be right in its outputs and wrong in its gradients. Each round measures that: the cosine
between f̂'s directional derivative and a central finite difference of the real black box along a random
direction, at ``blackbox.grad_checks`` prior points (3 counted calls each), logged as ``train/grad_cosine``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from agents.blackbox.common import PairBank, Standardiser, Strategy, fit, mlp, refine
from agents.blackbox.trust import trust_region

if TYPE_CHECKING:
    from agents.config import BlackBoxSection
    from envs.inverse import Instance, InverseProblem


class Surrogate(nn.Module):
    """``f̂(x, c)`` in standardised feature units (``out_norm`` maps raw features there).

    ``periodic`` (the problem's :meth:`~envs.inverse.InverseProblem.periodic` mask): those parameters enter
    as the sine and cosine of their angle, so that f̂ is the same at 0 and 1 and smooth across.
    """

    def __init__(self, n_params: int, n_ctx: int, n_feat: int, hidden: list[int],
                 periodic: np.ndarray | None = None) -> None:
        super().__init__()
        mask = np.zeros(n_params, dtype=bool) if periodic is None else np.asarray(periodic, dtype=bool)
        self.angles, self.plain = torch.as_tensor(np.flatnonzero(mask)), torch.as_tensor(np.flatnonzero(~mask))
        self.body = mlp(n_params + len(self.angles) + n_ctx, hidden, n_feat)
        self.out_norm = Standardiser(n_feat)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as the network sees it: plain parameters, then (sin, cos) of each periodic one's angle."""
        if not len(self.angles):
            return x
        a = 2 * torch.pi * x[:, self.angles]
        return torch.cat([x[:, self.plain], torch.sin(a), torch.cos(a)], dim=1)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Predicted standardised features."""
        return self.body(torch.cat([self.encode(x), c], dim=1))


class SurrogateStrategy(Strategy):
    """Fit f̂ on black-box calls; answer by gradient descent through the frozen f̂, checked on the real one."""

    def __init__(self, problem: InverseProblem, cfg: BlackBoxSection, seed: int) -> None:
        super().__init__(problem, cfg, seed)
        probe = problem.sample_instance(np.random.default_rng(seed))  # sizes; one counted call
        self.n_ctx = len(problem.context_features(probe.context))
        self.n_feat = len(problem.features(probe.data))
        torch.manual_seed(seed)
        self.periodic = problem.periodic()
        self.net = Surrogate(problem.param_dim, self.n_ctx, self.n_feat, cfg.hidden, self.periodic)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.learning_rate)
        # (a): g(features, context) -> params in the unit box, trained through the frozen f̂
        self.inv_norm = Standardiser(self.n_feat + self.n_ctx)
        self.inv = nn.Sequential(self.inv_norm, mlp(self.n_feat + self.n_ctx, cfg.hidden, problem.param_dim),
                                 nn.Sigmoid())
        self.inv_opt = torch.optim.Adam(self.inv.parameters(), lr=cfg.learning_rate)
        self.bank: PairBank = PairBank()
        self.gen = torch.Generator().manual_seed(seed)
        self.last_local_net: Surrogate | None = None
        """(b): the locally refitted copy of f̂ from the last trust region (for its gradient check)."""

    def train_round(self, rng: np.random.Generator) -> dict[str, float]:
        """Call the black box on ``batch`` prior draws, then :meth:`learn`."""
        self.bank.draw(self.problem, self.cfg.batch, rng)
        return self.learn(rng)

    def learn(self, rng: np.random.Generator) -> dict[str, float]:
        """Refit f̂ on the bank, train the inverse network (a) through it, measure f̂'s gradients."""
        x, c, f = self.bank.tensors()
        self.net.out_norm.fit(f)
        inputs = torch.cat([self.net.encode(x), c], dim=1)
        loss = fit(self.net.body, inputs, self.net.out_norm(f), self.opt, self.cfg.epochs, self.cfg.minibatch,
                   self.gen)
        out = {"train/loss": loss, "train/pairs": float(len(x))}
        if self.cfg.inverse_epochs:
            out["train/consistency_loss"] = self.fit_inverse(c, f)
        if self.cfg.grad_checks:
            out["train/grad_cosine"] = self.gradient_cosine(rng, self.cfg.grad_checks)
        return out

    def fit_inverse(self, c: torch.Tensor, f: torch.Tensor) -> float:
        """(a): ``inverse_epochs`` epochs of ``‖f̂(g(d), c) − d‖²`` over the bank's data; the params unused."""
        inputs = torch.cat([f, c], dim=1)
        self.inv_norm.fit(inputs)
        target = self.net.out_norm(f)
        self.net.requires_grad_(False)
        loss_sum, n = 0.0, len(f)
        try:
            for _ in range(self.cfg.inverse_epochs):
                loss_sum = 0.0
                for idx in torch.randperm(n, generator=self.gen).split(self.cfg.minibatch):
                    loss = ((self.net(self.inv(inputs[idx]), c[idx]) - target[idx]) ** 2).mean()
                    self.inv_opt.zero_grad()
                    loss.backward()
                    self.inv_opt.step()
                    loss_sum += float(loss.detach()) * len(idx)
        finally:
            self.net.requires_grad_(True)
        return loss_sum / max(n, 1)

    def gradient_cosine(self, rng: np.random.Generator, points: int, h: float = 0.01,
                        net: Surrogate | None = None) -> float:
        """Mean cosine between f̂'s and the real black box's directional derivatives (3 calls per point)."""
        net = self.net if net is None else net
        cos = []
        for _ in range(points):
            inst = self.problem.sample_instance(rng)  # a prior point and its context (one call)
            cos.append(directional_cosine(self.problem, net, np.clip(inst.known_truth(), h, 1 - h), inst, rng, h))
        return float(np.mean(cos))

    def inverse_params(self, instance: Instance) -> np.ndarray:
        """(a): the inverse network's answer (no forward call)."""
        feats = np.concatenate([self.problem.features(instance.data), self.problem.context_features(instance.context)])
        with torch.no_grad():
            return self.inv(torch.as_tensor(feats[None], dtype=torch.float32))[0].double().numpy()

    def descend(self, instance: Instance, starts: np.ndarray, steps: int | None = None) -> np.ndarray:
        """Adam on ``‖f̂(x) − features(d_obs)‖²`` through the frozen f̂, from each row of ``starts``; no real call."""
        target = self.net.out_norm(torch.as_tensor(self.problem.features(instance.data))[None])
        c = torch.as_tensor(self.problem.context_features(instance.context))[None].expand(len(starts), -1)
        lo, hi = box(np.zeros(len(self.periodic)), np.ones(len(self.periodic)), self.periodic)
        ends = descend_box(self.net, c, target, starts, lo, hi, self.cfg.gd_steps if steps is None else steps,
                           self.cfg.gd_lr)
        return wrap(ends, self.periodic)

    def solve(self, instance: Instance, rng: np.random.Generator, x0: np.ndarray | None = None,
              f0: float | None = None) -> np.ndarray:
        """Start (seed, inverse network or checked descents), then the trust region, then CMA-ES refinement."""
        seeded = x0 is not None or self.cfg.inverse_epochs > 0
        if seeded:
            x = np.asarray(x0, dtype=np.float64) if x0 is not None else self.inverse_params(instance)
            if not self.cfg.trust_calls:  # free descent from the seed (the trust region descends checked)
                x, f0 = self.descend(instance, x[None])[0], None
        else:
            starts = np.vstack([self.problem.start(),
                                rng.uniform(0.0, 1.0, (self.cfg.starts - 1, self.problem.param_dim))])
            ends = self.descend(instance, starts)
            misfits = [self.problem.misfit(e, instance) for e in ends] if len(ends) > 1 else [None]
            i = int(np.argmin([m if m is not None else 0.0 for m in misfits]))
            x, f0 = ends[i], misfits[i]
        if self.cfg.trust_calls:
            x, f0 = trust_region(self, instance, x, f0, rng)
        x, self.last_misfit = refine(self.problem, instance, x, self.cfg, int(rng.integers(2**31)), f0)
        return x

    def state(self) -> dict[str, torch.Tensor]:
        return {**{f"net/{k}": v for k, v in self.net.state_dict().items()},
                **{f"inv/{k}": v for k, v in self.inv.state_dict().items()}, **self.bank.state("bank")}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net/")})
        inv = {k[4:]: v for k, v in tensors.items() if k.startswith("inv/")}
        if inv:
            self.inv.load_state_dict(inv)
        self.bank.load(tensors, "bank")


def box(lo: np.ndarray, hi: np.ndarray, periodic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bounds ``lo``/``hi`` with the periodic parameters unbounded (a descent wraps them afterwards)."""
    return np.where(periodic, -np.inf, lo), np.where(periodic, np.inf, hi)


def wrap(x: np.ndarray, periodic: np.ndarray) -> np.ndarray:
    """``x`` with its periodic parameters brought back into [0, 1)."""
    return np.where(periodic, np.mod(x, 1.0), x) if periodic.any() else x


def descend_box(net: nn.Module, c: torch.Tensor, target: torch.Tensor, starts: np.ndarray, lo: np.ndarray | float,
                hi: np.ndarray | float, steps: int, lr: float) -> np.ndarray:
    """Adam on ``mean((net(x, c) − target)²)`` per row, ``x`` clamped into ``[lo, hi]``; net frozen meanwhile."""
    x = torch.tensor(starts, dtype=torch.float32, requires_grad=True)
    lo_t, hi_t = torch.as_tensor(lo, dtype=torch.float32), torch.as_tensor(hi, dtype=torch.float32)
    opt = torch.optim.Adam([x], lr=lr)
    net.requires_grad_(False)
    try:
        for _ in range(steps):
            loss = ((net(x, c) - target) ** 2).mean(1).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.copy_(torch.maximum(torch.minimum(x, hi_t), lo_t))
    finally:
        net.requires_grad_(True)
    return x.detach().double().numpy()


def directional_cosine(problem: InverseProblem, net: Surrogate, x0: np.ndarray, inst: Instance,
                       rng: np.random.Generator, h: float = 0.01) -> float:
    """Cosine between ``net``'s and the real black box's derivative at ``x0`` along a random direction (2 calls)."""
    v = rng.standard_normal(len(x0))
    v /= np.linalg.norm(v)
    fd = (problem.features(problem.forward(np.clip(x0 + h * v, 0, 1), inst.context))
          - problem.features(problem.forward(np.clip(x0 - h * v, 0, 1), inst.context))) / (2 * h)
    fd_t = torch.as_tensor(fd) / net.out_norm.std
    c = torch.as_tensor(problem.context_features(inst.context))[None]
    _, jvp = torch.autograd.functional.jvp(lambda z: net(z, c)[0], torch.as_tensor(x0[None], dtype=torch.float32),
                                           torch.as_tensor(v[None], dtype=torch.float32))
    return float(nn.functional.cosine_similarity(jvp, fd_t.float(), dim=0))
