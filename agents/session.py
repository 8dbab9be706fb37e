"""Backend-neutral bookkeeping of a training run: progress display, signals, checkpoint and eval schedule."""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from agents.config import RunConfig
from agents.errors import EnvFailure
from agents.rundir import RunDir
from envs.faults import LATENCY_KEY, Fault, FaultKind, faults_in
from envs.protocol import clear_stop, request_stop

log = logging.getLogger(__name__)


class Progress:
    """A rich progress bar on a terminal, periodic log lines elsewhere or with ``--quiet``."""

    def __init__(self, start: int, total: int, *, quiet: bool, log_every: int,
                 printer: Callable[[str], None] = print) -> None:
        self.start, self.total, self.log_every, self.printer = start, total, log_every, printer
        self.t0 = time.monotonic()
        self.last_line = start
        self.reward: float | None = None
        self._bar: Any = None
        if not quiet and sys.stdout.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[sps]} steps/s"), TimeElapsedColumn(), TextColumn("ETA"),
                                     TimeRemainingColumn(), TextColumn("return {task.fields[ret]}"), transient=False)
            self._task = self._bar.add_task("train", total=total, completed=start, sps="-", ret="-")
            self._bar.start()

    def update(self, step: int, reward: float | None) -> None:
        """Report the global step and the latest mean episode return."""
        if reward is not None:
            self.reward = reward
        sps = (step - self.start) / max(time.monotonic() - self.t0, 1e-9)
        ret = "-" if self.reward is None else f"{self.reward:.2f}"
        if self._bar is not None:
            self._bar.update(self._task, completed=step, sps=f"{sps:,.0f}", ret=ret)
        elif step - self.last_line >= self.log_every or step >= self.total:
            self.last_line = step
            eta = max(0.0, (self.total - step) / sps) if sps > 0 else float("inf")
            self.printer(f"step {step:,}/{self.total:,} | {sps:,.0f} steps/s | ep_rew_mean {ret} | "
                         f"ETA {eta:,.0f}s")

    def close(self) -> None:
        """Stop the bar."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


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
            self.say(f"env: {kind} fault{where}: {fault.detail}{more}; further {kind} faults are summarised every "
                     f"{self.window:g} s; see env/faults_by_kind in TensorBoard")
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


class EnvHealth:
    """Counts the faults the envs report in ``info`` and the step latencies, for ``env/…`` metrics.

    Restart faults that carry a ``budget`` (the bridge's ``max_restarts``) are counted across every env
    instance of the run: with a smallest budget of N seen, failure N + 1 raises
    :class:`~agents.errors.EnvFailure` ("restart budget of N for the whole run spent after N restarts").
    Faults of the same vector step after that one are not counted. Restart faults without a budget (vector-env
    workers, which have their own, and in-process crashes) count in ``env/restarts`` only.

    Args:
        say: prints one console line (see :class:`FaultReporter`); None: silent.
    """

    def __init__(self, say: Callable[[str], None] | None = None) -> None:
        self.restarts = 0
        self.budgeted_restarts = 0
        self.budget: int | None = None
        self.timeouts = 0
        self.by_kind: dict[str, int] = {}
        self.latencies: list[float] = []
        self.reporter = FaultReporter(say) if say is not None else None

    def observe(self, infos: Any) -> None:
        """Read one vector step's infos; never raises on malformed entries, only :class:`EnvFailure`."""
        try:
            items = list(infos) if isinstance(infos, (list, tuple)) else []
        except Exception:
            items = []
        for info in items:
            if not isinstance(info, dict):
                continue
            ms = info.get(LATENCY_KEY)
            if isinstance(ms, (int, float, np.number)) and not isinstance(ms, bool) and np.isfinite(ms):
                self.latencies.append(float(ms))
            for fault in faults_in(info):
                self._count(fault)
        if self.reporter is not None:
            self.reporter.tick()

    def _count(self, fault: Fault) -> None:
        kind = fault.kind.value
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
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
            what = "(unknown program)" if fault is None else f"program {fault.program or '(unknown)'!r}: {fault.detail}"
            tail = (" | ".join(fault.stderr[-5:]) if fault is not None else "") or "(no stderr)"
            if self.reporter is not None:
                self.reporter.flush()  # the fault counts before the error line, not after it
            raise EnvFailure(f"{what}; restart budget of {self.budget} for the whole run spent after {self.budget} "
                             f"restarts (this is failure {self.budgeted_restarts}, counted over all env instances); "
                             f"exit code {None if fault is None else fault.exit_code}; last stderr: {tail}")

    def observe_counts(self, by_kind: dict[str, int], *, restarts: int = 0, budgeted_restarts: int = 0,
                       budget: int | None = None, last: Fault | None = None) -> None:
        """Add counts aggregated elsewhere (RLlib's env runners, once per training iteration).

        Same counters, console lines and run-wide budget as :meth:`observe`, at the granularity of the
        aggregation: failure N + 1 is noticed at the end of the iteration that held it.

        Args:
            by_kind: faults per kind value since the previous call.
            restarts: restart faults among them.
            budgeted_restarts: restart faults among them that carried a budget.
            budget: the smallest budget those faults carried.
            last: one of the faults (the latest), for the console line and the failure message.
        """
        for kind, n in by_kind.items():
            try:
                fault_kind = FaultKind(kind)
            except ValueError:
                continue
            self.by_kind[kind] = self.by_kind.get(kind, 0) + n
            self.timeouts += n if fault_kind is FaultKind.TIMEOUT else 0
            if self.reporter is not None:
                example = last if last is not None and last.kind is fault_kind else Fault(fault_kind, "(no detail)")
                self.reporter.note(example, n)
        self.restarts += restarts
        if budget is not None and budgeted_restarts > 0:
            self._spend(budgeted_restarts, budget, last)

    def metrics(self) -> dict[str, float]:
        """``env/…`` scalars; latency percentiles cover the steps since the previous call."""
        out: dict[str, float] = {"env/restarts": self.restarts, "env/timeouts": self.timeouts}
        for kind, n in self.by_kind.items():
            out[f"env/faults_by_kind/{kind}"] = n
        if self.latencies:
            p50, p99 = np.percentile(self.latencies, [50, 99])
            out["env/step_latency_ms_p50"], out["env/step_latency_ms_p99"] = float(p50), float(p99)
            self.latencies.clear()
        return out


class Session:
    """What a backend consults while it trains; identical for SB3 and RLlib.

    Attributes:
        cfg: the resolved config.
        run: the run directory.
        start_step: the global step training starts (or resumes) at.
        total_steps: the global step to stop at.
        stop_signal: the name of the signal that asked training to stop, or None.
    """

    def __init__(self, cfg: RunConfig, run: RunDir, *, start_step: int, total_steps: int, quiet: bool = False,
                 printer: Callable[[str], None] = print) -> None:
        self.cfg, self.run = cfg, run
        self.start_step, self.total_steps = start_step, total_steps
        self.stop_signal: str | None = None
        self.printer = printer
        self.progress = Progress(start_step, total_steps, quiet=quiet, log_every=cfg.train.log_every, printer=printer)
        every = cfg.train.checkpoint_every
        self._next_ckpt = (start_step // every + 1) * every
        ev = cfg.eval.every
        self._next_eval = (start_step // ev + 1) * ev if ev > 0 else None
        self.best_reward = self._best_so_far()
        self.health = EnvHealth(self.say)
        self._old_handlers: dict[int, Any] = {}

    def _best_so_far(self) -> float:
        path = self.run.path / "evaluations.jsonl"
        if not path.is_file():
            return float("-inf")
        rewards = [json.loads(line)["mean_reward"] for line in path.read_text().splitlines() if line.strip()]
        return max(rewards, default=float("-inf"))

    # -- signals -----------------------------------------------------------------------------------------
    def __enter__(self) -> Session:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        clear_stop()
        if self.health.reporter is not None:
            self.health.reporter.flush()
        self.progress.close()

    def say(self, line: str) -> None:
        """Print one line above the progress bar (or through the printer when there is none)."""
        if self.progress._bar is not None:
            self.progress._bar.console.print(line, markup=False, highlight=False)
        else:
            self.printer(line)

    def _on_signal(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if self.stop_signal is not None:  # a second Ctrl-C: stop now, without the checkpoint
            raise KeyboardInterrupt
        self.stop_signal = name
        request_stop()  # bridge and worker waits end within ~1 s instead of their full deadlines
        log.warning("%s received: finishing the current step and writing a checkpoint", name)

    @property
    def should_stop(self) -> bool:
        """True once SIGINT or SIGTERM arrived."""
        return self.stop_signal is not None

    # -- schedule ----------------------------------------------------------------------------------------
    def checkpoint_due(self, step: int) -> bool:
        """True once per ``train.checkpoint_every`` steps."""
        if step < self._next_ckpt:
            return False
        every = self.cfg.train.checkpoint_every
        self._next_ckpt = (step // every + 1) * every
        return True

    def eval_due(self, step: int) -> bool:
        """True once per ``eval.every`` steps (never when it is 0)."""
        if self._next_eval is None or step < self._next_eval:
            return False
        every = self.cfg.eval.every
        self._next_eval = (step // every + 1) * every
        return True

    def record_eval(self, step: int, result: dict[str, Any]) -> bool:
        """Append an evaluation to ``evaluations.jsonl``; return True when it is the best so far."""
        line = json.dumps({"step": step, **result})
        with open(self.run.path / "evaluations.jsonl", "a") as f:
            f.write(line + "\n")
        better = result["mean_reward"] > self.best_reward
        if better:
            self.best_reward = result["mean_reward"]
        succ = "" if result["success_rate"] is None else f", success_rate {result['success_rate']:.2f}"
        extra = "".join(f", {k} {v:.3g}" for k, v in result.get("metrics", {}).items())
        line = (f"eval @ {step:,}: mean_reward {result['mean_reward']:.2f} ± {result['std_reward']:.2f}"
                f"{succ}{extra}{' (new best)' if better else ''}")
        self.say(line)
        return better
