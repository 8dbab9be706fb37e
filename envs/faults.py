"""Typed fault records: what every producer (bridge, Guard, vec envs) writes into ``info`` and one parser
reads.

A fault is one bad transition or failed program call that the framework survived. Producers put a
:class:`Fault` under ``info[FAULT_KEY]`` with :func:`add_fault` (a second fault of the same transition, such
as the Guard's repair of an adapter's crash, goes beside the first), and faults that happened during a
reset, whose info vector envs drop, under ``info[RESET_FAULTS_KEY]`` of the next step. Counters read step
infos only, so a reset fault is counted once. Consumers call :func:`faults_in` and nothing else.
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
        clipped: True when finite values past the declared bounds were clipped onto them and the transition
            went on (``env.bounds_policy: clip``), rather than being cut short or repaired by
            ``env.nan_policy``.
        shared: True on the copies a program with K instances puts on its other K - 1 envs: the same fault,
            counted once (``env/faults_by_kind`` counts faults; the copies count in
            ``env/envs_cut_by_program_faults``).
    """

    kind: FaultKind
    detail: str
    restart: bool = False
    program: str | None = None
    exit_code: int | None = None
    stderr: tuple[str, ...] = field(default_factory=tuple)
    restarts: int = 0
    budget: int | None = None
    clipped: bool = False
    shared: bool = False

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (for logs and evaluation files)."""
        out = asdict(self)
        out["kind"] = self.kind.value
        out["stderr"] = list(self.stderr)
        return out

    def merged(self, **changes: Any) -> Fault:
        """A copy with some fields replaced."""
        return Fault(**{**asdict(self), "stderr": self.stderr, **changes})




def _text(value: Any, limit: int = 500) -> str:
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception:  # a __str__ that raises, an int too long to print
        text = f"<unprintable {type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return int(value)
    except (OverflowError, ValueError):
        return None


def _coerce(obj: Any) -> Fault | None:
    if isinstance(obj, Fault):
        return obj
    if not isinstance(obj, dict) or "kind" not in obj:
        return None
    try:  # a record that crossed a JSON boundary, or an older producer's dict: any field may be of any type
        kind = FaultKind(obj["kind"])
    except (ValueError, TypeError):
        kind = FaultKind.PROTOCOL
    stderr = obj.get("stderr")
    lines = tuple(_text(s) for s in stderr[-20:]) if isinstance(stderr, (list, tuple)) else ()
    budget = _int_or_none(obj.get("budget"))
    return Fault(kind, _text(obj.get("detail", "")), obj.get("restart") is True,
                 None if obj.get("program") is None else _text(obj.get("program")),
                 _int_or_none(obj.get("exit_code")), lines, _int_or_none(obj.get("restarts")) or 0,
                 None if budget is None or budget < 0 else budget, obj.get("clipped") is True,
                 obj.get("shared") is True)


def _many(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    return [] if value is None else [value]


def faults_in(info: Any) -> list[Fault]:
    """Every fault recorded in one step's ``info``: reset faults first, then the step's own.

    ``info[FAULT_KEY]`` holds one :class:`Fault` or a tuple of them (an adapter's fault and the Guard's
    repair of the same transition); dicts with a ``kind`` are read too. Never raises: entries of any other
    type are ignored.
    """
    if not isinstance(info, dict):
        return []
    found = [_coerce(f) for f in [*_many(info.get(RESET_FAULTS_KEY)), *_many(info.get(FAULT_KEY))]]
    return [f for f in found if f is not None]


def add_fault(info: dict[str, Any], fault: Fault, key: str = FAULT_KEY) -> None:
    """Record ``fault`` in ``info`` beside any fault already there (under ``key``)."""
    if key == RESET_FAULTS_KEY:
        info[key] = [*_many(info.get(key)), fault]
        return
    before = _many(info.get(key))
    info[key] = fault if not before else (*before, fault)
