"""The nondiff bridge protocol (docs/protocol.md): framing, messages with binary arrays, HMAC.

Its errors (``BridgeError`` and below, ``StartupError`` for what retrying cannot heal) are part of the one
tree in :mod:`envs.errors`; its waits end early on the process-wide stop switch (:mod:`envs.stop`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import select
import socket
import struct
import sys
import time
from typing import Any

import numpy as np

from envs.errors import (
    BridgeError,
    BridgeTimeout,
    PeerClosed,
    ProtocolError,
    RemoteError,
    VersionError,
)
from envs.spaces import MAX_RANK
from envs.stop import check_stop

VERSION = "1.3"
"""This side's protocol version; 1.1 added ``num_instances`` (several env instances behind one connection),
1.2 ``autoreset`` (a K-instance program resets its finished instances within the step's reply), 1.3
``agents`` (a scene of agents in policy groups that finish at their own steps, envs/bridge/agentsmsg.py)."""
MAX_INSTANCES = 4096
"""The most env instances one program may declare (``spec.num_instances``)."""
MAX_MESSAGE = 64 * 1024 * 1024
"""Default limit on a frame's length, in bytes."""
MAX_HEADER = 1024 * 1024
"""The largest JSON header accepted, in bytes."""
MAX_DEPTH = 64
"""The deepest nesting of JSON objects and lists accepted in a header."""
MAX_ARRAYS = 1024
"""The most arrays one message may carry."""
_SLICE = 0.25
_TICK = 0.05
"""A socket channel's reads and writes block at most this long (``SO_RCVTIMEO``/``SO_SNDTIMEO``) before the
deadline and the stop switch are looked at again: one system call per read, where a non-blocking descriptor
takes a failed read, a ``select`` and a read."""
_LEN = struct.Struct(">I")


def _wait(rfds: list[int], wfds: list[int], deadline: float, timeout_error: BridgeError) -> None:
    """Wait for a descriptor in slices of at most 0.25 s, so that a stop request is seen promptly."""
    check_stop()
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise timeout_error
    select.select(rfds, wfds, [], min(remaining, _SLICE))


# -- byte channels -------------------------------------------------------------------------------------
class Channel:
    """A bidirectional byte stream over two file descriptors (pipes) or one (a socket), with deadlines."""

    def __init__(self, rfd: int, wfd: int, sock: socket.socket | None = None, timed: bool = False) -> None:
        self.rfd, self.wfd, self.sock = rfd, wfd, sock
        self._timed = timed
        """Blocking descriptors whose reads and writes time out by themselves after :data:`_TICK`."""
        self._buf = bytearray()
        self._mid_frame = False
        self.headers = HeaderCache()
        """Headers this channel sent and received, kept encoded and parsed (a step's are the same each
        time)."""
        os.set_blocking(rfd, timed)
        os.set_blocking(wfd, timed)

    @classmethod
    def from_socket(cls, sock: socket.socket) -> Channel:
        """Wrap a connected socket (its reads and writes time out by themselves where the system allows)."""
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tick = struct.pack("@ll", 0, int(_TICK * 1e6))  # struct timeval
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tick)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tick)
            timed = sys.platform.startswith("linux")
        except OSError:
            timed = False
        return cls(sock.fileno(), sock.fileno(), sock, timed)

    def _waited(self, fds: tuple[list[int], list[int]], deadline: float, error: BridgeError) -> None:
        """After a read or write that would block: a timed socket already waited its tick, so only the stop
        switch and the deadline are looked at; other descriptors wait in ``select``."""
        if not self._timed:
            _wait(*fds, deadline, error)
            return
        check_stop()
        if time.monotonic() >= deadline:
            raise error

    def read_exact(self, n: int, deadline: float) -> bytes:
        """Read exactly ``n`` bytes before ``deadline`` (monotonic), or raise; never spins on EOF.

        Reads are buffered: one ``read`` usually brings a whole reply, length prefix included, and
        ``select`` is called only when no data is waiting.
        """
        buf = self._buf
        while len(buf) < n:
            try:
                chunk = os.read(self.rfd, max(1 << 16, min(n - len(buf), 1 << 24)))
            except BlockingIOError:
                self._waited(([self.rfd], []), deadline, BridgeTimeout(
                    f"no complete message within the deadline ({len(buf)}/{n} bytes arrived)"))
                continue
            except OSError as e:
                raise PeerClosed(f"read failed: {e}") from e
            if not chunk:  # 0 bytes: the peer is gone
                where = "mid-frame" if buf or self._mid_frame else "between frames"
                raise PeerClosed(f"the peer closed the stream ({where})")
            buf += chunk
        out = bytes(buf[:n])
        del buf[:n]
        return out

    def write_all(self, data: bytes, deadline: float) -> None:
        """Write every byte before ``deadline``."""
        view = memoryview(data)
        while view:
            try:
                sent = os.write(self.wfd, view)
            except BlockingIOError:
                self._waited(([], [self.wfd]), deadline,
                             BridgeTimeout("the peer stopped reading (write deadline passed)"))
                continue
            except OSError as e:  # EPIPE, ECONNRESET, EBADF after a close
                raise PeerClosed(f"the peer closed the stream ({e})") from e
            view = view[sent:]

    def close(self) -> None:
        """Close the descriptors; idempotent."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
            return
        for fd in {self.rfd, self.wfd}:
            try:
                os.close(fd)
            except OSError:
                pass
        self.rfd = self.wfd = -1


# -- messages ------------------------------------------------------------------------------------------
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

    Outgoing: a flat message (every field but ``type`` an array) by its type, keys, dtypes and shapes, to its
    JSON header. Incoming: a header's bytes to its checked parse (the body with ``$array`` references and
    the arrays' layouts). Only headers that passed every check are kept.
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
                cache.keep(cache.out, key, frame[8:8 + _LEN.unpack_from(frame, 4)[0]])
                return frame
            datas = [np.ascontiguousarray(v).tobytes() for k, v in message.items() if k != "type"]
            payload = b"".join([_LEN.pack(len(header)), header, *datas])
            return _LEN.pack(len(payload)) + payload
    arrays: list[np.ndarray] = []
    body = _pack_value(message, arrays)
    body["arrays"] = [{"dtype": a.dtype.str, "shape": list(a.shape)} for a in arrays]
    header = json.dumps(body, separators=(",", ":")).encode()
    payload = b"".join([_LEN.pack(len(header)), header, *(a.tobytes() for a in arrays)])
    return _LEN.pack(len(payload)) + payload


def _flat_key(message: dict[str, Any]) -> tuple[Any, ...] | None:
    """What a flat message's header depends on, or None when the message is not flat."""
    key: list[Any] = [message.get("type")]
    for k, v in message.items():
        if k != "type":
            if type(v) is not np.ndarray:
                return None
            key.append((k, v.dtype.str, v.shape))
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
    (hlen,) = _LEN.unpack_from(payload)
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


def send(chan: Channel, message: dict[str, Any], timeout: float, max_size: int = MAX_MESSAGE) -> None:
    """Encode and write one message."""
    frame = encode(message, chan.headers)
    if len(frame) - 4 > max_size:
        raise ProtocolError(f"outgoing {message.get('type')!r} message is {len(frame) - 4} bytes, over the "
                            f"{max_size}-byte limit")
    chan.write_all(frame, time.monotonic() + timeout)


def recv(chan: Channel, timeout: float, max_size: int = MAX_MESSAGE) -> dict[str, Any]:
    """Read one message; the declared length is checked before anything is allocated."""
    deadline = time.monotonic() + timeout
    (length,) = _LEN.unpack(chan.read_exact(4, deadline))
    if length > max_size:
        raise ProtocolError(f"incoming message declares {length} bytes, over the {max_size}-byte limit")
    chan._mid_frame = True
    msg = decode(chan.read_exact(length, deadline), chan.headers)
    chan._mid_frame = False
    if msg["type"] == "error":
        raise RemoteError(str(msg.get("message", "unspecified error"))[:2000])
    return msg


def expect(msg: dict[str, Any], kind: str) -> dict[str, Any]:
    """Check a message's type."""
    if msg["type"] != kind:
        raise ProtocolError(f"expected a {kind!r} message, got {msg['type'][:40]!r}")
    return msg


# -- versions and authentication -------------------------------------------------------------------------
def check_version(theirs: Any, who: str) -> str | None:
    """Raise on a major mismatch; return a warning text on a minor one."""
    try:
        major, minor = (int(x) for x in str(theirs)[:20].split(".")[:2])
    except ValueError as e:
        raise VersionError(f"{who} sent an unreadable protocol version {str(theirs)[:20]!r}; this side "
                           f"speaks {VERSION}") from e
    my_major, my_minor = (int(x) for x in VERSION.split("."))
    if major != my_major:
        raise VersionError(f"protocol version mismatch: {who} speaks {theirs}, this side speaks {VERSION}")
    if minor > my_minor:  # an older peer is served as it is: every 1.x side speaks every older 1.y
        return f"{who} speaks protocol {theirs}, this side {VERSION}; continuing (minor versions differ)"
    return None


def minor_of(version: Any) -> int:
    """The MINOR number of a ``MAJOR.MINOR`` string (0 when unreadable; :func:`check_version` refuses
    those)."""
    try:
        return int(str(version)[:20].split(".")[1])
    except (IndexError, ValueError):
        return 0


def mac(token: str, role: str, nonce: str) -> str:
    """HMAC-SHA256 of the UTF-8 bytes of ``role:nonce`` keyed with the token's UTF-8 bytes, as lowercase hex.

    Returns the empty string when there is no token.
    """
    if not token:
        return ""
    return hmac.new(token.encode(), f"{role}:{nonce}".encode(), hashlib.sha256).hexdigest()


def verify(token: str, role: str, nonce: str, got: Any) -> bool:
    """Constant-time check of a MAC."""
    return hmac.compare_digest(mac(token, role, nonce).encode(), str(got or "").encode())


def nonce() -> str:
    """A fresh random challenge."""
    return os.urandom(16).hex()
