"""G1, G2 and G3 (issue 27): Godot throughput against the anchor's design, what the engine costs PPO, and
how soon training steps after train.py starts the engines.

G1 runs benchmarks/experiments/godot_anchor.py: nondiff's binary protocol 1.1 against a JSON lock-step driver
built the way Godot RL Agents builds it, the same engine, scene and agents, K = 1, 16, 64, alternating.

G2 trains configs/godot.yaml's PPO (2 Godots × 16 agents, action repeat 4) with ``train.py --env godot``
and the same PPO, hyperparameters and 32 envs on :class:`~benchmarks.godot_twin.TwinEnv` (Reach's spaces
in-process, no engine), as child processes alternating. The figure is steady steps/s between the first and
last progress lines (start-up, the first rollout and the end are outside it), the ratio Godot / twin per
round, the median reported.

G3 runs ``train.py --env godot`` for one rollout (4,096 steps) and times its console lines from the
launch: the first engine started (the probe), the training engines connected, and the first progress line,
which comes after the whole first rollout, so the time from the first engine's start to it bounds the
first training step from above. Run by hand::

    python benchmarks/godot.py [--steps 40960] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import PY, Child, _children, train_cmd  # noqa: E402
from benchmarks.overhead import PROGRESS, TICK, _steady  # noqa: E402

TWIN = "benchmarks.godot_twin:TwinEnv"
LOG_EVERY = 4096  # 32 envs × 128 steps: one progress line per rollout


def _cpu(pid: int) -> float:
    """User + system CPU seconds of one process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


@dataclass
class TreeChild(Child):
    """A :class:`Child` that reads, at each stdout line, its own CPU time and its descendants' (the engines
    it started), so that a step's CPU cost is known apart from the waiting a loaded machine adds."""

    cpu_at: dict[float, tuple[float, float]] = field(default_factory=dict)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            t = time.perf_counter() - self.t0
            kids, todo, below = _children(), list(_children().get(self.proc.pid, ())), 0.0
            while todo:
                p = todo.pop()
                todo.extend(kids.get(p, ()))
                below += _cpu(p)
            self.cpu_at[t] = (_cpu(self.proc.pid), below)
            self.lines.append((t, line.rstrip("\n")))


def _train(args: list[str], steps: int, run_dir: str) -> dict[str, float]:
    """One train.py child: its steady and loop steps/s, its own and its engines' CPU µs per env step between
    the first and last progress lines, and the load when it ended."""
    child = TreeChild(train_cmd(*args, "--timesteps", str(steps), "--run-dir", run_dir, "--set",
                                "eval.every=0", "--set", "train.checkpoint_every=100000000", "--set",
                                f"train.log_every={LOG_EVERY}"))
    child.start()
    if child.wait(900) != 0:
        raise RuntimeError(f"train.py {' '.join(args)} exited {child.proc.returncode}: {child.stderr_tail()}")
    marks = [(t, m) for t, m in ((t, PROGRESS.search(line)) for t, line in child.lines) if m]
    points = [(t, int(m.group(1).replace(",", ""))) for t, m in marks[:-1]]
    out = {"steady_steps_per_s": _steady(points) if len(points) >= 2 else float("nan"),
           "loop_steps_per_s": float(marks[-1][1].group(2).replace(",", "")),
           "wall_s": child.elapsed, "load": round(os.getloadavg()[0], 2)}
    if len(points) >= 2 and points[0][0] in child.cpu_at and points[-1][0] in child.cpu_at:
        (t0, s0), (t1, s1) = points[0], points[-1]
        (a0, b0), (a1, b1) = child.cpu_at[t0], child.cpu_at[t1]
        out.update(trainer_cpu_us_per_step=(a1 - a0) / (s1 - s0) * 1e6,
                   engines_cpu_us_per_step=(b1 - b0) / (s1 - s0) * 1e6)
    return out


def twin_config(tmp: str) -> str:
    """configs/godot.yaml with the twin as its env (agent and train sections unchanged)."""
    cfg = yaml.safe_load((ROOT / "configs" / "godot.yaml").read_text())
    cfg["env"] = {"id": TWIN}
    cfg.pop("eval", None)
    path = Path(tmp) / "twin.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def engine_cost(steps: int, rounds: int) -> dict[str, Any]:
    """``rounds`` rounds of PPO on Godot and on the twin, the order swapped every round."""
    tmp = tempfile.mkdtemp(prefix="bench-g2-")
    pairs: list[dict[str, Any]] = []
    try:
        arms = {"godot": ["--env", "godot"], "twin": ["--config", twin_config(tmp)]}
        for i in range(rounds):
            pair: dict[str, Any] = {"load_start": round(os.getloadavg()[0], 2)}
            for who in (("godot", "twin") if i % 2 == 0 else ("twin", "godot")):
                pair[who] = _train(arms[who], steps, f"{tmp}/{who}{i}")
            pair["ratio"] = pair["godot"]["steady_steps_per_s"] / pair["twin"]["steady_steps_per_s"]
            pairs.append(pair)
            print(json.dumps(pair), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = statistics.median
    cpu: dict[str, Any] = {}
    if all("trainer_cpu_us_per_step" in p[w] for p in pairs for w in ("godot", "twin")):
        for w in ("godot", "twin"):
            for key in ("trainer_cpu_us_per_step", "engines_cpu_us_per_step"):
                cpu[f"{w}_{key}"] = med(p[w][key] for p in pairs)
        # lock-step on two cores: the trainer waits while the two engines work side by side
        cpu["cpu_ratio"] = cpu["twin_trainer_cpu_us_per_step"] / (
            cpu["godot_trainer_cpu_us_per_step"] + cpu["godot_engines_cpu_us_per_step"] / 2)
    return {"steps_per_run": steps, "pairs": pairs, "ratio": med(p["ratio"] for p in pairs), **cpu,
            "godot_steps_per_s": med(p["godot"]["steady_steps_per_s"] for p in pairs),
            "twin_steps_per_s": med(p["twin"]["steady_steps_per_s"] for p in pairs),
            "loads": [p["load_start"] for p in pairs]}


def anchor(seconds: float, repeats: int, agents: list[int]) -> dict[str, Any]:
    """benchmarks/experiments/godot_anchor.py's lines, and per K the median ratio nondiff / anchor."""
    cmd = [PY, str(ROOT / "benchmarks" / "experiments" / "godot_anchor.py"), "--seconds", str(seconds),
           "--repeats", str(repeats), "--agents", *map(str, agents)]
    child = Child(cmd).start()
    if child.wait(1200) != 0:
        raise RuntimeError(f"godot_anchor.py exited {child.proc.returncode}: {child.stderr_tail()}")
    lines = child.json_lines()
    out: dict[str, Any] = {"lines": lines}
    for k in agents:
        mine = [x for x in lines if x["agents"] == k]
        out[f"k{k}"] = {"ratio": statistics.median(x["ratio"] for x in mine),
                        "anchor_json": statistics.median(x["anchor_json"] for x in mine),
                        "nondiff_binary": statistics.median(x["nondiff_binary"] for x in mine),
                        "loads": [x["load"] for x in mine]}
        if all("cpu_us_per_step" in x for x in mine):  # CPU µs per step, Godot + driver, each side
            cpu = {side: statistics.median(sum(x["cpu_us_per_step"][side].values()) for x in mine)
                   for side in ("anchor", "nondiff")}
            out[f"k{k}"].update(cpu_us_per_step=cpu, cpu_ratio=cpu["anchor"] / cpu["nondiff"])
    return out


def startup(rounds: int) -> dict[str, Any]:
    """``rounds`` runs of ``train.py --env godot`` for one rollout, each line timed from the launch."""
    import re
    import subprocess

    runs: list[dict[str, float]] = []
    tmp = tempfile.mkdtemp(prefix="bench-g3-")
    try:
        for i in range(rounds):
            cmd = train_cmd("--env", "godot", "--timesteps", str(LOG_EVERY), "--run-dir", f"{tmp}/r{i}",
                            "--set", "eval.every=0", "--set", f"train.log_every={LOG_EVERY}")
            t0, load = time.perf_counter(), round(os.getloadavg()[0], 2)
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            lines = [(time.perf_counter() - t0, line) for line in proc.stdout or ()]
            if proc.wait(300) != 0:
                raise RuntimeError(f"train.py --env godot exited {proc.returncode}: {lines[-3:]}")
            started = [t for t, line in lines if re.search(r"started godot3-server", line)]
            connected = [t for t, line in lines if re.search(r"godot3-server .* connected in", line)]
            step = next(t for t, line in lines if PROGRESS.search(line))
            runs.append({"engine_started_s": started[0], "engines_connected_s": connected[-1],
                         "first_rollout_s": step, "after_engines_s": step - started[0], "load": load})
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"runs": runs, "rollout_steps": LOG_EVERY,
            "after_engines_s": statistics.median(r["after_engines_s"] for r in runs),
            "first_rollout_s": statistics.median(r["first_rollout_s"] for r in runs)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40960)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    print(json.dumps(engine_cost(a.steps, a.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
