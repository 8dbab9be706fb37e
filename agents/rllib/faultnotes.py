"""What a fault's console line shows on RLlib: each env runner keeps the latest fault of each kind that its
envs reported (:func:`note`, called by the health callback), and the driver fetches them after an iteration
that counted faults (:func:`latest`), so the line names what happened ("e.g. observation contains NaN"), as
on SB3. RLlib's metrics carry only numbers, and the runners' logs do not reach the driver
(``log_to_driver=False``): without this the line said "(no detail)".
"""

from __future__ import annotations

import logging
import time
from typing import Any

from envs.faults import FAULT_KEY, Fault, faults_in

log = logging.getLogger(__name__)

FETCH_EVERY_S = 10.0
"""At most one fetch per this many seconds (the console's fault lines are rate-limited anyway)."""
FETCH_TIMEOUT_S = 5.0
"""How long the driver waits for the runners' answers (a runner busy sampling answers after its sample)."""

_LATEST: dict[str, Fault] = {}
"""The latest fault of each kind in this process: an env runner's (the local runner's is the driver's)."""


def note(fault: Fault) -> None:
    """Keep ``fault`` as its kind's latest (in the env runner that saw it)."""
    _LATEST[fault.kind.value] = fault


def _take(_runner: Any) -> list[dict[str, Any]]:
    """Run in an env runner: its latest faults, as JSON records, forgotten once handed over."""
    out = [f.to_json() for f in _LATEST.values()]
    _LATEST.clear()
    return out


class FaultNotes:
    """The driver's side: the latest fault of each kind over every env runner, fetched at most every
    :data:`FETCH_EVERY_S` seconds, and only after an iteration that counted faults."""

    def __init__(self) -> None:
        self._last = -FETCH_EVERY_S
        self.examples: dict[str, Fault] = {}

    def latest(self, group: Any, counted: bool) -> dict[str, Fault]:
        """The examples to show for this iteration's faults (``counted``: it counted some); never raises,
        since a detail must not cost the run."""
        now = time.monotonic()
        if not counted or now - self._last < FETCH_EVERY_S:
            return self.examples
        self._last = now
        try:
            found = group.foreach_env_runner(_take, local_env_runner=True, timeout_seconds=FETCH_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 - a runner that died mid-call: its count still stands
            log.debug("fetching the env runners' fault details failed: %s", e)
            return self.examples
        for records in found:
            for fault in faults_in({FAULT_KEY: records if isinstance(records, list) else []}):
                self.examples[fault.kind.value] = fault
        return self.examples
