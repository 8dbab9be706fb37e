"""Pong training steps/s, one change at a time, side by side in one run (docs/results.md, issue 17).

Each variant is one ``train.py --env game`` run of a fixed number of steps (no periodic eval) with the shipped
config plus ``--set`` overrides; steps/s is the run's own figure (from its first step, startup excluded). The
``whole screen, vec_env …`` rows (the shipped config without its crop, which ALE cannot do) compare
``train.vec_env: dummy`` with ALE's own vector env (``ale``, envs/vector/ale.py; ``--only vec_env``). The
1-minute load average is printed before each run: on a shared machine it decides the absolute figures, so
compare rows of one invocation only.

    python benchmarks/experiments/pong_steps.py [STEPS] [--only NAME ...]
    python benchmarks/experiments/pong_steps.py --cpu [STEPS] [--only NAME ...]

``--cpu`` measures what the load does not change: the CPU time each training step costs, as the difference of
the child's CPU time (user + system, all threads) between a run of STEPS/2 and one of 3·STEPS/2 steps, so
that startup cancels out; ``1000 / cpu_ms_per_step`` is the steps/s one free core would give.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

OLD = ["env.frame_size=84", "env.crop=null", "agent.cnn=nature", "agent.precision=fp32", "agent.n_epochs=4",
       "agent.batch_size=256"]
"""The issue-3 setup (configs/game84.yaml) expressed over the shipped config."""
VARIANTS: dict[str, list[str]] = {
    "84 Nature fp32, 2 threads (issue 3)": [*OLD, "train.threads=2"],
    "84 Nature fp32, 1 thread": [*OLD, "train.threads=1"],
    "84 Nature bf16, 1 thread": [*OLD, "train.threads=1", "agent.precision=bf16"],
    "42 Nature fp32": ["agent.cnn=nature", "agent.precision=fp32"],
    "42 small fp32": ["agent.cnn=small", "agent.precision=fp32"],
    "42 small fp32, whole screen (no crop)": ["agent.cnn=small", "agent.precision=fp32", "env.crop=null"],
    "42 small bf16": ["agent.cnn=small", "agent.precision=bf16"],
    "42 small fp32, 2 epochs x 512": ["agent.cnn=small", "agent.precision=fp32", "agent.n_epochs=2",
                                      "agent.batch_size=512"],
    "42 small fp32, 16 envs x 64 steps": ["agent.cnn=small", "agent.precision=fp32", "train.num_envs=16",
                                          "agent.n_steps=64"],
    "whole screen, vec_env dummy": ["train.vec_env=dummy", "env.crop=null"],
    "whole screen, vec_env ale, 1 thread": ["train.vec_env=ale", "train.env_workers=1", "env.crop=null"],
    "whole screen, vec_env ale, 2 threads": ["train.vec_env=ale", "train.env_workers=2", "env.crop=null"],
}


def child_cpu_s() -> float:
    """User + system CPU seconds of every finished child process so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cpu_ms_per_step(sets: list[str], steps: int) -> float:
    """CPU milliseconds per training step: (CPU of a 3·steps/2 run − CPU of a steps/2 run) / steps."""
    spent = []
    for n in (steps // 2, steps // 2 * 3):
        before = child_cpu_s()
        run(sets, n)
        spent.append(child_cpu_s() - before)
    return (spent[1] - spent[0]) / (steps // 2 * 2) * 1000


def run(sets: list[str], steps: int) -> float:
    """One training run's steps/s."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(ROOT / "train.py"), "--env", "game", "--timesteps", str(steps), "--seed",
               "0",
               "--quiet", "--run-dir", f"{tmp}/r", "--set", "eval.every=0"]
        for s in sets:
            cmd += ["--set", s]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
        out = proc.stdout
    found = re.findall(r"\| ([\d,]+) steps/s", out)
    if not found:
        raise RuntimeError(f"no steps/s line in the output of {' '.join(cmd)}:\n{out}")
    return float(found[-1].replace(",", ""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("steps", type=int, nargs="?", default=4096)
    p.add_argument("--only", nargs="+", default=None, help="variant names (substrings)")
    p.add_argument("--cpu", action="store_true", help="CPU ms per step instead of steps/s (load-independent)")
    args = p.parse_args(argv)
    for name, sets in VARIANTS.items():
        if args.only and not any(o in name for o in args.only):
            continue
        load = os.getloadavg()[0]
        steps = args.steps // 2 if name.startswith("84") else args.steps
        if args.cpu:
            ms = cpu_ms_per_step(sets, steps)
            print(json.dumps({"variant": name, "steps": steps, "cpu_ms_per_step": round(ms, 3),
                              "one_core_steps_per_s": round(1000 / ms), "load_1min_before": round(load, 2)}),
                  flush=True)
            continue
        print(json.dumps({"variant": name, "steps": steps, "steps_per_s": round(run(sets, steps)),
                          "load_1min_before": round(load, 2)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
