"""docs/benchmarks.md and its PNG plots, regenerated from docs/benchmarks.json alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STATUS = {True: "**met**", False: "**missed**", None: "— (no numeric goal)"}
QUIET_LOAD = 1.5
"""Rows that started at a higher 1-minute load average are marked in the summary (issue 15, item 5)."""


def plot_p1(row: dict[str, Any], out: Path) -> str:
    """Eval success rate (robot) and eval return (Reacher-v5) against wall time."""
    runs = row["data"]["runs"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    labels = {"nondiff": "nondiff (train.py --env robot)", "zoo": "plain SB3, RL Zoo Reacher-v2 hp",
              "defaults": "plain SB3, defaults"}
    for key, label in labels.items():
        ev = runs[key]["evals"]
        a.plot([e["t"] for e in ev], [e["success_rate"] for e in ev], marker=".", label=label)
    a.axhline(0.9, color="grey", ls="--", lw=1)
    a.set(xlabel="wall time since launch (s)", ylabel="eval success rate", title="robot: time to solve")
    a.legend(fontsize=8)
    ev = runs["reacher_v5"]["evals"]
    b.plot([e["t"] for e in ev], [e["mean_reward"] for e in ev], marker=".", label="nondiff on Reacher-v5")
    b.axhline(-5, color="grey", ls="--", lw=1)
    b.set(xlabel="wall time since launch (s)", ylabel="eval mean return", title="Gymnasium Reacher-v5")
    b.legend(fontsize=8)
    for ax in (a, b):
        ax.grid(alpha=0.3)
    return _save(fig, out / "bench_p1.png")


def plot_bars(title: str, xlabel: str, bars: dict[str, float], out: Path, name: str,
              line: tuple[float, str] | None = None) -> str:
    """A horizontal bar chart, optionally with a reference line (a limit or a goal)."""
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(bars) + 1.4))
    ax.barh(list(bars), list(bars.values()), color="tab:blue")
    for i, v in enumerate(bars.values()):
        ax.text(v, i, f" {v:,.0f}", va="center", fontsize=8)
    if line is not None:
        ax.axvline(line[0], color="tab:red", ls="--", lw=1, label=line[1])
        ax.legend(fontsize=8, loc="lower right")
    ax.invert_yaxis()
    ax.set(xlabel=xlabel, title=title)
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, out / name)


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def plots(rows: dict[str, dict[str, Any]], out: Path) -> None:
    """Draw every row's plot that can be drawn from its data; record the file names in the rows."""
    for rid, row in rows.items():
        d = row.get("data")
        if "error" in row or not d:
            continue
        if rid == "P1":
            row["plots"] = [plot_p1(row, out)]
        elif rid == "P3":
            keys = ("in_process", "in_process_guarded", "pipe_round_trip", "bridge_raw", "bridge_guarded",
                    "async_vector_env")
            row["plots"] = [plot_bars("P3: µs per step (lower is better)", "µs / step",
                                      {k: d[k] for k in keys}, out, "bench_p3.png")]
        elif rid == "P4":
            bars = {f"vec {k}": v["steps_per_s"] for k, v in d["vec"].items()}
            for run in (d["train"], d.get("train_thread")):
                if run:
                    which = run.get("vec_env", "thread")
                    bars[f"training ({which}): rollout phase"] = run["rollout_steps_per_s"]
                    bars[f"training ({which}): end to end"] = run["train_steps_per_s"]
            row["plots"] = [plot_bars(f"P4: {d['num_envs']} envs × {d['latency_ms']:g} ms (steps/s)", "steps / s",
                                      bars, out, "bench_p4.png", (d["limit_steps_per_s"], "physical limit"))]
        elif rid == "P5":
            bars = {f"{r['runners']} runner(s): sampling": r["sample_steps_per_s"] for r in d["rows"]}
            bars.update({f"{r['runners']} runner(s): train iteration": r["train_iteration_steps_per_s"]
                         for r in d["rows"] if r["train_iteration_steps_per_s"] is not None})
            row["plots"] = [plot_bars("P5: RLlib throughput on `robot` (steps/s)", "steps / s", bars, out,
                                      "bench_p5.png")]
        elif rid == "ENV":
            bars = {k: v["steps_per_s"] for k, v in d.items() if "steps_per_s" in v}
            row["plots"] = [plot_bars("Raw env steps/s, one env, random actions", "steps / s", bars, out,
                                      "bench_env.png")]


def markdown(doc: dict[str, Any], old: str | None = None) -> str:
    """The whole docs/benchmarks.md; with ``old`` (the file as it was), its hand-added summary rows and sections
    (ids with no row in benchmarks.json, such as P3b) are kept in place (:func:`carry_over`)."""
    rows, m, v = doc["rows"], doc.get("machine", {}), doc.get("versions", {})
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python benchmarks/run.py`) from [benchmarks.json](benchmarks.json); do not",
        "edit by hand. `--only P3` re-runs one row and keeps the others; `--quick` is the CI smoke mode, whose",
        "figures mean nothing. The machine is shared with other jobs, so each comparison is taken side by",
        "side in the same run, and each row carries the load average when it started.",
        "",
        f"**Machine** (last run): {m.get('cpu_count')} cores, {'a GPU' if m.get('gpu') else 'no GPU'}, "
        f"{m.get('mem_gib')} GiB, Python {m.get('python')}, load average {m.get('loadavg')} (1/5/15 min).  ",
        "**Packages**: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        "",
        "| id | what | figure | goal | status | command |",
        "|---|---|---|---|---|---|",
    ]
    for rid in sorted(rows, key=_order):
        r = rows[rid]
        status = STATUS[r.get("met")] if "error" not in r else "**failed to run**"
        quick = " *(quick)*" if r.get("quick") else ""
        load = r.get("loadavg_at_start")
        if isinstance(load, int | float) and load > QUIET_LOAD:
            quick += f" *(taken at load {load:.1f} > {QUIET_LOAD}: to be re-run on a quiet machine)*"
        lines.append(f"| {rid} | {r['title']} | {r['figure']}{quick} | {r['goal']} | {status} | `{r['command']}` |")
    lines.append("")
    for rid in sorted(rows, key=_order):
        r = rows[rid]
        lines += [f"## {rid}: {r['title']}", ""]
        lines.append(f"Measured {r.get('measured_at', '?')} in {r.get('duration_s', 0):.0f} s, load average "
                     f"{r.get('loadavg_at_start', '?')} at the start{' (quick mode)' if r.get('quick') else ''}.")
        lines.append("")
        if "error" in r:
            lines += [f"The benchmark failed: `{r['error']}`", ""]
            continue
        lines += [r.get("details", ""), ""]
        for png in r.get("plots", []):
            lines += [f"![{rid}]({png})", ""]
    text = "\n".join(lines).rstrip() + "\n"
    return carry_over(text, old, set(rows)) if old else text


def _blocks(lines: list[str]) -> list[tuple[str | None, list[str]]]:
    """``lines`` cut at each ``## `` heading: (heading, its lines); the part before the first has heading None."""
    out: list[tuple[str | None, list[str]]] = [(None, [])]
    for line in lines:
        if line.startswith("## "):
            out.append((line, []))
        out[-1][1].append(line)
    return out


def carry_over(new: str, old: str, ids: set[str]) -> str:
    """``new`` plus the summary rows and ``## `` sections of ``old`` that belong to no id in ``ids``, each put
    after the row or section it followed in ``old``."""
    def row_id(line: str) -> str | None:
        cells = line.split("|")
        return cells[1].strip() if line.startswith("| ") and len(cells) > 2 else None

    def own(heading: str) -> bool:
        return any(heading.startswith(f"## {rid}: ") for rid in ids)

    old_lines, new_lines = old.rstrip("\n").split("\n"), new.rstrip("\n").split("\n")
    prev: str | None = None
    head_end = next((i for i, x in enumerate(new_lines) if x.startswith("## ")), len(new_lines))
    for line in _blocks(old_lines)[0][1]:  # the summary table's rows (before the first section)
        rid = row_id(line)
        if rid is None or rid in ("id", "---"):
            continue
        if rid not in ids and line not in new_lines:
            at = next((i for i, x in enumerate(new_lines[:head_end]) if prev is not None and row_id(x) == prev), None)
            if at is None:
                at = max((i for i, x in enumerate(new_lines[:head_end]) if row_id(x) in ids), default=head_end - 1)
            new_lines.insert(at + 1, line)
            head_end += 1
        prev = rid
    blocks = _blocks(new_lines)
    prev_heading: str | None = None
    for heading, body in _blocks(old_lines)[1:]:  # sections
        if heading is not None and not own(heading) and all(h != heading for h, _ in blocks):
            at = next((i for i, (h, _) in enumerate(blocks) if h == prev_heading), len(blocks) - 1)
            blocks.insert(at + 1, (heading, body if body[-1] == "" else [*body, ""]))
        prev_heading = heading
    return "\n".join(line for _, body in blocks for line in body).rstrip() + "\n"


def _order(rid: str) -> tuple[int, str]:
    return (0 if rid.startswith("P") else 1, rid)
