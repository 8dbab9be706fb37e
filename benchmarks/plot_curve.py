"""Export learning curves from a run's TensorBoard event files to a PNG.

    python benchmarks/plot_curve.py RUN_DIR OUT.png [--tags rollout/ep_rew_mean eval/mean_reward]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def main() -> None:
    """Plot each tag against the global step."""
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("out")
    p.add_argument("--tags", nargs="+", default=["rollout/ep_rew_mean", "eval/mean_reward"])
    p.add_argument("--title", default=None)
    args = p.parse_args()
    acc = EventAccumulator(str(Path(args.run_dir) / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    fig, ax = plt.subplots(figsize=(7, 4))
    for tag in args.tags:
        if tag in acc.Tags()["scalars"]:
            events = acc.Scalars(tag)
            ax.plot([e.step for e in events], [e.value for e in events], label=tag, marker="." if "eval" in tag else None)
    ax.set_xlabel("env steps")
    ax.set_ylabel("return")
    ax.set_title(args.title or Path(args.run_dir).name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
