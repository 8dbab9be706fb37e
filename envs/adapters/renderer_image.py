"""The renderer adapter's image features (envs/adapters/renderer.py): shape descriptors of a picture
(:func:`moments`), the orientation difference of two pictures (:func:`turn`) and area pooling
(:func:`pool`). NumPy only.
"""

from __future__ import annotations

import numpy as np

N_MOMENTS = 10
"""Shape descriptors per picture (:func:`moments`)."""


def moments(img: np.ndarray) -> np.ndarray:
    """Shape descriptors of a picture's covered (non-black) pixels, each in ``[-1, 1]``.

    Area, centroid, orientation from the second central moments (a 2-fold pattern, e.g. a rectangle)
    and from the third (a 3-fold pattern, a triangle), and the mean colour: the image preprocessing a
    vision engineer would hand a small policy, computed from the picture alone.
    """
    s = img.shape[0]
    mask = img.max(axis=2) > 0.125
    n = int(mask.sum())
    out = np.zeros(N_MOMENTS)
    if n == 0:
        return out
    ys, xs = np.nonzero(mask)
    z = ((xs + 0.5) + 1j * (ys + 0.5)) / s
    c = z.mean()
    d = z - c
    r2 = float(np.mean(np.abs(d) ** 2)) or 1.0
    m2, m3 = np.mean(d**2) / r2, np.mean(d**3) / r2**1.5
    out[:] = [2 * n / s**2 - 1, 2 * c.real - 1, 2 * c.imag - 1, m2.real, m2.imag,
              np.clip(m3.real, -1, 1), np.clip(m3.imag, -1, 1), *(2 * img[mask].mean(axis=0) - 1)]
    return out


def turn(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """How far the current picture is turned from the target's, as unit vectors of the 2- and 3-fold
    orientation difference (the angle between two orientations wraps; these do not)."""
    out = []
    for i in (3, 5):  # second, third moments
        z = complex(target[i], target[i + 1]) * complex(current[i], -current[i + 1])
        out += [z.real / abs(z), z.imag / abs(z)] if abs(z) > 1e-6 else [0.0, 0.0]
    return np.array(out)


def pool(img: np.ndarray, n: int) -> np.ndarray:
    """Area-average an ``[S, S, 3]`` image to ``[n, n, 3]`` (``n`` divides ``S``)."""
    b = img.shape[0] // n
    return img.reshape(n, b, n, b, 3).mean(axis=(1, 3)) if b > 1 else img
