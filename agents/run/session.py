"""Backend-neutral bookkeeping of a training run: progress, signals, the TensorBoard writer and the
schedule."""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.config import RunConfig
from agents.run.evaluation import EvalSummary
from agents.run.health import EnvHealth
from agents.run.memwatch import MemoryWatch
from agents.run.rundir import RunDir
from envs.stop import clear_stop, request_stop

if TYPE_CHECKING:
    from envs.selfplay import GameResult

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
                                     TextColumn("{task.fields[sps]} steps/s"), TimeElapsedColumn(),
                                     TextColumn("ETA"), TimeRemainingColumn(),
                                     TextColumn("return {task.fields[ret]}"), transient=False)
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
        elif step > self.last_line and (step - self.last_line >= self.log_every or step >= self.total):
            self.last_line = step
            eta = max(0.0, (self.total - step) / sps) if sps > 0 else float("inf")
            self.printer(f"step {step:,}/{self.total:,} | {sps:,.0f} steps/s | ep_rew_mean {ret} | "
                         f"ETA {eta:,.0f}s")

    def close(self) -> None:
        """Stop the bar."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class Session:
    """What the training loop and a backend share while a run trains; identical for every backend.

    Attributes:
        cfg: the resolved config.
        run: the run directory.
        start_step: the global step training starts (or resumes) at.
        total_steps: the global step to stop at.
        stop_signal: the name of the signal that asked training to stop, or None.
        health: the env-health counters (faults, restarts, latency) and the run-wide restart budget.
        writer: the run's TensorBoard writer, open while the loop runs (:meth:`open_writer`).
    """

    def __init__(self, cfg: RunConfig, run: RunDir, *, start_step: int, total_steps: int, quiet: bool = False,
                 printer: Callable[[str], None] = print) -> None:
        self.cfg, self.run = cfg, run
        self.start_step, self.total_steps = start_step, total_steps
        self.stop_signal: str | None = None
        self.printer = printer
        self.progress = Progress(start_step, total_steps, quiet=quiet, log_every=cfg.train.log_every,
                                 printer=printer)
        every = cfg.train.checkpoint_every
        self._next_ckpt = (start_step // every + 1) * every
        ev = cfg.eval.every
        self._next_eval = (start_step // ev + 1) * ev if ev > 0 else None
        self.best_reward = self._best_so_far()
        self.health = EnvHealth(self.say)
        self.memory = MemoryWatch(cfg.train.max_memory_gb, self.say)
        self.league: Any = None
        """The self-play league of a turn-based game (agents/run/selfplay/), else None."""
        self.writer: Any = None
        self._old_handlers: dict[int, Any] = {}
        self._last_tick = 0.0

    def _best_so_far(self) -> float:
        path = self.run.path / "evaluations.jsonl"
        if not path.is_file():
            return float("-inf")
        best = float("-inf")
        for line in path.read_text(errors="replace").splitlines():
            try:
                value = float(json.loads(line)["mean_reward"])
            except (ValueError, KeyError, TypeError):  # a torn or foreign line: it cannot be the best
                continue
            best = max(best, value) if value == value else best
        return best

    # -- signals -----------------------------------------------------------------------------------------
    def __enter__(self) -> Session:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        clear_stop()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
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
        if self.stop_signal is not None:  # a second Ctrl-C: stop now (runner.py writes crash/)
            raise KeyboardInterrupt
        self.stop_signal = name
        request_stop()  # bridge and worker waits end within ~1 s instead of their full deadlines
        log.warning("%s received: finishing the current step and writing a checkpoint (a second one stops "
                    "without waiting for the step, and still writes a checkpoint)", name)

    @property
    def should_stop(self) -> bool:
        """True once SIGINT or SIGTERM arrived."""
        return self.stop_signal is not None

    def tick(self, step: int, infos: Any = (), ep_rew_mean: float | None = None) -> bool:
        """Called by a backend after each vector step it sees: health records, a throttled progress update.

        Returns:
            False once training should stop (a signal arrived).

        Raises:
            EnvFailure: the run-wide restart budget is spent, or the machine's memory is
                (:class:`~envs.errors.MemoryExhausted`).
        """
        self.health.observe(infos)
        if self.league is not None:
            self.league.observe(infos)
        now = time.monotonic()
        if now - self._last_tick > 0.25:
            self._last_tick = now
            self.progress.update(step, ep_rew_mean)
            self.memory.look(step)
        return not self.should_stop

    def record_games(self, results: Iterable[GameResult]) -> None:
        """Self-play games counted elsewhere (RLlib's env runners, once per training iteration): each one
        rates the league as :meth:`tick`'s ``info`` records do."""
        if self.league is not None:
            for result in results:
                self.league.record(result)

    # -- TensorBoard ---------------------------------------------------------------------------------------
    def open_writer(self) -> Any:
        """Open the run's TensorBoard writer; a resumed run purges events a killed run wrote past its
        checkpoint.

        A new run logs the resolved config (tokens redacted) as the ``hyperparameters`` text.
        """
        from torch.utils.tensorboard import SummaryWriter

        purge = self.start_step + 1 if self.start_step else None
        self.writer = SummaryWriter(log_dir=str(self.run.tensorboard), purge_step=purge)
        if not self.start_step:
            rows = "\n".join(f"|{k}|{v}|" for k, v in _flatten(self.cfg.model_dump(mode="json")).items())
            self.writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + rows, 0)
        return self.writer

    def log(self, scalars: dict[str, Any], step: int) -> None:
        """Write finite scalars at ``step``."""
        for key, value in scalars.items():
            if isinstance(value, int | float | np.number) and np.isfinite(value):
                self.writer.add_scalar(key, float(value), step)

    # -- schedule ----------------------------------------------------------------------------------------
    def next_boundary(self, step: int) -> int:
        """The next step at which the loop has work: a checkpoint, an evaluation or the end of the budget."""
        marks = ([self.total_steps, self._next_ckpt]
                 + ([self._next_eval] if self._next_eval is not None else []))
        return max(step + 1, min(marks))

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

    def record_eval(self, step: int, result: EvalSummary) -> bool:
        """Append an evaluation to ``evaluations.jsonl``; return True when it is the best so far."""
        line = json.dumps({"step": step, **result.to_json()})
        with open(self.run.path / "evaluations.jsonl", "a") as f:
            f.write(line + "\n")
        better = result.mean_reward > self.best_reward
        if better:
            self.best_reward = result.mean_reward
        succ = "" if result.success_rate is None else f", success_rate {result.success_rate:.2f}"
        extra = "".join(f", {k} {v:.3g}" for k, v in result.metrics.items())
        line = (f"eval @ {step:,}: mean_reward {result.mean_reward:.2f} ± {result.std_reward:.2f}"
                f"{succ}{extra}{' (new best)' if better else ''}")
        self.say(line)
        return better


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
