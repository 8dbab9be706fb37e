"""The nondiff bridge protocol (docs/protocol.md): framing, messages with binary arrays, spaces, HMAC.

Errors::

    BridgeError                 anything that went wrong talking to a third-party program
    ├── ProtocolError           malformed, truncated or oversized frames; unexpected messages
    │   └── VersionError        incompatible protocol major version
    ├── AuthError               wrong or missing token
    ├── PeerClosed              the program closed the connection or exited
    ├── BridgeTimeout           no complete reply before the deadline
    └── RemoteError             the program answered with an ``error`` message
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
import time
from typing import Any

import numpy as np

VERSION = "1.0"
MAX_MESSAGE = 64 * 1024 * 1024
_LEN = struct.Struct(">I")


class BridgeError(Exception):
    """Base of every bridge failure."""


class ProtocolError(BridgeError):
    """The peer broke the framing or the message grammar."""


class VersionError(ProtocolError):
    """The peer speaks an incompatible major version."""


class AuthError(BridgeError):
    """The shared token did not match."""


class PeerClosed(BridgeError):
    """End of stream: the peer closed the connection or its process exited."""


class BridgeTimeout(BridgeError):
    """The deadline passed before a complete message arrived."""


class RemoteError(BridgeError):
    """The peer reported an error of its own."""


# -- byte channels -------------------------------------------------------------------------------------
class Channel:
    """A bidirectional byte stream over two file descriptors (pipes) or one (a socket), with deadlines."""

    def __init__(self, rfd: int, wfd: int, sock: socket.socket | None = None) -> None:
        self.rfd, self.wfd, self.sock = rfd, wfd, sock
        self._buf = bytearray()
        self._mid_frame = False
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)

    @classmethod
    def from_socket(cls, sock: socket.socket) -> Channel:
        """Wrap a connected socket."""
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock.fileno(), sock.fileno(), sock)

    def read_exact(self, n: int, deadline: float) -> bytes:
        """Read exactly ``n`` bytes before ``deadline`` (monotonic), or raise; never spins on EOF.

        Reads are buffered: one ``read`` usually brings a whole reply, length prefix included, and
        ``select`` is called only when no data is waiting.
        """
        buf = self._buf
        while len(buf) < n:
            try:
                chunk = os.read(self.rfd, max(1 << 16, n - len(buf)))
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BridgeTimeout(f"no complete message within the deadline ({len(buf)}/{n} bytes "
                                        "arrived)") from None
                select.select([self.rfd], [], [], remaining)
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
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BridgeTimeout("the peer stopped reading (write deadline passed)") from None
                select.select([], [self.wfd], [], remaining)
                continue
            except (BrokenPipeError, ConnectionResetError) as e:
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
        arrays.append(np.ascontiguousarray(value))
        return {"$array": len(arrays) - 1}
    if isinstance(value, dict):
        return {str(k): _pack_value(v, arrays) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_pack_value(v, arrays) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def encode(message: dict[str, Any]) -> bytes:
    """One frame: ``u32 length | u32 header length | JSON header | raw array bytes…`` (big-endian lengths)."""
    arrays: list[np.ndarray] = []
    body = _pack_value(message, arrays)
    body["arrays"] = [{"dtype": a.dtype.str, "shape": list(a.shape)} for a in arrays]
    header = json.dumps(body, separators=(",", ":")).encode()
    payload = b"".join([_LEN.pack(len(header)), header, *(a.tobytes() for a in arrays)])
    return _LEN.pack(len(payload)) + payload


def _unpack_value(value: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$array"}:
            idx = value["$array"]
            if not isinstance(idx, int) or not 0 <= idx < len(arrays):
                raise ProtocolError(f"array reference {idx!r} out of range")
            return arrays[idx]
        return {k: _unpack_value(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_unpack_value(v, arrays) for v in value]
    return value


def decode(payload: bytes) -> dict[str, Any]:
    """Parse a frame's payload (without its length prefix)."""
    if len(payload) < 4:
        raise ProtocolError(f"frame of {len(payload)} bytes is shorter than its header length field")
    (hlen,) = _LEN.unpack_from(payload)
    if hlen > len(payload) - 4:
        raise ProtocolError(f"header length {hlen} exceeds the frame ({len(payload) - 4} bytes)")
    try:
        body = json.loads(payload[4:4 + hlen])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError(f"header is not JSON: {e}") from e
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        raise ProtocolError("header must be a JSON object with a string 'type'")
    arrays, offset = [], 4 + hlen
    for spec in body.pop("arrays", []):
        try:
            dtype = np.dtype(spec["dtype"])
            shape = tuple(int(s) for s in spec["shape"])
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolError(f"bad array descriptor {spec!r}: {e}") from e
        if dtype.hasobject or any(s < 0 for s in shape):
            raise ProtocolError(f"array descriptor {spec!r} is not allowed")
        count = math.prod(shape)
        nbytes = dtype.itemsize * count
        if offset + nbytes > len(payload):
            raise ProtocolError(f"array {spec!r} needs {nbytes} bytes, only {len(payload) - offset} remain")
        arrays.append(np.frombuffer(payload, dtype=dtype, count=count, offset=offset).reshape(shape))
        offset += nbytes
    if offset != len(payload):
        raise ProtocolError(f"{len(payload) - offset} trailing bytes after the arrays")
    return _unpack_value(body, arrays)


def send(chan: Channel, message: dict[str, Any], timeout: float, max_size: int = MAX_MESSAGE) -> None:
    """Encode and write one message."""
    frame = encode(message)
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
    msg = decode(chan.read_exact(length, deadline))
    chan._mid_frame = False
    if msg["type"] == "error":
        raise RemoteError(str(msg.get("message", "unspecified error")))
    return msg


def expect(msg: dict[str, Any], kind: str) -> dict[str, Any]:
    """Check a message's type."""
    if msg["type"] != kind:
        raise ProtocolError(f"expected a {kind!r} message, got {msg['type']!r}")
    return msg


# -- versions and authentication -------------------------------------------------------------------------
def check_version(theirs: Any, who: str) -> str | None:
    """Raise on a major mismatch; return a warning text on a minor one."""
    try:
        major, minor = (int(x) for x in str(theirs).split(".")[:2])
    except ValueError as e:
        raise VersionError(f"{who} sent an unreadable protocol version {theirs!r}; this side speaks {VERSION}") from e
    my_major, my_minor = (int(x) for x in VERSION.split("."))
    if major != my_major:
        raise VersionError(f"protocol version mismatch: {who} speaks {theirs}, this side speaks {VERSION}")
    if minor != my_minor:
        return f"{who} speaks protocol {theirs}, this side {VERSION}; continuing (minor versions differ)"
    return None


def mac(token: str, role: str, nonce: str) -> str:
    """HMAC-SHA256 of ``role:nonce`` under the shared token (empty string when there is no token)."""
    if not token:
        return ""
    return hmac.new(token.encode(), f"{role}:{nonce}".encode(), hashlib.sha256).hexdigest()


def verify(token: str, role: str, nonce: str, got: Any) -> bool:
    """Constant-time check of a MAC."""
    return hmac.compare_digest(mac(token, role, nonce), str(got or ""))


def nonce() -> str:
    """A fresh random challenge."""
    return os.urandom(16).hex()
