"""CI smoke test of the benchmark harness: `benchmarks/run.py --quick` must run end to end and report every id."""

from __future__ import annotations

import json
import math
import os
import re

from conftest import run_cli

IDS = ("P1", "P2", "P3", "P4", "P5", "ENV", "MEM")


def test_quick_benchmarks_report_every_id_with_a_figure(tmp_path):
    proc = run_cli("benchmarks/run.py", "--quick", "--out", str(tmp_path), timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((tmp_path / "benchmarks.json").read_text())
    md = (tmp_path / "benchmarks.md").read_text()
    assert doc["machine"]["cpu_count"] == os.cpu_count() and len(doc["machine"]["loadavg"]) == 3
    assert "stable-baselines3" in doc["versions"]
    for rid in IDS:
        row = doc["rows"][rid]
        assert "error" not in row, (rid, row.get("error"))
        assert isinstance(row["value"], (int, float)) and math.isfinite(row["value"]), (rid, row["value"])
        assert row["quick"] is True and row["command"]
        # the md table has a row for the id whose figure holds a number, and a status
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {rid} |"))
        assert re.search(r"\d", line.split("|")[3]), line
        assert any(s in line for s in ("**met**", "**missed**", "no numeric goal")), line
    assert doc["rows"]["P4"]["data"]["limit_steps_per_s"] == 6400
    # the ratios are ratios of two measured positive rates
    assert doc["rows"]["P2"]["data"]["plain_loop_steps_per_s"] > 0
    for png in ("bench_p3.png", "bench_p4.png", "bench_p5.png", "bench_env.png", "bench_p1.png"):
        assert (tmp_path / png).stat().st_size > 1000, png
        assert f"]({png})" in md


def test_only_reruns_one_row_and_keeps_the_others(tmp_path):
    """`--only` merges by id: a row that was not re-run keeps its figures; `--render-only` rebuilds the md from the
    json; a bad id exits 2."""
    old = {"rows": {"P1": {"title": "kept", "figure": "42 s", "goal": "g", "met": True, "command": "c",
                           "value": 42.0, "details": "d"}}}
    (tmp_path / "benchmarks.json").write_text(json.dumps(old))
    proc = run_cli("benchmarks/run.py", "--quick", "--only", "P3", "--out", str(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "benchmarks.json").read_text())
    assert doc["rows"]["P1"]["figure"] == "42 s" and doc["rows"]["P3"]["value"] > 0
    assert "| P1 | kept | 42 s |" in (tmp_path / "benchmarks.md").read_text()
    (tmp_path / "benchmarks.md").unlink()
    assert run_cli("benchmarks/run.py", "--render-only", "--out", str(tmp_path), timeout=60).returncode == 0
    assert "| P1 | kept | 42 s |" in (tmp_path / "benchmarks.md").read_text()
    bad = run_cli("benchmarks/run.py", "--only", "P9", "--out", str(tmp_path), timeout=60)
    assert bad.returncode == 2 and "unknown benchmark id" in bad.stderr
