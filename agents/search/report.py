"""What a study leaves: ``best.yaml`` (a config ``train.py --config`` trains with), the table of trials and
the plots of the optimisation history and the parameters' importance."""

from __future__ import annotations

import csv
import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.run.checkpoint import atomic_write_bytes

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)
TOP = 10
"""Rows of ``trials.md`` (``trials.csv`` has every trial)."""


@dataclass(frozen=True)
class Row:
    """One trial of the table."""

    number: int
    state: str
    score: float | None
    seed_scores: list[float]
    params: dict[str, Any]
    path: str


def rows(trials: list[optuna.trial.FrozenTrial]) -> list[Row]:
    """The finished trials, best first (complete before pruned at the same score; failed last)."""
    order = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "FAIL": 3}
    out = [Row(t.number, t.state.name, t.value, list(t.user_attrs.get("seed_scores", [])),
               dict(t.user_attrs.get("config_values", t.params)), str(t.user_attrs.get("dir", "")))
           for t in trials if t.state.name in order]
    return sorted(out, key=lambda r: (r.score is None, -(r.score or 0.0), order[r.state], r.number))


def best_trial(trials: list[optuna.trial.FrozenTrial]) -> optuna.trial.FrozenTrial | None:
    """The complete trial with the highest score (pruned trials never trained their whole budget)."""
    done = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None]
    return max(done, key=lambda t: (t.value, -t.number)) if done else None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return json.dumps(v) if isinstance(v, list | dict) or v is None else str(v)


WHAT = {"mean": "the mean", "min": "the lowest", "mean_minus_std": "the mean less the standard deviation"}
"""``search.across_seeds`` in words, for ``best.yaml``'s comment."""


def write_best(study_dir: Path, trial: optuna.trial.FrozenTrial, config: str, how: str = "mean") -> Path:
    """``best.yaml``: the best trial's config (``config``, its ``trial.yaml``, which a shared storage's other
    machines do not have) under a comment that says where it came from (``how``: ``search.across_seeds``)."""
    scores = ", ".join(_fmt(s) for s in trial.user_attrs.get("seed_scores", []))
    seeds = trial.user_attrs.get("seeds")
    head = (f"# The best trial of the study in {study_dir}: trial {trial.number}, score {_fmt(trial.value)}\n"
            f"# ({WHAT[how]} over seeds {seeds} of their last evaluation: {scores}).\n"
            f"# Train with it:  python train.py --config {study_dir / 'best.yaml'} [--seed S]\n")
    path = study_dir / "best.yaml"
    atomic_write_bytes(path, (head + config).encode())
    return path


def write_table(study_dir: Path, trials: list[optuna.trial.FrozenTrial]) -> tuple[Path, Path]:
    """``trials.md`` (the top :data:`TOP`) and ``trials.csv`` (all), with per-seed scores and params."""
    table = rows(trials)
    keys = sorted({k for r in table for k in r.params})
    head = ["rank", "trial", "state", "score", "seed scores", *keys, "dir"]

    def cells(rank: int, r: Row) -> list[str]:
        seeds = " ".join(_fmt(s) for s in r.seed_scores)
        return [str(rank), str(r.number), r.state.lower(), _fmt(r.score), seeds,
                *(_fmt(r.params[k]) if k in r.params else "" for k in keys), r.path]

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells(i + 1, r)) + " |" for i, r in enumerate(table[:TOP])]
    md = study_dir / "trials.md"
    atomic_write_bytes(md, ("\n".join(lines) + "\n").encode())
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(head)
    writer.writerows(cells(i + 1, r) for i, r in enumerate(table))
    out = study_dir / "trials.csv"
    atomic_write_bytes(out, buf.getvalue().encode())
    return md, out


def write_plots(study_dir: Path, study: optuna.Study) -> list[Path]:
    """``history.png`` and, from two complete trials on, ``importance.png`` (Optuna's fANOVA); best effort: a
    plot Optuna cannot draw yet is left out with a log line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    wanted: list[tuple[str, Any]] = [("history.png", plots.plot_optimization_history)]
    if len(done) >= 2:
        wanted.append(("importance.png", plots.plot_param_importances))
    out = []
    for name, draw in wanted:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
                figure: Any = draw(study).figure
            buf = io.BytesIO()
            figure.savefig(buf, format="png", dpi=90, bbox_inches="tight")
            plt.close(figure)
            atomic_write_bytes(study_dir / name, buf.getvalue())
            out.append(study_dir / name)
        except Exception as e:  # noqa: BLE001 - e.g. importance with one distinct value per key
            log.info("%s not drawn: %s: %s", name, type(e).__name__, e)
    return out
