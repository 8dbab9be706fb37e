"""Marks for settings that reach beyond this process: they import code, run a program, or contact a host.

A run directory's ``config.yaml`` is code when any marked setting in it is set. The config schema
(agents/config/schema.py, env.py) marks its own fields, and an adapter marks the keyword arguments of its
``__init__`` that reach out, both with ``typing.Annotated``::

    command: Annotated[str | None, Reach.RUN.mark("start the program")] = None

``agents/run/trust.py`` reads the marks (never a hand-kept list of names) and refuses an unsigned run
directory that sets one, before anything in it is imported; tests/agents/run/test_trust_marks.py fails when a
new field or adapter argument is neither marked nor listed there as reviewed.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

__all__ = ["Mark", "Reach", "beyond_loopback", "is_set"]


class Reach(Enum):
    """What a marked setting makes nondiff do."""

    IMPORT = "import"
    """Import a module or an object by its path."""
    RUN = "run"
    """Start a program, or hand settings to a framework as they are."""
    CONTACT = "contact"
    """Connect to, or listen for, another host."""
    ADAPTER = "adapter"
    """Hold adapter keyword arguments, whose own marks apply (``env.eval_kwargs``)."""

    def mark(self, what: str, applies: Callable[[Any], bool] | None = None) -> Mark:
        """A mark of this kind; ``what`` completes "loading it would …" (e.g. ``start the program``)."""
        return Mark(self, what, applies or is_set)


@dataclass(frozen=True)
class Mark:
    """The ``Annotated`` metadata of a setting that reaches out.

    Attributes:
        reach: what it makes nondiff do.
        what: the phrase for a message: ``"<what> env.command='./x'"``.
        applies: whether a given value reaches out (an empty list or a loopback address does not).
    """

    reach: Reach
    what: str
    applies: Callable[[Any], bool]

    def phrase(self, name: str, value: Any) -> str:
        """``<what> <name>=<value>``, or the empty string when this value does not reach out."""
        return f"{self.what} {name}={value!r}" if self.applies(value) else ""


def is_set(value: Any) -> bool:
    """Anything but None, an empty string or an empty collection."""
    return value is not None and value != "" and value != [] and value != {} and value != ()


def _host(address: str) -> str:
    return str(address).rpartition(":")[0].strip("[]") or str(address)


def beyond_loopback(address: Any) -> bool:
    """True for a ``host:port`` whose host is not 127.0.0.0/8 or ::1 (a name that does not resolve counts)."""
    if not is_set(address):
        return False
    host = _host(str(address))
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if host == "localhost":
        return False
    try:  # a name: where it resolves now (resolution only, no connection)
        return not ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return True
