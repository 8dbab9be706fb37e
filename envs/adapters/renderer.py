"""Inverse rendering: recover the scene a picture shows by refining the inputs of a 2-D rasteriser.

The rasteriser is Pillow's ``ImageDraw`` (polygons and ellipses filled with hard, aliased edges). It
was chosen over pycairo and skia-python because it is a single wheel on every platform with no system
library, it is already what imaging stacks depend on, and at 32–64 px it draws a scene in tens of
microseconds. Its output is piecewise constant in the scene parameters (a sub-pixel move changes
nothing, a larger one flips whole pixels), so it has no useful gradient: exactly the kind of software
nondiff is for.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.adapters import renderer_image as image
from envs.inverse import Instance, InverseEnvMixin, InverseProblem

KINDS = ("circle", "rectangle", "triangle")
# Rotational symmetry of each kind: rotations that differ by this angle draw the same shape.
_PERIOD = {"circle": 2 * math.pi, "rectangle": math.pi, "triangle": 2 * math.pi / 3}
PARAMS = ("x", "y", "size", "rotation", "red", "green", "blue")  # per shape, each normalised to [0, 1]
# Normalised range of the hidden scenes (the prior); the agent may move anywhere in [0, 1].
_PRIOR_LOW = np.array([0.2, 0.2, 0.35, 0.0, 0.25, 0.25, 0.25])
_PRIOR_HIGH = np.array([0.8, 0.8, 0.75, 1.0, 1.0, 1.0, 1.0])
_START = np.array([0.5, 0.5, 0.55, 0.0, 0.6, 0.6, 0.6])  # the agent's first guess: centred, mid-size, grey
_SIZE_RANGE = (0.05, 0.40)  # size 0..1 maps to a circumradius of 5%..40% of the image width


class RendererProblem(InverseProblem):
    """The rasteriser as an inverse problem: which scene of ``n_shapes`` shapes drew this picture?

    Data (``forward``): ``float32[S, S, 4]``, the RGB render and its coverage mask; an instance's observed
    data hold the (noisy) target picture and its covered pixels (any channel > 0.125). The context is the
    tuple of shape kinds, known to the solver. Score: ``iou`` (≥ ``success_iou`` solves) and
    ``param_error``.
    """

    score_key, higher_is_better = "iou", True

    def __init__(self, *, n_shapes: int, image_size: int, shape_kinds: tuple[str, ...], noise: float,
                 success_iou: float) -> None:
        from PIL import Image, ImageDraw

        super().__init__()
        self._Image, self._ImageDraw = Image, ImageDraw
        self.n_shapes, self.image_size = n_shapes, image_size
        self.shape_kinds, self.noise = shape_kinds, noise
        self.param_dim, self.success_threshold = len(PARAMS) * n_shapes, success_iou

    def start(self) -> np.ndarray:
        """Centred, mid-size and grey: the RL env's first guess too."""
        return np.tile(_START, self.n_shapes)

    def periodic(self) -> np.ndarray:
        """Each shape's rotation: 0 and 1 are the same full turn."""
        return np.tile(np.array([name == "rotation" for name in PARAMS]), self.n_shapes)

    def draw(self, x: np.ndarray, kinds: Any) -> tuple[np.ndarray, np.ndarray]:
        """Rasterise normalised parameters ``x``: an RGB float image in [0, 1] and a coverage mask (not
        counted)."""
        s = self.image_size
        img = self._Image.new("RGB", (s, s), (0, 0, 0))
        mask = self._Image.new("1", (s, s), 0)
        draw, mdraw = self._ImageDraw.Draw(img), self._ImageDraw.Draw(mask)
        for kind, p in zip(kinds, np.asarray(x, dtype=np.float64).reshape(self.n_shapes, len(PARAMS))):
            cx, cy = p[0] * s, p[1] * s
            r = (_SIZE_RANGE[0] + p[2] * (_SIZE_RANGE[1] - _SIZE_RANGE[0])) * s
            colour = tuple(int(round(255 * c)) for c in np.clip(p[4:7], 0, 1))
            if kind == "circle":
                box = [cx - r, cy - r, cx + r, cy + r]
                draw.ellipse(box, fill=colour)
                mdraw.ellipse(box, fill=1)
                continue
            angle = 2 * math.pi * p[3]
            if kind == "rectangle":  # a 2:1 rectangle inscribed in the circle of radius r
                corners = [(-0.894, -0.447), (0.894, -0.447), (0.894, 0.447), (-0.894, 0.447)]
            else:  # an equilateral triangle
                corners = [(math.cos(a), math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
            ca, sa = math.cos(angle), math.sin(angle)
            poly = [(cx + r * (u * ca - v * sa), cy + r * (u * sa + v * ca)) for u, v in corners]
            draw.polygon(poly, fill=colour)
            mdraw.polygon(poly, fill=1)
        return np.asarray(img, dtype=np.float32) / 255.0, np.asarray(mask, dtype=bool)

    def simulate(self, x: np.ndarray, context: Any = None) -> np.ndarray:
        rgb, mask = self.draw(x, context or (self.shape_kinds[0],) * self.n_shapes)
        return np.concatenate([rgb, mask[..., None].astype(np.float32)], axis=2)

    def make_instance(self, truth: np.ndarray, kinds: Any, observed: np.ndarray | None = None) -> Instance:
        """The instance of a known scene; ``observed`` defaults to its clean render (drawn, not counted)."""
        target_rgb, target_mask = self.draw(truth, kinds)
        observed = target_rgb if observed is None else observed
        seen = observed.max(axis=2) > 0.125
        n, pyramid = self.image_size, []
        while n >= 2 and self.image_size % n == 0:  # see fit()
            pyramid.append((n, image.pool(observed, n)))
            n //= 4
        return Instance(np.concatenate([observed, seen[..., None].astype(np.float32)], axis=2),
                        np.asarray(truth), tuple(kinds),
                        {"target": (target_rgb, target_mask), "seen": seen, "pyramid": pyramid})

    def sample_instance(self, rng: np.random.Generator) -> Instance:
        kinds = [str(k) for k in rng.choice(self.shape_kinds, size=self.n_shapes)]
        truth = rng.uniform(np.tile(_PRIOR_LOW, self.n_shapes), np.tile(_PRIOR_HIGH, self.n_shapes))
        self.forward_calls += 1
        target_rgb, _ = self.draw(truth, kinds)
        if self.noise <= 0:
            return self.make_instance(truth, kinds)
        noisy = target_rgb + rng.normal(0.0, self.noise, target_rgb.shape)
        return self.make_instance(truth, kinds, np.clip(noisy, 0.0, 1.0).astype(np.float32))

    def fit(self, rgb: np.ndarray, mask: np.ndarray, instance: Instance) -> float:
        """Image similarity to the observed target (1 is a perfect fit).

        ``IoU(coverage, observed coverage) − mean MSE over an image pyramid``: the observed coverage is
        its non-black pixels (every prior colour has a channel ≥ 0.25); the pyramid (full size, 1/4,
        1/16, … by area-averaging) makes shapes that do not overlap yet still feel each other, where a
        full-size comparison is flat.
        """
        seen = instance.cache["seen"]
        union = np.logical_or(mask, seen).sum()
        iou = float(np.logical_and(mask, seen).sum() / union) if union else 1.0
        mse = [float(np.mean((image.pool(rgb, n) - target) ** 2)) for n, target in instance.cache["pyramid"]]
        return iou - float(np.mean(mse))

    def data_misfit(self, data: np.ndarray, instance: Instance) -> float:
        """``1 − fit``: 0 is a perfect fit."""
        return 1.0 - self.fit(data[..., :3], data[..., 3] > 0.5, instance)

    def iou(self, mask: np.ndarray, instance: Instance) -> float:
        """IoU of a coverage mask against the hidden target's (the success metric)."""
        target = instance.cache["target"][1]
        union = np.logical_or(mask, target).sum()
        return float(np.logical_and(mask, target).sum() / union) if union else 1.0

    def param_error(self, x: np.ndarray, instance: Instance) -> float:
        """Mean absolute error of normalised parameters, rotation taken modulo the shape's symmetry."""
        err = np.abs(np.asarray(x, dtype=np.float64)
                     - instance.known_truth()).reshape(self.n_shapes, len(PARAMS))
        for i, kind in enumerate(instance.context):
            period = _PERIOD[kind] / (2 * math.pi)  # in normalised units
            d = err[i, 3] % period
            err[i, 3] = 0.0 if kind == "circle" else min(d, period - d) / (period / 2)
        return float(err.mean())

    def score(self, x: np.ndarray, instance: Instance) -> dict[str, float]:
        _, mask = self.draw(x, instance.context)
        return {"iou": self.iou(mask, instance), "param_error": self.param_error(x, instance)}

    def features(self, data: np.ndarray) -> np.ndarray:
        """The picture and its coverage area-averaged to at most 16 × 16, and its shape descriptors."""
        n = math.gcd(self.image_size, 16)
        pooled = data.reshape(n, self.image_size // n, n, self.image_size // n, 4).mean(axis=(1, 3))
        return np.concatenate([pooled.ravel(), image.moments(data[..., :3])]).astype(np.float32)

    def feature_image(self) -> tuple[int, int, int]:
        """The features begin with the picture and its coverage at (at most) 16 × 16."""
        n = math.gcd(self.image_size, 16)
        return (n, n, 4)

    def context_features(self, context: Any) -> np.ndarray:
        """One-hot shape kinds."""
        return np.array([k == kind for k in context for kind in KINDS], dtype=np.float32)


class RendererEnv(InverseEnvMixin, gym.Env):
    """Refine a scene of coloured shapes until its rendering matches a target picture.

    Each episode draws a hidden target scene of ``n_shapes`` shapes (their kinds drawn from
    ``shape_kinds``; position, size, rotation and colour from a uniform prior) and renders it. The agent
    knows which kinds of shape the scene holds, not their parameters. Its own scene starts centred,
    mid-sized and grey, and it has ``steps`` refinement steps.

    - **Observation** (``float32``, in ``[0, 1]``): the target image and the current render, each
      ``3 × obs_size × obs_size`` (channels first), flattened, followed by the current normalised
      scene parameters (7 per shape: x, y, size, rotation, red, green, blue). With ``obs_size`` below
      ``image_size`` the pictures are area-averaged, which keeps their moments (where the mass is, how
      much, which colour) and costs the learner far less than full-size pixels. With ``moments`` (the
      default) the observation ends with 10 shape descriptors of each picture (see
      :func:`~envs.adapters.renderer_image.moments`) and their orientation difference
      (:func:`~envs.adapters.renderer_image.turn`).
    - **Action** (``[-1, 1]^(7·n_shapes)``): an update of the normalised parameters, scaled by
      ``step_size``; positions, sizes and colours are clipped to ``[0, 1]``, rotation wraps.
    - **Reward:** the improvement of the image similarity to the observed target after the step:
      ``IoU − MSE``, IoU of the covered pixels, MSE of the colours averaged over an image pyramid (see
      ``_fit``). Only the observed picture is used, never the hidden parameters; it is the same
      objective ``misfit`` gives a black-box optimiser.
    - **Success** (``info["is_success"]``): IoU ≥ ``success_iou`` (0.8).
    - On the last step ``info["episode_metrics"]`` holds the final ``iou`` and ``param_error`` (the
      mean absolute error of the normalised parameters, rotation taken modulo the shape's symmetry).

    The env is built on :class:`RendererProblem` (``env.unwrapped.problem``, an
    :class:`~envs.inverse.InverseProblem`; the episode's instance is ``env.unwrapped.instance``). For
    black-box optimisers the unwrapped env also exposes ``param_dim``, ``misfit(x)`` (one render of
    parameters ``x``, scored against the observed target), ``score(x)`` and ``forward_calls`` (renders since
    the last reset, the target's and ``step``'s included).

    Args:
        n_shapes: shapes in each scene (≥ 1).
        image_size: side of the square images the rasteriser draws, in pixels (≥ 8).
        obs_size: side of the observed images (divides ``image_size``; default ``image_size``).
        moments: append shape descriptors of both pictures to the observation.
        shape_kinds: kinds the scenes are drawn from, any of ``circle``, ``rectangle``, ``triangle``.
        noise: standard deviation of Gaussian noise on the observed target image (≥ 0).
        steps: refinement steps per episode (≥ 1).
        step_size: the largest change of a normalised parameter in one step (> 0).
        success_iou: IoU that counts as a success.
        render_mode: ``"rgb_array"`` renders target and current scene side by side, 4× enlarged.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}
    problem: RendererProblem

    def __init__(self, *, n_shapes: int = 1, image_size: int = 64, obs_size: int | None = None,
                 shape_kinds: tuple[str, ...] | list[str] = KINDS, moments: bool = True,
                 noise: float = 0.0, steps: int = 10, step_size: float = 0.25, success_iou: float = 0.8,
                 render_mode: str | None = None) -> None:
        if isinstance(shape_kinds, str):
            shape_kinds = [shape_kinds]
        _check(isinstance(n_shapes, int) and n_shapes >= 1, "n_shapes", "an integer ≥ 1", n_shapes)
        _check(isinstance(image_size, int) and image_size >= 8, "image_size", "an integer ≥ 8 (pixels)",
               image_size)
        obs_size = image_size if obs_size is None else obs_size
        _check(isinstance(obs_size, int) and obs_size >= 1 and image_size % obs_size == 0, "obs_size",
               f"a positive divisor of image_size ({image_size})", obs_size)
        _check(isinstance(steps, int) and steps >= 1, "steps", "an integer ≥ 1", steps)
        _check(noise >= 0, "noise", "a standard deviation ≥ 0", noise)
        _check(step_size > 0, "step_size", "a number > 0", step_size)
        _check(0 < success_iou <= 1, "success_iou", "a number in (0, 1]", success_iou)
        unknown = [k for k in shape_kinds if k not in KINDS]
        _check(bool(shape_kinds) and not unknown, "shape_kinds", f"a non-empty list of {', '.join(KINDS)}",
               list(shape_kinds))
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, "
                             f"got {render_mode!r}")
        self.n_shapes, self.image_size, self.shape_kinds = n_shapes, image_size, tuple(shape_kinds)
        self.obs_size = obs_size
        self.noise, self.steps = float(noise), steps
        self.step_size, self.success_iou = float(step_size), success_iou
        self.render_mode = render_mode
        self.param_dim = len(PARAMS) * n_shapes
        self.moments = bool(moments)
        pixels = 3 * obs_size * obs_size
        low = np.zeros(2 * pixels + self.param_dim + (2 * image.N_MOMENTS + 4 if self.moments else 0),
                       np.float32)
        low[2 * pixels + self.param_dim:] = -1.0
        self.observation_space = spaces.Box(low, np.ones_like(low), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (self.param_dim,), np.float32)
        self.problem = RendererProblem(n_shapes=n_shapes, image_size=image_size, shape_kinds=self.shape_kinds,
                                       noise=self.noise, success_iou=success_iou)
        self._calls_at_reset = 0
        self._kinds: list[str] = [self.shape_kinds[0]] * n_shapes
        self._truth = np.tile(_START, n_shapes)
        self._params = np.tile(_START, n_shapes)
        self._t = 0
        blank = np.zeros((image_size, image_size, 3), np.float32)
        empty = np.zeros((image_size, image_size), bool)
        self._target_rgb, self._observed, self._rgb = blank, blank, blank  # until reset() draws a scene
        self._target_mask, self._mask = empty, empty
        self.instance = self.problem.make_instance(self._truth, self._kinds, blank)
        self._observe(blank)
        self._score = 0.0

    # --- the black box (RendererProblem; forward_calls, misfit and score from InverseEnvMixin) ----------
    def _draw(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One counted render of normalised parameters ``x``: an RGB image in [0, 1] and a coverage mask."""
        self.problem.forward_calls += 1
        return self.problem.draw(x, self._kinds)

    def _iou(self, mask: np.ndarray) -> float:
        return self.problem.iou(mask, self.instance)

    def _fit(self, rgb: np.ndarray, mask: np.ndarray) -> float:
        """Image similarity to the observed target, the quantity the reward improves (see
        RendererProblem.fit)."""
        return self.problem.fit(rgb, mask, self.instance)

    def _param_error(self, x: np.ndarray) -> float:
        return self.problem.param_error(x, self.instance)

    # --- the Gymnasium API ---------------------------------------------------------------------
    def _obs(self) -> np.ndarray:
        current = image.pool(self._rgb, self.obs_size).transpose(2, 0, 1).ravel()
        extra: list[np.ndarray] = []
        if self.moments:
            moments = image.moments(self._rgb)
            extra = [self._target_moments, moments, image.turn(self._target_moments, moments)]
        return np.concatenate([self._target_small, current, self._params, *extra]).astype(np.float32)

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._calls_at_reset = self.problem.forward_calls  # the target's render counts
        self.instance = self.problem.sample_instance(self.np_random)
        self._kinds, self._truth = list(self.instance.context), self.instance.known_truth()
        self._params = self.problem.start()
        self._target_rgb, self._target_mask = self.instance.cache["target"]
        self._observe(self.instance.data[..., :3])
        self._rgb, self._mask = self._draw(self._params)
        self._t = 0
        self._score = self._fit(self._rgb, self._mask)
        iou = self._iou(self._mask)
        return self._obs(), {"iou": iou, "is_success": iou >= self.success_iou}

    def _observe(self, observed: np.ndarray) -> None:
        """Take ``observed`` as the target picture and precompute what the similarity compares with."""
        self._observed = observed
        # the target does not change within an episode: its observation parts are computed once, not per step
        self._target_small = image.pool(observed, self.obs_size).transpose(2, 0, 1).ravel()
        self._target_moments = image.moments(observed)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
        p = (self._params + self.step_size * a).reshape(self.n_shapes, len(PARAMS))
        p[:, 3] %= 1.0  # rotation wraps
        p[:, [0, 1, 2, 4, 5, 6]] = np.clip(p[:, [0, 1, 2, 4, 5, 6]], 0.0, 1.0)
        self._params = p.ravel()
        self._rgb, self._mask = self._draw(self._params)
        score, iou = self._fit(self._rgb, self._mask), self._iou(self._mask)
        reward, self._score = score - self._score, score
        self._t += 1
        truncated = self._t >= self.steps
        info: dict[str, Any] = {"iou": iou, "fit": score, "is_success": iou >= self.success_iou}
        if truncated:
            info["episode_metrics"] = {"iou": iou, "param_error": self._param_error(self._params)}
        return self._obs(), float(reward), False, truncated, info

    def action_towards(self, x: np.ndarray) -> np.ndarray:
        """The action that moves the estimate towards normalised ``x`` (rotation the short way round)."""
        d = (np.asarray(x, dtype=np.float64) - self._params).reshape(self.n_shapes, len(PARAMS))
        d[:, 3] = (d[:, 3] + 0.5) % 1.0 - 0.5
        return np.clip(d.ravel() / self.step_size, -1.0, 1.0).astype(np.float32)

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        """Target (left) and current render (right), enlarged to about 256 px, as ``uint8[H, W, 3]``."""
        if self.render_mode != "rgb_array":
            return None
        k = max(1, 256 // self.image_size)
        big = [np.kron(img, np.ones((k, k, 1))) for img in (self._observed, self._rgb)]
        sep = np.full((big[0].shape[0], 2, 3), 0.5)
        return (np.concatenate([big[0], sep, big[1]], axis=1) * 255).round().astype(np.uint8)

    def get_state(self) -> dict[str, Any]:
        """The episode in progress and the RNG, for exact resume."""
        observed = self._observed.tolist() if self.noise > 0 else None
        return {"kinds": self._kinds, "truth": self._truth.tolist(), "params": self._params.tolist(),
                "t": self._t, "observed": observed, "rng": self.np_random.bit_generator.state}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a snapshot taken by :meth:`get_state` (a noise-free target is re-rendered, not stored)."""
        self._kinds = list(state["kinds"])
        self._truth, self._params = np.asarray(state["truth"]), np.asarray(state["params"])
        self._t = int(state["t"])
        self.np_random.bit_generator.state = state["rng"]
        observed = state.get("observed")
        self.instance = self.problem.make_instance(
            self._truth, self._kinds, None if observed is None else np.asarray(observed, dtype=np.float32))
        self._target_rgb, self._target_mask = self.instance.cache["target"]
        self._observe(self.instance.data[..., :3])
        self._rgb, self._mask = self._draw(self._params)
        self._score = self._fit(self._rgb, self._mask)

    def close(self) -> None:
        """Nothing to release; safe to call twice."""


def _check(ok: bool, name: str, expected: str, got: Any) -> None:
    if not ok:
        raise ValueError(f"renderer: {name} must be {expected}, got {got!r}; set it with --set env.{name}=…")
