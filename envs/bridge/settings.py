"""The settings of a bridge env (:class:`~envs.bridge.process.ProcessEnv`): those given, checked before
anything starts, and the fixed ones."""

from __future__ import annotations

import math
import numbers

from envs.bridge import listen as L
from envs.bridge import protocol as P

TIMEOUTS_BEFORE_UP = 2
"""Starts in a row that may time out before a program's first handshake in this env; then the run stops with
one line, instead of 11 × ``reset_timeout`` of restarts (113 s for a command that never connects)."""
EXIT_AFTER_BYE_S = 2.0
"""How long a program on pipes has, after its ``bye``, to exit by itself (removing its temporary files, say)
before it is sent SIGTERM; at most ``term_grace``."""


def check_settings(command: str | None, address: str | None, listen: str | None, connect_timeout: float,
                   handshake_timeout: float, num_instances: int | None, step_timeout: float,
                   reset_timeout: float, term_grace: float, max_restarts: int, restart_rate: int,
                   restart_period: float, max_message: int, max_space_elements: int) -> None:
    """Refuse settings no program could run with, in one line each (ProcessEnv's Args say what they mean).

    Raises:
        ValueError: which setting, what it must be, and what came.
    """
    given = sum(x is not None for x in (command, address, listen))
    if given != 1 and (given, address) != (2, None):
        raise ValueError("process: pass one of command='./program args', address='host:port' (a program "
                         "that listens) or listen='host:port' (programs that connect to nondiff), or "
                         "command with listen='127.0.0.1:0' (nondiff starts programs that connect)")
    _seconds(connect_timeout=connect_timeout, handshake_timeout=handshake_timeout)
    if num_instances is not None and (type(num_instances) is not int
                                      or not 1 <= num_instances <= P.MAX_INSTANCES):
        raise ValueError(f"process: num_instances must be an integer from 1 to {P.MAX_INSTANCES} "
                         f"(the K each program declares) or None, got {num_instances!r}")
    _seconds(step_timeout=step_timeout, reset_timeout=reset_timeout, restart_period=restart_period)
    _seconds(zero=True, term_grace=term_grace)
    for name, value, low in (("max_restarts", max_restarts, 0), ("restart_rate", restart_rate, 1)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
            raise ValueError(f"process: {name} must be an integer >= {low}, got {value!r}; set it with "
                             f"--set env.{name}=N")
    if max_message < 1024 or max_space_elements < 1:
        raise ValueError("process: max_message must be >= 1024 bytes and max_space_elements >= 1")


def _seconds(zero: bool = False, **given: object) -> None:
    """Refuse a duration that is not a finite number of seconds > 0 (``zero``: >= 0).

    NaN and infinity would disable the deadline they set: with ``step_timeout=.nan`` a hung program hung the
    run for ever instead of being restarted by the watchdog.
    """
    for name, value in given.items():
        real = isinstance(value, numbers.Real) and not isinstance(value, bool)
        seconds = float(value) if real else math.nan  # type: ignore[arg-type]
        if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero):
            bound = ">= 0" if zero else "> 0"
            raise ValueError(f"process: {name} must be a finite number of seconds {bound}, got {value!r}; "
                             f"set it with --set env.{name}=SECONDS, e.g. 5.0")


def remote_address(address: str, allow_remote: bool, token: str) -> tuple[str, int]:
    """``address`` (``host:port`` of a program that listens) as a pair; beyond loopback only with
    ``allow_remote`` and a token.

    Raises:
        ValueError: a malformed address, or a remote one without both.
    """
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"process: address must look like host:port, got {address!r}")
    if not L.is_loopback(host) and not (allow_remote and token):
        raise ValueError(f"process: {address} is not a loopback address; connecting to it needs "
                         "allow_remote=True and a shared token (token=...) checked by the handshake")
    return host, int(port)
