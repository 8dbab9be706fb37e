"""P2: nondiff's SB3 backend against a plain SB3 script with the same hyperparameters, env, envs and threads.

Both train PPO on `robot` with configs/robot.yaml's hyperparameters (8 envs, DummyVecEnv, VecNormalize,
1 torch thread), no evaluation, as child processes run in rotating order so that the machine's load
drifts over all alike. A third arm runs nondiff with ``train.batch_guard=false`` (each env's Guard checks
its own transitions, as before the batched check), so the batched check's share is measured side by side.
The training-loop figure is steps / duration of ``learn`` (nondiff: its final progress line, which times
from the session start; plain: around ``model.learn``); the end-to-end figure is steps / wall time of the
whole process, start-up included; the CPU figure is steps per CPU-second of the child between its first and
last progress line (read from /proc as each line arrives), which a busy machine disturbs far less than
wall time.

One process of either arm runs up to ±8% from the next on a quiet machine (2026-12-07: rounds of one P2 run
ranged 0.88–1.05), so a median of 4 rounds could not tell 0.96 from 0.99. The goal's figure is therefore
the mean of 12 rounds' ratios with its 95% confidence interval (Student's t).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import PY, ROOT, Child, train_cmd

TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class CpuChild(Child):
    """A :class:`Child` that also reads the process's CPU time (user + system) as each stdout line arrives."""

    cpu_at: dict[float, float] = field(default_factory=dict)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            t = time.perf_counter() - self.t0
            try:
                fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                self.cpu_at[t] = (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
            except (OSError, IndexError, ValueError):
                pass
            self.lines.append((t, line.rstrip("\n")))

    def steady_cpu(self, points: list[tuple[float, int]]) -> float:
        """Steps per CPU-second of the child between the first and the last of ``points`` (nan if unknown)."""
        (t0, s0), (t1, s1) = points[0], points[-1]
        if t0 not in self.cpu_at or t1 not in self.cpu_at or self.cpu_at[t1] <= self.cpu_at[t0]:
            return float("nan")
        return (s1 - s0) / (self.cpu_at[t1] - self.cpu_at[t0])

PROGRESS = re.compile(r"step ([\d,]+)/[\d,]+ \| ([\d,]+) steps/s")
ROLLOUT = 2048  # configs/robot.yaml: 8 envs × 256 steps


def _steady(points: list[tuple[float, int]]) -> float:
    """Steps/s between the first and the last progress report on the parent's clock: start-up, the first
    rollout and the final checkpoint are outside it."""
    (t0, s0), (t1, s1) = points[0], points[-1]
    return (s1 - s0) / (t1 - t0)


def _nondiff(steps: int, tmp: str, i: int, memory: bool = False,
             batch_guard: bool = True) -> dict[str, float]:
    cmd = train_cmd("--env", "robot", "--seed", "0", "--timesteps", str(steps), "--run-dir",
                    f"{tmp}/r{i}{'' if batch_guard else 'p'}", "--set", "eval.every=0",
                    "--set", "train.checkpoint_every=100000000", "--set", f"train.log_every={ROLLOUT}",
                    "--set", f"train.batch_guard={str(batch_guard).lower()}")
    child = CpuChild(cmd, sample_memory=memory)
    child.start()
    if child.wait(900) != 0:
        raise RuntimeError(f"train.py exited {child.proc.returncode}: {child.stderr_tail()}")
    wall = child.elapsed
    marks = [(t, m) for t, m in ((t, PROGRESS.search(line)) for t, line in child.lines) if m]
    m = marks[-1][1]
    done = int(m.group(1).replace(",", ""))
    # the last one is printed after training
    points = [(t, int(x.group(1).replace(",", ""))) for t, x in marks[:-1]]
    out = {"loop_steps_per_s": float(m.group(2).replace(",", "")), "e2e_steps_per_s": done / wall,
           "steps": done,
           "steady_steps_per_s": _steady(points) if len(points) >= 2 else float("nan"),
           "steady_steps_per_cpu_s": child.steady_cpu(points) if len(points) >= 2 else float("nan")}
    if memory:
        out.update(peak_pss_mib=child.peak_pss_mib, peak_rss_mib=child.peak_rss_mib)
    return out


def _plain(steps: int) -> dict[str, float]:
    child = CpuChild([PY, str(ROOT / "benchmarks" / "plain_sb3.py"), "--hp", "robot-yaml", "--seed", "0",
                      "--timesteps", str(steps)])
    child.start()
    if child.wait(900) != 0:
        raise RuntimeError(f"plain_sb3.py exited {child.proc.returncode}: {child.stderr_tail()}")
    wall = child.elapsed
    done = child.json_lines()[-1]
    # from step 2048
    points = [(t, json.loads(line)["step"]) for t, line in child.lines if '"progress"' in line][1:]
    return {"loop_steps_per_s": done["steps_per_s"], "e2e_steps_per_s": done["steps"] / wall,
            "steps": done["steps"],
            "steady_steps_per_s": _steady(points) if len(points) >= 2 else float("nan"),
            "steady_steps_per_cpu_s": child.steady_cpu(points) if len(points) >= 2 else float("nan")}


ROUNDS = 12
"""Rounds of a full P2 run: each arm runs first, second and third 4 times."""
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131}
"""Student's t two-sided 95% quantiles by degrees of freedom (beyond 15: 2.1, a little wide)."""
KEYS = ("loop", "e2e", "steady", "cpu")
_FIELD = {"loop": "loop_steps_per_s", "e2e": "e2e_steps_per_s", "steady": "steady_steps_per_s",
          "cpu": "steady_steps_per_cpu_s"}
ARMS = ("nondiff", "plain", "nondiff_per_env")
"""nondiff (batched checks), plain SB3, nondiff with ``train.batch_guard=false``."""


def run(quick: bool) -> dict[str, Any]:
    """``rounds`` rounds of the three arms in rotating order; ratios are nondiff / plain per round, reported
    as the mean with a 95% confidence interval (``*_ci``: its half-width) and the median. In quick mode
    the nondiff run's process-tree memory is sampled too (MEM reuses it)."""
    steps, rounds = (2048, 1) if quick else (30_720, ROUNDS)
    tmp = tempfile.mkdtemp(prefix="bench-p2-")
    rows: list[dict[str, Any]] = []
    try:
        _pairs(rows, rounds, steps, tmp, quick)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = statistics.median
    out: dict[str, Any] = {"steps_per_run": steps, "pairs": rows}
    for key in KEYS:
        for prefix in ("", "per_env_"):
            ratios = [p[f"{prefix}{key}_ratio"] for p in rows]
            out[f"{prefix}{key}_ratio"], out[f"{prefix}{key}_ci"] = mean_ci(ratios)
            out[f"{prefix}{key}_median"] = med(ratios)
    for arm in ARMS:
        for key in ("steady", "loop", "cpu"):
            out[f"{arm}_{key}_steps_per_s"] = med(p[arm][_FIELD[key]] for p in rows)
    out["loadavg"] = [p["loadavg"] for p in rows]
    return out


def mean_ci(values: list[float]) -> tuple[float, float]:
    """The mean of ``values`` and the half-width of its 95% confidence interval (NaN from one value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, float("nan")
    return mean, T95.get(len(values) - 1, 2.1) * statistics.stdev(values) / len(values) ** 0.5


def _pairs(rows: list[dict[str, Any]], rounds: int, steps: int, tmp: str, quick: bool) -> None:
    """Run the rounds, appending one row per round (each arm once, the order rotated every round)."""
    for i in range(rounds):
        order = ARMS[i % 3:] + ARMS[:i % 3]  # each arm first, second and third in turn: cancels drift too
        pair: dict[str, Any] = {"order": list(order), "loadavg": round(os.getloadavg()[0], 2)}
        for who in order:
            pair[who] = (_plain(steps) if who == "plain" else
                         _nondiff(steps, tmp, i, memory=quick and who == "nondiff",
                                  batch_guard=who == "nondiff"))
            pair[who]["loadavg"] = round(os.getloadavg()[0], 2)
        for prefix, arm in (("", "nondiff"), ("per_env_", "nondiff_per_env")):
            for key in KEYS:
                pair[f"{prefix}{key}_ratio"] = pair[arm][_FIELD[key]] / pair["plain"][_FIELD[key]]
        rows.append(pair)
