"""``--algo amortised``: a network trained on synthetic (data → params) pairs from the prior, one pass
per answer.

Supervised amortised inversion: each training round draws ``blackbox.batch`` instances from the prior (one
counted forward call each), adds them to the bank, and fits a network from the data's features (and the
instance's context) to the normalised parameters for ``blackbox.epochs`` epochs. An answer costs no forward
call, plus ``blackbox.refine_calls`` CMA-ES calls when refinement is on.

A parameter whose data repeat within its range (the problem's :meth:`~envs.inverse.InverseProblem.periods`
below 1: a box's quarter turn) is learned as the sine and cosine of ``2π x / period`` and read back by
``atan2``: regressed as it is, the network would answer the mean of equivalent turns, which is none of them.
A full-turn angle stays a plain output: measured on the renderer (whose shapes have symmetries that vary by
instance and are not declared), sin/cos outputs for its full-turn angles cost IoU (amortised → surrogate (b)
0.894 against 0.991 at 4,146 training calls).

The network is an MLP on the features, or with ``blackbox.amortised_net: cnn`` a convolutional network on
the picture they begin with (:mod:`agents.blackbox.conv`). With ``blackbox.amortised_loss: set`` an answer
is scored by its best ordering of interchangeable objects (:class:`SetLoss`): regressed slot by slot, a
network that cannot tell the objects apart answers the mean of their places for each, which is none of them.
``blackbox.amortised_weights`` weighs the parameters in that error (:func:`output_weights`): on Blender's
three objects, weighing the places 12 times the turns and leaving the colours out took the CNN's median
position error on validation draws from 10% to 5.4% (docs/results.md). ``blackbox.amortised_mirror`` trains
on each pair and its mirror image (:func:`mirrored`), where the problem declares a mirror
(:meth:`~envs.inverse.InverseProblem.mirror`): twice the pairs for no forward call (on Blender's three
objects, the answer alone 0.63 → 0.70 IoU and the trust region from it 0.856 → 0.868; docs/results.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from agents.blackbox.common import PairBank, Standardiser, Strategy, fit, mlp, refine
from agents.blackbox.conv import ConvInverse, tie_channels
from envs.errors import UserError

if TYPE_CHECKING:
    from agents.config import BlackBoxSection
    from envs.inverse import Instance, InverseProblem


class AmortisedStrategy(Strategy):
    """An inverse network ``features(data), context → params`` (sigmoid output, in the unit box)."""

    def __init__(self, problem: InverseProblem, cfg: BlackBoxSection, seed: int) -> None:
        super().__init__(problem, cfg, seed)
        probe = problem.sample_instance(np.random.default_rng(seed))  # sizes; one counted call
        self.n_feat = len(problem.features(probe.data)) + len(problem.context_features(probe.context))
        torch.manual_seed(seed)
        self.norm = Standardiser(self.n_feat)
        self.head = AngleHead(problem.periods())
        self.image = problem.feature_image() if cfg.amortised_net == "cnn" else None
        body = inverse_body(problem, self.image, cfg, self.n_feat, self.head.n_out)
        self.net = nn.Sequential(self.norm, body, self.head)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.learning_rate)
        if cfg.amortised_mirror and problem.mirror() is None:
            raise UserError(f"blackbox.amortised_mirror adds each training pair's mirror image, but "
                            f"{type(problem).__name__} declares no mirror (its mirror() is None); use --set "
                            "blackbox.amortised_mirror=false")
        groups = problem.interchangeable()
        self.weights = output_weights(problem, cfg.amortised_weights, self.head)
        self.set_loss = (SetLoss(self.head, groups, cfg.permutations, self.weights)
                         if cfg.amortised_loss == "set" and groups else None)
        self.bank: PairBank = PairBank()
        self.gen = torch.Generator().manual_seed(seed)

    def _inputs(self, c: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return torch.cat([f, c], dim=1)

    def train_round(self, rng: np.random.Generator) -> dict[str, float]:
        """Draw ``batch`` prior pairs, then :meth:`learn`."""
        self.bank.draw(self.problem, self.cfg.batch, rng)
        return self.learn(rng)

    def learn(self, rng: np.random.Generator) -> dict[str, float]:
        """Refit the standardiser and train ``epochs`` epochs on the whole bank."""
        x, c, f = self.bank.tensors()
        if self.cfg.amortised_mirror:
            x, c, f = mirrored(self.problem, x, c, f)
        inputs = self._inputs(c, f)
        self.norm.fit(inputs)
        if self.image is not None:  # the CNN's picture: one scale per channel
            tie_channels(self.norm, inputs, self.image)
        if self.set_loss is None:
            loss_fn = nn.functional.mse_loss if self.weights is None else WeightedError(self.weights)
            loss = fit(self.net, inputs, self.head.encode(x), self.opt, self.cfg.epochs, self.cfg.minibatch,
                       self.gen, loss_fn)
        else:
            loss = fit(self.net, inputs, x, self.opt, self.cfg.epochs, self.cfg.minibatch, self.gen,
                       self.set_loss)
        return {"train/loss": loss, "train/pairs": float(len(x))}

    def predict_params(self, instance: Instance) -> np.ndarray:
        """The network's answer (no forward call)."""
        feats = np.concatenate([self.problem.features(instance.data),
                                self.problem.context_features(instance.context)])
        with torch.no_grad():
            out = self.head.decode(self.net(torch.as_tensor(feats[None], dtype=torch.float32)))
        return out[0].double().numpy()

    def solve(self, instance: Instance, rng: np.random.Generator, x0: np.ndarray | None = None,
              f0: float | None = None) -> np.ndarray:
        """The network's answer (a seed ``x0`` is ignored), refined by CMA-ES when ``refine_calls`` > 0."""
        x, self.last_misfit = refine(self.problem, instance, self.predict_params(instance), self.cfg,
                                     int(rng.integers(2**31)))
        return x

    def state(self) -> dict[str, torch.Tensor]:
        return {**{f"net/{k}": v for k, v in self.net.state_dict().items()}, **self.bank.state("bank")}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net/")})
        self.bank.load(tensors, "bank")


def mirrored(problem: InverseProblem, x: torch.Tensor, c: torch.Tensor,
             f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pairs ``(x, c, f)`` followed by their mirror images (``blackbox.amortised_mirror``): the problem's
    :meth:`~envs.inverse.InverseProblem.mirror_params` of each ``x`` and ``mirror_features`` of each ``f``,
    the context unchanged. No forward call: the mirror is declared by the problem, not rendered."""
    xm = torch.as_tensor(problem.mirror_params(x.numpy()), dtype=x.dtype)
    fm = torch.as_tensor(problem.mirror_features(f.numpy()), dtype=f.dtype)
    return torch.cat([x, xm]), torch.cat([c, c]), torch.cat([f, fm])


def inverse_body(problem: InverseProblem, image: tuple[int, int, int] | None, cfg: BlackBoxSection, n_in: int,
                 n_out: int) -> nn.Module:
    """The network between the standardiser and the head: an MLP, or with ``amortised_net: cnn`` a
    :class:`~agents.blackbox.conv.ConvInverse` on ``image``, the picture the features begin with."""
    if cfg.amortised_net == "mlp":
        return mlp(n_in, cfg.hidden, n_out)
    if image is None:
        raise UserError(f"blackbox.amortised_net=cnn reads the picture that a problem's features begin with, "
                        f"but {type(problem).__name__} declares none (its feature_image() is None); use "
                        "--set blackbox.amortised_net=mlp")
    return ConvInverse(image, n_in - int(np.prod(image)), cfg.hidden, n_out)


def output_weights(problem: InverseProblem, weights: list[float], head: AngleHead) -> torch.Tensor | None:
    """``blackbox.amortised_weights`` per network output (a periodic parameter's weight for its sine and
    cosine), scaled to a mean of 1; None (the plain mean squared error) when none are given."""
    if not weights:
        return None
    if len(weights) != head.n_params:
        name = type(problem).__name__
        raise UserError(f"blackbox.amortised_weights has {len(weights)} entries, but {name} has "
                        f"{head.n_params} parameters: give one weight per parameter, in its order, or "
                        "--set blackbox.amortised_weights=[] for equal weights")
    w = torch.as_tensor(weights, dtype=torch.float32)
    out = torch.cat([w[head.plain], w[head.angles], w[head.angles]])
    return out / out.mean()


class WeightedError:
    """The mean squared error with a weight per output (:func:`output_weights`)."""

    def __init__(self, weights: torch.Tensor) -> None:
        self.weights = weights

    def __call__(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The batch's weighted mean squared error."""
        return (((out - target) ** 2) * self.weights).mean()


class SetLoss:
    """``blackbox.amortised_loss: set``: the mean squared error of an output against the encoded truth in its
    best ordering of interchangeable blocks (the identity and :func:`~agents.blackbox.permute.orderings`).

    A block moved to another slot is encoded with that slot's periods: the parameters the slot's object
    would need there, as the ``permute`` stage would hand them over.
    """

    def __init__(self, head: AngleHead, groups: list[np.ndarray], limit: int,
                 weights: torch.Tensor | None = None) -> None:
        from agents.blackbox.permute import candidates

        index = np.arange(head.n_params, dtype=np.float64)
        self.head = head
        self.weights = weights
        self.orders = torch.as_tensor(np.stack([index, *candidates(index, groups, limit)]).astype(np.int64))

    def __call__(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The batch's mean of each row's lowest error over the orderings."""
        w = 1.0 if self.weights is None else self.weights
        err = torch.stack([(((out - self.head.encode(x[:, order])) ** 2) * w).mean(1)
                           for order in self.orders], 1)
        return err.min(1).values.mean()


class AngleHead(nn.Module):
    """The network's last step: a sigmoid for plain parameters, (sin, cos) pairs for those of a period below
    1 (see the module docstring).

    Its output is :meth:`encode` of the parameters (the regression target); :meth:`decode` reads them back.
    """

    def __init__(self, periods: np.ndarray) -> None:
        super().__init__()
        periods = np.asarray(periods, dtype=np.float64)
        mask = (periods > 0) & (periods < 1)
        self.n_params, self.n_plain = len(periods), int((~mask).sum())
        self.n_out = self.n_plain + 2 * int(mask.sum())
        self.plain = torch.as_tensor(np.flatnonzero(~mask))
        self.angles = torch.as_tensor(np.flatnonzero(mask))
        self.period = torch.as_tensor(periods[mask], dtype=torch.float32)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        """Sigmoid of the plain outputs; the angles' outputs as they are."""
        return torch.cat([torch.sigmoid(raw[:, : self.n_plain]), raw[:, self.n_plain:]], dim=1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Parameters → the plain ones, then sin and cos of each periodic one's ``2π x / period``."""
        a = 2 * torch.pi * x[:, self.angles] / self.period
        return torch.cat([x[:, self.plain], torch.sin(a), torch.cos(a)], dim=1)

    def decode(self, y: torch.Tensor) -> torch.Tensor:
        """The network's output → parameters in [0, 1] (a periodic one in [0, period))."""
        n, k = self.n_plain, len(self.angles)
        a = torch.atan2(y[:, n:n + k], y[:, n + k:])
        x = torch.empty(len(y), self.n_params, dtype=y.dtype)
        x[:, self.plain] = y[:, :n]
        x[:, self.angles] = torch.remainder(a / (2 * torch.pi), 1.0) * self.period
        return x
