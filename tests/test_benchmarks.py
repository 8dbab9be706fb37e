"""CI smoke test of the benchmark harness: `python -m benchmarks --quick` runs every row end to end."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

from conftest import ROOT

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

IDS = ("P1", "P2", "P3", "P3b", "P3c", "P4", "P5", "P6", "P6b", "P7", "ENV", "G1", "G2", "G3", "MEM")


def _bench(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "benchmarks", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_quick_benchmarks_report_every_id_with_a_figure_and_its_load(tmp_path):
    proc = _bench("--quick", "--out", str(tmp_path), timeout=480)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((tmp_path / "benchmarks.json").read_text())
    md = (tmp_path / "benchmarks.md").read_text()
    assert doc["machine"]["cpu_count"] == os.cpu_count() and len(doc["machine"]["loadavg"]) == 3
    assert "stable-baselines3" in doc["versions"]
    assert list(doc["rows"]) == list(IDS)  # every goal row, in the file's order
    for rid in IDS:
        row = doc["rows"][rid]
        assert "error" not in row, (rid, row.get("error"))
        assert isinstance(row["value"], (int, float)) and math.isfinite(row["value"]), (rid, row["value"])
        assert row["quick"] is True and row["command"] and row["data"]
        assert isinstance(row["loadavg_at_start"], float) and row["loadavg_at_start"] >= 0, rid
        # the md table has a row for the id whose figure holds a number, a status and the load
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {rid} |"))
        assert re.search(r"\d", line.split("|")[3]), line
        assert any(s in line for s in ("**met**", "**missed**", "no numeric goal")), line
        assert line.rstrip(" |").endswith(str(row["loadavg_at_start"])), line
        assert f"## {rid}: {row['title']}" in md
    assert doc["rows"]["P4"]["data"]["limit_steps_per_s"] == 6400
    # the ratios are ratios of two measured positive rates
    assert doc["rows"]["P2"]["data"]["plain_loop_steps_per_s"] > 0
    assert doc["rows"]["P3c"]["data"]["P3b_P3c"] == doc["rows"]["P3b"]["data"]["P3b_P3c"]  # one run, two rows
    for rid in ("P6", "P6b"):
        d = doc["rows"][rid]["data"]
        assert d["median"]["sac"]["steps"] > 0 and d["median"]["ppo"]["steps"] > 0, rid
    assert doc["rows"]["P7"]["data"]["appo"]["train_steps_per_s"] > 0
    assert doc["rows"]["P7"]["data"]["sb3_ppo"]["train_steps_per_s"] > 0
    for png in ("bench_p3.png", "bench_p4.png", "bench_p5.png", "bench_env.png", "bench_p1.png"):
        assert (tmp_path / png).stat().st_size > 1000, png
        assert f"]({png})" in md


def test_only_reruns_one_row_and_keeps_the_others(tmp_path):
    """`--only` merges by id (any case): a row that was not re-run keeps its figures and its history;
    `--render-only` rebuilds the md from the json; a bad id exits 2."""
    old = {"rows": {"P1": {"title": "kept", "figure": "42 s", "goal": "g", "met": True, "command": "c",
                           "value": 42.0, "details": "d", "history": ["an earlier 41 s"]},
                    "P3": {"title": "old P3", "figure": "1 µs", "goal": "g", "met": True, "command": "c",
                           "value": 1.0, "details": "d", "history": ["an earlier 2 µs"]}}}
    (tmp_path / "benchmarks.json").write_text(json.dumps(old))
    proc = _bench("--quick", "--only", "p3", "--out", str(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "benchmarks.json").read_text())
    assert doc["rows"]["P1"]["figure"] == "42 s" and doc["rows"]["P3"]["value"] > 0
    assert doc["rows"]["P3"]["history"] == ["an earlier 2 µs"] and doc["rows"]["P3"]["title"] != "old P3"
    md = (tmp_path / "benchmarks.md").read_text()
    assert "| P1 | kept | 42 s |" in md and "- an earlier 41 s" in md
    (tmp_path / "benchmarks.md").unlink()
    assert subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--render-only", "--out",
                           str(tmp_path)], cwd=ROOT, timeout=60).returncode == 0  # the script path works too
    assert "| P1 | kept | 42 s |" in (tmp_path / "benchmarks.md").read_text()
    bad = _bench("--only", "P9", "--out", str(tmp_path), timeout=60)
    assert bad.returncode == 2 and "unknown benchmark id" in bad.stderr


def test_docs_hold_every_goal_row_with_its_load():
    """docs/benchmarks.json has every row, each with the load it was taken at; the md is its rendering."""
    doc = json.loads((ROOT / "docs" / "benchmarks.json").read_text())
    assert list(doc["rows"]) == list(IDS)
    md = (ROOT / "docs" / "benchmarks.md").read_text()
    for rid, row in doc["rows"].items():
        assert isinstance(row["loadavg_at_start"], float), rid
        assert row["quick"] is False and "error" not in row, rid
        assert next(ln for ln in md.splitlines() if ln.startswith(f"| {rid} |")).find(row["figure"]) > 0, rid
    from benchmarks.report import markdown

    assert markdown(doc) == md  # nothing in the md that the json does not hold
