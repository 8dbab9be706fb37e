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
from agents.rundir import RunDir

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
        self.quiet = quiet

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


class EnvHealth:
    """Counts the faults the watchdog reports in ``info`` and the step latencies, for ``env/…`` metrics."""

    def __init__(self) -> None:
        self.restarts = 0
        self.timeouts = 0
        self.by_kind: dict[str, int] = {}
        self.latencies: list[float] = []

    def observe(self, infos: Any) -> None:
        """Read one vector step's infos."""
        for info in infos:
            ms = info.get("nondiff_step_ms")
            if ms is not None:
                self.latencies.append(ms)
            faults = list(info.get("nondiff_reset_faults", ()))
            if info.get("nondiff_fault"):
                faults.append(info["nondiff_fault"])
            for fault in faults:
                kind = fault.get("kind", "unknown")
                self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
                self.restarts += bool(fault.get("restart"))
                self.timeouts += kind == "timeout"

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
        self.health = EnvHealth()
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
        self.progress.close()

    def _on_signal(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if self.stop_signal is not None:  # a second Ctrl-C: stop now, without the checkpoint
            raise KeyboardInterrupt
        self.stop_signal = name
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
        if self.progress._bar is not None:
            self.progress._bar.console.print(line)
        else:
            self.printer(line)
        return better
