"""Gymnasium spaces as JSON: used by the bridge handshake and by checkpoints (format: docs/protocol.md)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from envs.errors import SpecError

if TYPE_CHECKING:  # the writer runs with NumPy alone (the SDK); only the parser needs Gymnasium
    from gymnasium import spaces

MAX_RANK = 32
"""The most dimensions a space (and an array on the wire, envs/bridge/protocol.py) may have."""

MAX_SPACE_ELEMENTS = 2**24
"""Default cap on the number of scalar elements a declared space may have (all Box/Multi* parts together)."""
_MAX_NESTING = 16
_INT64_MAX = 2**63 - 1


_KINDS = ("Box", "Discrete", "MultiDiscrete", "MultiBinary", "Dict", "Tuple")


def _bound_to_json(x: float) -> float | None:
    return None if math.isinf(x) else x


def space_to_json(space: Any) -> dict[str, Any]:
    """Describe a Gymnasium space in JSON (Box, Discrete, MultiDiscrete, MultiBinary, Dict, Tuple).

    Infinite Box bounds are written as ``null``, so the result is standard JSON. The space is recognised
    by its class name (its own or a base class's), so this runs without importing Gymnasium; a program
    with NumPy alone may also give the JSON description itself (a dict), which is returned as it is.
    """
    if isinstance(space, dict):
        return space
    kind = next((c.__name__ for c in type(space).__mro__ if c.__name__ in _KINDS), None)
    if kind == "Box":
        low = np.vectorize(_bound_to_json, otypes=[object])(space.low).tolist() if space.low.size else []
        high = np.vectorize(_bound_to_json, otypes=[object])(space.high).tolist() if space.high.size else []
        return {"type": "Box", "low": low, "high": high, "shape": list(space.shape),
                "dtype": str(space.dtype)}
    if kind == "Discrete":
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if kind == "MultiDiscrete":
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist()}
    if kind == "MultiBinary":
        return {"type": "MultiBinary", "n": np.asarray(space.n).tolist()}
    if kind == "Dict":
        return {"type": "Dict", "spaces": {k: space_to_json(s) for k, s in space.spaces.items()}}
    if kind == "Tuple":
        return {"type": "Tuple", "spaces": [space_to_json(s) for s in space.spaces]}
    raise TypeError(f"cannot describe space {space!r}")


class _Budget:
    """Counts declared elements across a composite space against the cap, for ``copies`` instances at once."""

    def __init__(self, cap: int, copies: int = 1) -> None:
        self.cap, self.copies, self.used = cap, copies, 0

    def room(self) -> int:
        """Elements one instance may still declare."""
        return max(0, self.cap // self.copies - self.used)

    def take(self, n: int, where: str) -> None:
        self.used += n
        if self.used * self.copies > self.cap:
            if self.copies == 1:
                raise SpecError(f"{where}: the space declares {self.used:,} or more elements, over the limit "
                                f"of {self.cap:,} (env.max_space_elements); declare a smaller space")
            raise SpecError(f"{where}: {self.copies:,} instances × {self.used:,} or more elements each = "
                            f"{self.used * self.copies:,}, over the limit of {self.cap:,} "
                            "(env.max_space_elements); declare fewer num_instances or a smaller space")


def _int(value: Any, where: str, lo: int, hi: int = _INT64_MAX) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise SpecError(f"{where}: expected an integer in [{lo}, {hi}], got {str(value)[:60]}")
    return value


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > MAX_RANK:
        raise SpecError(f"{where}: expected a list of at most {MAX_RANK} positive integers, got "
                        f"{str(value)[:60]}")
    return tuple(_int(s, f"{where}[{i}]", 1) for i, s in enumerate(value))


def _scalar_bound(x: Any, infinite: float, where: str) -> float:
    if x is None:
        return infinite
    if isinstance(x, str) and x.lower() in ("inf", "+inf", "-inf", "infinity", "-infinity", "+infinity"):
        return -math.inf if x.startswith("-") else math.inf
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise SpecError(f"{where}: expected a number, null, \"inf\" or \"-inf\", got {str(x)[:40]}")
    try:
        value = float(x)
    except OverflowError as e:
        raise SpecError(f"{where}: {str(x)[:40]} is too large for a bound") from e
    if math.isnan(value):
        raise SpecError(f"{where}: NaN is not a bound")
    return value


def _flatten(x: Any, where: str, out: list[Any], limit: int, depth: int = 0) -> None:
    if isinstance(x, list):
        if depth >= MAX_RANK:
            raise SpecError(f"{where}: nested deeper than {MAX_RANK} levels")
        for v in x:
            _flatten(v, where, out, limit, depth + 1)
    else:
        out.append(x)
        if len(out) > limit:
            raise SpecError(f"{where}: more values than the shape has elements ({limit:,})")


def _bounds(x: Any, shape: tuple[int, ...], infinite: float, where: str) -> np.ndarray:
    """A scalar (broadcast), a flat list of prod(shape) values, or a nested list of the shape."""
    size = math.prod(shape)
    if not isinstance(x, list):
        return np.full(shape, _scalar_bound(x, infinite, where), dtype=np.float64)
    flat: list[Any] = []
    _flatten(x, where, flat, size)
    if len(flat) != size:
        raise SpecError(f"{where}: {len(flat)} values for shape {list(shape)} ({size} elements); give one "
                        f"number, a flat list of {size}, or nested lists of that shape")
    if len(shape) > 1 and np.shape(np.asarray(x, dtype=object)) not in (shape, (size,)):
        raise SpecError(f"{where}: nested lists of shape {list(np.shape(np.asarray(x, dtype=object)))}, the "
                        f"space's shape is {list(shape)}")
    return np.array([_scalar_bound(v, infinite, where) for v in flat], dtype=np.float64).reshape(shape)


def _box(d: dict[str, Any], where: str, budget: _Budget) -> spaces.Box:
    from gymnasium import spaces

    dtype_name = d.get("dtype", "float32")
    try:
        dtype = np.dtype(dtype_name) if isinstance(dtype_name, str) else None
    except Exception as e:  # numpy raises TypeError, ValueError or SyntaxError on odd strings
        raise SpecError(f"{where}.dtype: {str(dtype_name)[:40]!r} is not a NumPy type name") from e
    if dtype is None or dtype.kind not in "biuf" or dtype.fields is not None or dtype.shape != ():
        raise SpecError(f"{where}.dtype: expected a numeric type name such as \"float32\" or \"uint8\", "
                        f"got {str(dtype_name)[:40]!r}")
    if "shape" in d:
        shape = _shape(d["shape"], f"{where}.shape")
    elif isinstance(d.get("low"), list):
        shape = tuple(np.shape(np.asarray(d["low"], dtype=object)))[:MAX_RANK]
        if math.prod(shape) > budget.room():
            budget.take(math.prod(shape), f"{where}.low")
        shape = _shape(list(shape), f"{where}.low (shape)")
    else:
        raise SpecError(f"{where}.shape: missing (a Box needs 'shape', or nested 'low'/'high' lists that "
                        "give it)")
    budget.take(math.prod(shape), where)
    for key in ("low", "high"):
        if key not in d:
            raise SpecError(f"{where}.{key}: missing (a number, null for infinite, or a list)")
    low = _bounds(d["low"], shape, -math.inf, f"{where}.low")
    high = _bounds(d["high"], shape, math.inf, f"{where}.high")
    if np.any(low > high):
        i = int(np.argmax(low > high))
        raise SpecError(f"{where}: low > high at flat index {i} ({low.flat[i]} > {high.flat[i]})")
    if dtype.kind != "f":
        info = np.iinfo(dtype) if dtype.kind in "iu" else None
        lo_min, hi_max = (info.min, info.max) if info else (0, 1)
        low, high = np.clip(low, lo_min, hi_max), np.clip(high, lo_min, hi_max)
        if np.any(low != np.floor(low)) or np.any(high != np.floor(high)):
            raise SpecError(f"{where}: an integer Box needs integer bounds")
    return spaces.Box(low.astype(dtype), high.astype(dtype), shape=shape, dtype=dtype.type)  # type: ignore[arg-type]


def space_from_json(d: Any, max_elements: int = MAX_SPACE_ELEMENTS, *, where: str = "space",
                    instances: int = 1, _budget: _Budget | None = None, _depth: int = 0) -> spaces.Space:
    """Inverse of :func:`space_to_json`, strict: every malformed field raises :class:`SpecError` naming it.

    Args:
        d: the JSON description.
        max_elements: refuse spaces with more scalar elements than this, before allocating anything.
        where: the field's name in error messages.
        instances: the instances that declare this space together (a program's ``num_instances``, K): the
            cap holds for K × the elements of one instance, of every space type.
    """
    from gymnasium import spaces

    budget = _budget or _Budget(max_elements, instances)
    if _depth > _MAX_NESTING:
        raise SpecError(f"{where}: Dict/Tuple spaces nested deeper than {_MAX_NESTING} levels")
    if not isinstance(d, dict) or not isinstance(d.get("type"), str):
        raise SpecError(f"{where}: expected an object with a string 'type', got {str(d)[:60]}")
    kind = d["type"]
    if kind == "Box":
        return _box(d, where, budget)
    if kind == "Discrete":
        n = _int(d.get("n"), f"{where}.n", 1)
        start = _int(d.get("start", 0), f"{where}.start", -_INT64_MAX, _INT64_MAX - n)
        budget.take(1, where)
        return spaces.Discrete(n, start=start)
    if kind == "MultiBinary":  # ``n`` is a shape: its elements are the product, not the length
        raw = d.get("n")
        shape = _shape(raw, f"{where}.n") if isinstance(raw, list) else (_int(raw, f"{where}.n", 1),)
        budget.take(math.prod(shape), where)
        return spaces.MultiBinary(list(shape) if isinstance(raw, list) else shape[0])
    if kind == "MultiDiscrete":
        raw = d.get("nvec")
        flat: list[Any] = []
        if not isinstance(raw, list):
            raise SpecError(f"{where}.nvec: expected a list of positive integers, got {str(raw)[:60]}")
        try:
            _flatten(raw, f"{where}.nvec", flat, budget.room())
        except SpecError:
            budget.take(len(flat), where)  # over the cap: the budget's message says so
            raise
        budget.take(len(flat), where)
        for i, v in enumerate(flat):
            _int(v, f"{where}.nvec[{i}]", 1)
        try:
            return spaces.MultiDiscrete(np.array(raw, dtype=np.int64))
        except ValueError as e:
            raise SpecError(f"{where}.nvec: ragged nested lists") from e
    if kind == "Dict":
        subs = d.get("spaces")
        if not isinstance(subs, dict):
            raise SpecError(f"{where}.spaces: expected an object of name -> space, got {str(subs)[:60]}")
        return spaces.Dict({k: space_from_json(s, max_elements, where=f"{where}.spaces[{k[:40]!r}]",
                                               _budget=budget, _depth=_depth + 1) for k, s in subs.items()})
    if kind == "Tuple":
        subs = d.get("spaces")
        if not isinstance(subs, list):
            raise SpecError(f"{where}.spaces: expected a list of spaces, got {str(subs)[:60]}")
        return spaces.Tuple([space_from_json(s, max_elements, where=f"{where}.spaces[{i}]", _budget=budget,
                                             _depth=_depth + 1) for i, s in enumerate(subs)])
    raise SpecError(f"{where}.type: unknown space type {kind[:40]!r}; expected Box, Discrete, MultiDiscrete, "
                    "MultiBinary, Dict or Tuple")
