"""Inverse rendering through a real Blender: recover the poses, colours and light of a 3-D scene from one
64×64 render.

**The renderer.** One persistent Blender per problem (``blender -b --factory-startup --python
assets/blender/render_server.py``) serves renders over the bridge protocol (docs/protocol.md): it is spawned
by :class:`~envs.bridge.process.ProcessEnv`, kept alive for the whole run and restarted by its watchdog when
it crashes, is killed or hangs past ``render_timeout`` (a restart costs a render's retry, never the run;
``max_restarts`` bounds them). Blender prints its banner and render progress to stdout, so it is launched
through ``sh -c 'exec blender … 3>&1 1>&2'``: the protocol travels on fd 3, fd 1 is stderr. One render is one
``step`` of that program: the action is the normalised parameter vector, the observation the
``uint8[S, S, 4]`` RGBA picture (premultiplied over black; alpha is the objects' silhouette). Each render
is written to /dev/shm as a PNG and read back. ``engine="workbench"`` (the default; ~8 ms at 64×64 here) or
``"cycles"`` (``samples`` per pixel with a fixed ``seed``: noise that can be studied, bit-identical for the
same parameters). Blender's Python needs NumPy (``apt-get install -y blender python3-numpy``).

**The scene.** A 3 m floor, ``n_objects`` primitives standing on it (a box, a triangular prism and a bar,
in turn), a sun and a camera looking down at 50°. The unknowns, normalised to ``[0, 1]``: per object its
floor position ``x, y`` (0..1 spans the central 2.4 m), its rotation about the vertical axis (a full
turn; periodic) and its colour ``red, green, blue``; then the light's azimuth (periodic) and elevation
(20°..80°). The context (known to the solver) is empty: object ``i`` is always of kind ``KINDS[i % 3]``.

**Data, misfit, scores.** Data: ``float32[S, S, 4]``, the RGB render and its silhouette mask. The misfit
is ``1 − (IoU of the silhouettes − mean relative RGB error over an image pyramid)`` (see ``fit``). Scores
against the truth (not counted): ``iou`` (silhouette IoU; ≥ ``success_iou`` solves), ``image_error`` (RMS
RGB error against the truth's clean render), ``position_error`` (mean object distance in metres over the
floor's size), ``rotation_error`` (degrees, modulo each kind's symmetry, over 180°), ``colour_error`` and
``light_error`` (mean absolute normalised errors, azimuth the short way round) and ``param_error`` (the
mean of all normalised errors).
"""

from __future__ import annotations

import collections
import logging
import math
import os
import shlex
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np

from envs import errors as E
from envs.adapters import renderer_image as image
from envs.inverse import Instance, InverseEnv, InverseProblem, Mirror, flip_picture
from envs.reach import Reach

if TYPE_CHECKING:
    from envs.bridge.process import ProcessEnv
    from envs.faults import Fault

log = logging.getLogger(__name__)
Engine = Literal["workbench", "cycles"]
Executable = Annotated[str | None, Reach.RUN.mark("start the program")]
"""``env.blender``: the Blender to run (None: ``blender`` on PATH); a run directory that sets it is code."""

KINDS = ("box", "prism", "bar")
PER_OBJECT = ("x", "y", "rotation", "red", "green", "blue")
LIGHT = ("azimuth", "elevation")
_SYMMETRY = {"box": 0.25, "prism": 1 / 3, "bar": 0.5}  # rotations (in turns) that render the same object
FLOOR_SIZE = 3.0  # metres; the render server's FLOOR_HALF × 2
POSITION_SPAN = 2.4  # metres that a normalised position 0..1 spans (the server's POS_HALF × 2)
_PRIOR = (np.array([0.1, 0.1, 0.0, 0.25, 0.25, 0.25]), np.array([0.9, 0.9, 1.0, 1.0, 1.0, 1.0]))
_LIGHT_PRIOR = (np.array([0.0, 0.2]), np.array([1.0, 0.8]))
_START = np.array([0.5, 0.5, 0.0, 0.6, 0.6, 0.6])
SERVER = Path(__file__).resolve().parent / "assets" / "blender" / "render_server.py"
REPO = Path(__file__).resolve().parents[2]
INSTALL = "apt-get install -y blender python3-numpy"
"""The one command that installs Blender and the NumPy its Python needs (Debian/Ubuntu; ``make install``
runs it as root)."""
ENGINES = ("workbench", "cycles")
MOMENT_MIRROR = np.array([1, -1, 1, 1, -1, -1, 1, 1, 1, 1], dtype=np.float32)
"""How a left-right mirror changes :func:`~envs.adapters.renderer_image.moments`: the centroid's x, the
second moment's imaginary part and the third's real part change sign (``d → −conj(d)``), the rest stay."""
RETRIES = 3
"""Renders tried in a row before a failure is the run's (each failed one restarts Blender)."""


def blender_command(*, blender: str = "blender", image_size: int = 64, n_objects: int = 3,
                    engine: str = "workbench", samples: int = 4, seed: int = 0, threads: int = 0) -> str:
    """The command that starts the render server, protocol on fd 3 (see the module docstring)."""
    args = [blender, "-b", "--factory-startup", "--python", str(SERVER), "--", "--repo", str(REPO),
            "--fd", "3", "--size", str(image_size), "--objects", str(n_objects), "--engine", engine,
            "--samples", str(samples), "--seed", str(seed), "--threads", str(threads)]
    return "sh -c " + shlex.quote("exec " + shlex.join(args) + " 3>&1 1>&2")


def find_blender(blender: str | None) -> str:
    """The Blender executable, or a :class:`~envs.errors.LaunchError` naming the install command."""
    blender = blender or "blender"
    found = shutil.which(blender)
    if found is None and os.path.exists(blender):  # there, but not a program: say what it is instead
        what = ("a directory" if os.path.isdir(blender) else "a scene file" if blender.endswith(".blend")
                else "not executable")
        raise E.LaunchError(f"blender: env.blender={blender!r} is {what}, not the Blender program; "
                            "env.blender names the executable, e.g. --set env.blender=/usr/bin/blender (this "
                            "adapter builds its own scene; docs/blender.md shows how to serve one of yours)")
    if found is None:
        raise E.LaunchError(f"blender: {blender!r} was not found; install it with: {INSTALL} (or run "
                            "make install as root), or give its path with --set env.blender=/path/to/blender")
    return found


class BlenderProblem(InverseProblem):
    """A Blender scene as an inverse problem (scene, data and scores: the module docstring).

    Attributes:
        render_ms: Blender's own time for each render, as it reported it (bounded to the last 10,000).
        faults: the faults the watchdog reported (each one restarted Blender).
    """

    score_key, higher_is_better = "iou", True

    def __init__(self, *, n_objects: int = 3, image_size: int = 64, engine: Engine = "workbench",
                 samples: int = 4, seed: int = 0, threads: int = 0, noise: float = 0.0,
                 success_iou: float = 0.95, blender: Executable = None, render_timeout: float = 10.0,
                 start_timeout: float = 60.0, max_restarts: int = 10) -> None:
        super().__init__()
        _check(_integer(n_objects) and 1 <= n_objects <= 8, "n_objects", "an integer from 1 to 8", n_objects)
        _check(_integer(image_size) and 16 <= image_size <= 512 and image_size % 16 == 0, "image_size",
               "a multiple of 16 from 16 to 512 (pixels)", image_size)
        _check(engine in ENGINES, "engine", " or ".join(ENGINES), engine)
        _check(_integer(samples) and 1 <= samples <= 4096, "samples", "an integer from 1 to 4096", samples)
        _check(_integer(seed) and 0 <= seed < 2**31, "seed", "an integer in [0, 2**31)", seed)
        _check(_integer(threads) and 0 <= threads <= 256, "threads",
               "an integer from 0 to 256 (0: every core)", threads)
        _check(_finite(noise) and noise >= 0, "noise", "a finite standard deviation ≥ 0", noise)
        _check(_finite(success_iou) and 0 < success_iou <= 1, "success_iou", "a number in (0, 1]",
               success_iou)
        for name, value in (("render_timeout", render_timeout), ("start_timeout", start_timeout)):
            _check(_finite(value) and value > 0, name, "a finite number of seconds > 0", value)
        self.n_objects, self.image_size, self.noise = n_objects, image_size, float(noise)
        self.param_dim = len(PER_OBJECT) * n_objects + len(LIGHT)
        self.success_threshold = success_iou
        self.kinds = tuple(KINDS[i % len(KINDS)] for i in range(n_objects))
        self.command = blender_command(blender=find_blender(blender), image_size=image_size,
                                       n_objects=n_objects, engine=engine, samples=samples, seed=seed,
                                       threads=threads)
        self._timeouts = (float(render_timeout), float(start_timeout), int(max_restarts))
        self.render_ms: collections.deque[float] = collections.deque(maxlen=10_000)
        self.faults: list[Fault] = []
        self._server: ProcessEnv | None = None
        self._start()

    # -- the render server ----------------------------------------------------------------------------
    def _start(self) -> None:
        from envs.bridge.process import ProcessEnv

        render_timeout, start_timeout, max_restarts = self._timeouts
        s = self.image_size
        self._server = server = ProcessEnv(command=self.command, step_timeout=render_timeout,
                                           reset_timeout=start_timeout, max_restarts=max_restarts,
                                           max_message=s * s * 4 + 65536, max_space_elements=s * s * 4 + 4096)
        obs, act = server.observation_space, server.action_space
        if (obs.shape, str(obs.dtype), act.shape) != ((s, s, 4), "uint8", (self.param_dim,)):
            self.close()
            raise E.SpecError(f"blender: the render server declares observations {obs} and actions {act}; "
                              f"expected uint8 [{s}, {s}, 4] and {self.param_dim} parameters (is "
                              f"{SERVER} the one of this nondiff?)")
        server.reset()

    @property
    def restarts(self) -> int:
        """Times the watchdog restarted Blender so far."""
        return 0 if self._server is None else int(self._server.restarts)

    @property
    def program_pid(self) -> int | None:
        """The pid of the running Blender (None before it starts or while it is down)."""
        return None if self._server is None else self._server.program_pid

    def render(self, x: np.ndarray) -> np.ndarray:
        """One render of normalised ``x`` (not counted): ``uint8[S, S, 4]`` RGBA. A render that fails (a
        crash, a hang, a bad reply) restarts Blender and is tried again, :data:`RETRIES` times in a row."""
        from envs.faults import FAULT_KEY, FaultKind

        if self._server is None:
            self._start()
        assert self._server is not None
        x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
        for _ in range(RETRIES):
            obs, _, _, _, info = self._server.step(x)
            fault = info.get(FAULT_KEY)
            if fault is None:
                ms = info.get("render_ms")
                if isinstance(ms, float | int) and math.isfinite(ms):
                    self.render_ms.append(float(ms))
                return np.asarray(obs, dtype=np.uint8)
            self.faults.append(fault)
            log.warning("blender: %s (%s); restarting it", fault.kind.value, fault.detail)
            self._server.reset()  # respawns Blender within the restart budget
        last = self.faults[-1]
        slow = (f"; each render must finish within env.render_timeout={self._timeouts[0]:g} s: raise it, or "
                "lower env.samples or env.image_size" if last.kind == FaultKind.TIMEOUT else "")
        raise E.EnvFailure(f"blender failed {RETRIES} renders in a row (last: {last.detail}){slow}; its last "
                           f"stderr: {' | '.join(last.stderr)[-500:]}")

    def close(self) -> None:
        """Stop Blender; safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            server.close()

    # -- the inverse problem --------------------------------------------------------------------------
    def start(self) -> np.ndarray:
        """Every object at the floor's centre, unturned and grey; the light halfway up."""
        return np.concatenate([np.tile(_START, self.n_objects), [0.5, 0.5]])

    def periodic(self) -> np.ndarray:
        """Each object's rotation and the light's azimuth."""
        per = np.tile(np.array([p == "rotation" for p in PER_OBJECT]), self.n_objects)
        return np.concatenate([per, [True, False]])

    def periods(self) -> np.ndarray:
        """A turn of the box repeats after a quarter, the prism's after a third, the bar's after a half;
        the light's azimuth after a full turn."""
        rot = PER_OBJECT.index("rotation")
        out = np.zeros(self.param_dim)
        for i, kind in enumerate(self.kinds):
            out[i * len(PER_OBJECT) + rot] = _SYMMETRY[kind]
        out[-2] = 1.0
        return out

    def interchangeable(self) -> list[np.ndarray]:
        """The objects' blocks (place, turn and colour): with several objects, one group of them."""
        if self.n_objects < 2:
            return []
        m = len(PER_OBJECT)
        return [np.arange(self.n_objects * m).reshape(self.n_objects, m)]

    def mirror(self) -> Mirror:
        """The camera stands at x = 0 looking along +y, so the scene reflected in the plane x = 0 renders the
        picture flipped left-right: each object's x → 1 − x and turn → 1 − turn (its shape is symmetric
        about its own y-z plane), the light's azimuth → ½ − azimuth. Not exact: Workbench's anti-aliasing is
        not mirror-symmetric, so a few dozen pixels at the objects' edges differ (tests/envs/adapters/
        test_blender_mirror.py bounds them)."""
        m, keys = len(PER_OBJECT), ("x", "rotation")
        reflect = [i * m + PER_OBJECT.index(k) for i in range(self.n_objects) for k in keys]
        centre = [1.0] * len(reflect)
        return Mirror(reflect=(*reflect, self.param_dim - 2), centre=(*centre, 0.5), axis=1)

    def mirror_features(self, features: np.ndarray) -> np.ndarray:
        """The 16 × 16 picture flipped left-right, the moments by :data:`MOMENT_MIRROR`."""
        f = flip_picture(features, self.feature_image(), 1)
        f[..., -len(MOMENT_MIRROR):] *= MOMENT_MIRROR
        return f

    def simulate(self, x: np.ndarray, context: Any = None) -> np.ndarray:
        """The RGB render in ``[0, 1]`` and its silhouette (alpha ≥ 0.5), ``float32[S, S, 4]``."""
        rgba = self.render(x).astype(np.float32) / 255.0
        return np.concatenate([rgba[..., :3], (rgba[..., 3:] >= 0.5).astype(np.float32)], axis=2)

    def make_instance(self, truth: np.ndarray, clean: np.ndarray,
                      observed: np.ndarray | None = None) -> Instance:
        """The instance of a known scene from its clean render (``observed``: a noisy version of it)."""
        data = clean if observed is None else observed
        n, pyramid = self.image_size, []
        while n >= 2 and self.image_size % n == 0:  # see fit()
            level = image.pool(data[..., :3], n)
            pyramid.append((n, level, float(np.sum(level**2)) + 1e-6))
            n //= 4
        return Instance(data, np.asarray(truth, dtype=np.float64), None,
                        {"clean": clean, "seen": data[..., 3] > 0.5, "pyramid": pyramid})

    def sample_prior(self, rng: np.random.Generator) -> np.ndarray:
        """Normalised parameters drawn from the prior (a uniform box)."""
        low = np.concatenate([np.tile(_PRIOR[0], self.n_objects), _LIGHT_PRIOR[0]])
        high = np.concatenate([np.tile(_PRIOR[1], self.n_objects), _LIGHT_PRIOR[1]])
        return rng.uniform(low, high)

    def sample_instance(self, rng: np.random.Generator) -> Instance:
        truth = self.sample_prior(rng)
        clean = self.forward(truth)
        if self.noise <= 0:
            return self.make_instance(truth, clean)
        noisy = clean.copy()
        noisy[..., :3] = np.clip(clean[..., :3] + rng.normal(0.0, self.noise, clean[..., :3].shape), 0, 1)
        return self.make_instance(truth, clean, noisy)

    def fit(self, data: np.ndarray, instance: Instance) -> float:
        """``IoU(silhouette, observed silhouette) − mean relative RGB error over an image pyramid`` (1: a
        perfect fit).

        The relative error ``‖pool(rgb) − pool(target)‖² / ‖pool(target)‖²`` at full size, 1/4, 1/16, … (by
        area-averaging) weighs colour and shading as much as the silhouette whatever the objects' size, and
        lets objects that do not overlap yet still feel each other.
        """
        seen, mask = instance.cache["seen"], data[..., 3] > 0.5
        union = np.logical_or(mask, seen).sum()
        iou = float(np.logical_and(mask, seen).sum() / union) if union else 1.0
        rgb = data[..., :3]
        rel = [float(np.sum((image.pool(rgb, n) - target) ** 2)) / norm
               for n, target, norm in instance.cache["pyramid"]]
        return iou - float(np.mean(rel))

    def data_misfit(self, data: np.ndarray, instance: Instance) -> float:
        """``1 − fit``: 0 is a perfect fit."""
        return 1.0 - self.fit(data, instance)

    def errors(self, x: np.ndarray, instance: Instance) -> dict[str, float]:
        """Parameter errors per group against the truth (see the module docstring); no render."""
        d = np.asarray(x, dtype=np.float64) - instance.known_truth()
        per = d[:-2].reshape(self.n_objects, len(PER_OBJECT))
        pos = float(np.mean(np.hypot(per[:, 0], per[:, 1]))) * POSITION_SPAN / FLOOR_SIZE
        rot = []
        for kind, r in zip(self.kinds, per[:, 2]):
            period = _SYMMETRY[kind]
            m = r % period
            rot.append(min(m, period - m) / (period / 2))  # 0..1, 1 = as far off as the symmetry allows
        azimuth = abs((d[-2] + 0.5) % 1.0 - 0.5) * 2
        normalised = np.concatenate([np.abs(per[:, :2]).ravel(), rot, np.abs(per[:, 3:]).ravel(),
                                     [azimuth, abs(d[-1])]])
        return {"position_error": pos,
                "rotation_error": float(np.mean([r * 180 * _SYMMETRY[k] for k, r in zip(self.kinds, rot)])),
                "colour_error": float(np.mean(np.abs(per[:, 3:]))),
                "light_error": float(np.mean([azimuth, abs(d[-1])])),
                "param_error": float(np.mean(normalised))}

    def score(self, x: np.ndarray, instance: Instance) -> dict[str, float]:
        data = self.simulate(x)  # bookkeeping against the truth: not counted
        clean = instance.cache["clean"]
        mask, target = data[..., 3] > 0.5, clean[..., 3] > 0.5
        union = np.logical_or(mask, target).sum()
        iou = float(np.logical_and(mask, target).sum() / union) if union else 1.0
        image_error = float(np.sqrt(np.mean((data[..., :3] - clean[..., :3]) ** 2)))
        return {"iou": iou, "image_error": image_error, **self.errors(x, instance)}

    def features(self, data: np.ndarray) -> np.ndarray:
        """The picture and its silhouette area-averaged to 16 × 16, and its shape descriptors."""
        n, b = 16, self.image_size // 16
        pooled = data.reshape(n, b, n, b, 4).mean(axis=(1, 3))
        return np.concatenate([pooled.ravel(), image.moments(data[..., :3])]).astype(np.float32)

    def feature_image(self) -> tuple[int, int, int]:
        """The features begin with the picture and its silhouette at 16 × 16."""
        return (16, 16, 4)


class BlenderEnv(InverseEnv):
    """Refine a 3-D scene until Blender's render of it matches a target picture (:class:`InverseEnv` on a
    :class:`BlenderProblem`).

    Each episode draws a hidden scene from the prior and renders it; the estimate starts at
    :meth:`BlenderProblem.start` and each step moves it by ``step_size · action`` and renders it (one counted
    call). The observation: features of the target and of the residual, ``2x − 1`` and the fraction of steps
    used; the reward is the misfit's reduction; ``info["is_success"]``: silhouette IoU ≥ ``success_iou``.

    Args:
        n_objects, image_size, engine, samples, seed, threads, noise, success_iou, blender, render_timeout,
            start_timeout, max_restarts: see :class:`BlenderProblem` and the module docstring (``seed`` is
            Cycles' sampling seed, not the episodes').
        steps: refinement steps per episode (≥ 1).
        step_size: the largest change of a normalised parameter in one step (> 0).
    """

    problem: BlenderProblem

    def __init__(self, *, n_objects: int = 3, image_size: int = 64, engine: Engine = "workbench",
                 samples: int = 4, seed: int = 0, threads: int = 0, noise: float = 0.0,
                 success_iou: float = 0.95, blender: Executable = None, render_timeout: float = 10.0,
                 start_timeout: float = 60.0, max_restarts: int = 10, steps: int = 10,
                 step_size: float = 0.25) -> None:
        problem = BlenderProblem(n_objects=n_objects, image_size=image_size, engine=engine, samples=samples,
                                 seed=seed, threads=threads, noise=noise, success_iou=success_iou,
                                 blender=blender, render_timeout=render_timeout, start_timeout=start_timeout,
                                 max_restarts=max_restarts)
        try:
            super().__init__(problem, steps=steps, step_size=step_size)
        except BaseException:
            problem.close()
            raise

    def close(self) -> None:
        """Stop Blender; safe to call twice."""
        self.problem.close()


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    """A real number, neither NaN nor infinite (YAML's ``nan`` is a string; ``.nan`` and ``.inf`` are floats:
    infinite noise rendered white pictures and an infinite timeout disabled the watchdog)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check(ok: bool, name: str, expected: str, got: Any) -> None:
    if not ok:
        raise ValueError(f"blender: {name} must be {expected}, got {got!r}; set it with --set env.{name}=…")
