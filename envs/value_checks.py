"""The value checks of the Guard: one observation or reward against its space, and a whole batch at once.

Per value: :func:`check` (validate and snap rounding noise onto the bounds in one pass),
:func:`obs_problem`, :func:`reward_problem` (the repairs are in :mod:`envs.repair`). Per batch:
:func:`valid_rows` and :func:`valid_rewards` test the stacked observations and rewards of N envs (or of the
K instances of one program) in one NumPy pass each and say which envs are certainly valid; only the others
need the per-value check. None of them raises, whatever an adapter returns. envs/guard.py re-exports them.
"""

from __future__ import annotations

import logging
import reprlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from envs.faults import FaultKind

log = logging.getLogger(__name__)
NAN_POLICIES = ("truncate", "clip", "raise")
BOUNDS_POLICIES = ("clip", "truncate", "raise")
_repr = reprlib.Repr()
_repr.maxstring, _repr.maxother, _repr.maxlong, _repr.maxlevel = 60, 60, 40, 3
REWARD_LIMIT = float(np.finfo(np.float32).max)
"""The largest reward magnitude the learners can hold: SB3's buffers and RLlib's batches are float32, where a
larger finite reward (1e308) is inf and turns the losses, then the weights, into NaN."""


def _short(value: Any) -> str:
    """A bounded repr of anything an adapter may return (huge ints and raising ``__repr__`` included)."""
    try:
        return _repr.repr(value)
    except Exception:
        return f"<{type(value).__name__}>"


@dataclass(frozen=True)
class Problem:
    """Why a value does not belong where it was returned.

    Attributes:
        kind: ``NONFINITE`` (NaN or ±inf) or ``INVALID_OUTPUT`` (type, shape, dtype, bounds).
        text: one line naming the place, the cause and the value.
        bounds: True when the value has the right type, shape and dtype and is finite, but lies past the
            declared bounds (by more than rounding noise): :func:`clip_to_bounds` repairs it.
    """

    kind: FaultKind
    text: str
    bounds: bool = False

    def __str__(self) -> str:
        return self.text


def _invalid(text: str) -> Problem:
    return Problem(FaultKind.INVALID_OUTPUT, text)


def _box_problem(space: spaces.Box, obs: Any, path: str) -> Problem | None:
    return _box_check(space, obs, path, cast=False)[0]


_CAST_SAID: set[tuple[str, str, str]] = set()


def _cast(arr: np.ndarray, dtype: np.dtype, path: str) -> tuple[Problem | None, np.ndarray | None]:
    """``arr`` in the space's ``dtype`` where that keeps its values (float into float, an integer into an
    integer that holds it or into float), as SB3 and RLlib would cast it; ``(None, None)`` for other dtypes.
    Third-party envs often return float64 for a float32 Box: that is no fault (said once per place)."""
    kind, target = arr.dtype.kind, dtype.kind
    if not ((kind == "f" and target == "f") or (kind in "iub" and target in "iuf")):
        return None, None
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype(dtype)
    if kind == "f" and not np.isfinite(out).all() and np.isfinite(arr).all():
        return _invalid(f"{path} has values beyond {dtype}'s range (its dtype {arr.dtype}, the space's "
                        f"{dtype})"), None
    if target in "iu" and not np.array_equal(out, arr):
        return _invalid(f"{path} has values that {dtype}, the space's dtype, cannot hold (its dtype "
                        f"{arr.dtype})"), None
    said = (path, str(arr.dtype), str(dtype))
    if said not in _CAST_SAID:
        _CAST_SAID.add(said)
        log.warning("%s has dtype %s, the space declares %s: cast on every step (return np.asarray(obs, "
                    "dtype=np.%s) to save it)", path, arr.dtype, dtype, dtype)
    return None, out


def _box_check(space: spaces.Box, obs: Any, path: str, cast: bool = True) -> tuple[Problem | None, Any]:
    """The Box check, and ``obs`` clipped onto the bounds when it strays past them by rounding noise only,
    or cast to the space's dtype where that keeps its values (``cast``; :func:`obs_problem` reports the
    dtype instead)."""
    arr = np.asarray(obs)
    if arr.shape != space.shape:
        return _invalid(f"{path} has shape {arr.shape}, the space declares {space.shape}"), obs
    if arr.dtype != space.dtype:
        problem, converted = _cast(arr, np.dtype(space.dtype), path) if cast else (None, None)
        if problem is not None:
            return problem, obs
        if converted is None:
            return _invalid(f"{path} has dtype {arr.dtype}, the space declares {space.dtype}; "
                            f"return np.asarray(obs, dtype=np.{space.dtype})"), obs
        arr = obs = converted
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        return Problem(FaultKind.NONFINITE, f"{path} contains {'NaN' if np.isnan(arr).any() else 'inf'}"), obs
    outside = (arr < space.low) | (arr > space.high)
    if not outside.any():
        return None, obs
    if arr.dtype.kind == "f":  # rounding noise (1 + 1e-16 against a bound of 1) is no fault: snap it on
        tol = tolerance(space)
        outside = (arr < space.low - tol) | (arr > space.high + tol)
        if not outside.any():
            return None, np.clip(arr, space.low, space.high).astype(space.dtype)
    idx = int(np.argmax(outside))
    value, low, high = (a.ravel()[idx].item() for a in (arr, space.low, space.high))
    return Problem(FaultKind.INVALID_OUTPUT, f"{path} is out of bounds at flat index {idx}: {value!r} "
                   f"not in [{low!r}, {high!r}]", bounds=True), obs


ROUNDING_ULPS = 16
"""How many units in the last place past a float bound still count as on it (see :func:`tolerance`)."""


def tolerance(space: spaces.Box) -> np.ndarray:
    """The float slack allowed past ``space``'s bounds: ``ROUNDING_ULPS`` × the dtype's epsilon × max(1,
    |bound|).

    For float64 and bounds of magnitude ≤ 1 that is 3.6e-15; for float32, 1.9e-6. A value past it is a fault.
    """
    eps = np.finfo(space.dtype).eps
    bound = np.maximum(np.abs(np.where(np.isfinite(space.low), space.low, 0)),
                       np.abs(np.where(np.isfinite(space.high), space.high, 0)))
    return ROUNDING_ULPS * eps * np.maximum(1.0, bound)


def check(space: spaces.Space, obs: Any, path: str = "observation") -> tuple[Problem | None, Any]:
    """:func:`obs_problem` and, when it finds none, ``obs`` with float rounding noise clipped onto the bounds,
    in one pass over the values (the Guard calls it on every step). Never raises."""
    try:
        if isinstance(space, spaces.Box):
            return _box_check(space, obs, path)
        if isinstance(space, spaces.Dict) and isinstance(obs, dict) and set(obs) == set(space.spaces):
            out = {}
            for key, value in obs.items():
                problem, out[key] = check(space.spaces[key], value, f"{path}[{key!r}]")
                if problem:
                    return problem, obs
            return None, out
    except Exception:  # noqa: BLE001 - obs_problem names what cannot be checked
        pass
    return obs_problem(space, obs, path), obs


def obs_problem(space: spaces.Space, obs: Any, path: str = "observation") -> Problem | None:
    """Why ``obs`` does not belong to ``space``; None when it does. Never raises.

    Unlike ``space.contains`` it names the cause (dtype, shape, bounds, NaN/inf) and its kind, and unlike
    Gymnasium's checker it is cheap enough to run on every step.
    """
    try:
        if isinstance(space, spaces.Box):
            return _box_problem(space, obs, path)
        if isinstance(space, spaces.Dict):
            if not isinstance(obs, dict) or set(obs) != set(space.spaces):
                got = sorted(map(str, obs)) if isinstance(obs, dict) else type(obs).__name__
                return _invalid(f"{path} must be a dict with keys {sorted(space.spaces)}, got {_short(got)}")
            for key, sub in space.spaces.items():
                problem = obs_problem(sub, obs[key], f"{path}[{key!r}]")
                if problem:
                    return problem
            return None
        if isinstance(space, spaces.Tuple):
            if not isinstance(obs, tuple) or len(obs) != len(space.spaces):
                return _invalid(f"{path} must be a tuple of {len(space.spaces)} elements, got {_short(obs)}")
            for i, sub in enumerate(space.spaces):
                problem = obs_problem(sub, obs[i], f"{path}[{i}]")
                if problem:
                    return problem
            return None
        return None if space.contains(obs) else _invalid(f"{path} {_short(obs)} is not in {space}")
    except Exception as e:  # garbage that even the checks cannot digest: ragged lists, raising __array__, ...
        return _invalid(f"{path} {_short(obs)} cannot be checked against {space} ({type(e).__name__})")


def reward_problem(reward: Any) -> Problem | None:
    """Why ``reward`` is not a finite real scalar; None when it is. Never raises."""
    try:
        if isinstance(reward, (bool, np.bool_)):
            return None
        arr = np.asarray(reward) if isinstance(reward, (int, float, np.number, np.ndarray)) else None
        if arr is None or arr.dtype.kind not in "iuf":
            return _invalid(f"reward {_short(reward)} is not a number")
        if arr.ndim != 0:
            return _invalid(f"reward has shape {arr.shape}, expected a scalar")
        value = float(arr)
    except Exception:  # an int beyond float range, a subclass with a raising __float__
        return _invalid(f"reward {_short(reward)} is not a real number within float range")
    if not np.isfinite(value):
        return Problem(FaultKind.NONFINITE, f"reward is {value}")
    if abs(value) > REWARD_LIMIT:
        return Problem(FaultKind.NONFINITE, f"reward {value:g} is inf as float32, the learner's dtype "
                                            f"(finite rewards are at most {REWARD_LIMIT:.3g} in magnitude)")
    return None


_REWARD_KINDS = frozenset("biuf")


def valid_rewards(rewards: Any) -> np.ndarray:
    """Which of N rewards are certainly finite real scalars, in one NumPy pass; False means "check this one
    with :func:`reward_problem`" (a string, an array, a huge int, NaN, ...). Never raises."""
    try:
        n = len(rewards)
        arr = np.asarray(rewards)
        if arr.shape != (n,) or arr.dtype.kind not in _REWARD_KINDS:
            return np.zeros(n, dtype=bool)
        if arr.dtype.kind != "f":
            return np.ones(n, dtype=bool)
        return np.isfinite(arr) & (np.abs(arr) <= REWARD_LIMIT)  # 1e308 is finite, but inf as float32
    except Exception:  # ragged or unsized input: everything goes to the per-value check
        try:
            return np.zeros(len(rewards), dtype=bool)
        except Exception:
            return np.zeros(0, dtype=bool)


_FLOATS = (float, np.float64, np.float32)


def all_finite_floats(rewards: Any) -> bool:
    """True when every reward is a finite Python or NumPy float within float32 range (:func:`valid_rewards`'
    fast path, no NumPy call); False sends the batch to :func:`valid_rewards`."""
    try:  # the sum of magnitudes bounds each one; NaN fails the comparison
        return all(type(r) in _FLOATS for r in rewards) and sum(map(abs, rewards)) <= REWARD_LIMIT
    except Exception:  # an overflow on the way: let the per-value test decide
        return False


class RowCheck:
    """The batched observation check for one space: which of N observations are certainly valid, in one pass.

    "Certainly valid" means of the declared type, shape and dtype, finite and within the exact bounds: what
    :func:`check` would accept unchanged. For a float Box without finite bounds one ``isfinite`` over the
    whole stacked batch is the test; otherwise one comparison against bounds whose infinities are replaced by
    the dtype's largest finite value catches NaN, ±inf and out-of-bounds values at once. Only when that fails
    is the batch split by row. Every observation not vouched for (rounding noise to snap, a NaN, a wrong
    shape, garbage) is left to the per-value :func:`check`, so the policies and fault texts stay exactly those
    of one env. Box spaces and (nested) Dicts of them are batched; for any other space nothing is vouched for
    (:attr:`batchable` is False).

    Args:
        space: the observation space of every env in the batch.
    """

    def __init__(self, space: spaces.Space) -> None:
        self.space = space
        self._parts: list[tuple[tuple[str, ...], tuple[int, ...], np.dtype, np.ndarray | None,
                                np.ndarray | None]] = []
        self.batchable = self._collect(space, ())
        self._box = self.batchable and isinstance(space, spaces.Box)

    def _collect(self, space: spaces.Space, path: tuple[str, ...]) -> bool:
        if isinstance(space, spaces.Dict):
            return all(self._collect(sub, (*path, key)) for key, sub in space.spaces.items())
        if not isinstance(space, spaces.Box) or space.dtype is None or space.dtype.kind not in "iuf":
            return False
        low, high = np.asarray(space.low), np.asarray(space.high)
        if space.dtype.kind == "f":
            if not (np.isfinite(low).any() or np.isfinite(high).any()):  # finiteness is the whole test
                self._parts.append((path, space.shape, space.dtype, None, None))
                return True
            big = np.finfo(space.dtype).max  # an infinite bound admits every finite value, not ±inf itself
            low, high = np.where(np.isfinite(low), low, -big), np.where(np.isfinite(high), high, big)
        self._parts.append((path, space.shape, space.dtype, low.astype(space.dtype),
                            high.astype(space.dtype)))
        return True

    @staticmethod
    def _get(value: Any, path: tuple[str, ...]) -> Any:
        for key in path:
            value = value[key]
        return value

    def _shaped(self, value: Any) -> bool:
        """True when ``value`` has the space's structure, shapes and dtypes (so that it stacks)."""
        if self._box:
            _, shape, dtype, _, _ = self._parts[0]
            return type(value) is np.ndarray and value.dtype == dtype and value.shape == shape
        try:
            if isinstance(self.space, spaces.Dict) and not (isinstance(value, dict)
                                                            and len(value) == len(self.space)):
                return False
            for path, shape, dtype, _, _ in self._parts:
                arr = self._get(value, path)
                if type(arr) is not np.ndarray or arr.dtype != dtype or arr.shape != shape:
                    return False
            return True
        except Exception:  # a missing key, a value that cannot be indexed
            return False

    def _inside(self, arr: np.ndarray, low: np.ndarray | None, high: np.ndarray | None,
                rows: int) -> np.ndarray | None:
        """None when every value of ``arr`` is valid, else one bool per row (``rows`` rows)."""
        if low is None or high is None:
            finite = np.isfinite(arr)
            return None if finite.all() else np.asarray(finite.reshape(max(rows, 1), -1).all(axis=1))
        inside = (arr >= low) & (arr <= high)
        return None if inside.all() else np.asarray(inside.reshape(max(rows, 1), -1).all(axis=1))

    def valid(self, values: Any) -> np.ndarray:
        """One bool per observation of ``values`` (a sequence, or for a Box space an array stacked along its
        first axis, as a K-instance program returns them): True when it is certainly valid. Never raises."""
        n = len(values)
        if not self.batchable or n == 0:
            return np.zeros(n, dtype=bool)
        if self._box and type(values) is np.ndarray:
            _, shape, dtype, low, high = self._parts[0]
            if values.dtype != dtype or values.shape[1:] != shape:
                return np.zeros(n, dtype=bool)
            rows = self._inside(values, low, high, n)
            return np.ones(n, dtype=bool) if rows is None else rows
        shaped = [self._shaped(v) for v in values]
        if all(shaped):
            idx, out = None, np.ones(n, dtype=bool)
        else:
            idx = [i for i in range(n) if shaped[i]]
            out = np.zeros(n, dtype=bool)
            if not idx:
                return out
            out[idx] = True
        picked = values if idx is None else [values[i] for i in idx]
        for path, _, _, low, high in self._parts:
            rows = self._inside(np.array([self._get(v, path) for v in picked] if path else picked), low, high,
                                len(picked))
            if rows is not None:
                if idx is None:
                    out &= rows
                else:
                    out[idx] &= rows
        return out

    def all_valid(self, values: Any) -> bool:
        """True when every observation of ``values`` is certainly valid: :meth:`valid`'s fast path, one test
        in all."""
        if not self.batchable or not values or not all(self._shaped(v) for v in values):
            return False
        for path, _, _, low, high in self._parts:
            stacked = np.array([self._get(v, path) for v in values] if path else values)
            if self._inside(stacked, low, high, 0) is not None:
                return False
        return True

    def valid_one(self, value: Any) -> bool:
        """:meth:`valid` for a single observation, without stacking."""
        if not self.batchable or not self._shaped(value):
            return False
        return all(self._inside(self._get(value, path), low, high, 1) is None
                   for path, _, _, low, high in self._parts)


def valid_rows(space: spaces.Space, values: Any) -> np.ndarray:
    """Which of the N observations in ``values`` certainly belong to ``space`` (see :class:`RowCheck`; build
    one RowCheck and reuse it when checking every step)."""
    return RowCheck(space).valid(values)
