"""Bridge adapter: any program that speaks docs/protocol.md, spawned (pipes) or running elsewhere (TCP).

The watchdog lives here. A crash, a hang past the deadline, or a malformed/oversized message ends the
current transition as truncated with ``info["nondiff_fault"]``; the program is killed (SIGTERM, grace,
SIGKILL of its whole process group) and respawned, or reconnected, at the next reset. Restarts are
budgeted by a lifetime cap and a rate limit; when the budget is spent, :class:`RestartBudgetExhausted`
names the program, its exit code and its last stderr lines. Spawned programs die with their parent
(``PR_SET_PDEATHSIG``) and run in their own process group, so no orphan survives a killed trainer.
"""

from __future__ import annotations

import collections
import ctypes
import ipaddress
import logging
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
from typing import Any

import gymnasium as gym
import numpy as np

from envs import protocol as P
from envs.spaces import space_from_json

log = logging.getLogger(__name__)


class RestartBudgetExhausted(P.BridgeError):
    """The program failed more often than the restart budget allows."""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


class ProcessEnv(gym.Env):
    """A third-party program behind the nondiff bridge protocol, guarded by a watchdog.

    Args:
        command: program to spawn, e.g. ``"./heater --fast"``; it speaks on stdin/stdout.
        address: ``host:port`` of a program that already runs and listens.
        token: shared secret for the HMAC handshake; required for any non-loopback address.
        allow_remote: must be True to connect to a non-loopback address.
        step_timeout: seconds a step may take before the program counts as hung.
        reset_timeout: seconds a reset (and the start-up handshake) may take.
        max_restarts: lifetime cap on restarts.
        restart_rate: at most this many restarts within ``restart_period`` seconds.
        restart_period: the rate-limit window in seconds.
        term_grace: seconds between SIGTERM and SIGKILL when stopping a program.
        max_message: the largest message accepted, in bytes.
        cwd: working directory for ``command``.
        render_mode: ``"rgb_array"`` to request frames with the ``render`` message.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, *, command: str | None = None, address: str | None = None, token: str = "",
                 allow_remote: bool = False, step_timeout: float = 5.0, reset_timeout: float = 30.0,
                 max_restarts: int = 10, restart_rate: int = 10, restart_period: float = 60.0,
                 term_grace: float = 2.0, max_message: int = P.MAX_MESSAGE, cwd: str | None = None,
                 render_mode: str | None = None) -> None:
        if (command is None) == (address is None):
            raise ValueError("process: pass exactly one of command='./program args' or address='host:port'")
        if step_timeout <= 0 or reset_timeout <= 0:
            raise ValueError(f"process: timeouts must be > 0, got step {step_timeout}, reset {reset_timeout}")
        if max_restarts < 0 or restart_rate < 1 or restart_period <= 0:
            raise ValueError("process: max_restarts must be >= 0, restart_rate >= 1 and restart_period > 0")
        if address is not None:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"process: address must look like host:port, got {address!r}")
            if not _is_loopback(host) and not (allow_remote and token):
                raise ValueError(f"process: {address} is not a loopback address; connecting to it needs "
                                 "allow_remote=True and a shared token (token=...) checked by the handshake")
            self._addr: tuple[str, int] | None = (host, int(port))
        else:
            self._addr = None
        self.command, self.token, self.render_mode = command, token, render_mode
        self.step_timeout, self.reset_timeout, self.term_grace = step_timeout, reset_timeout, term_grace
        self.max_restarts, self.restart_rate, self.restart_period = max_restarts, restart_rate, restart_period
        self.max_message, self.cwd = max_message, cwd
        self.who = command if command is not None else f"tcp://{address}"
        self.restarts = 0
        self._restart_times: collections.deque[float] = collections.deque()
        self._proc: subprocess.Popen[bytes] | None = None
        self._drainer: threading.Thread | None = None
        self._chan: P.Channel | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        self._alive = False
        self._last_obs: Any = None
        self._reset_faults: list[dict[str, Any]] = []
        self._last_failure: tuple[str, int | None] = ("was restarted", None)
        self.spec_info: dict[str, Any] = {}
        self._start_with_budget(self.reset_timeout)
        self.observation_space = space_from_json(self.spec_info["observation_space"])
        self.action_space = space_from_json(self.spec_info["action_space"])

    # -- process and connection ---------------------------------------------------------------------------
    def _launch(self, timeout: float) -> None:
        if self._addr is None:
            assert self.command is not None
            self._proc = subprocess.Popen(shlex.split(self.command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, cwd=self.cwd, start_new_session=True,
                                          preexec_fn=_die_with_parent)
            assert self._proc.stdin and self._proc.stdout and self._proc.stderr
            self._stderr.clear()
            self._drainer = threading.Thread(target=self._drain, args=(self._proc.stderr,), daemon=True)
            self._drainer.start()
            self._chan = P.Channel(os.dup(self._proc.stdout.fileno()), os.dup(self._proc.stdin.fileno()))
            self._proc.stdout.close()
            self._proc.stdin.close()
        else:
            self._chan = P.Channel.from_socket(socket.create_connection(self._addr, timeout=timeout))
        self._handshake(timeout)
        self._alive = True

    def _drain(self, stream: Any) -> None:
        for line in iter(stream.readline, b""):
            self._stderr.append(line.decode(errors="replace").rstrip())
        stream.close()

    def _handshake(self, timeout: float) -> None:
        assert self._chan is not None
        mine = P.nonce()
        P.send(self._chan, {"type": "hello", "version": P.VERSION, "nonce": mine}, timeout)
        challenge = P.expect(P.recv(self._chan, timeout, self.max_message), "challenge")
        warning = P.check_version(challenge.get("version"), f"program {self.who!r}")
        if warning:
            log.warning(warning)
        if self.token and not P.verify(self.token, "server", mine, challenge.get("mac")):
            raise P.AuthError(f"program {self.who!r} failed the token check: wrong or missing token; nothing was "
                              "stepped")
        P.send(self._chan, {"type": "auth", "mac": P.mac(self.token, "client", str(challenge.get("nonce", "")))},
               timeout)
        try:
            self.spec_info = P.expect(P.recv(self._chan, timeout, self.max_message), "spec")
        except P.RemoteError as e:
            raise P.AuthError(f"program {self.who!r} refused the handshake: {e}") from e

    def _kill(self) -> int | None:
        """Stop the program: SIGTERM to its process group, grace, then SIGKILL. Returns its exit code."""
        self._alive = False
        if self._chan is not None:
            self._chan.close()
            self._chan = None
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, self.term_grace), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything the program left behind in its group
        except (ProcessLookupError, PermissionError):
            pass
        code = proc.wait()
        if self._drainer is not None:
            self._drainer.join(1.0)  # its last stderr lines belong in the fault report
        return code

    def _start_with_budget(self, timeout: float) -> None:
        while True:
            try:
                self._launch(timeout)
                return
            except (P.VersionError, P.AuthError):
                self._kill()
                raise
            except (P.BridgeError, OSError) as e:
                code = self._kill()
                self._spend_restart(f"failed to start ({type(e).__name__}: {e})", code)

    def _spend_restart(self, why: str, code: int | None) -> None:
        now = time.monotonic()
        while self._restart_times and now - self._restart_times[0] > self.restart_period:
            self._restart_times.popleft()
        if self.restarts >= self.max_restarts or len(self._restart_times) >= self.restart_rate:
            budget = (f"lifetime cap {self.max_restarts}" if self.restarts >= self.max_restarts
                      else f"rate limit {self.restart_rate} per {self.restart_period:g}s")
            tail = " | ".join(list(self._stderr)[-5:]) or "(no stderr)"
            raise RestartBudgetExhausted(f"program {self.who!r} {why}; exit code {code}; restart budget spent after "
                                         f"{self.restarts} restart(s) ({budget}); last stderr: {tail}")
        self.restarts += 1
        self._restart_times.append(now)

    def _fault(self, kind: str, err: Exception) -> dict[str, Any]:
        code = self._kill()
        self._last_failure = (f"failed ({kind}: {err})", code)
        fault = {"kind": kind, "detail": str(err), "exit_code": code, "stderr": list(self._stderr)[-5:],
                 "restarts": self.restarts, "restart": True, "program": self.who}
        log.warning("program %r: %s (%s); it will be restarted", self.who, kind, err)
        return fault

    @staticmethod
    def _kind(err: Exception) -> str:
        if isinstance(err, P.BridgeTimeout):
            return "timeout"
        if isinstance(err, P.PeerClosed):
            return "crash"
        if isinstance(err, P.RemoteError):
            return "remote_error"
        return "protocol"

    # -- gymnasium API ------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset the program, restarting it first when it is dead; faults here are retried within budget."""
        super().reset(seed=seed)
        info: dict[str, Any] = {}
        while True:
            if not self._alive:
                self._spend_restart(*self._last_failure)
                self._start_with_budget(self.reset_timeout)
            try:
                assert self._chan is not None
                P.send(self._chan, {"type": "reset", "seed": seed, "options": options or {}}, self.reset_timeout)
                reply = P.expect(P.recv(self._chan, self.reset_timeout, self.max_message), "reset_result")
                self._last_obs = reply["obs"]
                return reply["obs"], {**reply.get("info", {}), **info}
            except (P.VersionError, P.AuthError):
                raise
            except P.BridgeError as e:
                info["nondiff_fault"] = fault = self._fault(self._kind(e), e)
                self._reset_faults.append(fault)

    def step(self, action):
        """Step the program; on a fault return a truncated transition with ``info["nondiff_fault"]``."""
        if not self._alive:
            raise RuntimeError("process: step() after a fault; call reset() (the vector env does this)")
        try:
            assert self._chan is not None
            P.send(self._chan, {"type": "step", "action": np.asarray(action)}, self.step_timeout)
            reply = P.expect(P.recv(self._chan, self.step_timeout, self.max_message), "step_result")
            reward = reply.get("reward")
            self._last_obs = reply["obs"]
            info = dict(reply.get("info", {}))
            if self._reset_faults:  # vector envs drop reset infos; report reset faults with the next step
                info["nondiff_reset_faults"], self._reset_faults = self._reset_faults, []
            return reply["obs"], reward, bool(reply.get("terminated")), bool(reply.get("truncated")), info
        except P.BridgeError as e:
            fault = self._fault(self._kind(e), e)
            return self._last_obs, 0.0, False, True, {"nondiff_fault": fault}

    def render(self):
        """Ask the program for an RGB frame."""
        if self.render_mode != "rgb_array" or not self._alive or self._chan is None:
            return None
        P.send(self._chan, {"type": "render"}, self.step_timeout)
        return np.asarray(P.expect(P.recv(self._chan, self.step_timeout, self.max_message), "render_result")["frame"])

    def close(self) -> None:
        """Say goodbye, then stop the program; safe to call twice."""
        if self._alive and self._chan is not None:
            try:
                P.send(self._chan, {"type": "close"}, 1.0)
                P.recv(self._chan, 1.0, self.max_message)
            except P.BridgeError:
                pass
        self._kill()
