"""Spawning bridge programs: on pipes, or told where to connect back (``env.command`` with ``env.listen``).

Spawn, then let it connect (:class:`ConnectBack`): when a config gives both ``env.command`` and
``env.listen``, each env (each program slot of a run) binds its own listening socket on the ``env.listen``
host, on a free port, and starts one copy of the command that connects there. The copy is told where to
connect, its seed and its token through its environment, never its command line (``ps`` shows that):

- ``NONDIFF_CONNECT=HOST:PORT``, ``NONDIFF_SEED=N``, ``NONDIFF_TOKEN=…``;
- the placeholders ``{connect}``, ``{host}``, ``{port}``, ``{seed}`` and ``{assets}`` (nondiff's shipped
  assets folder, envs/adapters/assets) in the command's arguments, for programs that want them there.

Without a configured bridge token each slot draws a fresh one, so only the copy it started can complete the
handshake on its port: the connection a slot takes is the process it started, and stopping one (a fault,
a restart) never touches another's. Start-up is visible: one console line when a copy is started and one
when it has connected, and the listener's "waiting for" lines in between. A copy that exits before it
connects is a crash; one that does not connect within ``reset_timeout`` is a timeout; both are faults,
restarted under the watchdog's run-wide budget. A copy that connects with a spec the run cannot use (wrong
version, malformed spec, another K) stops the run in one line (:class:`~envs.errors.StartupError`).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from typing import Any

from envs import errors as E
from envs.bridge import listen as L
from envs.bridge import protocol as P
from envs.bridge import reaper
from envs.bridge.spawn import ASSETS, StderrTail, check_program, child_environment, drain

FATAL_REFUSALS = ("spec", "version")
"""Refusal reasons of a slot's own listener that retrying cannot heal: the run stops with the reason."""


def expand(argv: list[str], host: str, port: int, seed: int) -> list[str]:
    """``argv`` with the placeholders replaced (only these; other braces stay as they are)."""
    table = {"{connect}": f"{host}:{port}", "{host}": host, "{port}": str(port), "{seed}": str(seed),
             "{assets}": str(ASSETS)}
    out = []
    for arg in argv:
        for key, value in table.items():
            arg = arg.replace(key, value)
        out.append(arg)
    return out


def spawn(argv: list[str], cwd: str | None, grace: float, tail: StderrTail,
          env: dict[str, str] | None = None, piped: bool = True
          ) -> tuple[subprocess.Popen[bytes], threading.Thread, P.Channel | None]:
    """Start ``argv`` under the supervisor (:mod:`envs.bridge.reaper`), its stderr drained into ``tail``.

    ``piped``: the protocol runs on its stdin/stdout (returned as a channel); otherwise stdin is /dev/null
    and stdout joins stderr in ``tail`` (an engine that prints a banner on stdout).

    Raises:
        LaunchError: the program, or its cwd, is missing or not executable.
    """
    check_program(argv, cwd)
    life = reaper.lifeline()
    read, write = (-1, -1) if piped else os.pipe()  # not piped: stdout and stderr share one pipe
    try:
        proc = subprocess.Popen(reaper.command(argv, grace, life),
                                stdin=subprocess.PIPE if piped else subprocess.DEVNULL,
                                stdout=subprocess.PIPE if piped else write,
                                stderr=subprocess.PIPE if piped else write, cwd=cwd, start_new_session=True,
                                pass_fds=(life,), env=env if env is not None else child_environment())
    except OSError as e:
        if not piped:
            os.close(read)
        raise E.LaunchError(f"cannot start program {' '.join(argv)!r}: {e}") from e
    finally:
        if not piped:
            os.close(write)
    if piped:
        assert proc.stderr is not None
        read = os.dup(proc.stderr.fileno())
    tail.clear()
    drainer = threading.Thread(target=drain, args=(read, tail), daemon=True, name="nondiff-stderr")
    drainer.start()
    chan = None
    if piped:
        assert proc.stdin is not None and proc.stdout is not None
        chan = P.Channel(os.dup(proc.stdout.fileno()), os.dup(proc.stdin.fileno()))
    for stream in (proc.stdout, proc.stdin, proc.stderr):
        if stream is not None:
            stream.close()
    return proc, drainer, chan


def _say(line: str) -> None:
    print(f"nondiff: {line}", file=sys.stderr, flush=True)


def _quiet(line: str) -> None:
    if not line.startswith("listening for programs"):  # the start line names the address instead
        _say(line)


class ConnectBack:
    """One program slot in spawn-then-connect mode: its own listener and the copies of the command it starts.

    Args:
        argv: the command, split; placeholders are expanded at each start (:func:`expand`).
        listen: ``env.listen``; its host is used, its port must be 0 (every slot takes a free port).
        token: the bridge token; empty: a fresh one for this slot.
        cwd: the program's working directory.
        grace: seconds between SIGTERM and SIGKILL.
        seed: ``NONDIFF_SEED`` of the first start; each restart adds one.
    """

    def __init__(self, argv: list[str], listen: str, token: str = "", cwd: str | None = None,
                 grace: float = 2.0, seed: int = 0) -> None:
        host, port = L.parse_address(listen)
        if not L.is_loopback(host):  # first: the port's advice below keeps the host
            raise E.StartupError(f"env.listen={listen} with env.command: the programs nondiff starts "
                                 "connect back on loopback; use env.listen=127.0.0.1:0")
        if port != 0:
            raise E.StartupError(f"env.listen={listen} with env.command: nondiff starts the programs and "
                                 "gives each a free port of its own, so the port must be 0; e.g. "
                                 f"env.listen={host}:0")
        check_program(argv, cwd)
        self.argv, self.cwd, self.grace, self.seed = argv, cwd, grace, seed
        self.token = token or secrets.token_hex(16)
        self.listener = L.Listener(f"{host}:0", self.token, say=_quiet)
        self.starts = 0

    @property
    def address(self) -> str:
        """``host:port`` on which this slot's copies connect."""
        return self.listener.address

    def start(self, tail: StderrTail) -> tuple[subprocess.Popen[bytes], threading.Thread]:
        """Start one copy of the command, told where to connect, its seed and its token (environment)."""
        host, _, port = self.address.rpartition(":")
        seed = self.seed + self.starts
        argv = expand(self.argv, host, int(port), seed)
        env = {**child_environment(), "NONDIFF_CONNECT": self.address, "NONDIFF_TOKEN": self.token,
               "NONDIFF_SEED": str(seed)}
        proc, drainer, _ = spawn(argv, self.cwd, self.grace, tail, env, piped=False)
        self.starts += 1
        _say(f"started {argv[0]} (pid {proc.pid}, seed {seed}); waiting for it to connect to {self.address}")
        return proc, drainer

    def take(self, proc: subprocess.Popen[bytes], tail: StderrTail, timeout: float, handshake: L.Handshake,
             handshake_timeout: float, expect: Any, instances: int | None) -> tuple[P.Channel, Any]:
        """The started copy's connection, handshaken, within ``timeout`` seconds.

        Raises:
            PeerClosed: the copy exited before it connected (a crash: restarted within budget).
            BridgeTimeout: it did not connect in time (a hang: restarted within budget).
            StartupError: it connected with a spec or version the run cannot use.
        """
        began = time.monotonic()

        def give_up() -> Exception | None:
            fatal = [r for r in FATAL_REFUSALS if self.listener.refused[r]]
            if fatal:
                return E.StartupError(f"program {self.argv[0]!r}: {self.listener.reasons[fatal[0]]}")
            if proc.poll() is not None:
                last = " | ".join(tail.lines()[-3:])[-500:] or "(no output)"
                return E.PeerClosed(f"program {self.argv[0]!r} exited with code {proc.returncode} before "
                                    f"it connected to {self.address}; last output: {last}")
            return None

        try:
            found = self.listener.take(timeout, handshake, handshake_timeout, expect, instances, give_up)
        except E.ConnectTimeout as e:
            raise E.BridgeTimeout(f"program {self.argv[0]!r} did not connect to {self.address} within "
                                  f"{timeout:g} s (env.reset_timeout): a program slower to start needs a "
                                  "larger env.reset_timeout; one that never connects must connect to "
                                  "NONDIFF_CONNECT (a Godot scene: the addon's sync node does)") from e
        _say(f"{self.argv[0]} (pid {proc.pid}) connected in {time.monotonic() - began:.2f} s")
        return found

    def close(self) -> None:
        """Stop listening (the copies are stopped by their env); idempotent."""
        self.listener.close()
