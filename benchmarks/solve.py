"""P1: wall time and steps until the periodic evaluation solves the task, nondiff against plain SB3.

Every run evaluates on the same schedule (every ``every`` steps, ``episodes`` deterministic episodes on
a separate env) and counts the evaluation's own time, as a user would. Wall time runs from the process
launch to the moment the solving evaluation is printed; a run that is not solved within its wall budget
is stopped and reported as such.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks.common import PY, ROOT, Child, train_cmd

EVAL_LINE = re.compile(r"eval @ ([\d,]+): mean_reward (-?[\d.]+) ± [\d.]+(?:, success_rate ([\d.]+))?")


def _evals(child: Child) -> list[dict[str, Any]]:
    out = []
    for t, line in child.lines:
        m = EVAL_LINE.search(line)
        if m:
            out.append({"t": round(t, 2), "step": int(m.group(1).replace(",", "")),
                        "mean_reward": float(m.group(2)),
                        "success_rate": None if m.group(3) is None else float(m.group(3))})
        elif line.startswith('{"event": "eval"'):
            import json

            row = json.loads(line)
            out.append({"t": round(t, 2), "step": row["step"], "mean_reward": row["mean_reward"],
                        "success_rate": row["success_rate"]})
    return out


def _solved(ev: dict[str, Any], success: float | None, ret: float | None) -> bool:
    if success is not None:
        return ev["success_rate"] is not None and ev["success_rate"] >= success
    return ret is not None and ev["mean_reward"] >= ret


def until_solved(name: str, cmd: list[str], budget_s: float, success: float | None = None,
                 ret: float | None = None) -> dict[str, Any]:
    """Run ``cmd`` until an evaluation reaches the threshold, the process ends, or the budget is spent."""
    load = os.getloadavg()[0]
    child = Child(cmd).start()
    hit: dict[str, Any] | None = None
    while child.proc.poll() is None and child.elapsed < budget_s and hit is None:
        time.sleep(0.2)
        hit = next((e for e in _evals(child) if _solved(e, success, ret)), None)
    finished = child.proc.poll() is not None
    child.stop()
    child.wait(60)
    evals = _evals(child)
    hit = hit or next((e for e in evals if _solved(e, success, ret)), None)
    if hit is None and child.proc.returncode not in (0, -15) and not evals:
        raise RuntimeError(f"{name}: {' '.join(cmd[1:])} exited {child.proc.returncode}: "
                           f"{child.stderr_tail()}")
    best = max((e["success_rate"] if success is not None else e["mean_reward"] for e in evals), default=None)
    return {"name": name, "command": " ".join(c.replace(str(ROOT) + "/", "") for c in cmd),
            "solved": hit is not None,
            "wall_s": hit["t"] if hit else None, "steps": hit["step"] if hit else None, "budget_s": budget_s,
            "ran_s": round(child.elapsed, 1), "last_step": evals[-1]["step"] if evals else 0, "best": best,
            "evals": evals, "loadavg_at_start": round(load, 2),
            "ended": "solved" if hit else "finished its steps" if finished else "budget"}


def run(quick: bool, budgets: dict[str, float] | None = None) -> dict[str, Any]:
    """Four runs: nondiff, RL Zoo's Reacher-v2 setup and SB3 defaults on `robot`; nondiff on Reacher-v5."""
    every, episodes = (256, 1) if quick else (10_000, 20)
    b = {"nondiff": 300.0, "zoo": 480.0, "defaults": 480.0, "reacher_v5": 300.0, **(budgets or {})}
    if quick:
        b = dict.fromkeys(b, 60.0)
    tmp = tempfile.mkdtemp(prefix="bench-p1-")
    steps = ["--timesteps", "512", "--set", "agent.n_steps=64"] if quick else []
    plain = [PY, str(ROOT / "benchmarks" / "plain_sb3.py"), "--env", "nondiff/Robot-v0", "--seed", "0",
             "--eval-every", str(every), "--eval-episodes", str(episodes), "--threshold-success", "0.9",
             *(["--timesteps", "512", "--n-steps", "64"] if quick else ["--timesteps", "1000000"])]
    jobs = {
        "nondiff": (train_cmd("--env", "robot", "--seed", "0", "--run-dir", f"{tmp}/nd", "--set",
                              f"eval.every={every}",
                              "--set", f"eval.episodes={episodes}", *steps), {"success": 0.9}),
        "zoo": ([*plain, "--hp", "zoo"], {"success": 0.9}),
        "defaults": ([*plain, "--hp", "defaults"], {"success": 0.9}),
        "reacher_v5": (train_cmd("--env", "Reacher-v5", "--seed", "0", "--run-dir", f"{tmp}/v5", "--set",
                                 f"eval.every={every}", "--set", f"eval.episodes={episodes}",
                                 *(steps if quick else ["--timesteps", "300000"])), {"ret": -5.0}),
    }
    try:
        if quick:  # smoke test only: run side by side to stay within seconds
            with ThreadPoolExecutor(len(jobs)) as pool:
                futs = {k: pool.submit(until_solved, k, cmd, b[k], **kw) for k, (cmd, kw) in jobs.items()}
                runs = {k: f.result() for k, f in futs.items()}
        else:
            runs = {k: until_solved(k, cmd, b[k], **kw) for k, (cmd, kw) in jobs.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    nd, zoo = runs["nondiff"], runs["zoo"]
    if nd["solved"] and zoo["solved"]:
        ratio, bound = nd["wall_s"] / zoo["wall_s"], "="
    elif nd["solved"]:  # the reference never solved: the ratio is at most nondiff's time over its budget
        ratio, bound = nd["wall_s"] / zoo["ran_s"], "<"
    else:
        ratio, bound = None, "n/a"
    return {"runs": runs, "eval_every": every, "eval_episodes": episodes, "ratio_vs_zoo": ratio,
            "ratio_bound": bound}
