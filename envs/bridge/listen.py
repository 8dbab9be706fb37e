"""Connect mode: nondiff listens and programs connect to it (``env.listen=HOST:PORT``).

One :class:`Listener` per address and process, shared by every env that takes its programs from it (the
probe, the training envs, the evaluation env): :func:`listener` returns the same one for the same address.
The socket is bound once; a program that connects waits in the backlog until an env takes it, and the
handshake then runs exactly as in the other transports (the trainer sends ``hello`` first).

Errors (all :class:`~envs.bridge.protocol.StartupError`, bad input: one line, exit code 2):
the address is malformed, taken (``EADDRINUSE``), or not loopback without a token; nobody connected within
``connect_timeout`` (:class:`ConnectTimeout`).
"""

from __future__ import annotations

import atexit
import errno
import ipaddress
import select
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from envs.bridge import protocol as P

REPORT_EVERY = 5.0
"""Seconds between two "waiting for N programs" lines."""


class ConnectTimeout(P.StartupError):
    """No program connected before ``env.connect_timeout`` passed."""


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) as a pair; raises :class:`~envs.bridge.protocol.StartupError`."""
    host, _, port = str(address).rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise P.StartupError(f"env.listen must look like HOST:PORT (port 0: any free port), got {address!r}; "
                             "e.g. env.listen=127.0.0.1:5555")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and names that resolve there."""
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def _say(line: str) -> None:
    print(f"nondiff: {line}", file=sys.stderr, flush=True)


class Listener:
    """A bound, listening socket that hands out connected programs one at a time.

    Args:
        address: ``host:port``; port 0 picks a free port (printed).
        token: the bridge token; required when ``host`` is not loopback.
        say: prints one console line.
    """

    def __init__(self, address: str, token: str = "", say: Callable[[str], None] = _say) -> None:
        host, port = parse_address(address)
        if not is_loopback(host) and not token:
            raise P.StartupError(f"env.listen={address} is not a loopback address: programs connecting from elsewhere "
                                 "must prove the bridge token; set NONDIFF_TOKEN (or env.token_file) and give "
                                 "programs the same token")
        self.say = say
        try:
            self.sock = socket.create_server((host, port), backlog=128)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise P.StartupError(f"env.listen={address}: the address is already in use (another trainer or "
                                     "program holds it); pick another port, or port 0 for any free one") from e
            raise P.StartupError(f"env.listen={address}: cannot listen there ({e.strerror or e})") from e
        self.sock.setblocking(False)
        self.address = f"{host}:{self.sock.getsockname()[1]}"
        self.lock = threading.Lock()
        self.connected = 0
        """Connections handed out so far."""
        self.held = 0
        """Connections handed out and not yet closed (:meth:`release`)."""
        self.expected = 1
        """Programs the run waits for (shown in the waiting line)."""
        self.parked: list[tuple[P.Channel, Any]] = []
        """Handshaken connections an env gave back (:meth:`park`), taken before any new one."""
        if port == 0:
            say(f"listening for programs on {self.address} (port 0: this port was chosen)")

    def hint(self) -> str:
        """How to start a program for this address."""
        return (f"start one with: ./heater --connect {self.address} (examples/thirdparty/heater.c), or "
                f"NONDIFF_CONNECT={self.address} python your_program.py (envs.bridge.sdk.serve)")

    def park(self, chan: P.Channel, spec: Any) -> None:
        """Keep a healthy, handshaken connection for the next env that needs a program (the start-up probe's
        connection goes on to serve a training env, so a program need not connect twice)."""
        with self.lock:
            self.held = max(0, self.held - 1)
            if self.sock.fileno() >= 0:
                self.parked.append((chan, spec))
                return
        _goodbye(chan)

    def take_parked(self) -> tuple[P.Channel, Any] | None:
        """A parked connection and its spec, or None."""
        with self.lock:
            if not self.parked:
                return None
            self.held += 1
            return self.parked.pop(0)

    def release(self) -> None:
        """One connection handed out by :meth:`accept` was closed."""
        with self.lock:
            self.held = max(0, self.held - 1)

    def take(self, timeout: float, handshake: Callable[[P.Channel], None]) -> P.Channel:
        """The next program that connects and passes ``handshake``, within ``timeout`` seconds.

        A program that fails the handshake (a wrong token, another major version, a bad spec, silence) is
        refused with one console line and the wait goes on: a stranger on the port cannot stop the run. When
        the time is up, :class:`ConnectTimeout` names the last refusal.
        """
        deadline = time.monotonic() + timeout
        refused: str | None = None
        while True:
            if time.monotonic() >= deadline:  # a refused program that reconnects at once must not extend the wait
                raise self._timeout(timeout, refused)
            chan = P.Channel.from_socket(self.accept(max(0.05, deadline - time.monotonic()), refused, timeout))
            try:
                handshake(chan)
                return chan
            except (P.BridgeError, OSError) as e:
                chan.close()
                self.release()
                refused = f"{type(e).__name__}: {e}"
                self.say(f"refused a program that connected to {self.address}: {e}")
            except BaseException:
                chan.close()
                self.release()
                raise

    def accept(self, timeout: float, refused: str | None = None, total: float | None = None) -> socket.socket:
        """The next program that connects, within ``timeout`` seconds; says every few seconds how long it waits.

        Raises:
            ConnectTimeout: nobody connected in time (names the address and how to start a program).
            StopRequested: the trainer is stopping.
        """
        deadline = time.monotonic() + timeout
        next_report = time.monotonic() + min(REPORT_EVERY, 1.0)
        while True:
            P.check_stop()
            with self.lock:
                try:
                    conn, _ = self.sock.accept()
                except BlockingIOError:
                    conn = None
                except OSError as e:
                    raise P.StartupError(f"env.listen={self.address}: accept failed ({e})") from e
                if conn is not None:
                    self.connected += 1
                    self.held += 1
                    conn.setblocking(True)
                    return conn
            now = time.monotonic()
            waiting_for, have = max(self.expected, self.held + 1), self.held
            if now >= deadline:
                raise self._timeout(total or timeout, refused)
            if now >= next_report:
                self.say(f"waiting for {waiting_for} program{'s' if waiting_for != 1 else ''} on {self.address} "
                         f"({have} connected, {deadline - now:.0f} s left)")
                next_report = now + REPORT_EVERY
            select.select([self.sock], [], [], min(0.25, max(0.0, deadline - now)))

    def _timeout(self, timeout: float, refused: str | None) -> ConnectTimeout:
        waiting_for, have = max(self.expected, self.held + 1), self.held
        why = f"; the last one was refused ({refused[:300]})" if refused else ""
        return ConnectTimeout(f"no program connected to {self.address} within {timeout:g} s (env.connect_timeout; "
                              f"{have} of {waiting_for} connected){why}; {self.hint()}")

    def close(self) -> None:
        """Stop listening and end the parked sessions (``close``); idempotent."""
        with self.lock:
            self.sock.close()
            parked, self.parked = self.parked, []
        for chan, _ in parked:
            _goodbye(chan)


def _goodbye(chan: P.Channel) -> None:
    """End a session politely: ``close``, wait briefly for ``bye``, close the stream."""
    try:
        P.send(chan, {"type": "close"}, 1.0)
        P.recv(chan, 1.0)
    except (P.BridgeError, OSError):
        pass
    chan.close()


_listeners: dict[str, Listener] = {}
_registry_lock = threading.Lock()


def listener(address: str, token: str = "") -> Listener:
    """The process's listener for ``address``, bound on first use and kept until :func:`close_all`."""
    with _registry_lock:
        found = _listeners.get(address)
        if found is None or found.sock.fileno() < 0:
            found = _listeners[address] = Listener(address, token)
        return found


def close_all() -> None:
    """Close every listener of this process (tests, and the end of a run)."""
    with _registry_lock:
        for lst in _listeners.values():
            lst.close()
        _listeners.clear()


atexit.register(close_all)
