"""Seismic inversion through a real wave-equation solver: recover a 2-D velocity model from shot gathers that
Devito (finite differences, generated and compiled to C) simulates.

**Model.** A square physical domain of ``grid_points²`` points ``spacing`` m apart (``x`` across, ``z``
down), ringed by ``absorbing_cells`` of damping layer. The velocity is a layered background (a horizontal
interface at depth ``z_if`` between a top layer ``v_top`` and a bottom layer ``v_bottom``) with ``anomalies``
disks (centre ``x_a, z_a``, radius ``r_a``, velocity ``v_a``) painted over it in order. Edges are ramped over
one cell (the cell average of a sharp edge), so the grid moves continuously with the parameters
(devito_physics.py). The unknowns are ``x ∈ [0, 1]^(3 + 4·anomalies)``, mapped linearly onto the prior box:
``[z_if, v_top, v_bottom, (x_a, z_a, r_a, v_a) × anomalies]``.

**Forward model.** The 2-D constant-density acoustic wave equation ``m·u_tt − Δu + η·u_t = q`` with
``m = 1/v²`` and the damping ``η`` of the absorbing layer (Devito's examples/seismic acoustic operator),
``space_order`` in space and second order in time at the CFL step of the prior's fastest velocity. ``shots``
sources (Ricker, ``peak_frequency``) spread evenly along a line two cells below the top; ``receivers``
receivers on the same line record ``duration`` ms. The data are the shot gathers downsampled to what the
strategies need: every ``receiver_stride``-th receiver, resampled every ``sample_interval`` ms,
``float64[shots, receivers', samples]``. The operator is built once per problem (one per env worker process)
and run single-threaded in C (``DEVITO_LANGUAGE=C``; OpenMP with 2 threads was 5–7× slower on shared
cores); the compiled code is cached under ``$XDG_CACHE_HOME/nondiff/devito`` (``~/.cache`` by default), so a
new process compiles nothing. Repeated forwards are bit-identical.

**Noise.** With ``snr_db`` set, the observed gathers get white Gaussian noise of standard deviation
``RMS(clean) / 10^(snr_db/20)`` (20 dB: 10% of the RMS), drawn once per instance.

**Misfit.** Traces are weighted by the time gain ``t / duration`` (late reflections count as much as the
direct wave). The data misfit is ``½ (‖g·(d_syn − d_obs)‖ / ‖g·d_obs‖ + ‖e_syn − e_obs‖ / ‖e_obs‖)``,
``e`` the gained traces' smoothed Hilbert envelope, as in the ``seismic`` adapter (a wider basin than the
waveform alone). Features for learned strategies: the gained gathers divided by their RMS.

**Scores.** ``rel_model_error = ‖v̂ − v‖ / ‖v‖`` on the physical velocity grid (the goal's measure; ≤
``success_tolerance`` solves), ``param_error`` (RMS of the normalised parameter errors), ``prior_mean_error``
(the model error of the prior mean) and ``data_misfit``.

**Episode.** As ``seismic``: the estimate starts at the prior mean; step ``t`` applies
``x ← clip(x + step_size · step_decay^t · a, 0, 1)`` and one counted forward call; the observation holds the
features of ``d_obs`` and of ``d_obs − d_syn`` (the residual), ``2x − 1``, the fraction of steps used and the
misfit; the reward is the misfit's reduction (``reward="data"``) or the model error's (``"model"``).

``preset="small"`` is the CI grid (41² points at 25 m, 4th order, 5 Hz, 0.8 s: about 2 ms a shot).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.adapters import devito_physics as phys
from envs.inverse import Instance, InverseEnvMixin, InverseProblem

PRESETS: dict[str, dict[str, Any]] = {
    "full": {"grid_points": 101, "spacing": 10.0, "absorbing_cells": 40, "space_order": 8, "duration": 1000.0,
             "peak_frequency": 10.0, "receivers": 101, "receiver_stride": 4, "sample_interval": 8.0},
    "small": {"grid_points": 41, "spacing": 25.0, "absorbing_cells": 12, "space_order": 4, "duration": 800.0,
              "peak_frequency": 5.0, "receivers": 41, "receiver_stride": 4, "sample_interval": 16.0},
}
"""Geometry settings by ``preset``; any of them may be given explicitly instead."""
Pair = tuple[float, float] | list[float]
"""A prior range ``[low, high]`` as a setting takes it."""


class DevitoProblem(InverseProblem):
    """Devito shot gathers as an inverse problem (model, forward model and misfit: the module docstring).

    Data: the downsampled gathers ``float64[shots, receivers', samples]``. Parameters: the normalised
    ``[z_if, v_top, v_bottom, (x_a, z_a, r_a, v_a) × anomalies]``. Score: ``rel_model_error`` (≤
    ``success_tolerance`` solves), ``param_error``, ``prior_mean_error`` and ``data_misfit``.
    """

    score_key, higher_is_better = "rel_model_error", False

    def __init__(self, *, geometry: dict[str, Any], shots: int, anomalies: int, snr_db: float | None,
                 velocities: dict[str, tuple[float, float]], success_tolerance: float) -> None:
        super().__init__()
        g = geometry
        self.n, self.spacing = int(g["grid_points"]), float(g["spacing"])
        self.snr_db, self.success_threshold = snr_db, success_tolerance
        self.param_dim = phys.LAYER + phys.ANOMALY * anomalies
        extent = (self.n - 1) * self.spacing
        vt, vb, va = (np.asarray(velocities[k]) / 1000.0 for k in ("top", "bottom", "anomaly"))
        lo = [0.35 * extent, vt[0], vb[0]] + [0.25 * extent, 0.2 * extent, 0.06 * extent, va[0]] * anomalies
        hi = [0.65 * extent, vt[1], vb[1]] + [0.75 * extent, 0.6 * extent, 0.14 * extent, va[1]] * anomalies
        self.lo, self.hi = np.array(lo), np.array(hi)
        v_max = max(vt[1], vb[1], va[1])
        self.solver = phys.WaveSolver(n=self.n, spacing=self.spacing, cells=int(g["absorbing_cells"]),
                                      space_order=int(g["space_order"]), duration=float(g["duration"]),
                                      peak_frequency=float(g["peak_frequency"]), v_max=v_max, shots=shots,
                                      receivers=int(g["receivers"]))
        self.stride = int(g["receiver_stride"])
        self.times = np.arange(0.0, float(g["duration"]) + 1e-9, float(g["sample_interval"]))
        self.gain = (self.times / float(g["duration"]))[None, None, :]
        self.sigma = 250.0 / float(g["peak_frequency"]) / float(g["sample_interval"])  # 1/(4f) in samples

    def physical(self, x: np.ndarray) -> np.ndarray:
        """Normalised ``x`` (clipped to [0, 1]) in m and km/s."""
        return self.lo + np.clip(np.asarray(x, dtype=np.float64).reshape(self.param_dim), 0.0, 1.0) * (
            self.hi - self.lo)

    def model(self, x: np.ndarray) -> np.ndarray:
        """The physical velocity grid (km/s, ``[n, n]``, x first) of normalised parameters."""
        return phys.velocity_model(self.physical(x), self.n, self.spacing)

    def record(self, v: np.ndarray) -> np.ndarray:
        """The downsampled gathers of a velocity grid (not counted)."""
        full = self.solver.gathers(v)[:, :, :: self.stride]
        return np.moveaxis(phys.resample(np.moveaxis(full, 1, 0), self.solver.dt, self.times), 0, 2).astype(
            np.float64)

    def simulate(self, x: np.ndarray, context: Any = None) -> np.ndarray:
        return self.record(self.model(x))

    def sample_instance(self, rng: np.random.Generator) -> Instance:
        truth = rng.uniform(size=self.param_dim)
        clean = self.simulate(truth)
        self.forward_calls += 1
        if self.snr_db is not None:
            rms = float(np.sqrt(np.mean(clean**2)))
            clean = clean + rms / 10.0 ** (self.snr_db / 20.0) * rng.standard_normal(clean.shape)
        return self.make_instance(truth, clean)

    def make_instance(self, truth: np.ndarray, d_obs: np.ndarray) -> Instance:
        """The instance of normalised ``truth`` observed as ``d_obs``."""
        gained = self.gain * d_obs
        return Instance(np.asarray(d_obs, dtype=np.float64), np.asarray(truth, dtype=np.float64), None,
                        {"model": self.model(truth), "gained": gained,
                         "envelope": phys.envelope(gained, self.sigma)})

    def data_misfit(self, data: np.ndarray, instance: Instance) -> float:
        g_obs, e_obs, gained = instance.cache["gained"], instance.cache["envelope"], self.gain * data
        waveform = float(np.linalg.norm(gained - g_obs)) / max(float(np.linalg.norm(g_obs)), 1e-12)
        env = (float(np.linalg.norm(phys.envelope(gained, self.sigma) - e_obs))
               / max(float(np.linalg.norm(e_obs)), 1e-12))
        return 0.5 * (waveform + env)

    def model_error(self, v: np.ndarray, instance: Instance) -> float:
        """``‖v − v_true‖ / ‖v_true‖`` on the physical velocity grid."""
        true = instance.cache["model"]
        return float(np.linalg.norm(v - true) / np.linalg.norm(true))

    def score(self, x: np.ndarray, instance: Instance) -> dict[str, float]:
        return self.metrics(x, instance, self.record(self.model(x)))

    def metrics(self, x: np.ndarray, instance: Instance, data: np.ndarray) -> dict[str, float]:
        """:meth:`score` of ``x`` whose (uncounted) data are known already."""
        x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
        return {"rel_model_error": self.model_error(self.model(x), instance),
                "param_error": float(np.sqrt(np.mean((x - instance.known_truth()) ** 2))),
                "prior_mean_error": self.model_error(self.model(self.start()), instance),
                "data_misfit": self.data_misfit(data, instance)}

    def features(self, data: np.ndarray) -> np.ndarray:
        """The gained gathers divided by their RMS, flattened."""
        gained = self.gain * data
        return (gained / max(float(np.sqrt(np.mean(gained**2))), 1e-12)).astype(np.float32).ravel()


def _pair(value: Any, name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"devito: {name} must be a pair [low, high] of numbers, got {value!r}; "
                         f"pass e.g. --set env.{name}=[low,high]") from e
    if not 0 < lo < hi < math.inf:
        raise ValueError(f"devito: {name} must satisfy 0 < low < high < infinity, got {value!r}; "
                         f"pass e.g. --set env.{name}=[low,high] with positive, increasing values")
    return lo, hi


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    """A number, neither NaN nor infinite (``.inf`` and ``.nan`` are YAML floats)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value: Any) -> bool:
    return _finite(value) and value > 0


SETTINGS: tuple[tuple[str, Callable[[dict[str, Any]], bool], str, str], ...] = (
    ("grid_points", lambda s: _int(s["grid_points"]) and s["grid_points"] >= 11, "an integer >= 11", "101"),
    ("spacing", lambda s: _positive(s["spacing"]), "a finite number > 0 (m)", "10"),
    ("absorbing_cells", lambda s: _int(s["absorbing_cells"]) and s["absorbing_cells"] >= 4,
     "an integer >= 4", "40"),
    ("space_order", lambda s: _int(s["space_order"]) and s["space_order"] in (2, 4, 6, 8, 10, 12),
     "an even integer in 2..12", "8"),
    ("duration", lambda s: _positive(s["duration"]), "a finite number > 0 (ms)", "1000"),
    ("peak_frequency", lambda s: _positive(s["peak_frequency"]), "a finite number > 0 (Hz)", "10"),
    ("receivers", lambda s: _int(s["receivers"]) and s["receivers"] >= 2, "an integer >= 2", "101"),
    ("receiver_stride", lambda s: _int(s["receiver_stride"]) and s["receiver_stride"] >= 1,
     "an integer >= 1", "4"),
    ("sample_interval", lambda s: _positive(s["sample_interval"])
     and s["sample_interval"] <= 250.0 / s["peak_frequency"],
     "> 0 ms with at least 4 samples per wavelet period", "8"),
    ("shots", lambda s: _int(s["shots"]) and s["shots"] >= 1, "an integer >= 1", "3"),
    ("anomalies", lambda s: _int(s["anomalies"]) and s["anomalies"] in (0, 1, 2), "0, 1 or 2", "1"),
    ("snr_db", lambda s: s["snr_db"] is None or _finite(s["snr_db"]),
     "a finite number of dB or null", "20"),
    ("steps", lambda s: _int(s["steps"]) and s["steps"] >= 1, "an integer >= 1", "4"),
    ("step_size", lambda s: _positive(s["step_size"]), "a finite number > 0", "0.5"),
    ("step_decay", lambda s: _positive(s["step_decay"]) and s["step_decay"] <= 1, "in (0, 1]", "0.5"),
    ("reward", lambda s: s["reward"] in ("data", "model"), "'data' or 'model'", "data"),
    ("success_tolerance", lambda s: _positive(s["success_tolerance"]), "a finite number > 0", "0.05"),
)
"""Each setting's check, in order (a later one may rely on an earlier one), what it expects and an example."""


def _check_settings(values: dict[str, Any]) -> None:
    for name, ok, expected, example in SETTINGS:
        if not ok(values):
            got = values[name]
            text = " (text, not a number)" if isinstance(got, str) else ""
            raise ValueError(f"devito: {name} must be {expected}, got {got!r}{text}; "
                             f"pass e.g. --set env.{name}={example}")


def _check_size(g: dict[str, Any], shots: int, v_max: float) -> None:
    """Refuse, before anything is allocated, a geometry whose arrays would not fit in half this machine's
    memory (``grid_points=100000`` asked NumPy for 74.5 GiB; a fast prior velocity or a long duration makes
    the time steps many)."""
    total = g["grid_points"] + 2 * g["absorbing_cells"]
    dt = phys.cfl_dt(g["space_order"], g["spacing"], v_max)
    nt = math.ceil(g["duration"] / dt) + 1 if dt > 0 else math.inf
    kept = -(-g["receivers"] // g["receiver_stride"])
    samples = g["duration"] / g["sample_interval"] + 1
    need = (4 * 5 * (total + 2 * g["space_order"]) ** 2 + 8 * 4 * total**2  # wavefield, model, damping
            + 4 * nt * (g["receivers"] * (shots + 2) + 2)  # the source, the receivers, every shot's gathers
            + 8 * 4 * shots * kept * samples)  # the resampled data, the features, the observation
    limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    if not need <= limit:
        raise ValueError(f"devito: this geometry needs about {need / 2**30:,.1f} GiB per env, over half of "
                         f"this machine's memory ({limit / 2**30:.1f} GiB): {total}² grid points with the "
                         f"absorbing layer, {nt:,} time steps of {dt:g} ms (CFL at the prior's {v_max:g} "
                         f"km/s) over {g['duration']:g} ms, {g['receivers']} receivers, {shots} shots; lower "
                         "env.grid_points, env.duration or env.receivers, or use --set env.preset=small")


class DevitoEnv(InverseEnvMixin, gym.Env):
    """Iterative 2-D seismic inversion through Devito: refine a velocity model from shot gathers.

    The model, forward model, misfit, scores and episode are described in the module docstring. The env is
    built on :class:`DevitoProblem` (``env.unwrapped.problem``, an :class:`~envs.inverse.InverseProblem`,
    so every black-box strategy applies); after ``reset`` the unwrapped env offers :attr:`param_dim`,
    :meth:`misfit` (one forward call), :meth:`score` (hidden truth, for reporting) and :attr:`forward_calls`.

    Args:
        preset: ``"full"`` (101² points at 10 m, 8th order, 10 Hz, 1 s) or ``"small"`` (the CI grid); the
            geometry settings below default to it.
        grid_points, spacing, absorbing_cells, space_order, duration, peak_frequency, receivers,
            receiver_stride, sample_interval: the geometry (points per side, m, cells, even order, ms, Hz,
            receivers recorded, every how many kept, ms between kept samples).
        shots: sources along the top (``>= 1``).
        anomalies: disks over the layered background (``0``, ``1`` or ``2``).
        snr_db: the observed data's signal-to-noise ratio in dB (None: noise-free).
        top_velocity, bottom_velocity, anomaly_velocity: prior ``[low, high]`` in m/s.
        steps, step_size, step_decay, reward: the episode (as the ``seismic`` adapter).
        success_tolerance: relative model error counted as success.
        render_mode: None or ``"rgb_array"`` (true and estimated models, observed and synthetic gathers).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}
    problem: DevitoProblem

    def __init__(self, *, preset: Literal["full", "small"] = "full", grid_points: int | None = None,
                 spacing: float | None = None, absorbing_cells: int | None = None,
                 space_order: int | None = None, duration: float | None = None,
                 peak_frequency: float | None = None, receivers: int | None = None,
                 receiver_stride: int | None = None, sample_interval: float | None = None, shots: int = 3,
                 anomalies: int = 1, snr_db: float | None = None, top_velocity: Pair = (1500.0, 2500.0),
                 bottom_velocity: Pair = (2500.0, 3500.0), anomaly_velocity: Pair = (1500.0, 3500.0),
                 steps: int = 4, step_size: float = 0.5, step_decay: float = 0.5,
                 reward: Literal["data", "model"] = "data", success_tolerance: float = 0.05,
                 render_mode: str | None = None) -> None:
        if preset not in PRESETS:
            raise ValueError(f"devito: preset must be one of {sorted(PRESETS)}, got {preset!r}; pass e.g. "
                             "--set env.preset=small")
        given: dict[str, Any] = {
            "grid_points": grid_points, "spacing": spacing, "absorbing_cells": absorbing_cells,
            "space_order": space_order, "duration": duration, "peak_frequency": peak_frequency,
            "receivers": receivers, "receiver_stride": receiver_stride, "sample_interval": sample_interval}
        g: dict[str, Any] = {k: PRESETS[preset][k] if v is None else v for k, v in given.items()}
        _check_settings({**g, "shots": shots, "anomalies": anomalies, "snr_db": snr_db, "steps": steps,
                         "step_size": step_size, "step_decay": step_decay, "reward": reward,
                         "success_tolerance": success_tolerance})
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"devito: render_mode must be None or 'rgb_array', got {render_mode!r}")
        velocities = {"top": _pair(top_velocity, "top_velocity"),
                      "bottom": _pair(bottom_velocity, "bottom_velocity"),
                      "anomaly": _pair(anomaly_velocity, "anomaly_velocity")}
        _check_size(g, shots, max(v[1] for v in velocities.values()) / 1000.0)
        self.problem = DevitoProblem(geometry=g, shots=shots, anomalies=anomalies,
                                     snr_db=None if snr_db is None else float(snr_db), velocities=velocities,
                                     success_tolerance=float(success_tolerance))
        self.steps, self.step_size, self.step_decay = steps, float(step_size), float(step_decay)
        self.reward, self.render_mode = reward, render_mode
        self.param_dim: int = self.problem.param_dim
        """Length of the normalised parameter vector ``x`` (each entry in [0, 1])."""
        kept = -(-g["receivers"] // g["receiver_stride"])  # receivers kept: every receiver_stride-th
        probe = np.zeros((shots, kept, len(self.problem.times)))
        self.instance = Instance(probe, np.full(self.param_dim, 0.5), None, {})  # a placeholder until reset()
        n_feat = probe.size
        self.observation_space = spaces.Box(-np.inf, np.inf, (2 * n_feat + self.param_dim + 2,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (self.param_dim,), np.float32)
        self._calls_at_reset, self._t, self._x = 0, 0, np.full(self.param_dim, 0.5)
        self._f_obs = self._f_syn = np.zeros(n_feat, dtype=np.float32)
        self._d_syn, self._misfit, self._err = probe, 1.0, 0.0
        self._fig: Any = None

    def _obs(self) -> np.ndarray:
        return np.concatenate([self._f_obs, self._f_obs - self._f_syn, 2.0 * self._x - 1.0,
                               [self._t / self.steps, self._misfit]]).astype(np.float32)

    def _evaluate(self) -> dict[str, Any]:
        pb = self.problem
        self._d_syn = pb.forward(self._x)
        self._f_syn, self._misfit = pb.features(self._d_syn), pb.data_misfit(self._d_syn, self.instance)
        err = pb.model_error(pb.model(self._x), self.instance)
        return {"data_misfit": self._misfit, "is_success": err <= pb.success_threshold, "model_error": err}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Draw a hidden model and its observed gathers; the estimate starts at the prior mean (one call)."""
        super().reset(seed=seed)
        self.instance = self.problem.sample_instance(self.np_random)  # stands in for field data: not counted
        self._f_obs = self.problem.features(self.instance.data)
        self._calls_at_reset, self._t, self._x = self.problem.forward_calls, 0, self.problem.start()
        info = self._evaluate()
        self._err = info.pop("model_error")
        return self._obs(), info

    def step(self, action):
        """Move the estimate by ``step_size · step_decay^t · action``; the reward is the reduction of the
        data misfit (``reward="data"``) or of the relative model error (``reward="model"``)."""
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(self.param_dim), -1.0, 1.0)
        self._x = np.clip(self._x + self.step_size * self.step_decay**self._t * a, 0.0, 1.0)
        previous, previous_err = self._misfit, self._err
        info = self._evaluate()
        self._err = info.pop("model_error")
        self._t += 1
        truncated = self._t >= self.steps
        if truncated:  # the score, from the data just simulated
            info["episode_metrics"] = self.problem.metrics(self._x, self.instance, self._d_syn)
        reward = previous_err - self._err if self.reward == "model" else previous - self._misfit
        return self._obs(), float(reward), False, truncated, info

    def render(self):
        """An RGB image: the true and estimated velocity models and the middle shot, observed vs synthetic."""
        if self.render_mode != "rgb_array":
            return None
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        if self._fig is None:
            self._fig = Figure(figsize=(9, 3), dpi=80)
            FigureCanvasAgg(self._fig)
            self._fig.subplots(1, 3)
        fig, pb = self._fig, self.problem
        extent = (0.0, (pb.n - 1) * pb.spacing, (pb.n - 1) * pb.spacing, 0.0)
        lo, hi = float(pb.lo[1]), float(max(pb.hi[2], pb.hi[-1]))
        true = self.instance.cache.get("model", pb.model(self.instance.known_truth()))
        mid = len(self._d_syn) // 2
        panels = [(true.T, "true model (km/s)", extent, (lo, hi)),
                  (pb.model(self._x).T, f"step {self._t}: model error {self._err:.3f}", extent, (lo, hi)),
                  ((pb.gain[0] * np.vstack([self.instance.data[mid], self._d_syn[mid]])).T,
                   "middle shot, gained: observed | synthetic", None, None)]
        for ax, (image, title, ext, lim) in zip(fig.axes, panels, strict=True):
            ax.cla()
            ax.imshow(image, extent=ext, aspect="auto", cmap="viridis" if lim else "gray",
                      vmin=lim[0] if lim else None, vmax=lim[1] if lim else None)
            ax.set_title(title, fontsize=9)
        fig.tight_layout()
        fig.canvas.draw()
        return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()

    def close(self) -> None:
        """Drop the figure; safe to call more than once."""
        self._fig = None
