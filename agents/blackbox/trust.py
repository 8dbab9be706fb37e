"""Surrogate (b): a trust-region descent through f̂, every step checked on the real black box.

From a centre ``x_c`` (one real call measures its data), each step:

1. corrects the local model additively so that it matches the real data at the centre,
   ``m(x) = f̂_loc(x) + (F(x_c) − f̂_loc(x_c))`` (standardised features);
2. descends ``‖m(x) − features(d_obs)‖²`` by Adam (``gd_steps``, ``gd_lr``) inside the box
   ``|x − x_c|_∞ ≤ r`` ∩ [0, 1] (a periodic parameter, an angle, is not cut by [0, 1]: it wraps around);
3. calls the black box once at the candidate; ``ρ = actual / predicted`` reduction of that loss;
4. accepts the candidate as the new centre when its real loss is lower; shrinks ``r`` by half when
   ``ρ < 0.25`` and doubles it (up to 1) when ``ρ > 0.75`` and the step reached the boundary;
5. refits the local copy f̂_loc on the calls made so far (and a replayed minibatch of the prior bank, so
   that it stays right away from them): ``local_steps`` Adam steps.

The global f̂ is left as trained; every instance starts from a fresh copy. ``trust_calls`` real calls in all,
the centre's included; the answer is the checked point of lowest real data misfit.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from agents.blackbox.surrogate import Surrogate, SurrogateStrategy
    from envs.inverse import Instance

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
    from agents.blackbox.surrogate import descend_box, wrap

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
            pred = float(((net(torch.as_tensor(cand[None], dtype=torch.float32), c) + delta - target) ** 2).mean())
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
