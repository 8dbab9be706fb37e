"""Renders per second through nondiff against the same persistent Blender driven directly, side by side.

The direct side is the render server itself in its ``--bench N`` mode: the same scene, the same render
path (PNG on /dev/shm, read back), N parameter vectors in a loop inside Blender, no protocol. The nondiff
side is :class:`envs.adapters.blender.BlenderProblem`: the same N vectors through ``forward`` (the bridge
protocol over pipes, the watchdog, the reply's checks). Start-up is excluded from both. The two alternate,
``--repeats`` times each, and the load average is recorded with every pair::

    python benchmarks/experiments/blender_overhead.py [--renders 300] [--repeats 3] [--engine workbench]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def direct(a: argparse.Namespace) -> float:
    """Renders per second of the render server's own loop (``--bench``), read from its stderr."""
    from envs.adapters.blender import SERVER, find_blender

    cmd = [find_blender(None), "-b", "--factory-startup", "--python", str(SERVER), "--", "--repo", str(ROOT),
           "--objects", str(a.objects), "--engine", a.engine, "--samples", str(a.samples), "--threads",
           str(a.threads), "--bench", str(a.renders)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not line:
        raise SystemExit(f"blender --bench failed (exit {proc.returncode}): {proc.stderr[-500:]}")
    return float(json.loads(line[-1])["renders_per_s"])


def through_nondiff(a: argparse.Namespace) -> dict[str, float]:
    """Renders per second of ``BlenderProblem.forward`` on the same vectors; ``blender_ms`` is Blender's own
    time per render as it reports it, so ``per_render_ms − blender_ms`` is the transport's share."""
    from envs.adapters.blender import BlenderProblem

    problem = BlenderProblem(n_objects=a.objects, engine=a.engine, samples=a.samples, threads=a.threads)
    try:
        xs = np.random.default_rng(0).uniform(0.1, 0.9, (a.renders, problem.param_dim))
        problem.render_ms.clear()
        start = time.perf_counter()
        for x in xs:
            problem.forward(x)
        wall = time.perf_counter() - start
        return {"renders_per_s": a.renders / wall, "blender_ms": float(np.mean(problem.render_ms)),
                "per_render_ms": 1000 * wall / a.renders, "restarts": problem.restarts}
    finally:
        problem.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--renders", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--engine", choices=["workbench", "cycles"], default="workbench")
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--objects", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="Blender's render threads (0: every core)")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    pairs: list[dict[str, Any]] = []
    for i in range(args.repeats):
        load = os.getloadavg()[0]
        order = ("direct", "nondiff") if i % 2 == 0 else ("nondiff", "direct")
        pair: dict[str, Any] = {"loadavg_1min": load}
        for side in order:
            if side == "direct":
                pair["direct_renders_per_s"] = direct(args)
            else:
                pair["nondiff"] = through_nondiff(args)
        pair["ratio"] = pair["nondiff"]["renders_per_s"] / pair["direct_renders_per_s"]
        pairs.append(pair)
        print(json.dumps(pair), flush=True)
    out = {"engine": args.engine, "samples": args.samples, "objects": args.objects, "renders": args.renders,
           "threads": args.threads,
           "median_ratio": float(np.median([q["ratio"] for q in pairs])), "pairs": pairs,
           "loadavg_end": os.getloadavg()}
    print(json.dumps({k: v for k, v in out.items() if k != "pairs"}))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
