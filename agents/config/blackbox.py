"""The ``blackbox:`` section of the run config: settings of the black-box strategies
(``--backend blackbox``), every field documented under it."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator

from agents.config.section import Section, layer_sizes


class BlackBoxSection(Section):
    """Settings of the black-box strategies (``--backend blackbox``); ``train.timesteps`` counts forward
    calls."""

    calls_per_instance: int = Field(default=200, gt=0)
    """``cma``: forward-call budget of CMA-ES per instance."""
    sigma0: float = Field(default=0.2, gt=0)
    """``cma``: initial CMA-ES step size, in normalised parameter units."""
    popsize: int | None = Field(default=None, gt=1)
    """``cma``: CMA-ES population size; None takes the ``cma`` package's default (4 + 3 ln n)."""
    refine_calls: int = Field(default=0, ge=0)
    """``amortised``/``surrogate``: CMA-ES calls that refine the answer on the real black box (0: none)."""
    refine_sigma: float = Field(default=0.05, gt=0)
    """Initial step size of that refinement."""
    batch: int = Field(default=256, gt=0)
    """``amortised``/``surrogate``: prior draws (one forward call each) added per training round."""
    epochs: int = Field(default=20, gt=0)
    """``amortised``/``surrogate``: epochs over the whole bank of pairs per training round."""
    minibatch: int = Field(default=128, gt=0)
    """Minibatch size of the network updates."""
    hidden: list[int] = Field(default_factory=lambda: [256, 256])
    """Hidden layer sizes of the inverse network or the surrogate."""
    amortised_net: Literal["mlp", "cnn"] = "mlp"
    """``amortised``: the inverse network. ``mlp`` reads the features as one flat vector; ``cnn`` reads the
    picture that the problem's features begin with (its ``feature_image()``) by 3 × 3 convolutions with two
    coordinate channels (CoordConv), then a fully connected head of ``hidden`` sizes."""
    amortised_loss: Literal["slots", "set"] = "slots"
    """``amortised``: ``slots`` regresses every parameter onto its own output. ``set`` scores each answer by
    its best ordering of the problem's interchangeable blocks (``interchangeable()``: objects that exchange
    place, turn and colour; the orderings of ``permutations``), so that a network that cannot tell the objects
    apart still places each one instead of answering their mean; a ``permute`` stage then picks the order."""
    amortised_weights: list[float] = Field(default_factory=list)
    """``amortised``: one weight per parameter (the problem's order) in the network's squared error, scaled to
    a mean of 1 over its outputs (a periodic parameter's sine and cosine both take its weight); empty: all
    equal. E.g. ``[24, 24, 1, 0, 0, 0] × 3 + [1, 1]`` for Blender's three objects (configs/blender.yaml)
    weighs their places and leaves their colours, which the pictures hardly tell, untrained."""
    amortised_mirror: bool = False
    """``amortised``: also train on each pair's mirror image (the problem's ``mirror()``: e.g. Blender's scene
    reflected in the camera's plane and its picture flipped left-right), twice the pairs for no forward call;
    an error for a problem that declares no mirror. On Blender's three objects it raised the CNN's answer
    alone by 0.07 IoU on two training seeds (docs/results.md)."""
    learning_rate: float = Field(default=1e-3, gt=0)
    """Adam step size of the network updates."""
    starts: int = Field(default=8, gt=0)
    """``surrogate``: starting points of the descent (the first guess and prior draws); one real call each."""
    gd_steps: int = Field(default=200, ge=0)
    """``surrogate``: Adam steps on the misfit through the frozen surrogate (0 disables the gradient step)."""
    gd_lr: float = Field(default=0.02, gt=0)
    """``surrogate``: step size of that descent, in normalised parameter units."""
    grad_checks: int = Field(default=4, ge=0)
    """``surrogate``: prior points per round where the surrogate's gradient is checked against finite
    differences of the real black box (3 calls each)."""

    inverse_epochs: int = Field(default=0, ge=0)
    """``surrogate`` (a): epochs per round that train an inverse network data → params by backprop through the
    frozen surrogate on the data-consistency loss ‖f̂(g(d)) − d‖² (no truth used); answers then start from
    g(d) instead of the ``starts`` descent. 0: off."""
    trust_calls: int = Field(default=0, ge=0)
    """``surrogate`` (b): real calls of the trust-region descent per instance (0: off). Each step descends
    through f̂ inside the radius, checks the candidate with one real call, refits f̂ locally on the calls so
    far, and grows or shrinks the radius with the agreement of predicted and real misfit reduction."""
    trust_radius: float = Field(default=0.1, gt=0, le=1)
    """``surrogate`` (b): initial trust radius (max-norm, normalised parameter units)."""
    local_steps: int = Field(default=20, ge=0)
    """``surrogate`` (b): Adam steps of the local refit of f̂ after each real call (0: no refit)."""
    permutations: int = Field(default=24, gt=0)
    """``permute`` (a chain stage): the most reorderings of the problem's interchangeable parts (e.g. objects
    exchanging place, turn and colour) tried per instance, one forward call each: every ordering when there
    are no more (3 objects: 5), else the exchanges of two."""
    chain: list[Literal["amortised", "surrogate", "permute", "cma"]] = Field(default_factory=list)
    """``--algo chain``: the stages in order; each answer seeds the next (``cma`` from the seed with step
    ``refine_sigma`` and ``calls_per_instance`` calls; ``permute`` keeps the best reordering of
    interchangeable parts), e.g. ``[amortised, surrogate, cma]`` or ``[surrogate, permute, cma]``."""

    @field_validator("hidden")
    @classmethod
    def _positive_hidden(cls, v: list[int]) -> list[int]:
        return layer_sizes(v, "blackbox.hidden", "[256, 256]")

    @field_validator("amortised_weights")
    @classmethod
    def _weights(cls, v: list[float]) -> list[float]:
        if v and (not all(math.isfinite(w) and w >= 0 for w in v) or not any(v)):
            raise ValueError(f"blackbox.amortised_weights are finite weights >= 0, not all 0; got {v}, e.g. "
                             "[4, 4, 1, 0, 0, 0] for a problem of 6 parameters, or [] for equal weights")
        return v

    @field_validator("chain")
    @classmethod
    def _chain_order(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v) or ("amortised" in v and v[0] != "amortised"):
            raise ValueError("blackbox.chain lists each stage once, amortised only first (it takes no seed); "
                             f"got {v}, e.g. [amortised, surrogate, cma]")
        return v
