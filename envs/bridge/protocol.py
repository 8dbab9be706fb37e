"""The nondiff bridge protocol (docs/protocol.md): byte channels, messages sent and received, versions, HMAC.

A message's frame (a JSON header with binary arrays) is encoded and decoded in :mod:`envs.bridge.codec`.

Its errors (``BridgeError`` and below, ``StartupError`` for what retrying cannot heal) are part of the one
tree in :mod:`envs.errors`; its waits end early on the process-wide stop switch (:mod:`envs.stop`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import select
import socket
import struct
import sys
import time
from typing import Any

from envs.bridge.codec import LENGTH, HeaderCache, decode, encode
from envs.errors import (
    BridgeError,
    BridgeTimeout,
    PeerClosed,
    ProtocolError,
    RemoteError,
    VersionError,
)
from envs.stop import check_stop

VERSION = "1.3"
"""This side's protocol version; 1.1 added ``num_instances`` (several env instances behind one connection),
1.2 ``autoreset`` (a K-instance program resets its finished instances within the step's reply), 1.3
``agents`` (a scene of agents in policy groups that finish at their own steps, envs/bridge/agentsmsg.py)."""
MAX_INSTANCES = 4096
"""The most env instances one program may declare (``spec.num_instances``)."""
MAX_MESSAGE = 64 * 1024 * 1024
"""Default limit on a frame's length, in bytes."""
_SLICE = 0.25
_TICK = 0.05
"""A socket channel's reads and writes block at most this long (``SO_RCVTIMEO``/``SO_SNDTIMEO``) before the
deadline and the stop switch are looked at again: one system call per read, where a non-blocking descriptor
takes a failed read, a ``select`` and a read."""


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


# -- messages (one frame each, envs/bridge/codec.py) -----------------------------------------------------
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
    (length,) = LENGTH.unpack(chan.read_exact(4, deadline))
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
