"""Export learning curves from runs' TensorBoard event files to a PNG.

    python benchmarks/experiments/plot_curve.py RUN_DIR [RUN_DIR ...] OUT.png
        [--tags rollout/ep_rew_mean eval/mean_reward] [--minutes] [--mark 60]

With several runs, each run's tags share its colour (the rollout curve solid, the evaluation dashed with
markers). ``--minutes`` puts wall-clock minutes since each run's first event on the x axis instead of env
steps; ``--mark`` draws a vertical line there (e.g. a time budget).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def main() -> None:
    """Plot each tag of each run against the global step (or wall-clock minutes)."""
    p = argparse.ArgumentParser()
    p.add_argument("paths", nargs="+", metavar="RUN_DIR... OUT.png")
    p.add_argument("--tags", nargs="+", default=["rollout/ep_rew_mean", "eval/mean_reward"])
    p.add_argument("--title", default=None)
    p.add_argument("--minutes", action="store_true",
                   help="x axis: wall-clock minutes since the run's first event")
    p.add_argument("--mark", type=float, default=None, help="a vertical line at this x value")
    args = p.parse_args()
    if len(args.paths) < 2:
        p.error("expected one or more run directories, then the output PNG")
    *runs, out = args.paths
    for run in runs:
        if not (Path(run) / "tensorboard").is_dir():
            p.error(f"{run!r} has no tensorboard/ folder: expected a run directory written by train.py")
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, run in enumerate(runs):
        acc = EventAccumulator(str(Path(run) / "tensorboard"), size_guidance={"scalars": 0})
        acc.Reload()
        scalars = {tag: acc.Scalars(tag) for tag in args.tags if tag in acc.Tags()["scalars"]}
        t0 = min((e.wall_time for events in scalars.values() for e in events), default=0.0)
        for tag, events in scalars.items():
            xs = [(e.wall_time - t0) / 60 if args.minutes else e.step for e in events]
            label = tag if len(runs) == 1 else f"{Path(run).name}: {tag}"
            style: dict[str, Any] = {"linestyle": "--", "marker": "."} if "eval" in tag else {}
            ax.plot(xs, [e.value for e in events], label=label, color=f"C{k}" if len(runs) > 1 else None,
                    **style)
    if args.mark is not None:
        ax.axvline(args.mark, color="grey", linewidth=1)
    ax.set_xlabel("wall-clock minutes" if args.minutes else "env steps")
    ax.set_ylabel("return")
    ax.set_title(args.title or ", ".join(Path(r).name for r in runs))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
