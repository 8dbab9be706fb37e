"""The inverse-problem interface: a black-box forward model, a prior, a misfit and a score (NumPy, Gymnasium).

An inverse problem asks for the parameters ``x`` whose forward model ``forward(x)`` reproduces observed
data. nondiff's inverse adapters (``renderer``, ``seismic``) are built on :class:`InverseProblem`: their RL
env refines ``x`` step by step, and the black-box strategies of ``train.py --backend blackbox`` (CMA-ES,
amortised inversion, a differentiable surrogate) use the same object directly. A user's own simulator
plugs in with one small subclass, and :class:`InverseEnv` turns it into the RL env the CLI trains on
(docs/adapters.md, "An inverse problem").

Conventions:

- Parameters are **normalised**: a vector of :attr:`InverseProblem.param_dim` floats in ``[0, 1]`` (the
  box :meth:`InverseProblem.bounds`), mapped by the problem onto its physical units.
- :meth:`InverseProblem.forward` is the black box. Every call is counted in
  :attr:`InverseProblem.forward_calls`, and so is the simulation that makes a synthetic instance's data.
- :meth:`InverseProblem.score` compares an estimate with the known truth. It is bookkeeping for
  synthetic instances, never a query of the black box, and is not counted.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

__all__ = ["Instance", "InverseEnv", "InverseEnvMixin", "InverseProblem", "Mirror", "flip_picture",
           "inverse_adapters", "problem_of"]


@dataclass
class Instance:
    """One inverse problem to solve: observed data and, for synthetic instances, the truth behind them.

    Attributes:
        data: the observed data, in the shape :meth:`InverseProblem.forward` returns.
        truth: the normalised parameters that made ``data`` (None for field data).
        context: what is known besides the data and fixed for the instance (e.g. which kinds of shape a
            scene holds); passed to every :meth:`InverseProblem.forward` call for this instance.
        cache: per-instance values a problem precomputes from ``data`` (misfit terms); not part of equality.
    """

    data: np.ndarray
    truth: np.ndarray | None = None
    context: Any = None
    cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def known_truth(self) -> np.ndarray:
        """The truth, or a ValueError for an instance without one (field data cannot be scored)."""
        if self.truth is None:
            raise ValueError("this instance has no known truth (field data); score() needs a synthetic "
                             "instance")
        return self.truth


@dataclass(frozen=True)
class Mirror:
    """A reflection of a problem's scene that reflects its data (:meth:`InverseProblem.mirror`).

    The parameters ``reflect`` map ``a → centre − a`` (a periodic one taken modulo 1, back into ``[0, 1)``),
    the others stay, and the data come out reversed along their axis ``axis``. E.g. Blender's scene, whose
    camera stands at x = 0: every object's x → 1 − x and turn → 1 − turn, the light's azimuth → ½ − azimuth,
    and the picture flips left-right (axis 1 of ``[H, W, C]``). A learned strategy may then add each training
    pair's mirror image as a second pair without a forward call (``blackbox.amortised_mirror``).

    Attributes:
        reflect: the indices of the parameters that reflect.
        centre: each one's ``centre`` (1 for a normalised value whose physical zero is at 0.5).
        axis: the data axis that the mirror reverses (also the axis of :meth:`InverseProblem.feature_image`'s
            ``(height, width, channels)`` picture that flips).
    """

    reflect: tuple[int, ...]
    centre: tuple[float, ...]
    axis: int

    def __post_init__(self) -> None:
        if len(self.reflect) != len(self.centre) or len(set(self.reflect)) != len(self.reflect):
            raise ValueError(f"Mirror: reflect (distinct parameter indices) and centre need one entry each, "
                             f"got {self.reflect} and {self.centre}")


def flip_picture(features: np.ndarray, image: tuple[int, int, int], axis: int) -> np.ndarray:
    """``features`` (one row, or rows stacked on leading axes) with the ``(height, width, channels)`` picture
    they begin with reversed along its ``axis``; the entries after the picture as they are."""
    f = np.asarray(features)
    n = int(np.prod(image))
    pic = f[..., :n].reshape(*f.shape[:-1], *image)
    flipped = np.flip(pic, axis=pic.ndim - 3 + axis).reshape(*f.shape[:-1], n)
    return np.concatenate([flipped, f[..., n:]], axis=-1).astype(f.dtype, copy=False)


class InverseProblem(ABC):
    """A black-box forward model with a prior, a data misfit and a score against a known truth.

    Subclasses implement :meth:`simulate`, :meth:`data_misfit`, :meth:`sample_instance` and
    :meth:`score`, and set :attr:`param_dim`, :attr:`score_key` and :attr:`success_rule`.

    Attributes:
        param_dim: length of the normalised parameter vector.
        forward_calls: black-box calls so far (every :meth:`forward`, every synthetic instance's data).
        score_key: the key of :meth:`score` that measures success (e.g. ``iou``, ``rel_model_error``).
        higher_is_better: whether a larger ``score_key`` is better.
        success_threshold: the ``score_key`` value that counts as solved.
    """

    param_dim: int
    score_key: ClassVar[str] = "param_error"
    higher_is_better: ClassVar[bool] = False
    success_threshold: float = 0.1

    def __init__(self) -> None:
        self.forward_calls = 0
        self.call_log: list[tuple[np.ndarray, np.ndarray]] | None = None
        """When a list, :meth:`forward` appends ``(x, data)`` of every call (benchmarks trace a search with
        it)."""

    # -- what a subclass provides ----------------------------------------------------------------
    @abstractmethod
    def simulate(self, x: np.ndarray, context: Any = None) -> np.ndarray:
        """The forward model at normalised parameters ``x``, not counted (use :meth:`forward`)."""

    @abstractmethod
    def data_misfit(self, data: np.ndarray, instance: Instance) -> float:
        """How far predicted ``data`` are from ``instance.data`` (0 is a perfect fit)."""

    @abstractmethod
    def sample_instance(self, rng: np.random.Generator) -> Instance:
        """A synthetic instance: truth drawn from the prior, its data simulated (one counted call)."""

    @abstractmethod
    def score(self, x: np.ndarray, instance: Instance) -> dict[str, float]:
        """Metrics of an estimate ``x`` against ``instance.truth``; it includes :attr:`score_key`."""

    # -- shared ----------------------------------------------------------------------------------
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The box of valid normalised parameters, ``([0]*param_dim, [1]*param_dim)``."""
        return np.zeros(self.param_dim), np.ones(self.param_dim)

    def start(self) -> np.ndarray:
        """The first guess of an estimate (default: the centre of the box)."""
        return np.full(self.param_dim, 0.5)

    def periodic(self) -> np.ndarray:
        """Which normalised parameters are angles over their whole range, 0 ≡ 1 (default: none).

        Learned strategies feed such a parameter to their networks as (sin, cos) of its angle and let a
        descent wrap around instead of stopping at 0 or 1.
        """
        return np.zeros(self.param_dim, dtype=bool)

    def periods(self) -> np.ndarray:
        """The period of each periodic parameter, in normalised units (0 where not periodic).

        The data repeat after it: a square box turned a quarter turn renders the same, so its rotation's
        period is 0.25 (default: 1 for every parameter of :meth:`periodic`). Learned strategies encode such
        a parameter as (sin, cos) of ``2π x / period``, so that equivalent answers are one point to them.
        """
        return self.periodic().astype(np.float64)

    def interchangeable(self) -> list[np.ndarray]:
        """Groups of parameter blocks whose roles may be confused: each an int array ``(k, m)`` of ``k``
        blocks of ``m`` parameter indices (default: none).

        Permuting the blocks of a group (e.g. two objects exchanging place, turn and colour) may explain the
        data almost as well as the truth: a local optimum that a local search does not leave. The
        ``permute`` stage of :mod:`agents.blackbox` tries such permutations of an answer.
        """
        return []

    def mirror(self) -> Mirror | None:
        """The reflection of the scene that reflects the data (:class:`Mirror`), or None (the default: none
        declared). Declare one only where the mirrored parameters render the mirrored data, and keep the
        prior symmetric under it: a mirrored draw must be a draw."""
        return None

    def _declared_mirror(self) -> Mirror:
        mirror = self.mirror()
        if mirror is None:
            raise ValueError(f"{type(self).__name__} declares no mirror (its mirror() is None)")
        return mirror

    def mirror_params(self, x: np.ndarray) -> np.ndarray:
        """Normalised parameters (one vector, or rows stacked on leading axes) under :meth:`mirror`."""
        mirror = self._declared_mirror()
        out = np.array(x, dtype=np.float64)
        idx = np.asarray(mirror.reflect, dtype=np.int64)
        out[..., idx] = np.asarray(mirror.centre, dtype=np.float64) - out[..., idx]
        wrap = idx[self.periodic()[idx]]
        out[..., wrap] = np.mod(out[..., wrap], 1.0)
        return out

    def mirror_data(self, data: np.ndarray) -> np.ndarray:
        """Data as the mirrored scene renders them: reversed along the mirror's axis."""
        return np.flip(data, axis=self._declared_mirror().axis).copy()

    def mirror_features(self, features: np.ndarray) -> np.ndarray:
        """:meth:`features` of the mirrored data, from the features alone (rows stacked on leading axes).

        The default handles features that are exactly the :meth:`feature_image` picture: it flips it. A
        problem whose features hold more (shape moments) overrides this.
        """
        mirror, image = self._declared_mirror(), self.feature_image()
        if image is None or np.shape(features)[-1] != int(np.prod(image)):
            raise NotImplementedError(f"{type(self).__name__} declares a mirror but its features are not "
                                      "just its feature_image() picture: it must override mirror_features()")
        return flip_picture(features, image, mirror.axis)

    def forward(self, x: np.ndarray, context: Any = None) -> np.ndarray:
        """The black box: the data the parameters ``x`` produce. Counted in :attr:`forward_calls`."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.param_dim,) or not np.all(np.isfinite(x)):
            raise ValueError(f"{type(self).__name__}.forward: x must be {self.param_dim} finite numbers, "
                             f"got shape {x.shape}")
        self.forward_calls += 1
        data = self.simulate(x, context)
        if getattr(self, "call_log", None) is not None:
            self.call_log.append((x.copy(), data))  # type: ignore[union-attr]
        return data

    def misfit(self, x: np.ndarray, instance: Instance) -> float:
        """One counted forward call at ``x``, compared with the instance's data."""
        return self.data_misfit(self.forward(x, instance.context), instance)

    def solved(self, metrics: dict[str, float]) -> bool:
        """Whether :meth:`score`'s metrics meet :attr:`success_threshold`."""
        value = metrics[self.score_key]
        return value >= self.success_threshold if self.higher_is_better else value <= self.success_threshold

    def features(self, data: np.ndarray) -> np.ndarray:
        """A fixed-length float32 vector of ``data`` for learned strategies (default: the data flattened)."""
        return np.asarray(data, dtype=np.float32).ravel()

    def feature_image(self) -> tuple[int, int, int] | None:
        """The ``(height, width, channels)`` of the picture that :meth:`features` begins with (row-major,
        channels last), or None when they begin with none (the default).

        A learned strategy's convolutional network reads that picture where it is declared.
        """
        return None

    def context_features(self, context: Any) -> np.ndarray:
        """A fixed-length float32 vector of an instance's context (default: empty)."""
        return np.zeros(0, dtype=np.float32)


class InverseEnvMixin:
    """What an RL env built on an :class:`InverseProblem` offers black-box optimisers (mix in before
    ``gym.Env``).

    The env sets ``self.problem``, ``self.instance`` (the episode's) and ``self._calls_at_reset`` (the
    problem's :attr:`~InverseProblem.forward_calls` when the episode began).
    """

    inverse_problem: ClassVar[bool] = True
    """Built on an :class:`InverseProblem` (``self.problem``); :func:`inverse_adapters` lists such envs."""
    problem: InverseProblem
    instance: Instance
    _calls_at_reset: int
    step_size: float
    step_decay: float = 1.0
    """Each step's reach shrinks by this factor (1: every step moves up to ``step_size``)."""
    _t: int
    _x: np.ndarray

    @property
    def forward_calls(self) -> int:
        """Forward calls since the episode began (the adapter's docstring says whether its target's
        counts)."""
        return self.problem.forward_calls - self._calls_at_reset

    def misfit(self, x: np.ndarray) -> float:
        """One counted forward call at normalised ``x``: the data misfit against the episode's data."""
        return self.problem.misfit(x, self.instance)

    def score(self, x: np.ndarray) -> dict[str, float]:
        """An estimate's metrics against the episode's hidden truth (not counted; for reporting, not
        inversion)."""
        return self.problem.score(x, self.instance)

    def action_towards(self, x: np.ndarray) -> np.ndarray:
        """The action that moves the estimate ``_x`` towards normalised ``x``, as far as this step allows
        (``step_size · step_decay^t``)."""
        step = self.step_size * self.step_decay**self._t
        return np.clip((np.asarray(x, dtype=np.float64) - self._x) / step, -1.0, 1.0).astype(np.float32)


class InverseEnv(InverseEnvMixin, gym.Env):
    """A generic RL env on any :class:`InverseProblem`: refine the estimate ``x`` step by step.

    Each episode draws a synthetic instance (``problem.sample_instance(self.np_random)``; its simulation
    stands in for field data and is not in the env's :attr:`forward_calls`) and starts from
    ``problem.start()``. A step applies ``x ← clip(x + step_size · a, 0, 1)`` and makes one counted forward
    call; the reward is the data misfit's reduction. The observation is ``features(d_obs)``,
    ``features(d_obs) − features(forward(x))``, ``2x − 1`` and the fraction of steps used.
    ``info["is_success"]`` applies :meth:`InverseProblem.solved` to the score (truth known by construction).

    Args:
        problem: the inverse problem.
        steps: refinement steps per episode (≥ 1).
        step_size: the largest change of a normalised parameter in one step (> 0).
    """

    metadata = {"render_modes": []}

    def __init__(self, problem: InverseProblem, *, steps: int = 8, step_size: float = 0.25) -> None:
        size_ok = isinstance(step_size, int | float) and math.isfinite(step_size) and step_size > 0
        if not (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1) or not size_ok:
            raise ValueError(f"InverseEnv: steps must be an integer >= 1 and step_size a finite number > 0, "
                             f"got {steps!r} and {step_size!r}; pass e.g. --set env.steps=8 --set "
                             "env.step_size=0.25")
        self.problem, self.steps, self.step_size = problem, steps, float(step_size)
        self.instance = problem.sample_instance(np.random.default_rng(0))  # a placeholder until reset()
        n_feat = len(problem.features(self.instance.data))
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2 * n_feat + problem.param_dim + 1,),
                                                np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (problem.param_dim,), np.float32)
        self._calls_at_reset, self._t, self._x = problem.forward_calls, 0, problem.start()
        self._f_obs = self._f_syn = problem.features(self.instance.data)
        self._misfit = 0.0

    def _obs(self) -> np.ndarray:
        return np.concatenate([self._f_obs, self._f_obs - self._f_syn, 2.0 * self._x - 1.0,
                               [self._t / self.steps]]).astype(np.float32)

    def _evaluate(self) -> dict[str, Any]:
        data = self.problem.forward(self._x, self.instance.context)
        self._f_syn, self._misfit = self.problem.features(data), self.problem.data_misfit(data, self.instance)
        return {"data_misfit": self._misfit, "is_success": self.problem.solved(self.score(self._x))}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Draw an instance; the estimate starts at ``problem.start()`` (one counted call)."""
        super().reset(seed=seed)
        self.instance = self.problem.sample_instance(self.np_random)
        self._f_obs = self.problem.features(self.instance.data)
        self._calls_at_reset, self._t, self._x = self.problem.forward_calls, 0, self.problem.start()
        return self._obs(), self._evaluate()

    def step(self, action):
        """Move the estimate by ``step_size · action``; the reward is the misfit's reduction."""
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(self.problem.param_dim), -1.0, 1.0)
        self._x = np.clip(self._x + self.step_size * a, 0.0, 1.0)
        previous = self._misfit
        info = self._evaluate()
        self._t += 1
        truncated = self._t >= self.steps
        if truncated:
            info["episode_metrics"] = self.score(self._x)
        return self._obs(), float(previous - self._misfit), False, truncated, info


def problem_of(env: Any) -> InverseProblem | None:
    """The :class:`InverseProblem` behind a Gymnasium env (wrappers looked through), or None."""
    problem = getattr(getattr(env, "unwrapped", env), "problem", None)
    return problem if isinstance(problem, InverseProblem) else None


def inverse_adapters() -> list[str]:
    """Names of the built-in adapters whose env is built on an :class:`InverseProblem`."""
    import importlib

    from envs.registry import BUILTIN

    names = []
    for name, (_, entry, _) in BUILTIN.items():
        module, _, attr = entry.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except Exception:  # noqa: BLE001 - an adapter whose dependency is missing is not listed
            continue
        if getattr(cls, "inverse_problem", False):
            names.append(name)
    return names
