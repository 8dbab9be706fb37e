"""The benchmark harness: ``make bench`` = ``python -m benchmarks [--quick] [--only P1,P3b] [--out DIR]``.

Runs every goal row, P1–P7 (P3b, P3c and P6b included), the raw env steps/s of every built-in adapter (ENV)
and the peak memory of a `robot` training run on each backend (MEM). Each row records the load average when it
started. The rows are merged into DIR/benchmarks.json by id (a row not re-run keeps its figures), and
DIR/benchmarks.md and the PNG plots are regenerated from that file alone (``--render-only`` does only that).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python benchmarks/run.py` as well as `python -m benchmarks`
    sys.path.insert(0, str(ROOT))

from benchmarks import report, rows, rows_extra, rows_godot, texts, texts_extra  # noqa: E402
from benchmarks.common import machine, versions  # noqa: E402
from benchmarks.row import Bench, Row, Shared, Text, load1  # noqa: E402

BENCHES: dict[str, Bench] = {
    "P1": rows.bench_p1, "P2": rows.bench_p2, "P3": rows.bench_p3, "P3b": rows_extra.bench_p3b,
    "P3c": rows_extra.bench_p3c, "P4": rows.bench_p4, "P5": rows.bench_p5, "P6": rows_extra.bench_p6,
    "P6b": rows_extra.bench_p6b, "P7": rows_extra.bench_p7, "G1": rows_godot.bench_g1,
    "G2": rows_godot.bench_g2, "G3": rows_godot.bench_g3, "ENV": rows.bench_env, "MEM": rows.bench_mem}
"""Every row ``make bench`` produces, in the order a full run takes them."""
IDS = tuple(BENCHES)
TEXTS: dict[str, Callable[[dict[str, Any]], Text]] = {
    "P1": texts.p1_text, "P2": texts.p2_text, "P3": texts.p3_text, "P3b": texts_extra.p3b_text,
    "P3c": texts_extra.p3c_text, "P4": texts.p4_text, "P5": texts.p5_text, "P6": texts_extra.p6_text,
    "P6b": texts_extra.p6_text, "P7": texts_extra.p7_text, "G1": rows_godot.g1_text, "G2": rows_godot.g2_text,
    "G3": rows_godot.g3_text}
"""The rows whose figure and details ``--render-only`` rewrites from their stored data."""
AFTER = {"MEM": ("P2", "P5"), "P3c": ("P3b",)}
"""Rows that reuse others' runs (through ``shared``), so start after them."""
HEAVY_FIRST = ("P7", "P5", "P1", "P6", "P6b", "P2", "G2", "P4", "P3b", "G1", "G3", "ENV", "P3")
"""``--quick`` starts the longest rows first, three at a time."""
CMD = "python -m benchmarks --only {}"


def run_one(rid: str, quick: bool, shared: Shared) -> Row:
    """One benchmark row; a failure becomes a row that says so, with the reason."""
    load, t, started = load1(), time.perf_counter(), datetime.datetime.now(datetime.timezone.utc)
    print(f"[bench] {rid} started (load {load:.2f})", flush=True)
    try:
        row = BENCHES[rid](quick, shared)
    except Exception as e:
        traceback.print_exc()
        row = Row.failed(rid, e)
    row.command = row.command or CMD.format(rid)
    row.stamp(quick, load, started, time.perf_counter() - t)
    print(f"[bench] {rid} done in {row.duration_s:.0f} s: {row.figure}", flush=True)
    return row


def run_all(ids: list[str], quick: bool) -> dict[str, Row]:
    """The rows ``ids``: one at a time, or in ``--quick`` mode three at a time, longest first."""
    shared: Shared = {}
    if not quick:
        return {i: run_one(i, False, shared) for i in sorted(ids, key=IDS.index)}
    futs: dict[str, Future[Row]] = {}
    with ThreadPoolExecutor(3) as pool:
        for i in sorted((i for i in ids if i not in AFTER), key=HEAVY_FIRST.index):
            futs[i] = pool.submit(run_one, i, True, shared)
        for i in (i for i in ids if i in AFTER):
            for dep in AFTER[i]:
                if dep in futs:
                    futs[dep].result()
            futs[i] = pool.submit(run_one, i, True, shared)
        return {i: futs[i].result() for i in ids}


def write(out: Path, doc: dict[str, Any]) -> None:
    """Draw the plots, then write benchmarks.json and benchmarks.md (keeping the md's hand-added sections)."""
    report.plots(doc["rows"], out)
    path, md = out / "benchmarks.json", out / "benchmarks.md"
    path.write_text(json.dumps(doc, indent=1, default=float) + "\n")
    md.write_text(report.markdown(doc, md.read_text() if md.is_file() else None))
    print(f"wrote {path} and {md}")


def render(out: Path) -> int:
    """Rewrite each row's figure and explanation from its stored data, then the md and the plots."""
    doc = json.loads((out / "benchmarks.json").read_text())
    for rid, row in doc["rows"].items():
        if rid in TEXTS and row.get("data") and "error" not in row:
            row.update(TEXTS[rid](row["data"]))
    write(out, doc)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks, merge into benchmarks.json, regenerate benchmarks.md and the plots."""
    p = argparse.ArgumentParser(prog="python -m benchmarks",
                                description=f"nondiff benchmarks {', '.join(IDS)} (docs/benchmarks.md)")
    p.add_argument("--quick", action="store_true", help="minutes-long smoke mode (CI); figures mean nothing")
    p.add_argument("--only", help=f"comma-separated ids out of {','.join(IDS)} (any case)")
    p.add_argument("--out", default=str(ROOT / "docs"), help="where benchmarks.json/.md and the PNGs go")
    p.add_argument("--render-only", action="store_true",
                   help="run nothing: rewrite the md and plots from the json")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.render_only:
        return render(out)
    by_upper = {i.upper(): i for i in IDS}
    asked = [s.strip() for s in args.only.split(",")] if args.only else list(IDS)
    unknown = [i for i in asked if i.upper() not in by_upper]
    if unknown:
        print(f"error: unknown benchmark id(s) {', '.join(unknown)}; expected some of {', '.join(IDS)}",
              file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    new = run_all([by_upper[i.upper()] for i in asked], args.quick)
    path = out / "benchmarks.json"
    doc = json.loads(path.read_text()) if path.is_file() else {"rows": {}}
    for rid, row in new.items():
        old = doc["rows"].get(rid, {})
        row.history = row.history or old.get("history", [])
        doc["rows"][rid] = row.to_json()
    doc["rows"] = {rid: doc["rows"][rid] for rid in sorted(doc["rows"], key=report.order)}
    doc["machine"], doc["versions"] = machine(), versions()
    write(out, doc)
    return 1 if any(r.error for r in new.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
