"""Typed fault records: what every producer (bridge, Guard, vec envs) writes into ``info`` and one parser reads.

A fault is one bad transition or failed program call that the framework survived. Producers put a
:class:`Fault` under ``info[FAULT_KEY]`` (and faults that happened during a reset, which vector envs drop,
under ``info[RESET_FAULTS_KEY]`` of the next step). Consumers call :func:`faults_in` and nothing else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

FAULT_KEY = "nondiff_fault"
RESET_FAULTS_KEY = "nondiff_reset_faults"
LATENCY_KEY = "nondiff_step_ms"


class FaultKind(str, Enum):
    """Why a transition was cut short or repaired (documented in docs/protocol.md)."""

    TIMEOUT = "timeout"
    """The program gave no complete reply before its deadline."""
    CRASH = "crash"
    """The program exited or closed the stream, or an in-process adapter raised."""
    PROTOCOL = "protocol"
    """A reply that breaks the framing, the grammar, the limits or the declared spaces' structure."""
    REMOTE_ERROR = "remote_error"
    """The program answered with an ``error`` message."""
    NONFINITE = "nonfinite"
    """An observation or reward held NaN or ±inf."""
    INVALID_OUTPUT = "invalid_output"
    """An observation or reward of the wrong shape, dtype or type, or outside the declared bounds."""
    WORKER = "worker"
    """A vector-env worker process died, hung or raised, and was replaced."""


@dataclass(frozen=True)
class Fault:
    """One fault of one env instance.

    Attributes:
        kind: the category.
        detail: one line saying what happened.
        restart: True when the program or worker was (or will be) restarted.
        program: the program's command or address, when there is one.
        exit_code: the program's exit code, when it exited.
        stderr: its last stderr lines.
        restarts: restarts spent so far by this instance.
        budget: the run-wide restart budget the producer was configured with (None: no budget of its own).
    """

    kind: FaultKind
    detail: str
    restart: bool = False
    program: str | None = None
    exit_code: int | None = None
    stderr: tuple[str, ...] = field(default_factory=tuple)
    restarts: int = 0
    budget: int | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (for logs and evaluation files)."""
        out = asdict(self)
        out["kind"] = self.kind.value
        out["stderr"] = list(self.stderr)
        return out

    def merged(self, **changes: Any) -> Fault:
        """A copy with some fields replaced."""
        return Fault(**{**asdict(self), "stderr": self.stderr, **changes})


def _coerce(obj: Any) -> Fault | None:
    if isinstance(obj, Fault):
        return obj
    if isinstance(obj, dict) and "kind" in obj:  # a record that crossed a JSON boundary
        try:
            kind = FaultKind(obj["kind"])
        except ValueError:
            kind = FaultKind.PROTOCOL
        return Fault(kind, str(obj.get("detail", "")), bool(obj.get("restart", False)), obj.get("program"),
                     obj.get("exit_code"), tuple(str(s) for s in obj.get("stderr") or ()), int(obj.get("restarts") or 0),
                     obj.get("budget"))
    return None


def faults_in(info: Any) -> list[Fault]:
    """Every fault recorded in one step's ``info``: reset faults first, then the step's own."""
    if not isinstance(info, dict):
        return []
    found = [_coerce(f) for f in info.get(RESET_FAULTS_KEY) or ()]
    found.append(_coerce(info.get(FAULT_KEY)))
    return [f for f in found if f is not None]
