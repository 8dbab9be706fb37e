"""Env health: fault counters, the run-wide restart budget, step latency and rate-limited console lines."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from envs.errors import EnvFailure
from envs.faults import FAULT_KEY, LATENCY_KEY, RESET_FAULTS_KEY, Fault, FaultKind, faults_in


class FaultReporter:
    """Console lines about env faults, rate-limited per kind.

    The first fault of each kind is printed at once; after that, at most one summary line per kind per
    ``window`` seconds, e.g. ``env: 12 nonfinite faults in the last 30 s (total 40): observation contains NaN;
    see env/faults_by_kind in TensorBoard``. :meth:`flush` prints what is still untold.

    Args:
        say: prints one line (the session's printer, which cooperates with the progress bar).
        window: seconds between two summary lines of one kind.
        clock: the time source (``time.monotonic``).
    """

    def __init__(self, say: Callable[[str], None], window: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.say, self.window, self.clock = say, window, clock
        self.total: dict[str, int] = {}
        self._untold: dict[str, int] = {}
        self._last_line: dict[str, float] = {}
        self._latest: dict[str, Fault] = {}

    def note(self, fault: Fault, count: int = 1) -> None:
        """Count ``count`` faults like ``fault``; print when its kind is new or its window has passed."""
        if count < 1:
            return
        kind = fault.kind.value
        self.total[kind] = self.total.get(kind, 0) + count
        self._latest[kind] = fault
        if kind not in self._last_line:
            self._last_line[kind] = self.clock()
            where = f" ({fault.program})" if fault.program else ""
            more = f" (and {count - 1} more)" if count > 1 else ""
            self.say(f"env: {kind} fault{where}: {fault.detail}{more}; further {kind} faults are summarised "
                     f"every {self.window:g} s; see env/faults_by_kind in TensorBoard")
            return
        self._untold[kind] = self._untold.get(kind, 0) + count
        self.tick()

    def tick(self) -> None:
        """Print the summary of every kind whose window has passed."""
        now = self.clock()
        for kind, n in list(self._untold.items()):
            if n and now - self._last_line[kind] >= self.window:
                self._summary(kind, n, f"in the last {now - self._last_line[kind]:.0f} s")
                self._last_line[kind] = now

    def flush(self) -> None:
        """Print the summary of every kind with faults not yet reported."""
        for kind, n in list(self._untold.items()):
            if n:
                self._summary(kind, n, "since the last report")

    def _summary(self, kind: str, n: int, when: str) -> None:
        self._untold[kind] = 0
        self.say(f"env: {n} {kind} fault{'s' if n > 1 else ''} {when} (total {self.total[kind]}): "
                 f"{self._latest[kind].detail}; see env/faults_by_kind in TensorBoard")


GOVERNED_BY = {
    "crash": "each one restarts the program and spends the run's restart budget (env.max_restarts; at most "
             "env.restart_rate per env.restart_period): fix the program, or raise env.max_restarts",
    "protocol": "each one restarts the program and spends the run's restart budget (env.max_restarts): fix "
                "what the program sends (docs/protocol.md), or raise env.max_message if its replies are "
                "merely large",
    "remote_error": "each one restarts the program and spends the run's restart budget (env.max_restarts): "
                    "see the program's error text and stderr",
    "timeout": "a step may take env.step_timeout seconds and a reset env.reset_timeout; each timeout "
               "restarts the program and spends env.max_restarts: raise env.step_timeout if the program is "
               "merely slow",
    "nonfinite": "each one is handled by env.nan_policy (truncate ends the episode): fix the env, or set "
                 "env.nan_policy: clip to repair the values",
    "invalid_output": "each one is handled by env.nan_policy (wrong dtype or shape; truncate ends the "
                      "episode) or env.bounds_policy (values past the declared bounds): fix the env",
    "worker": "each dead or hung worker is replaced, within train.max_worker_restarts; a worker hangs after "
              "train.worker_timeout seconds",
}
"""The settings that govern each fault kind, for the console warning."""
IN_PROCESS_CRASH = ("each one ends its episode (truncated, reward 0) and the env is reset, not rebuilt; 100 "
                    "failed steps in a row stop training: fix the env")
"""The warning's advice for a crash of an in-process env (an exception from its step: no budget)."""


class EnvHealth:
    """Counts the faults the envs report in ``info`` and the step latencies, for ``env/…`` metrics.

    ``env/faults_by_kind/<kind>`` counts faults: a program's fault once, whatever its number of instances K
    (crash, timeout, protocol, remote_error), the Guard's per env (nonfinite, invalid_output), a worker's per
    env it served. ``env/envs_cut_by_program_faults`` counts the other K - 1 envs a program fault truncated.

    Restart faults that carry a ``budget`` (the bridge's ``max_restarts``) are counted across every env
    instance of the run: with a smallest budget of N seen, failure N + 1 raises
    :class:`~envs.errors.EnvFailure` ("restart budget of N for the whole run spent after N restarts").
    Faults of the same vector step after that one are not counted. Restart faults without a budget (vector-env
    workers, which have their own, and in-process crashes) count in ``env/restarts`` only.

    Args:
        say: prints one console line (see :class:`FaultReporter`); None: silent.
    """

    RATE = 0.01
    """A fault kind on more than this share of the steps of one period gets a console warning (once)."""
    PERIOD = 1000
    """Steps (summed over the vector envs) per rate period."""

    def __init__(self, say: Callable[[str], None] | None = None) -> None:
        self.say = say
        self._period_steps = 0
        self._period: dict[str, int] = {}
        self._warned: set[str] = set()
        self.restarts = 0
        self.budgeted_restarts = 0
        self.budget: int | None = None
        self.timeouts = 0
        self.shared = 0
        """Envs truncated by a fault of their program that another of its envs reports (the K - 1 copies)."""
        self.by_kind: dict[str, int] = {}
        self.latencies: list[float] = []
        self.reporter = FaultReporter(say) if say is not None else None

    def observe(self, infos: Any) -> None:
        """Read one vector step's infos; never raises on malformed entries, only :class:`EnvFailure`."""
        try:
            items = list(infos) if isinstance(infos, (list, tuple)) else []
        except Exception:
            items = []
        self._period_steps += len(items)
        for info in items:
            if not isinstance(info, dict):
                continue
            ms = info.get(LATENCY_KEY)
            if type(ms) is float:  # what the Guard writes: no NumPy, no isinstance chain on the common path
                if math.isfinite(ms):
                    self.latencies.append(ms)
            elif isinstance(ms, (int, float, np.number)) and not isinstance(ms, bool) and math.isfinite(ms):
                self.latencies.append(float(ms))
            if FAULT_KEY in info or RESET_FAULTS_KEY in info:
                for fault in faults_in(info):
                    self._count(fault)
        if self.reporter is not None:
            self.reporter.tick()
        if self._period_steps >= self.PERIOD:
            self._check_rates()

    def _check_rates(self) -> None:
        """Warn once per kind whose faults exceeded :attr:`RATE` of the period's steps, then start a new
        period."""
        for kind, n in self._period.items():
            if n > self.RATE * self._period_steps and kind not in self._warned and self.say is not None:
                self._warned.add(kind)
                fault = self.reporter._latest.get(kind) if self.reporter is not None else None
                env = f"env {fault.program}" if fault is not None and fault.program else "the env"
                example = fault.detail if fault is not None else "(no detail)"
                if fault is not None and fault.clipped:
                    how = ("each was clipped and its episode went on (env.bounds_policy: clip; "
                           "env.nan_policy handles NaN and garbage): fix the env's declared bounds, or set "
                           "env.bounds_policy: truncate")
                elif kind == "crash" and fault is not None and fault.budget is None:  # in-process
                    how = IN_PROCESS_CRASH
                else:
                    how = GOVERNED_BY.get(kind, GOVERNED_BY["nonfinite"])
                share = min(1.0, n / self._period_steps)  # a reset's fault and its step's count as one step
                self.say(f"warning: {env} gave faults of kind {kind} on {share:.0%} of the "
                         f"last {self._period_steps:,} steps, e.g. {example}; {how}")
        self._period_steps, self._period = 0, {}

    def _count(self, fault: Fault) -> None:
        if fault.shared:  # the same program fault, reported once by the program's first env
            self.shared += 1
            return
        kind = fault.kind.value
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        self._period[kind] = self._period.get(kind, 0) + 1
        self.timeouts += fault.kind is FaultKind.TIMEOUT
        if self.reporter is not None:
            self.reporter.note(fault)
        if not fault.restart:
            return
        self.restarts += 1
        if fault.budget is not None:
            self._spend(1, fault.budget, fault)

    def _spend(self, n: int, budget: int, fault: Fault | None) -> None:
        self.budget = budget if self.budget is None else min(self.budget, budget)
        self.budgeted_restarts += n
        if self.budgeted_restarts > self.budget:
            what = ("(unknown program)" if fault is None
                    else f"program {fault.program or '(unknown)'!r}: {fault.detail}")
            tail = (" | ".join(fault.stderr[-5:]) if fault is not None else "") or "(no stderr)"
            if self.reporter is not None:
                self.reporter.flush()  # the fault counts before the error line, not after it
            raise EnvFailure(f"{what}; restart budget of {self.budget} for the whole run spent after "
                             f"{self.budget} restarts (this is failure {self.budgeted_restarts}, counted "
                             "over all env instances); exit code "
                             f"{None if fault is None else fault.exit_code}; last stderr: {tail}")

    def observe_counts(self, by_kind: dict[str, int], *, restarts: int = 0, budgeted_restarts: int = 0,
                       budget: int | None = None, examples: Mapping[str, Fault] | None = None) -> None:
        """Add counts aggregated elsewhere (RLlib's env runners, once per training iteration).

        Same counters, console lines and run-wide budget as :meth:`observe`, at the granularity of the
        aggregation: failure N + 1 is noticed at the end of the iteration that held it.

        Args:
            by_kind: faults per kind value since the previous call.
            restarts: restart faults among them.
            budgeted_restarts: restart faults among them that carried a budget.
            budget: the smallest budget those faults carried.
            examples: a fault of each kind (by kind value; the latest the env runners kept), for the
                console line and the failure message; a kind without one says "(no detail)".
        """
        examples = examples or {}
        for kind, n in by_kind.items():
            try:
                fault_kind = FaultKind(kind)
            except ValueError:
                continue
            self.by_kind[kind] = self.by_kind.get(kind, 0) + n
            self.timeouts += n if fault_kind is FaultKind.TIMEOUT else 0
            if self.reporter is not None:
                self.reporter.note(examples.get(kind) or Fault(fault_kind, "(no detail)"), n)
        self.restarts += restarts
        if budget is not None and budgeted_restarts > 0:
            restart = [f for k, f in examples.items() if f.restart and by_kind.get(k)]
            self._spend(budgeted_restarts, budget, restart[-1] if restart else None)

    def metrics(self) -> dict[str, float]:
        """``env/…`` scalars; latency percentiles cover the steps since the previous call."""
        out: dict[str, float] = {"env/restarts": self.restarts, "env/timeouts": self.timeouts}
        if self.shared:
            out["env/envs_cut_by_program_faults"] = self.shared
        for kind, n in self.by_kind.items():
            out[f"env/faults_by_kind/{kind}"] = n
        if self.latencies:
            p50, p99 = np.percentile(self.latencies, [50, 99])
            out["env/step_latency_ms_p50"], out["env/step_latency_ms_p99"] = float(p50), float(p99)
            self.latencies.clear()
        return out
