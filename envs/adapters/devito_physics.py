"""The devito adapter's forward model (envs/adapters/devito.py): the layered velocity model with anomalies on
the grid, the absorbing layer's damping profile, the Ricker source, the CFL time step, the Devito acoustic
operator (:class:`WaveSolver`, Devito set up by :func:`load_devito`) and the processing of the recorded
gathers (resampling, smoothed envelope). Devito is imported only when a solver is built.

Units are Devito's seismic units: metres, milliseconds and km/s (so a frequency is in kHz).
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from envs.errors import UserError

LAYER = 3
"""Parameters of the layered background: interface depth, top velocity, bottom velocity."""
ANOMALY = 4
"""Parameters per anomaly: centre x, centre z, radius, velocity."""


def ramp(signed: np.ndarray, width: float) -> np.ndarray:
    """A linear step from 0 to 1 across ``width`` centred on ``signed = 0``: the cell average of a sharp
    edge (exact for a straight edge through a cell), so the grid moves continuously with the parameters."""
    return np.clip(signed / width + 0.5, 0.0, 1.0)


def velocity_model(params: np.ndarray, n: int, spacing: float) -> np.ndarray:
    """The velocity grid ``float64[n, n]`` (x first, z second, km/s) of physical parameters.

    Args:
        params: ``[z_if, v_top, v_bottom, (x_a, z_a, r_a, v_a) × anomalies]`` in m and km/s.
        n: grid points per side (the physical domain, without the absorbing layer).
        spacing: grid spacing in m.
    """
    coords = np.arange(n) * spacing
    x, z = coords[:, None], coords[None, :]
    z_if, v_top, v_bottom = params[:LAYER]
    v = v_top + (v_bottom - v_top) * ramp(z - z_if, spacing) * np.ones_like(x)
    for xa, za, ra, va in np.asarray(params[LAYER:]).reshape(-1, ANOMALY):
        w = ramp(ra - np.hypot(x - xa, z - za), spacing)
        v = (1.0 - w) * v + w * va
    return v


def pad_edge(v: np.ndarray, cells: int) -> np.ndarray:
    """The model extended into the absorbing layer by repeating its edge values (Devito's convention)."""
    return np.pad(v, cells, mode="edge")


def damping(n: int, cells: int, spacing: float) -> np.ndarray:
    """The absorbing layer's damping coefficient on the padded grid ``(n + 2·cells)²``: zero inside, rising
    as ``pos − sin(2π·pos)/2π`` towards the outer edge (Devito's examples/seismic ``initialize_damp``, with
    its coefficient ``1.5·ln(1000)/cells``)."""
    total = n + 2 * cells
    profile = np.zeros(total)
    coeff = 1.5 * math.log(1000.0) / cells
    for i in range(cells):
        pos = (cells - i) / cells
        val = coeff * (pos - math.sin(2 * math.pi * pos) / (2 * math.pi)) / spacing
        profile[i] += val
        profile[total - 1 - i] += val
    return profile[:, None] + profile[None, :]


def ricker(t: np.ndarray, f: float) -> np.ndarray:
    """Devito's RickerSource: peak frequency ``f`` (kHz), delayed by ``1/f`` so that it starts near zero."""
    r = math.pi * f * (t - 1.0 / f)
    return (1.0 - 2.0 * r**2) * np.exp(-(r**2))


def cfl_dt(space_order: int, spacing: float, v_max: float) -> float:
    """Devito's critical time step (examples/seismic ``critical_dt``) for the 2-D acoustic equation: the
    Courant number ``sqrt(4 / (2·Σ|c|))`` of its second-derivative weights ``c`` over ``±space_order``,
    times ``spacing / v_max``, rounded to 4 significant digits."""
    from sympy import finite_diff_weights

    weights = finite_diff_weights(2, list(range(-space_order, space_order + 1)), 0)[-1][-1]
    courant = math.sqrt(4.0 / (2.0 * float(sum(abs(c) for c in weights))))
    return float(f"{courant * spacing / v_max:.3e}")


def resample(record: np.ndarray, dt: float, t_out: np.ndarray) -> np.ndarray:
    """A record ``[nt, ...]`` sampled every ``dt`` ms, linearly interpolated at the times ``t_out``."""
    pos = np.clip(t_out / dt, 0.0, record.shape[0] - 1.0)
    i = np.minimum(pos.astype(int), record.shape[0] - 2)
    w = (pos - i).reshape((-1,) + (1,) * (record.ndim - 1))
    return (1.0 - w) * record[i] + w * record[i + 1]


def envelope(d: np.ndarray, sigma: float) -> np.ndarray:
    """Each trace's Hilbert envelope ``|d + i·H[d]|`` along the last axis, smoothed by a Gaussian of ``sigma``
    samples (both by FFT, zero-padded: no wrap-around)."""
    n = d.shape[-1]
    n_fft = 1 << (2 * n - 1).bit_length()
    spectrum = np.fft.fft(d, n_fft, axis=-1)
    spectrum[..., 1 : n_fft // 2] *= 2.0
    spectrum[..., n_fft // 2 + 1 :] = 0.0
    env = np.abs(np.fft.ifft(spectrum, axis=-1)[..., :n])
    freq = np.fft.rfftfreq(n_fft)
    smooth = np.fft.irfft(np.fft.rfft(env, n_fft, axis=-1) * np.exp(-2.0 * (math.pi * sigma * freq) ** 2),
                          n_fft, axis=-1)
    return smooth[..., :n]


INSTALL = "pip install 'nondiff[devito]' (make install does it)"


def cache_dir() -> Path:
    """Where Devito's compiled operators are kept: ``$XDG_CACHE_HOME/nondiff/devito`` (``~/.cache/...``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nondiff" / "devito"


def load_devito() -> Any:
    """Import Devito set up for this adapter: C without OpenMP, quiet, its JIT cache under :func:`cache_dir`.

    Raises:
        UserError: Devito is not installed, or its C compiler is not on the PATH (one line, the install
            command included).
    """
    if "devito" not in sys.modules:
        os.environ.setdefault("DEVITO_LANGUAGE", "C")
        os.environ.setdefault("DEVITO_LOGGING", "ERROR")
    try:
        import devito
        import devito.arch.compiler as dcompiler
    except ImportError as e:
        raise UserError(f"devito: the Devito package is not installed ({e}); install it: {INSTALL}") from e
    devito.configuration["language"] = "C"
    devito.configuration["log-level"] = "ERROR"
    cc = devito.configuration["compiler"].CC
    if shutil.which(cc) is None:
        raise UserError(f"devito: no C compiler {cc!r} on the PATH (Devito compiles its operators); install "
                        "one, e.g. sudo apt-get install gcc (Debian/Ubuntu), or set CC to a compiler")
    root = cache_dir()

    def cached(prefix: str | None = None) -> Path:
        path = root / (prefix or "misc")
        path.mkdir(parents=True, exist_ok=True)
        return path

    dcompiler.make_tempdir = cached  # Devito's jitcache/ and codepy/ directories (arch/compiler.py)
    return devito


class WaveSolver:
    """The Devito acoustic operator on one geometry, built once; :meth:`gathers` runs it shot by shot.

    Attributes (read by benchmarks/experiments/devito_gradient.py, which builds its adjoint on them):
        grid, m, damp, u, src, rec: the Devito objects; dt (ms), nt (steps), wavelet (``float32[nt]``),
        sources (``[shots, 2]`` m), receivers (``[receivers, 2]`` m), n (physical points), cells (layer).
    """

    def __init__(self, *, n: int, spacing: float, cells: int, space_order: int, duration: float,
                 peak_frequency: float, v_max: float, shots: int, receivers: int) -> None:
        dv = load_devito()
        self.n, self.cells, self.spacing, self.space_order = n, cells, spacing, space_order
        total, extent = n + 2 * cells, (n - 1) * spacing
        self.grid = dv.Grid(shape=(total, total), extent=((total - 1) * spacing,) * 2,
                            origin=(-cells * spacing,) * 2, dtype=np.float32)
        self.dt = cfl_dt(space_order, spacing, v_max)
        self.nt = int(np.ceil(duration / self.dt)) + 1
        self.m = dv.Function(name="m", grid=self.grid, space_order=space_order)
        self.damp = dv.Function(name="damp", grid=self.grid, space_order=0)
        self.damp.data[:] = damping(n, cells, spacing)
        self.u = dv.TimeFunction(name="u", grid=self.grid, time_order=2, space_order=space_order)
        self.src = dv.SparseTimeFunction(name="src", grid=self.grid, npoint=1, nt=self.nt)
        self.rec = dv.SparseTimeFunction(name="rec", grid=self.grid, npoint=receivers, nt=self.nt)
        self.wavelet = ricker(np.arange(self.nt) * self.dt, peak_frequency / 1000.0).astype(np.float32)
        self.src.data[:, 0] = self.wavelet
        depth = 2 * spacing
        self.sources = np.column_stack([extent * (np.arange(shots) + 0.5) / shots, np.full(shots, depth)])
        self.receivers = np.column_stack([np.linspace(0.0, extent, receivers), np.full(receivers, depth)])
        self.rec.coordinates.data[:] = self.receivers
        u, m, s = self.u, self.m, self.grid.stepping_dim.spacing
        pde = m * u.dt2 - u.laplace + self.damp * u.dt
        eqs = [dv.Eq(u.forward, dv.solve(pde, u.forward))]
        eqs += self.src.inject(field=u.forward, expr=self.src * s**2 / m)
        eqs += self.rec.interpolate(expr=u)
        self.op = dv.Operator(eqs, subs=self.grid.spacing_map, name="nondiff_acoustic")

    def set_model(self, v: np.ndarray) -> None:
        """Load a physical velocity grid (km/s, ``[n, n]``) as ``m = 1/v²``, extended into the layer."""
        self.m.data[:] = 1.0 / pad_edge(v, self.cells) ** 2

    def gathers(self, v: np.ndarray) -> np.ndarray:
        """The recorded gathers ``float32[shots, nt, receivers]`` of a velocity grid ``v`` (km/s)."""
        self.set_model(v)
        out = np.empty((len(self.sources), self.nt, self.rec.npoint), dtype=np.float32)
        for k, position in enumerate(self.sources):
            self.u.data[:] = 0.0
            self.src.coordinates.data[0] = position
            self.op.apply(time_M=self.nt - 2, dt=self.dt)
            out[k] = self.rec.data
        return out
