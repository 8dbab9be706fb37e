"""docs/benchmarks.md regeneration keeps what was added by hand, and marks rows taken on a busy machine."""

from __future__ import annotations

import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT))
from benchmarks.report import carry_over, markdown  # noqa: E402


def _row(rid: str, load: float) -> dict:
    return {"title": f"{rid} title", "figure": f"{rid} 1.0", "goal": "g", "met": True, "command": "c",
            "loadavg_at_start": load, "details": f"{rid} details"}


OLD = """# Benchmarks

| id | what | figure | goal | status | command |
|---|---|---|---|---|---|
| P2 | old | 0.9 | g | **met** | `c` |
| P3 | old | 1 | g | **met** | `c` |
| P3b | by hand | 0.147 | g | **met** | `bridge.py --batch` |
| P4 | old | 2 | g | **met** | `c` |

## P2: old

old P2 text

## P3: old

| path | µs |
|---|---|
| P3 raw | 5 |

## P4: old

old P4 text

## P3b and P3c: by hand

| path | K = 16 |
|---|---|
| spawn | 18.6 |
"""


def test_hand_added_rows_and_sections_survive_a_rewrite_in_place():
    doc = {"rows": {"P2": _row("P2", 0.5), "P3": _row("P3", 0.7), "P4": _row("P4", 11.7)}}
    md = markdown(doc, OLD)
    lines = md.splitlines()
    head = lines[: lines.index("## P2: P2 title")]
    table = [ln.split("|")[1].strip() for ln in head if ln.startswith("| ")]
    assert table == ["id", "P2", "P3", "P3b", "P4"]  # P3b after P3, where it was; regenerated rows new
    assert "old P2 text" not in md and "P2 details" in md
    assert md.index("## P4: P4 title") < md.index("## P3b and P3c: by hand") and "| spawn | 18.6 |" in md
    # a section's table is no summary row
    assert md.count("| P3 raw | 5 |") == 0 and md.count("| spawn | 18.6 |") == 1
    p4 = next(ln for ln in lines if ln.startswith("| P4 |"))
    p2 = next(ln for ln in lines if ln.startswith("| P2 |"))
    assert "taken at load 11.7 > 1.5" in p4 and "taken at load" not in p2
    assert markdown(doc, md) == md  # idempotent


def test_without_an_old_file_nothing_is_carried():
    doc = {"rows": {"P2": _row("P2", 0.5)}}
    assert markdown(doc) == markdown(doc, None) and "P3b" not in markdown(doc)
    assert carry_over("x\n", "x\n", {"P2"}) == "x\n"


def test_p2_is_the_mean_of_its_rounds_with_a_95_percent_interval():
    """P2's rounds vary ±8% process to process: the goal's figure is their mean with Student's t interval,
    and a verdict whose interval holds the goal says so."""
    from benchmarks.overhead import mean_ci
    from benchmarks.texts import p2_met, p2_text

    mean, half = mean_ci([0.95, 0.97, 0.99])
    assert abs(mean - 0.97) < 1e-12 and abs(half - 4.303 * 0.02 / 3 ** 0.5) < 1e-9
    assert mean_ci([0.9])[1] != mean_ci([0.9])[1]  # NaN: no interval from one round
    arm = {"loop_steps_per_s": 1.0, "steady_steps_per_s": 1.0, "e2e_steps_per_s": 1.0}
    pair = {"order": ["nondiff", "plain"], "loadavg": 0.5, "nondiff": arm, "plain": arm, "loop_ratio": 0.97,
            "steady_ratio": 1.0, "e2e_ratio": 1.0}
    d = {"pairs": [pair] * 3, "loop_ratio": mean, "loop_ci": half, "loop_median": 0.97, "steady_ratio": 1.0,
         "e2e_ratio": 1.0, "nondiff_loop_steps_per_s": 4000, "plain_loop_steps_per_s": 4100,
         "steps_per_run": 30720}
    text = p2_text(d)
    assert text["figure"].startswith("**0.970 ± 0.050** (training loop, mean of 3 rounds' ratios")
    assert "the 95% interval holds 0.97" in text["details"]
    assert not p2_met(d) and p2_met({**d, "loop_ratio": 1.03}) and p2_met({"loop_ratio": 0.98})
