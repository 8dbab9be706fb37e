"""P2: nondiff's SB3 backend against a plain SB3 script with the same hyperparameters, env, envs and threads.

Both train PPO on `robot` with configs/robot.yaml's hyperparameters (8 envs, DummyVecEnv, VecNormalize,
1 torch thread), no evaluation, as child processes run in rotating order so that the machine's load
drifts over all alike. A third arm runs nondiff with ``train.batch_guard=false`` (each env's Guard checks
its own transitions, as before the batched check), so the batched check's share is measured side by side. The training-loop figure is steps / duration of ``learn`` (nondiff: its final
progress line, which times from the session start; plain: around ``model.learn``); the end-to-end
figure is steps / wall time of the whole process, start-up included.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import tempfile
from typing import Any

from benchmarks.common import PY, ROOT, Child, train_cmd

PROGRESS = re.compile(r"step ([\d,]+)/[\d,]+ \| ([\d,]+) steps/s")
ROLLOUT = 2048  # configs/robot.yaml: 8 envs × 256 steps


def _steady(points: list[tuple[float, int]]) -> float:
    """Steps/s between the first and the last progress report on the parent's clock: start-up, the first
    rollout and the final checkpoint are outside it."""
    (t0, s0), (t1, s1) = points[0], points[-1]
    return (s1 - s0) / (t1 - t0)


def _nondiff(steps: int, tmp: str, i: int, memory: bool = False, batch_guard: bool = True) -> dict[str, float]:
    child = Child(train_cmd("--env", "robot", "--seed", "0", "--timesteps", str(steps), "--run-dir",
                            f"{tmp}/r{i}{'' if batch_guard else 'p'}", "--set", "eval.every=0",
                            "--set", "train.checkpoint_every=100000000", "--set", f"train.log_every={ROLLOUT}",
                            "--set", f"train.batch_guard={str(batch_guard).lower()}"),
                  sample_memory=memory).start()
    if child.wait(900) != 0:
        raise RuntimeError(f"train.py exited {child.proc.returncode}: {child.stderr_tail()}")
    wall = child.elapsed
    marks = [(t, m) for t, m in ((t, PROGRESS.search(line)) for t, line in child.lines) if m]
    m = marks[-1][1]
    done = int(m.group(1).replace(",", ""))
    points = [(t, int(x.group(1).replace(",", ""))) for t, x in marks[:-1]]  # the last one is printed after training
    out = {"loop_steps_per_s": float(m.group(2).replace(",", "")), "e2e_steps_per_s": done / wall, "steps": done,
           "steady_steps_per_s": _steady(points) if len(points) >= 2 else float("nan")}
    if memory:
        out.update(peak_pss_mib=child.peak_pss_mib, peak_rss_mib=child.peak_rss_mib)
    return out


def _plain(steps: int) -> dict[str, float]:
    child = Child([PY, str(ROOT / "benchmarks" / "plain_sb3.py"), "--hp", "robot-yaml", "--seed", "0",
                   "--timesteps", str(steps)]).start()
    if child.wait(900) != 0:
        raise RuntimeError(f"plain_sb3.py exited {child.proc.returncode}: {child.stderr_tail()}")
    wall = child.elapsed
    done = child.json_lines()[-1]
    points = [(t, json.loads(line)["step"]) for t, line in child.lines if '"progress"' in line][1:]  # from step 2048
    return {"loop_steps_per_s": done["steps_per_s"], "e2e_steps_per_s": done["steps"] / wall, "steps": done["steps"],
            "steady_steps_per_s": _steady(points) if len(points) >= 2 else float("nan")}


ARMS = ("nondiff", "plain", "nondiff_per_env")
"""nondiff (batched checks), plain SB3, nondiff with ``train.batch_guard=false``."""


def run(quick: bool) -> dict[str, Any]:
    """``rounds`` rounds of the three arms in rotating order; ratios are nondiff / plain per round, reported as
    the median. In quick mode the nondiff run's process-tree memory is sampled too (the MEM row reuses it)."""
    steps, rounds = (2048, 1) if quick else (30_720, 4)
    tmp = tempfile.mkdtemp(prefix="bench-p2-")
    rows: list[dict[str, Any]] = []
    try:
        _pairs(rows, rounds, steps, tmp, quick)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = statistics.median
    out: dict[str, Any] = {"steps_per_run": steps, "pairs": rows}
    for key in ("loop", "e2e", "steady"):
        out[f"{key}_ratio"] = med(p[f"{key}_ratio"] for p in rows)
        out[f"per_env_{key}_ratio"] = med(p[f"per_env_{key}_ratio"] for p in rows)
    for arm in ARMS:
        for key in ("steady", "loop"):
            out[f"{arm}_{key}_steps_per_s"] = med(p[arm][f"{key}_steps_per_s"] for p in rows)
    out["loadavg"] = [p["loadavg"] for p in rows]
    return out


def _pairs(rows: list[dict[str, Any]], rounds: int, steps: int, tmp: str, quick: bool) -> None:
    """Run the rounds, appending one row per round (each arm once, the order rotated every round)."""
    for i in range(rounds):
        order = ARMS[i % 3:] + ARMS[:i % 3]  # each arm first, second and third in turn: cancels drift too
        pair: dict[str, Any] = {"order": list(order), "loadavg": round(os.getloadavg()[0], 2)}
        for who in order:
            pair[who] = (_plain(steps) if who == "plain" else
                         _nondiff(steps, tmp, i, memory=quick and who == "nondiff", batch_guard=who == "nondiff"))
            pair[who]["loadavg"] = round(os.getloadavg()[0], 2)
        for prefix, arm in (("", "nondiff"), ("per_env_", "nondiff_per_env")):
            for key in ("loop", "e2e", "steady"):
                pair[f"{prefix}{key}_ratio"] = pair[arm][f"{key}_steps_per_s"] / pair["plain"][f"{key}_steps_per_s"]
        rows.append(pair)
