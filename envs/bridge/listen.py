"""Connect mode: nondiff listens and programs connect to it (``env.listen=HOST:PORT``).

One :class:`Listener` per address and process, shared by every env that takes its programs from it (the
probe, the training envs, the evaluation env): :func:`listener` returns the same one for the same address.
While an env waits for a program, every connection that comes is handshaken in its own thread with its own
short deadline (``env.handshake_timeout``), at most :data:`MAX_PENDING` at once (more are closed at once):
a silent or hostile connection costs a socket, never the wait. Programs that complete a handshake wait in a
pool until an env takes them. Which spec (spaces and K) the run trains on is decided on purpose: the K
given in the config (``env.num_instances``) and the spec of the run's first program once the run has one;
before that, the first spec that enough programs declare to fill ``train.num_envs``. Programs that do not
fit are refused with an ``error`` frame that says why; refusal lines are rate-limited.

Errors (all :class:`~envs.errors.StartupError`, bad input: one line, exit code 2):
the address is malformed, taken (``EADDRINUSE``), or not loopback without a token; the programs the run
needs did not complete a handshake within ``connect_timeout`` (:class:`ConnectTimeout`).
"""

from __future__ import annotations

import atexit
import collections
import errno
import ipaddress
import math
import select
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from envs import errors as E
from envs import stop as S
from envs.bridge import protocol as P
from envs.bridge.fit import decide, misfit
from envs.errors import ConnectTimeout

REPORT_EVERY = 5.0
"""Seconds between two "waiting for N programs" lines."""
REFUSAL_EVERY = 5.0
"""Seconds between two console lines about refused programs (the ones between are counted)."""
MAX_PENDING = 32
"""Handshakes in progress at once; a connection past it is closed at once."""
SPARE = 8
"""Handshaken programs kept waiting beyond the ones the run needs; more are sent away with an ``error``."""

Handshake = Callable[[P.Channel, float], Any]
"""Runs the trainer's side of a handshake on a channel within a deadline; returns the program's
SpecReply."""


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) as a pair; raises :class:`~envs.errors.StartupError`."""
    host, _, port = str(address).rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise E.StartupError(f"env.listen must look like HOST:PORT (port 0: any free port), got "
                             f"{address!r}; e.g. env.listen=127.0.0.1:5555")
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
    """A bound, listening socket that hands out handshaken programs.

    Args:
        address: ``host:port``; port 0 picks a free port (printed).
        token: the bridge token; required when ``host`` is not loopback.
        say: prints one console line.
        max_pending: handshakes in progress at once (:data:`MAX_PENDING`).
    """

    def __init__(self, address: str, token: str = "", say: Callable[[str], None] = _say,
                 max_pending: int = MAX_PENDING) -> None:
        host, port = parse_address(address)
        if not is_loopback(host) and not token:
            raise E.StartupError(f"env.listen={address} is not a loopback address: programs connecting "
                                 "from elsewhere must prove the bridge token; set NONDIFF_TOKEN (or "
                                 "env.token_file) and give programs the same token")
        self.say, self.max_pending = say, max_pending
        try:
            self.sock = socket.create_server((host, port), backlog=128)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise E.StartupError(f"env.listen={address}: the address is already in use (another "
                                     "trainer or program holds it); pick another port, or port 0 for any "
                                     "free one") from e
            raise E.StartupError(f"env.listen={address}: cannot listen there ({e.strerror or e})") from e
        self.sock.setblocking(False)
        self.address = f"{host}:{self.sock.getsockname()[1]}"
        self.lock = threading.Lock()
        self.connected = 0
        """Connections that came (accepted), refused ones included."""
        self.handshaken = 0
        """Connections that completed a handshake."""
        self.held = 0
        """Programs handed to an env and not yet given back (:meth:`release`, :meth:`park`)."""
        self.pending = 0
        """Handshakes in progress."""
        self.expected = 1
        """Envs the run needs (``train.num_envs``); with K instances per program, ``ceil(expected / K)``
        programs."""
        self.instances: int | None = None
        """The K the config asks for (``env.num_instances``); None: any K, decided with the spec."""
        self.want: Any = None
        """The spec the run trains on, once decided; programs that declare another are refused."""
        self.ready: list[tuple[P.Channel, Any]] = []
        """Handshaken programs no env has taken yet (an env's healthy program given back goes here too)."""
        self.refused: collections.Counter[str] = collections.Counter()
        """Refused connections by reason (``silent``, ``token``, ``spec``, ``version``, ``closed``,
        ``busy``, …)."""
        self.reasons: dict[str, str] = {}
        """The latest refusal text of each reason."""
        self._unsaid = 0
        self._said_at = -math.inf
        if port == 0:
            say(f"listening for programs on {self.address} (port 0: this port was chosen)")

    def hint(self) -> str:
        """How to start a program for this address."""
        return (f"start one with: ./heater --connect {self.address} (examples/thirdparty/heater.c), or "
                f"NONDIFF_CONNECT={self.address} python your_program.py (envs.bridge.sdk.serve)")

    def programs_needed(self) -> int | None:
        """Programs the run needs for :attr:`expected` envs, or None while K is unknown."""
        k = self.want.num_instances if self.want is not None else self.instances
        return None if k is None else math.ceil(max(1, self.expected) / k)

    # -- handing programs out ------------------------------------------------------------------------------
    def park(self, chan: P.Channel, spec: Any) -> None:
        """Give back a healthy, handshaken program for the next env that needs one (the start-up probe's
        program goes on to serve a training env, so a program need not connect twice)."""
        with self.lock:
            self.held = max(0, self.held - 1)
            if self.sock.fileno() >= 0:
                self.ready.insert(0, (chan, spec))
                return
        _goodbye(chan)

    def release(self) -> None:
        """One program handed out was closed."""
        with self.lock:
            self.held = max(0, self.held - 1)

    def take(self, timeout: float, handshake: Handshake, handshake_timeout: float = 5.0,
             expect: Any = None, instances: int | None = None,
             give_up: Callable[[], Exception | None] | None = None) -> tuple[P.Channel, Any]:
        """A handshaken program that fits the run, and its spec, within ``timeout`` seconds.

        Args:
            timeout: ``env.connect_timeout``; it runs only while no fitting program has completed a
                handshake.
            handshake: the trainer's side of the handshake (run in a thread per connection).
            handshake_timeout: each connection's own deadline for its handshake.
            expect: the spec the run's programs declared (a restart, a second program): decides the spec.
            instances: the K the config asks for (``env.num_instances``).
            give_up: checked while waiting; an exception it returns is raised (a spawned program that
                exited, :mod:`envs.bridge.launch`).

        Raises:
            ConnectTimeout: says how many connections came, how many completed a handshake, why others were
                refused, and how to start a program.
            StopRequested: the trainer is stopping.
        """
        with self.lock:
            if expect is not None and self.want is None:
                self.want = expect
            if instances is not None:
                self.instances = instances
        deadline = time.monotonic() + timeout
        next_report = time.monotonic() + min(REPORT_EVERY, 1.0)
        while True:
            S.check_stop()
            found = self._choose()
            if found is not None:
                return found
            stop = give_up() if give_up is not None else None
            if stop is not None:
                raise stop
            now = time.monotonic()
            if now >= deadline:
                raise self._timeout(timeout)
            if now >= next_report:
                self.say(self._waiting(deadline - now))
                next_report = now + REPORT_EVERY
            ready, _, _ = select.select([self.sock], [], [], min(0.05, max(0.0, deadline - now)))
            if ready:
                self._accept_all(handshake, handshake_timeout)

    def _accept_all(self, handshake: Handshake, handshake_timeout: float) -> None:
        """Accept every waiting connection; each gets a handshake thread, or is closed at once past the
        bound."""
        while True:
            with self.lock:
                try:
                    conn, _ = self.sock.accept()
                except BlockingIOError:
                    return
                except OSError as e:
                    raise E.StartupError(f"env.listen={self.address}: accept failed ({e})") from e
                self.connected += 1
                busy = self.pending >= self.max_pending
                if not busy:
                    self.pending += 1
            if busy:
                conn.close()
                self._note("busy", f"{self.max_pending} handshakes were already in progress; closed at once")
                continue
            threading.Thread(target=self._shake, args=(conn, handshake, handshake_timeout), daemon=True,
                             name="nondiff-handshake").start()

    def _shake(self, conn: socket.socket, handshake: Handshake, timeout: float) -> None:
        """One connection's handshake (its own thread); the program joins the pool or is refused."""
        chan = P.Channel.from_socket(conn)
        try:
            spec = handshake(chan, timeout)
        except E.BridgeTimeout:
            self._refuse(chan, "silent",
                         f"no complete handshake within {timeout:g} s (env.handshake_timeout)", True)
        except E.AuthError as e:  # a token refusal stays silent: a stranger learns nothing
            self._refuse(chan, "token", str(e), False)
        except E.VersionError as e:
            self._refuse(chan, "version", str(e), True)
        except E.SpecError as e:
            self._refuse(chan, "spec", str(e), True)
        except E.RemoteError as e:
            self._refuse(chan, "refused us", str(e), False)
        except E.PeerClosed as e:
            self._refuse(chan, "closed", str(e), False)
        except E.StartupError as e:
            self._refuse(chan, "refused us", str(e), False)
        except (E.BridgeError, OSError, ValueError) as e:
            self._refuse(chan, "protocol", f"{type(e).__name__}: {e}", True)
        except E.StopRequested:  # the trainer is stopping: this connection just ends
            chan.close()
        except BaseException:
            chan.close()
            raise
        else:
            with self.lock:
                self.handshaken += 1
                open_ = self.sock.fileno() >= 0
                if open_:
                    self.ready.append((chan, spec))
            if not open_:
                _goodbye(chan)
        finally:
            with self.lock:
                self.pending -= 1

    def _choose(self) -> tuple[P.Channel, Any] | None:
        """The first ready program that fits the run (deciding the spec if needed); refuses the ones that
        do not."""
        refuse: list[tuple[P.Channel, str]] = []
        found = None
        with self.lock:
            if self.want is None:  # fix the run's spec (envs.bridge.fit)
                self.want = decide((spec for _, spec in self.ready), self.instances, self.expected)
            keep: list[tuple[P.Channel, Any]] = []
            for chan, spec in self.ready:
                why = misfit(spec, self.instances, self.want)
                if why is not None:
                    refuse.append((chan, why))
                elif found is None and self.want is not None:
                    found = (chan, spec)
                else:
                    keep.append((chan, spec))
            need = self.programs_needed() or max(1, self.expected)
            spare, self.ready = keep[need + SPARE:], keep[:need + SPARE]
            if found is not None:
                self.held += 1
        for chan, why in refuse:
            self._refuse(chan, "spec", why, True)
        for chan, _ in spare:
            self._refuse(chan, "spare", f"the run has all the programs it needs on {self.address}", True)
        return found


    # -- refusals and messages -----------------------------------------------------------------------------
    def _refuse(self, chan: P.Channel, reason: str, text: str, tell: bool) -> None:
        """Close a connection (after an ``error`` frame naming ``text`` when ``tell``); a rate-limited
        line."""
        if tell:
            try:
                P.send(chan, {"type": "error", "message": f"nondiff refused this program: {text}"}, 0.5)
            except (E.BridgeError, OSError):
                pass
        chan.close()
        self._note(reason, text)

    def _note(self, reason: str, text: str) -> None:
        with self.lock:
            self.refused[reason] += 1
            self.reasons[reason] = text[:300]
            now = time.monotonic()
            if now - self._said_at < REFUSAL_EVERY:
                self._unsaid += 1
                return
            more, self._unsaid, self._said_at = self._unsaid, 0, now
        extra = f" ({more} more refused since the last such line)" if more else ""
        self.say(f"refused a program that connected to {self.address}: {text[:300]}{extra}; refusal lines "
                 f"are limited to one per {REFUSAL_EVERY:g} s")

    def _counts(self) -> str:
        with self.lock:
            refused = ", ".join(f"{n} {why}" for why, n in self.refused.most_common())
            return (f"{self.connected} connection{'s' if self.connected != 1 else ''} came, "
                    f"{self.handshaken} completed a handshake, {sum(self.refused.values())} refused"
                    + (f" ({refused})" if refused else ""))

    def _needs(self) -> tuple[str, str]:
        """How many programs the run needs, and for what (envs and K)."""
        need, envs = self.programs_needed(), f"{self.expected} env{'s' if self.expected != 1 else ''}"
        if need is None:
            return (f"{self.expected} program{'s' if self.expected != 1 else ''}",
                    f"for {envs}, one each unless they declare num_instances")
        k = self.want.num_instances if self.want is not None else self.instances
        return (f"{need} program{'s' if need != 1 else ''}",
                f"for {envs} at {k} instance{'s' if k != 1 else ''} each")

    def _waiting(self, left: float) -> str:
        count, detail = self._needs()
        return (f"waiting for {count} on {self.address} ({detail}; {self.held} taken, "
                f"{len(self.ready)} ready; {self._counts()}; {left:.0f} s left)")

    def _timeout(self, timeout: float) -> ConnectTimeout:
        head = (f"no program connected to {self.address} within {timeout:g} s" if self.connected == 0 else
                f"no program that fits the run completed a handshake on {self.address} within {timeout:g} s")
        last = "; ".join(f"{why}: {text}" for why, text in self.reasons.items())
        if self.want is None and self.ready:
            last = (f"{len(self.ready)} handshaken program(s) wait, but no spec is declared by enough of "
                    f"them to fill {self.expected} envs" + (f"; {last}" if last else ""))
        count, detail = self._needs()
        return ConnectTimeout(f"{head} (env.connect_timeout; the run needs {count}, {detail}; "
                              f"{self.held} taken): {self._counts()}"
                              + (f"; last refusals: {last[:600]}" if last else "")
                              + f"; {self.hint()}")

    def close(self) -> None:
        """Stop listening and end the sessions of programs no env took (``close``); idempotent."""
        with self.lock:
            self.sock.close()
            ready, self.ready = self.ready, []
        for chan, _ in ready:
            _goodbye(chan)


def _goodbye(chan: P.Channel) -> None:
    """End a session politely: ``close``, wait briefly for ``bye``, close the stream."""
    try:
        P.send(chan, {"type": "close"}, 1.0)
        P.recv(chan, 1.0)
    except (E.BridgeError, OSError):
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
