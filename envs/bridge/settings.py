"""The settings of a bridge env (:class:`~envs.bridge.process.ProcessEnv`), checked before anything starts."""

from __future__ import annotations

from envs.bridge import protocol as P


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
    if connect_timeout <= 0 or handshake_timeout <= 0:
        raise ValueError(f"process: connect_timeout and handshake_timeout must be > 0 seconds, got "
                         f"{connect_timeout} and {handshake_timeout}")
    if num_instances is not None and (type(num_instances) is not int
                                      or not 1 <= num_instances <= P.MAX_INSTANCES):
        raise ValueError(f"process: num_instances must be an integer from 1 to {P.MAX_INSTANCES} "
                         f"(the K each program declares) or None, got {num_instances!r}")
    if step_timeout <= 0 or reset_timeout <= 0 or term_grace < 0:
        raise ValueError(f"process: timeouts must be > 0, got step {step_timeout}, "
                         f"reset {reset_timeout}, term_grace {term_grace}")
    if max_restarts < 0 or restart_rate < 1 or restart_period <= 0:
        raise ValueError("process: max_restarts must be >= 0, restart_rate >= 1 and restart_period > 0")
    if max_message < 1024 or max_space_elements < 1:
        raise ValueError("process: max_message must be >= 1024 bytes and max_space_elements >= 1")
