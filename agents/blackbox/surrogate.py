"""``--algo surrogate``: a differentiable surrogate of the black box, frozen, then gradient
descent through it.

The founding documents' second strategy. Each training round calls the black box on ``blackbox.batch``
parameter sets from the prior (``sample_instance``: one counted call each) and fits an MLP
``f̂(params, context) ≈ features(forward(params))`` (standardised features). Then, per instance:

- **start:** by default ``blackbox.starts`` points (the first guess and prior draws) descend by Adam on
  ``‖f̂(x) − features(d_obs)‖²`` through the frozen f̂ for ``blackbox.gd_steps`` steps; with several, each end
  point is checked with one real call and the best real misfit wins. With ``blackbox.inverse_epochs`` > 0
  (**surrogate (a)**) an inverse network g(data) → params, trained by backprop through the frozen f̂ on the
  data-consistency loss ``‖f̂(g(d)) − d‖²`` (no truth: it works on field data too), answers instead, with
  no call; a chain's seed takes its place likewise.
- **(b) trust region:** with ``blackbox.trust_calls`` > 0, :func:`trust_region` (below) checks
  every descent step on the real black box, refits f̂ locally and adapts its radius.
- ``blackbox.refine_calls`` CMA-ES calls refine the answer last.

A surrogate can be right in its outputs and wrong in its gradients. Each round measures that: the cosine
between f̂'s directional derivative and a central finite difference of the real black box along a random
direction, at ``blackbox.grad_checks`` prior points (3 counted calls each), logged as ``train/grad_cosine``.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from agents.blackbox.common import PairBank, Standardiser, Strategy, fit, mlp, refine

if TYPE_CHECKING:
    from agents.config import BlackBoxSection
    from envs.inverse import Instance, InverseProblem


class Surrogate(nn.Module):
    """``f̂(x, c)`` in standardised feature units (``out_norm`` maps raw features there).

    ``periods`` (the problem's :meth:`~envs.inverse.InverseProblem.periods`; 0: not periodic; a boolean
    mask means full turns): those parameters enter as the sine and cosine of ``2π x / period``, so that f̂
    is the same at 0 and 1 (and at equivalent turns) and smooth across.
    """

    def __init__(self, n_params: int, n_ctx: int, n_feat: int, hidden: list[int],
                 periods: np.ndarray | None = None) -> None:
        super().__init__()
        period = np.zeros(n_params) if periods is None else np.asarray(periods, dtype=np.float64)
        mask = period > 0
        self.angles, self.plain = (torch.as_tensor(np.flatnonzero(mask)),
                                   torch.as_tensor(np.flatnonzero(~mask)))
        self.freq = torch.as_tensor(2 * np.pi / period[mask], dtype=torch.float32)
        self.body = mlp(n_params + len(self.angles) + n_ctx, hidden, n_feat)
        self.out_norm = Standardiser(n_feat)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as the network sees it: plain parameters, then (sin, cos) of each periodic one's angle."""
        if not len(self.angles):
            return x
        a = self.freq * x[:, self.angles]
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
        self.net = Surrogate(problem.param_dim, self.n_ctx, self.n_feat, cfg.hidden, problem.periods())
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
            cos.append(directional_cosine(self.problem, net, np.clip(inst.known_truth(), h, 1 - h), inst,
                                          rng, h))
        return float(np.mean(cos))

    def inverse_params(self, instance: Instance) -> np.ndarray:
        """(a): the inverse network's answer (no forward call)."""
        feats = np.concatenate([self.problem.features(instance.data),
                                self.problem.context_features(instance.context)])
        with torch.no_grad():
            return self.inv(torch.as_tensor(feats[None], dtype=torch.float32))[0].double().numpy()

    def descend(self, instance: Instance, starts: np.ndarray, steps: int | None = None) -> np.ndarray:
        """Adam on ``‖f̂(x) − features(d_obs)‖²`` through the frozen f̂, from each row of ``starts``; no real
        call."""
        target = self.net.out_norm(torch.as_tensor(self.problem.features(instance.data))[None])
        c = torch.as_tensor(self.problem.context_features(instance.context))[None].expand(len(starts), -1)
        lo, hi = box(np.zeros(len(self.periodic)), np.ones(len(self.periodic)), self.periodic)
        ends = descend_box(self.net, c, target, starts, lo, hi, self.cfg.gd_steps if steps is None else steps,
                           self.cfg.gd_lr)
        return wrap(ends, self.periodic)

    def solve(self, instance: Instance, rng: np.random.Generator, x0: np.ndarray | None = None,
              f0: float | None = None) -> np.ndarray:
        """Start (seed, inverse network or checked descents), then the trust region, then CMA-ES
        refinement."""
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


def descend_box(net: nn.Module, c: torch.Tensor, target: torch.Tensor, starts: np.ndarray,
                lo: np.ndarray | float, hi: np.ndarray | float, steps: int, lr: float) -> np.ndarray:
    """Adam on ``mean((net(x, c) − target)²)`` per row, ``x`` clamped into ``[lo, hi]``; net frozen
    meanwhile."""
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
    """Cosine between ``net``'s and the real black box's derivative at ``x0`` along a random direction
    (2 calls)."""
    v = rng.standard_normal(len(x0))
    v /= np.linalg.norm(v)
    fd = (problem.features(problem.forward(np.clip(x0 + h * v, 0, 1), inst.context))
          - problem.features(problem.forward(np.clip(x0 - h * v, 0, 1), inst.context))) / (2 * h)
    fd_t = torch.as_tensor(fd) / net.out_norm.std
    c = torch.as_tensor(problem.context_features(inst.context))[None]
    _, jvp = torch.autograd.functional.jvp(lambda z: net(z, c)[0],
                                           torch.as_tensor(x0[None], dtype=torch.float32),
                                           torch.as_tensor(v[None], dtype=torch.float32))
    return float(nn.functional.cosine_similarity(jvp, fd_t.float(), dim=0))


# -- (b) the trust region ------------------------------------------------------------------------------------
# Surrogate (b): a trust-region descent through f̂, every step checked on the real black box.
#
# From a centre ``x_c`` (one real call measures its data), each step:
#
# 1. corrects the local model additively so that it matches the real data at the centre,
#    ``m(x) = f̂_loc(x) + (F(x_c) − f̂_loc(x_c))`` (standardised features);
# 2. descends ``‖m(x) − features(d_obs)‖²`` by Adam (``gd_steps``, ``gd_lr``) inside the box
#    ``|x − x_c|_∞ ≤ r`` ∩ [0, 1] (a periodic parameter, an angle, is not cut by [0, 1]: it wraps around);
# 3. calls the black box once at the candidate; ``ρ = actual / predicted`` reduction of that loss;
# 4. accepts the candidate as the new centre when its real loss is lower; shrinks ``r`` by half when
#    ``ρ < 0.25`` and doubles it (up to 1) when ``ρ > 0.75`` and the step reached the boundary;
# 5. refits the local copy f̂_loc on the calls made so far (and a replayed minibatch of the prior bank, so
#    that it stays right away from them): ``local_steps`` Adam steps.
#
# The global f̂ is left as trained; every instance starts from a fresh copy. ``trust_calls`` real calls in all,
# the centre's included; the answer is the checked point of lowest real data misfit.
SHRINK, GROW = 0.25, 0.75
"""ρ thresholds of the radius update (the textbook values, Nocedal & Wright, Algorithm 4.1)."""
REPLAY = 64
"""Prior-bank rows replayed in each local refit step."""


def trust_region(strat: SurrogateStrategy, instance: Instance, x: np.ndarray, f0: float | None,
                 rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Run the trust region from ``x``; returns the best checked point and its real data misfit.

    ``f0`` (the start's misfit, if known) only competes for the best answer: the centre's data are needed
    for the model's correction, so the start costs one call either way.
    """
    pb, cfg = strat.problem, strat.cfg
    net = copy.deepcopy(strat.net)
    opt = torch.optim.Adam(net.body.parameters(), lr=cfg.learning_rate)
    target = net.out_norm(torch.as_tensor(pb.features(instance.data))[None]).detach()
    c = torch.as_tensor(pb.context_features(instance.context))[None]
    xs: list[np.ndarray] = []
    fs: list[torch.Tensor] = []

    def real(z: np.ndarray) -> tuple[float, float]:
        data = pb.forward(z, instance.context)
        feats = net.out_norm(torch.as_tensor(pb.features(data))[None]).detach()
        xs.append(np.asarray(z, dtype=np.float64))
        fs.append(feats)
        return pb.data_misfit(data, instance), float(((feats - target) ** 2).mean())

    x_c = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    m_c, loss_c = real(x_c)
    f_c = fs[-1]
    best_x, best_m = (x_c, m_c) if f0 is None or m_c <= f0 else (x_c, f0)
    radius = cfg.trust_radius
    bank = strat.bank.tensors() if strat.bank is not None and len(strat.bank.x) else None
    while len(xs) < cfg.trust_calls:
        with torch.no_grad():
            delta = f_c - net(torch.as_tensor(x_c[None], dtype=torch.float32), c)
        per = strat.periodic  # the radius box, cut by [0, 1] except for periodic parameters
        lo = np.where(per, x_c - radius, np.maximum(x_c - radius, 0.0))
        hi = np.where(per, x_c + radius, np.minimum(x_c + radius, 1.0))
        step_to = descend_box(net, c, target - delta, x_c[None], lo, hi, cfg.gd_steps, cfg.gd_lr)[0]
        step = float(np.max(np.abs(step_to - x_c)))
        cand = wrap(step_to, strat.periodic)  # a periodic parameter may cross 0 ≡ 1
        with torch.no_grad():
            pred = float(((net(torch.as_tensor(cand[None], dtype=torch.float32), c)
                           + delta - target) ** 2).mean())
        m_n, loss_n = real(cand)
        rho = (loss_c - loss_n) / max(loss_c - pred, 1e-12)
        if m_n < best_m:
            best_x, best_m = cand, m_n
        if loss_n < loss_c:
            x_c, loss_c, f_c = cand, loss_n, fs[-1]
        if rho < SHRINK:
            radius *= 0.5
        elif rho > GROW and step > 0.9 * radius:
            radius = min(2.0 * radius, 1.0)
        _refit(net, opt, xs, fs, c, bank, cfg.local_steps, rng)
    strat.last_local_net = net
    return best_x, best_m


def _refit(net: Surrogate, opt: torch.optim.Optimizer, xs: list[np.ndarray], fs: list[torch.Tensor],
           c: torch.Tensor, bank: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None, steps: int,
           rng: np.random.Generator) -> None:
    """``steps`` Adam steps of f̂_loc on this instance's real calls plus a replayed prior minibatch."""
    x_loc = torch.as_tensor(np.stack(xs), dtype=torch.float32)
    f_loc = torch.cat(fs)
    c_loc = c.expand(len(xs), -1)
    for _ in range(steps):
        loss = ((net(x_loc, c_loc) - f_loc) ** 2).mean()
        if bank is not None:
            idx = torch.as_tensor(rng.integers(0, len(bank[0]), REPLAY))
            loss = loss + ((net(bank[0][idx], bank[1][idx]) - net.out_norm(bank[2][idx])) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
