"""One trial of a study: its seeds as ``train.py`` processes, their evaluations reported to the pruner.

Each seed is an ordinary run dir (``trial-NNNN/seed-S``) trained by its own ``train.py`` process, started
through :mod:`agents.search.child`. Why processes and not threads in this one: a trial's seeds train at the
same time on separate cores (a thread would share one GIL), an env that crashes or leaks takes down one
run and not the study, memory goes back to the system after each run, and a killed study leaves each run
with a checkpoint that ``train.py --resume`` continues, as for any run. Starting ``train.py`` costs ~3 s.

While the runs train, the trial reads their ``evaluations.jsonl``; once every seed has its i-th evaluation,
the seeds' scores combined (:func:`across_seeds`: their mean by default) are reported to Optuna at step i,
and the pruner may stop the trial (SIGTERM: each run writes ``final/`` and exits). The trial's score
combines the seeds' last evaluations the same way; a seed's score is the success rate where the env reports
one, else the mean return.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import optuna

    from agents.config.search import AcrossSeeds, SearchSection

log = logging.getLogger(__name__)
POLL_S = 0.5
"""Seconds between two reads of the runs' evaluations."""
STOP_WAIT_S = 120.0
"""Seconds a run may take to write its checkpoint after SIGTERM before it is killed."""
RUN_BYTES = 300 * 2**20
"""The memory one run's ``train.py`` process takes at least (``--env CartPole-v1``: 290 MiB at its peak)."""


def across_seeds(scores: list[float], how: AcrossSeeds = "mean") -> float:
    """One score for a trial from its seeds' scores (``search.across_seeds``): their ``mean``, the worst
    (``min``), or the mean less their standard deviation (``mean_minus_std``, ddof 0), which rank the
    settings that hold up on every seed above those that shine on one."""
    mean = sum(scores) / len(scores)
    if how == "min":
        return min(scores)
    if how == "mean_minus_std":
        return mean - (sum((s - mean) ** 2 for s in scores) / len(scores)) ** 0.5
    return mean


def check_runs_at_once(search: SearchSection) -> None:
    """Refuse a study that would start more runs at once on this machine (``jobs`` trials, at most
    ``trials``, of ``seeds_per_trial`` processes each) than fit :data:`~agents.run.memory.MEMORY_SHARE` of
    its memory at :data:`RUN_BYTES` each (``--seeds-per-trial 100000`` started 379 processes in 2 minutes).

    Raises:
        UserError: the runs, their memory, the limit and the fix.
    """
    from agents.run.memory import MEMORY_SHARE, human, machine_memory
    from envs.errors import UserError

    runs = min(search.jobs, search.trials) * search.seeds_per_trial
    total, source = machine_memory()
    limit = int(total * MEMORY_SHARE)
    fits = max(1, limit // RUN_BYTES)
    if runs <= fits:
        return
    capped = f", capped at search.trials {search.trials}," if search.trials < search.jobs else ""
    raise UserError(f"search.jobs (--jobs) {search.jobs}{capped} × search.seeds_per_trial "
                    f"(--seeds-per-trial) {search.seeds_per_trial} start {runs:,} train.py processes at once "
                    f"on this machine, at least {human(runs * RUN_BYTES)} at {human(RUN_BYTES)} each; the "
                    f"limit is {human(limit)}, {MEMORY_SHARE:.0%} of its {human(total)} ({source}); run at "
                    f"most {fits} at once, or run the trials on a Ray cluster with --ray-address")


def score(evaluation: dict[str, Any]) -> float:
    """The score of one line of ``evaluations.jsonl``: its success rate where it has one, else its mean
    return."""
    rate = evaluation.get("success_rate")
    return float(rate if rate is not None else evaluation["mean_reward"])


def read_evaluations(run_dir: Path) -> list[dict[str, Any]]:
    """The evaluations a run has written so far (a torn last line, being written, is left for later)."""
    path = run_dir / "evaluations.jsonl"
    out: list[dict[str, Any]] = []
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
                score(record)
            except (ValueError, KeyError, TypeError):
                break
            out.append(record)
    return out


class Children:
    """The training processes of a study, so that a signal to the study reaches each of them once.

    Args:
        cwd: the directory they start in (None: this process's), where a config's relative paths resolve.
    """

    def __init__(self, cwd: str | None = None) -> None:
        self.cwd = cwd
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen[bytes]] = set()
        self.stopping = threading.Event()

    def start(self, argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        """Start ``train.py argv`` (its own session: a Ctrl-C at the terminal reaches the study only)."""
        with self._lock:
            if self.stopping.is_set():
                raise InterruptedError("the study is stopping")
            cmd = [sys.executable, "-m", "agents.search.child", str(os.getpid()), *argv]
            with open(log_path, "ab") as out:
                proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True, cwd=self.cwd)
            self._procs.add(proc)
            return proc

    def forget(self, proc: subprocess.Popen[bytes]) -> None:
        """Drop a process that has exited."""
        with self._lock:
            self._procs.discard(proc)

    def stop_all(self) -> None:
        """Ask every run to checkpoint and exit (SIGTERM, train.py's Ctrl-C); start no more."""
        with self._lock:
            self.stopping.set()
            for proc in self._procs:
                stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM one run, once (a second signal would make train.py skip its checkpoint)."""
    if proc.poll() is None and not getattr(proc, "nondiff_stopped", False):
        proc.nondiff_stopped = True  # type: ignore[attr-defined]
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)


@dataclass
class Outcome:
    """How a trial ended."""

    state: Literal["complete", "pruned", "failed", "stopped"]
    value: float | None = None
    """The seeds' scores combined (:func:`across_seeds`; complete), or the last one reported (pruned)."""
    seed_scores: list[float] = field(default_factory=list)
    """Each seed's last evaluation score."""
    evaluation: int = 0
    """The evaluations the pruner saw (pruned)."""
    message: str = ""
    """Why a trial failed (the last line its run printed, and the log that has the rest)."""


def _wait_unlocked(run_dir: Path, timeout: float = STOP_WAIT_S) -> None:
    """Wait until no process holds the run's lock (a run of a killed study writing its ``final/``)."""
    lock = run_dir / "lock"
    deadline = time.monotonic() + timeout
    while lock.is_file():
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError:
            if time.monotonic() > deadline:
                return  # train.py --resume then says who holds it
            time.sleep(POLL_S)
        finally:
            os.close(fd)


def _finished(run_dir: Path, timesteps: int) -> bool:
    """True when the run has trained its whole budget (its ``final/`` is at or past ``timesteps``)."""
    from agents.run.checkpoint import read_header

    final = run_dir / "final" / "model.safetensors"
    try:
        return final.is_file() and read_header(final).num_timesteps >= timesteps
    except Exception:  # noqa: BLE001 - an unreadable final/ is not a finished run: it is trained again
        return False


def _has_checkpoint(run_dir: Path) -> bool:
    from agents.run.rundir import RunDir

    try:
        return (run_dir / "config.yaml").is_file() and RunDir(run_dir).latest() is not None
    except Exception:  # noqa: BLE001 - a torn checkpoint: train from the start
        return False


def last_line(path: Path) -> str:
    """The last non-empty line of a log."""
    with contextlib.suppress(OSError):
        for line in reversed(path.read_text(errors="replace").splitlines()):
            if line.strip():
                return line.strip()
    return "no output"


class TrialRun:
    """Run one trial's seeds to the end, to a prune, or to a stop.

    Args:
        trial: the Optuna trial (new, or one a killed study left running).
        path: the trial's directory; ``trial.yaml`` there is the config every seed trains with.
        seeds: one run per seed.
        timesteps: each run's budget.
        children: the study's processes (signals reach them through it).
        reported: the steps this trial has reported already (a resumed trial's).
        how: how the seeds' scores combine (``search.across_seeds``).
    """

    def __init__(self, trial: optuna.Trial, path: Path, seeds: list[int], timesteps: int,
                 children: Children, reported: set[int] | None = None, how: AcrossSeeds = "mean") -> None:
        self.trial, self.path, self.seeds, self.timesteps, self.how = trial, path, seeds, timesteps, how
        self.children = children
        self.reported = set(reported or ())
        self.runs = [path / f"seed-{s}" for s in seeds]

    def _argv(self, seed: int, run_dir: Path) -> list[str] | None:
        """The train.py command line of one seed: new, resumed from its checkpoint, or None when done."""
        if _finished(run_dir, self.timesteps):
            return None
        if _has_checkpoint(run_dir):
            _wait_unlocked(run_dir)
            return ["--resume", str(run_dir), "--quiet"]
        if run_dir.exists():  # killed before its first checkpoint: nothing worth keeping
            _wait_unlocked(run_dir)
            shutil.rmtree(run_dir)
        return ["--config", str(self.path / "trial.yaml"), "--seed", str(seed), "--run-dir", str(run_dir),
                "--quiet"]

    def run(self) -> Outcome:
        """Train, report, and return how the trial ended."""
        procs: dict[int, subprocess.Popen[bytes]] = {}
        try:
            for i, (seed, run_dir) in enumerate(zip(self.seeds, self.runs)):
                argv = self._argv(seed, run_dir)
                if argv is not None:
                    procs[i] = self.children.start(argv, self.path / f"seed-{seed}.log")
            return self._watch(procs)
        except InterruptedError:
            return Outcome("stopped")
        finally:
            for proc in procs.values():
                stop(proc)
                try:
                    proc.wait(STOP_WAIT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                self.children.forget(proc)

    def _watch(self, procs: dict[int, subprocess.Popen[bytes]]) -> Outcome:
        reported = self.reported
        while True:
            evals = [read_evaluations(r) for r in self.runs]
            for i in range(min(len(e) for e in evals)):
                if i in reported:
                    continue
                reported.add(i)
                scores = [score(e[i]) for e in evals]
                self.trial.report(across_seeds(scores, self.how), i)
                if self.trial.should_prune() and not self.children.stopping.is_set():
                    for proc in procs.values():
                        stop(proc)
                    return Outcome("pruned", across_seeds(scores, self.how), scores, evaluation=i + 1)
            codes = {i: p.poll() for i, p in procs.items()}
            if self.children.stopping.is_set():
                if all(c is not None for c in codes.values()):
                    return Outcome("stopped")
            elif any(c not in (None, 0) for c in codes.values()):
                i = next(i for i, c in codes.items() if c not in (None, 0))
                log_path = self.path / f"seed-{self.seeds[i]}.log"
                return Outcome("failed", message=f"seed {self.seeds[i]} exited {codes[i]}: "
                                                 f"{last_line(log_path)} (log: {log_path})")
            elif all(c is not None for c in codes.values()):
                return self._complete()
            time.sleep(POLL_S)

    def _complete(self) -> Outcome:
        evals = [read_evaluations(r) for r in self.runs]
        missing = [s for s, e in zip(self.seeds, evals) if not e]
        if missing:
            return Outcome("failed", message=f"seed {missing[0]} finished without an evaluation (see "
                                             f"{self.path / f'seed-{missing[0]}.log'})")
        scores = [score(e[-1]) for e in evals]
        return Outcome("complete", across_seeds(scores, self.how), scores)


def make_pruner(search: SearchSection) -> optuna.pruners.BasePruner:
    """The study's pruner (a trial's Ray task builds its own from the same settings)."""
    import optuna

    if search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=search.evaluations // 3)
    if search.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()
