"""The bridge's frame codec (docs/protocol.md, "Framing"): a message, a JSON header with binary arrays, to
one frame's bytes and back, every limit checked on the way in; :class:`HeaderCache` spares a channel the
headers it met before. Pure: no I/O (:mod:`envs.bridge.protocol` sends and receives the frames)."""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np

from envs.errors import ProtocolError
from envs.spaces import MAX_RANK

MAX_HEADER = 1024 * 1024
"""The largest JSON header accepted, in bytes."""
MAX_DEPTH = 64
"""The deepest nesting of JSON objects and lists accepted in a header."""
MAX_ARRAYS = 1024
"""The most arrays one message may carry."""
LENGTH = struct.Struct(">I")
"""A frame's big-endian u32 length fields: the payload's, then the header's."""


def _pack_value(value: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(value, np.ndarray):
        arrays.append(np.ascontiguousarray(value).reshape(value.shape))  # ascontiguousarray makes 0-d 1-d
        return {"$array": len(arrays) - 1}
    if isinstance(value, dict):
        return {str(k): _pack_value(v, arrays) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_pack_value(v, arrays) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


class HeaderCache:
    """The last few headers of one channel, both ways: what :func:`encode` and :func:`decode` would compute
    again for a message whose header is the same (a lock-step loop sends and receives the same few).

    Outgoing: a flat message (every field but ``type`` an array, a bool, a string or None) by its type, keys,
    dtypes, shapes and scalar values, to its JSON header. Incoming: a header's bytes to its checked parse
    (the body with ``$array`` references and the arrays' layouts). Only headers that passed every check are
    kept.
    """

    LIMIT = 16

    def __init__(self) -> None:
        self.out: dict[tuple[Any, ...], bytes] = {}
        self.into: dict[bytes, tuple[dict[str, Any], list[tuple[np.dtype, tuple[int, ...], int]]]] = {}

    def keep(self, table: dict[Any, Any], key: Any, value: Any) -> None:
        if len(table) >= self.LIMIT:
            table.pop(next(iter(table)))
        table[key] = value


class _Flat(dict[str, Any]):
    """A parsed header whose values are array references or scalars: ``plan`` is (key, array index or the
    value itself, never an int)."""

    plan: list[tuple[str, Any]]

    @classmethod
    def of(cls, body: dict[str, Any]) -> _Flat | None:
        plan: list[tuple[str, Any]] = []
        for k, v in body.items():
            if type(v) is dict and set(v) == {"$array"} and type(v["$array"]) is int:
                plan.append((k, v["$array"]))
            elif type(v) in (str, float, bool) or v is None:
                plan.append((k, v))
            else:  # an int (it would read as a reference), a list or a nested object
                return None
        flat = cls(body)
        flat.plan = plan
        return flat


def encode(message: dict[str, Any], cache: HeaderCache | None = None) -> bytes:
    """One frame: ``u32 length | u32 header length | JSON header | raw array bytes…`` (big-endian lengths)."""
    if cache is not None:
        key = _flat_key(message)
        if key is not None:
            header = cache.out.get(key)
            if header is None:
                frame = encode(message)
                cache.keep(cache.out, key, frame[8:8 + LENGTH.unpack_from(frame, 4)[0]])
                return frame
            datas = [np.ascontiguousarray(v).tobytes() for v in message.values() if type(v) is np.ndarray]
            payload = b"".join([LENGTH.pack(len(header)), header, *datas])
            return LENGTH.pack(len(payload)) + payload
    arrays: list[np.ndarray] = []
    body = _pack_value(message, arrays)
    body["arrays"] = [{"dtype": a.dtype.str, "shape": list(a.shape)} for a in arrays]
    header = json.dumps(body, separators=(",", ":")).encode()
    payload = b"".join([LENGTH.pack(len(header)), header, *(a.tobytes() for a in arrays)])
    return LENGTH.pack(len(payload)) + payload


def _flat_key(message: dict[str, Any]) -> tuple[Any, ...] | None:
    """What a flat message's header depends on (arrays' layouts, scalars' values, e.g. a step's
    ``autoreset: true``), or None when the message is not flat."""
    key: list[Any] = [message.get("type")]
    for k, v in message.items():
        if k != "type":
            if type(v) is np.ndarray:
                key.append((k, v.dtype.str, v.shape))
            elif type(v) in (bool, str) or v is None:
                key.append((k, v))
            else:
                return None
    return tuple(key)


def _unpack_value(value: Any, arrays: list[np.ndarray], depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise ProtocolError(f"header nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        if set(value) == {"$array"}:
            idx = value["$array"]
            if type(idx) is not int or not 0 <= idx < len(arrays):
                raise ProtocolError(f"array reference {idx!r} out of range (the message carries "
                                    f"{len(arrays)})")
            return arrays[idx]
        return {k: _unpack_value(v, arrays, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_unpack_value(v, arrays, depth + 1) for v in value]
    return value


def _array_layout(spec: Any, i: int) -> tuple[np.dtype, tuple[int, ...]]:
    """Check one ``arrays`` descriptor: a numeric dtype with itemsize > 0 and a shape of rank <= MAX_RANK."""
    if (not isinstance(spec, dict) or not isinstance(spec.get("dtype"), str)
            or not isinstance(spec.get("shape"), list)):
        raise ProtocolError(f"arrays[{i}] must be an object with a string 'dtype' and a list 'shape', got "
                            f"{str(spec)[:80]}")
    try:
        dtype = np.dtype(spec["dtype"])
    except Exception as e:  # numpy raises TypeError, ValueError or SyntaxError on odd strings
        raise ProtocolError(f"arrays[{i}].dtype {spec['dtype'][:40]!r} is not a NumPy type string") from e
    if dtype.kind not in "biuf" or dtype.itemsize <= 0 or dtype.fields is not None or dtype.shape != ():
        raise ProtocolError(f"arrays[{i}].dtype {spec['dtype'][:40]!r} is not allowed: only bool, integer "
                            "and float types with a non-zero itemsize")
    shape = spec["shape"]
    if len(shape) > MAX_RANK or not all(type(s) is int and s >= 0 for s in shape):
        raise ProtocolError(f"arrays[{i}].shape must be at most {MAX_RANK} non-negative integers, got "
                            f"{str(shape)[:80]}")
    return dtype, tuple(shape)


def decode(payload: bytes, cache: HeaderCache | None = None) -> dict[str, Any]:
    """Parse a frame's payload (without its length prefix); every violation is a :class:`ProtocolError`.

    ``cache``: headers already parsed on this channel; a header met before is not parsed or checked again
    (only the arrays' bytes are), and one that passed every check is kept.
    """
    if len(payload) < 4:
        raise ProtocolError(f"frame of {len(payload)} bytes is shorter than its header length field")
    (hlen,) = LENGTH.unpack_from(payload)
    if hlen > len(payload) - 4:
        raise ProtocolError(f"header length {hlen} exceeds the frame ({len(payload) - 4} bytes)")
    if cache is not None:
        raw = bytes(payload[4:4 + hlen])
        known = cache.into.get(raw)
        if known is not None and 4 + hlen + sum(n for _, _, n in known[1]) == len(payload):
            offset, arrays = 4 + hlen, []
            for dtype, shape, nbytes in known[1]:
                arrays.append(np.frombuffer(payload, dtype=dtype, count=math.prod(shape),
                                            offset=offset).reshape(shape))
                offset += nbytes
            body = known[0]
            if type(body) is _Flat:  # top-level references only: one dict built, nothing walked
                return {k: arrays[v] if type(v) is int else v for k, v in body.plan}
            return _unpack_value(body, arrays, 0)
        msg, layouts = _decode(payload, hlen)
        if hlen <= 4096:  # a small header (a step's); big ones (a spec, infos) are parsed each time
            cache.keep(cache.into, raw, (_Flat.of(msg[0]) or msg[0], layouts))
        return msg[1]
    return _decode(payload, hlen)[0][1]


def _decode(payload: bytes, hlen: int) -> tuple[tuple[dict[str, Any], dict[str, Any]],
                                                list[tuple[np.dtype, tuple[int, ...], int]]]:
    """The checked parse of a payload: (the body with references, the message), the arrays' layouts."""
    if hlen > MAX_HEADER:
        raise ProtocolError(f"header of {hlen} bytes is over the {MAX_HEADER}-byte limit")
    try:
        body = json.loads(payload[4:4 + hlen])
    except RecursionError as e:
        raise ProtocolError(f"header nests deeper than {MAX_DEPTH} levels") from e
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, integers over Python's digit limit
        raise ProtocolError(f"header is not valid JSON: {e}") from e
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        raise ProtocolError("header must be a JSON object with a string 'type'")
    specs = body.pop("arrays", [])
    if not isinstance(specs, list) or len(specs) > MAX_ARRAYS:
        raise ProtocolError(f"'arrays' must be a list of at most {MAX_ARRAYS} descriptors, got "
                            f"{type(specs).__name__}{f' of {len(specs)}' if isinstance(specs, list) else ''}")
    arrays, offset, layouts = [], 4 + hlen, []
    for i, spec in enumerate(specs):
        dtype, shape = _array_layout(spec, i)
        nbytes = dtype.itemsize * math.prod(shape)
        if offset + nbytes > len(payload):
            raise ProtocolError(f"arrays[{i}] {spec!r} needs {nbytes} bytes, only {len(payload) - offset} "
                                "remain")
        arrays.append(np.frombuffer(payload, dtype=dtype, count=math.prod(shape),
                                    offset=offset).reshape(shape))
        layouts.append((dtype, shape, nbytes))
        offset += nbytes
    if offset != len(payload):
        raise ProtocolError(f"{len(payload) - offset} trailing bytes after the arrays")
    return (body, _unpack_value(body, arrays, 0)), layouts
