"""The seismic adapter's forward model (envs/adapters/seismic.py, "Forward model"): the Ricker wavelet,
Gardner densities, normal-incidence reflectivity, the convolutional trace and its smoothed Hilbert
envelope. NumPy only.
"""

from __future__ import annotations

import math

import numpy as np


def ricker(t: np.ndarray, f: float) -> np.ndarray:
    """The zero-phase Ricker wavelet of peak frequency ``f`` (Hz) at times ``t`` (s); ``w(0) = 1``."""
    a = (math.pi * f * t) ** 2
    return (1.0 - 2.0 * a) * np.exp(-a)


def gardner_density(v: np.ndarray) -> np.ndarray:
    """Gardner et al. (1974): density in g/cc from P velocity in m/s."""
    return 0.31 * np.power(v, 0.25)


def reflectivity(velocities: np.ndarray) -> np.ndarray:
    """Normal-incidence reflection coefficients between consecutive media (Gardner densities)."""
    z = gardner_density(velocities) * velocities
    return (z[1:] - z[:-1]) / (z[1:] + z[:-1])


def synthetic(velocities: np.ndarray, thicknesses: np.ndarray, t: np.ndarray, f: float,
              t0: float) -> np.ndarray:
    """Convolutional trace for media ``velocities`` (overburden first) and finite ``thicknesses``.

    Args:
        velocities: ``[v_0 (overburden), v_1 … v_N]`` in m/s.
        thicknesses: the ``N − 1`` finite layer thicknesses in m (the last layer is a half-space).
        t: sample times in s.
        f: Ricker peak frequency in Hz.
        t0: two-way time of the top of layer 1 in s.

    Returns:
        The trace ``Σ_i r_i w(t − τ_i)`` at ``t``.
    """
    r = reflectivity(velocities)
    tau = t0 + np.concatenate([[0.0], np.cumsum(2.0 * thicknesses / velocities[1:-1])])
    return ricker(t[None, :] - tau[:, None], f).T @ r


def envelope(d: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """The trace's Hilbert envelope ``|d + i·H[d]|`` (FFT analytic signal), smoothed by ``kernel``."""
    n = d.shape[-1]
    n_fft = 1 << (2 * n - 1).bit_length()  # zero padding: no wrap-around, and a fast power-of-two length
    spectrum = np.fft.rfft(d, n_fft)
    spectrum[1:-1] *= 2.0  # one-sided spectrum: positive frequencies doubled, negative ones zero
    return np.convolve(np.abs(np.fft.ifft(spectrum, n_fft)[:n]), kernel, mode="same")
