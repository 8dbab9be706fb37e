"""Seismic inversion: recover a 1-D layered earth from a normal-incidence convolutional seismogram.

**Earth model.** A known overburden half-space (velocity ``overburden_velocity``) lies above ``N = n_layers``
unknown layers; layer ``N`` is a half-space (infinite thickness). Each layer has a P velocity ``v`` and a
density tied to it by Gardner's relation ``ρ = 0.31·v^0.25`` (v in m/s, ρ in g/cc; Gardner, Gardner & Gregory
1974, Geophysics 39), so the unknowns are the ``N`` velocities and the ``N − 1`` finite thicknesses ``h``:
``param_dim = 2N − 1``. Density is tied because a normal-incidence trace sees only impedance contrasts and
two-way times: ``v`` and ``ρ`` separately are not identifiable from it, and ``Z = ρv`` fixes ``v`` once
``ρ = ρ(v)``. The overburden impedance must be known, because reflection coefficients are ratios, invariant
under scaling every impedance; without an anchor the inversion is non-unique. The top of layer 1 is at the
known two-way time ``t0 = 1/f`` (the trace starts at time 0, ``t0`` above it); the last layer is a half-space,
so no thickness is asked for that no reflection could reveal: with the prior's minimum contrast (below) every
unknown is identifiable.

**Forward model** (primaries only, no transmission loss or multiples: the convolutional model of Yilmaz 2001,
*Seismic Data Analysis*, SEG, ch. 2; Sheriff & Geldart 1995, *Exploration Seismology*, 2nd ed., Cambridge).
Impedance ``Z_i = ρ_i v_i``; the reflection coefficient at the base of medium ``i`` is
``r_i = (Z_{i+1} − Z_i) / (Z_{i+1} + Z_i)`` (medium 0 is the overburden) and the interface sits at two-way
time ``τ_i = t0 + Σ_{j<i} 2h_j / v_j``. The trace is ``d(t) = Σ_i r_i · w(t − τ_i)``, i.e. the reflectivity
spike series convolved with the zero-phase Ricker wavelet ``w(t) = (1 − 2π²f²t²)·exp(−π²f²t²)`` of peak
frequency ``f`` (Ricker 1953, Geophysics 18), evaluated at the samples ``t_k = k·dt``. Evaluating the wavelet
analytically at ``t − τ_i`` is the exact continuous-time convolution, so a spike between two samples is
handled without rounding and the trace is a smooth function of the model. The window is just long enough for
the deepest interface of the prior plus one wavelet length. Optional Gaussian noise of standard deviation
``noise × RMS(clean trace)`` is added once per episode to the observed trace.

**Prior.** Velocities ``U[velocity_range]`` and thicknesses ``U[thickness_range]``, independent, conditioned
(by rejection) on every interface having ``|r_i| ≥ min_contrast``: an invisible interface would leave
the split of thickness between its two layers unidentifiable.

**Episode.** The estimate starts at the prior mean. Step ``t = 0, 1, …`` applies
``x ← clip(x + step_size · step_decay^t · a, 0, 1)`` (coarse to fine), where ``x ∈ [0, 1]^(2N−1)`` is the
normalised model ``[v_1…v_N, h_1…h_{N−1}]`` mapped linearly onto the prior box and ``a ∈ [−1, 1]^(2N−1)``
is the action. The episode truncates after ``steps`` steps. The observation holds ``d_obs / 0.2`` and the
residual ``(d_obs − d_syn(x)) / 0.2``; the normalised cumulative energy ``C(t) = Σ_{t'≤t} d² / Σ d²`` of
``d_obs`` and ``C_obs − C_syn`` (every 4th sample): in this 1-D optimal-transport view an arrival-time
difference is linear in the curves rather than oscillatory (Engquist & Froese 2014; Métivier et al.
2016); then ``2x − 1``, the fraction of steps used and the current data misfit.

**Misfit and reward.** The data misfit is ``½ (‖d_syn − d_obs‖ / ‖d_obs‖ + ‖e_syn − e_obs‖ / ‖e_obs‖)``,
where ``e`` is the trace's Hilbert envelope smoothed by a Gaussian of σ = 1/(4f): the waveform term sees
polarity and phase; the envelope term decreases smoothly over a wider range of arrival-time errors,
where the waveform term is flat or oscillates (cycle skipping; envelope misfits after Bozdağ, Trampert & Tromp
2011). With ``reward="data"`` the reward is the misfit's reduction over the step and uses the data only.
With ``reward="model"`` it is the reduction of the relative model error (below) instead: supervision
from the synthetic training instance, whose true model is known by construction. The policy still
sees data only, so a trained policy needs no truth to invert a new trace; but field data could not
train it. configs/seismic.yaml uses ``model`` because ``data`` learned far slower on this machine
(docs/results.md).

**Success** means a relative model error ``‖m̂ − m‖ / ‖m‖ ≤ 0.1``, where ``m`` is the vector of the
``2N − 1`` velocities and thicknesses, each divided by the midpoint of its prior range (so that a metre of
thickness and a m/s of velocity are weighed by their own scale, not by their units).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.adapters.seismic_physics import envelope, reflectivity, synthetic
from envs.inverse import Instance, InverseEnvMixin, InverseProblem

TRACE_SCALE = 0.2
"""Traces are divided by this in the observation (a typical large reflection coefficient)."""


def _pair(value: Any, name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"seismic: {name} must be a pair [low, high] of numbers, got {value!r}; "
                         f"pass e.g. --set env.{name}=[low,high]") from e
    if not 0 < lo < hi:
        raise ValueError(f"seismic: {name} must satisfy 0 < low < high, got {value!r}; "
                         f"pass e.g. --set env.{name}=[low,high] with positive, increasing values")
    return lo, hi


class SeismicProblem(InverseProblem):
    """The convolutional seismogram as an inverse problem (physics, prior and misfit: the module docstring).

    Data: the trace, ``float64[n_samples]``. Parameters: the normalised ``[v_1…v_N, h_1…h_{N−1}]``. Score:
    ``rel_model_error`` (≤ ``success_tolerance`` solves), ``prior_mean_error`` and ``data_misfit``.
    """

    score_key, higher_is_better = "rel_model_error", False

    def __init__(self, *, n_layers: int, noise: float, f: float, dt: float, v_range: tuple[float, float],
                 h_range: tuple[float, float], v0: float, min_contrast: float,
                 success_tolerance: float) -> None:
        super().__init__()
        n = self.n_layers = n_layers
        self.noise, self.f, self.dt, self.v_range, self.h_range = noise, f, dt, v_range, h_range
        self.v0, self.min_contrast, self.success_threshold = v0, min_contrast, success_tolerance
        self.param_dim = 2 * n - 1
        self.lo = np.array([v_range[0]] * n + [h_range[0]] * (n - 1))
        self.hi = np.array([v_range[1]] * n + [h_range[1]] * (n - 1))
        self.mid = 0.5 * (self.lo + self.hi)
        self.t0 = 1.0 / f
        t_max = 2 * self.t0 + (n - 1) * 2 * h_range[1] / v_range[0]
        self.times = np.arange(int(math.ceil(t_max / dt)) + 1) * dt
        sigma = 0.25 / f
        k = np.arange(-math.ceil(3 * sigma / dt), math.ceil(3 * sigma / dt) + 1) * dt
        self.kernel = np.exp(-0.5 * (k / sigma) ** 2) / np.sum(np.exp(-0.5 * (k / sigma) ** 2))

    def physical(self, x: np.ndarray) -> np.ndarray:
        """Normalised ``x`` (clipped to [0, 1]) in m/s and m."""
        return self.lo + np.clip(np.asarray(x, dtype=np.float64).reshape(self.param_dim), 0.0, 1.0) * (
            self.hi - self.lo)

    def trace(self, params: np.ndarray) -> np.ndarray:
        """The synthetic trace of a physical model (not counted)."""
        n = self.n_layers
        return synthetic(np.concatenate([[self.v0], params[:n]]), params[n:], self.times, self.f, self.t0)

    def simulate(self, x: np.ndarray, context: Any = None) -> np.ndarray:
        return self.trace(self.physical(x))

    def sample_instance(self, rng: np.random.Generator) -> Instance:
        n = self.n_layers
        for _ in range(10_000):
            v = rng.uniform(*self.v_range, size=n)
            if np.all(np.abs(reflectivity(np.concatenate([[self.v0], v]))) >= self.min_contrast):
                true = np.concatenate([v, rng.uniform(*self.h_range, size=n - 1)])
                break
        else:
            raise ValueError("seismic: no model in the prior has every |r| >= "
                             f"min_contrast={self.min_contrast}; lower min_contrast or widen velocity_range")
        clean = self.trace(true)
        self.forward_calls += 1
        rms = float(np.sqrt(np.mean(clean**2)))
        return self.make_instance(true, clean + (self.noise * rms * rng.standard_normal(len(clean))
                                                 if self.noise else 0.0))

    def make_instance(self, true: np.ndarray, d_obs: np.ndarray) -> Instance:
        """The instance of a physical model ``true`` observed as ``d_obs``."""
        return Instance(np.asarray(d_obs, dtype=np.float64), (true - self.lo) / (self.hi - self.lo), None,
                        {"true": true, "envelope": envelope(d_obs, self.kernel)})

    def data_misfit(self, data: np.ndarray, instance: Instance) -> float:
        d_obs, e_obs = instance.data, instance.cache["envelope"]
        waveform = float(np.linalg.norm(data - d_obs)) / max(float(np.linalg.norm(d_obs)), 1e-12)
        env = (float(np.linalg.norm(envelope(data, self.kernel) - e_obs))
               / max(float(np.linalg.norm(e_obs)), 1e-12))
        return 0.5 * (waveform + env)

    def model_error(self, params: np.ndarray, instance: Instance) -> float:
        """Relative model error of a physical model, each parameter scaled by its prior midpoint."""
        true = instance.cache["true"]
        return float(np.linalg.norm((params - true) / self.mid) / np.linalg.norm(true / self.mid))

    def score(self, x: np.ndarray, instance: Instance) -> dict[str, float]:
        params = self.physical(x)
        return {"rel_model_error": self.model_error(params, instance),
                "prior_mean_error": self.model_error(self.mid, instance),
                "data_misfit": self.data_misfit(self.trace(params), instance)}

    def features(self, data: np.ndarray) -> np.ndarray:
        """The trace and its smoothed envelope, divided by :data:`TRACE_SCALE`."""
        return (np.concatenate([data, envelope(data, self.kernel)]) / TRACE_SCALE).astype(np.float32)


class SeismicEnv(InverseEnvMixin, gym.Env):
    """Iterative 1-D seismic inversion: refine an earth model from a normal-incidence trace.

    The physics, prior, observation, reward and success are described in the module docstring. The env is
    built on :class:`SeismicProblem` (``env.unwrapped.problem``, an :class:`~envs.inverse.InverseProblem`; the
    episode's instance is ``env.unwrapped.instance``). For black-box optimisers the unwrapped env offers,
    after ``reset``: :attr:`param_dim`, :meth:`misfit` (one forward call), :meth:`score` (uses the hidden
    truth, for reporting) and :attr:`forward_calls`.

    Args:
        n_layers: unknown layers below the overburden, the last one a half-space (``>= 1``).
        steps: refinement steps per episode (``>= 1``).
        step_size: largest change of a normalised parameter in the first step (``> 0``).
        step_decay: factor by which the largest change shrinks at each further step (``(0, 1]``).
        reward: ``"data"`` (misfit reduction) or ``"model"`` (model-error reduction; module docstring).
        noise: observed-trace noise standard deviation relative to the clean trace's RMS (``>= 0``).
        peak_frequency: Ricker peak frequency in Hz.
        dt: sample interval in s.
        velocity_range: prior ``[low, high]`` of the layer velocities in m/s.
        thickness_range: prior ``[low, high]`` of the finite layer thicknesses in m.
        overburden_velocity: the known overburden velocity in m/s.
        min_contrast: smallest ``|r|`` of any interface in the prior (``0 <= min_contrast < 0.3``).
        success_tolerance: relative model error counted as success.
        render_mode: None or ``"rgb_array"`` (a matplotlib figure of profiles and traces).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}
    problem: SeismicProblem

    def __init__(
        self,
        *,
        n_layers: int = 3,
        steps: int = 4,
        step_size: float = 0.5,
        step_decay: float = 0.5,
        reward: str = "data",
        noise: float = 0.0,
        peak_frequency: float = 25.0,
        dt: float = 0.002,
        velocity_range: tuple[float, float] | list[float] = (2000.0, 4500.0),
        thickness_range: tuple[float, float] | list[float] = (50.0, 200.0),
        overburden_velocity: float = 3000.0,
        min_contrast: float = 0.03,
        success_tolerance: float = 0.1,
        render_mode: str | None = None,
    ) -> None:
        checks = [
            (isinstance(n_layers, int) and n_layers >= 1, "n_layers", "an integer >= 1", n_layers, "3"),
            (isinstance(steps, int) and steps >= 1, "steps", "an integer >= 1", steps, "4"),
            (step_size > 0, "step_size", "> 0", step_size, "0.5"),
            (0 < step_decay <= 1, "step_decay", "in (0, 1]", step_decay, "0.5"),
            (reward in ("data", "model"), "reward", "'data' or 'model'", reward, "data"),
            (noise >= 0, "noise", ">= 0 (a fraction of the trace RMS)", noise, "0.05"),
            (peak_frequency > 0, "peak_frequency", "> 0 Hz", peak_frequency, "25"),
            (dt > 0 and dt * peak_frequency <= 0.25, "dt", "> 0 s with at least 4 samples per wavelet period",
             dt, "0.002"),
            (overburden_velocity > 0, "overburden_velocity", "> 0 m/s", overburden_velocity, "3000"),
            (0 <= min_contrast < 0.3, "min_contrast", "in [0, 0.3)", min_contrast, "0.03"),
            (success_tolerance > 0, "success_tolerance", "> 0", success_tolerance, "0.1"),
        ]
        for ok, name, expected, got, example in checks:
            if not ok:
                raise ValueError(f"seismic: {name} must be {expected}, got {got!r}; "
                                 f"pass e.g. --set env.{name}={example}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"seismic: render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.n_layers, self.steps, self.step_size = n_layers, steps, float(step_size)
        self.step_decay, self.reward = float(step_decay), reward
        self.noise, self.f, self.dt = float(noise), float(peak_frequency), float(dt)
        self.v_range = _pair(velocity_range, "velocity_range")
        self.h_range = _pair(thickness_range, "thickness_range")
        self.v0, self.min_contrast = float(overburden_velocity), float(min_contrast)
        self.success_tolerance, self.render_mode = float(success_tolerance), render_mode
        n = n_layers
        self.param_dim: int = 2 * n - 1
        """Length of the normalised parameter vector ``x`` (each entry in [0, 1])."""
        self.problem = SeismicProblem(n_layers=n, noise=self.noise, f=self.f, dt=self.dt,
                                      v_range=self.v_range, h_range=self.h_range, v0=self.v0,
                                      min_contrast=self.min_contrast,
                                      success_tolerance=self.success_tolerance)
        pb = self.problem
        self._lo, self._hi, self._mid = pb.lo, pb.hi, pb.mid
        self.t0, self.times, self._kernel = pb.t0, pb.times, pb.kernel
        self.n_samples = len(self.times)
        obs_dim = 2 * self.n_samples + 2 * len(self.times[::4]) + self.param_dim + 2
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(obs_dim,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(self.param_dim,), dtype=np.float32)
        self._calls_at_reset = 0
        self._true = self._mid.copy()
        self._x = np.full(self.param_dim, 0.5)
        self._d_obs, self._e_obs, self._d_syn = (np.zeros(self.n_samples) for _ in range(3))
        self.instance = pb.make_instance(self._true, self._d_obs)
        self._misfit = 1.0
        self._t = 0
        self._fig: Any = None

    # -- the black box (SeismicProblem; forward_calls, misfit and score from InverseEnvMixin) ----------
    def _physical(self, x: np.ndarray) -> np.ndarray:
        return self.problem.physical(x)

    def _forward(self, params: np.ndarray) -> np.ndarray:
        return self.problem.trace(params)

    def _data_misfit(self, d_syn: np.ndarray) -> float:
        return self.problem.data_misfit(d_syn, self.instance)

    def _model_error(self, params: np.ndarray) -> float:
        return self.problem.model_error(params, self.instance)

    # -- gymnasium API ------------------------------------------------------------------------
    def _obs(self) -> np.ndarray:
        c_obs, c_syn = (np.cumsum(d**2)[::4] / max(float(np.sum(d**2)), 1e-12)
                        for d in (self._d_obs, self._d_syn))
        return np.concatenate([self._d_obs / TRACE_SCALE, (self._d_obs - self._d_syn) / TRACE_SCALE, c_obs,
                               c_obs - c_syn, 2.0 * self._x - 1.0, [self._t / self.steps, self._misfit]]
                              ).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Draw a hidden model and its observed trace; the estimate starts at the prior mean."""
        super().reset(seed=seed)
        self.instance = self.problem.sample_instance(self.np_random)
        self._true, self._d_obs = self.instance.cache["true"], self.instance.data
        self._e_obs = self.instance.cache["envelope"]
        # the observed trace stands in for field data: not counted
        self._calls_at_reset = self.problem.forward_calls
        self._x = self.problem.start()
        self._d_syn = self.problem.forward(self._x)
        self._misfit = self._data_misfit(self._d_syn)
        self._t = 0
        self._err = self._model_error(self._physical(self._x))
        return self._obs(), {"data_misfit": self._misfit, "is_success": self._success()}

    def _success(self) -> bool:
        return self._model_error(self._physical(self._x)) <= self.success_tolerance

    def step(self, action):
        """Move the estimate by ``step_size · action``; the reward is the reduction of the data misfit
        (``reward="data"``) or of the relative model error (``reward="model"``, as configs/seismic.yaml
        ships)."""
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(self.param_dim), -1.0, 1.0)
        self._x = np.clip(self._x + self.step_size * self.step_decay**self._t * a, 0.0, 1.0)
        self._d_syn = self.problem.forward(self._x)
        previous, self._misfit = self._misfit, self._data_misfit(self._d_syn)
        self._t += 1
        truncated = self._t >= self.steps
        info: dict[str, Any] = {"data_misfit": self._misfit, "is_success": self._success()}
        if truncated:
            info["episode_metrics"] = self.score(self._x)
        if self.reward == "model":
            err = self._model_error(self._physical(self._x))
            reward, self._err = self._err - err, err
        else:
            reward = previous - self._misfit
        return self._obs(), reward, False, truncated, info

    def render(self):
        """An RGB image: true vs estimated velocity against depth, and observed vs synthetic trace."""
        if self.render_mode != "rgb_array":
            return None
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        if self._fig is None:
            self._fig = Figure(figsize=(8, 4), dpi=80)
            FigureCanvasAgg(self._fig)
            self._fig.subplots(1, 2)
            self._fig.subplots_adjust(left=0.1, right=0.98, bottom=0.13, top=0.9, wspace=0.3)
        fig = self._fig
        left, right = fig.axes
        left.cla()
        right.cla()
        n, est = self.n_layers, self._physical(self._x)
        top = -0.25 * self.h_range[1]
        bottom = max(float(np.sum(self._true[n:])), float(np.sum(est[n:]))) + 100.0
        for params, style, label in ((self._true, "k-", "true"), (est, "r--", "estimate")):
            bounds = np.concatenate([[top, 0.0], np.cumsum(params[n:]), [bottom]])  # overburden, layers
            vel = np.concatenate([[self.v0], params[:n]])
            left.plot(np.repeat(vel, 2), np.column_stack([bounds[:-1], bounds[1:]]).ravel(), style,
                      label=label)
        left.set(xlabel="velocity (m/s)", ylabel="depth below the top of layer 1 (m)",
                 title="velocity profile")
        left.set_ylim(bottom, top)
        left.legend(loc="lower left")
        right.plot(self.times * 1000, self._d_obs, "k-", label="observed")
        right.plot(self.times * 1000, self._d_syn, "r--", label="synthetic")
        err = self._model_error(est)
        right.set(xlabel="two-way time (ms)", ylabel="amplitude",
                  title=f"step {self._t}/{self.steps}: misfit {self._misfit:.2f}, model error {err:.2f}")
        right.legend(loc="upper right")
        fig.canvas.draw()
        return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()

    def close(self) -> None:
        """Drop the figure; safe to call more than once."""
        self._fig = None
