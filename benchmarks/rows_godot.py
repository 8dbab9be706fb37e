"""The rows G1 (Godot throughput against the anchor's design), G2 (what the engine costs PPO) and G3
(start-up), issue 27:
each runs its measurement (benchmarks/godot.py) and returns a :class:`~benchmarks.row.Row`; their texts
are written from the data alone (``--render-only``)."""

from __future__ import annotations

from typing import Any

from benchmarks import godot
from benchmarks.row import Row, Shared, Text

AGENTS = [1, 16, 64]


def g1_text(d: dict[str, Any]) -> Text:
    """G1's figure and details."""
    k1, k64 = d["k1"]["ratio"], d["k64"]["ratio"]
    figure = f"K = 64: **{k64:.2f}×** the anchor's agent-steps/s; K = 1: **{k1:.2f}×**"
    if "cpu_ratio" in d["k64"] and "cpu_ratio" in d["k1"]:
        figure += (f" (CPU per step, anchor ÷ nondiff: K = 64 {d['k64']['cpu_ratio']:.2f}×, "
                   f"K = 1 {d['k1']['cpu_ratio']:.2f}×)")
    rows = ["| K | anchor (JSON), agent-steps/s | nondiff (binary 1.1) | nondiff / anchor | CPU µs per step, "
            "Godot + driver: anchor / nondiff (anchor ÷ nondiff) | load |", "|---|---|---|---|---|---|"]
    for k in AGENTS:
        x = d.get(f"k{k}")
        if x is not None:
            loads = ", ".join(f"{a}–{b}" for a, b in x["loads"])
            cpu = x.get("cpu_us_per_step")
            cpu_cell = f"{cpu['anchor']:,.0f} / {cpu['nondiff']:,.0f} ({x['cpu_ratio']:.2f})" if cpu else "—"
            rows.append(f"| {k} | {x['anchor_json']:,.0f} | {x['nondiff_binary']:,.0f} | "
                        f"**{x['ratio']:.2f}** | {cpu_cell} | {loads} |")
    details = ("The shipped Reach scene in one headless `godot3-server`, action repeat 1, random actions: "
               "nondiff's raw bridge vector env (binary protocol 1.1, batched replies, same-step resets) "
               "against a JSON lock-step driver built the way Godot RL Agents builds it (one JSON message "
               "for all agents per step, TCP_NODELAY), alternating, medians of the pairs. The CPU time per "
               "step (Godot's process and the driver's) is what each side costs whatever the load; the "
               "wall-clock rates on a loaded machine mostly measure waiting to be scheduled. Where the time "
               "goes inside Godot at K = 64 and why 3× cannot be reached with this scene: docs/results.md, "
               "\"Against the anchor's design\".\n\n" + "\n".join(rows))
    return {"figure": figure, "details": details + "\n\nThe pairs alone: `python benchmarks/experiments/"
            "godot_anchor.py --seconds 3 --repeats 2`."}


def g2_text(d: dict[str, Any]) -> Text:
    """G2's figure and details."""
    figure = (f"**{d['ratio']:.2f}×** (PPO on Godot {d['godot_steps_per_s']:,.0f} steps/s, on the "
              f"in-process twin {d['twin_steps_per_s']:,.0f})")
    if "cpu_ratio" in d:
        figure += f"; on CPU time {d['cpu_ratio']:.2f}×"
    rows = ["| round | Godot steps/s | twin steps/s | Godot / twin | load (start, Godot end, twin end) |",
            "|---|---|---|---|---|"]
    for i, p in enumerate(d["pairs"]):
        rows.append(f"| {i + 1} | {p['godot']['steady_steps_per_s']:,.0f} | "
                    f"{p['twin']['steady_steps_per_s']:,.0f} | **{p['ratio']:.2f}** | {p['load_start']}, "
                    f"{p['godot']['load']}, {p['twin']['load']} |")
    details = ("configs/godot.yaml's PPO (2 Godots × 16 agents, action repeat 4, 32 envs, n_steps 128, "
               "5 epochs) against the same PPO on benchmarks/godot_twin.py (Reach's spaces in-process, no "
               f"engine), {d['steps_per_run']:,} steps each, alternating; steady steps/s between the first "
               "and last progress lines, median of the rounds' ratios.\n\n" + "\n".join(rows))
    if "cpu_ratio" in d:
        tr, en, tw = (d["godot_trainer_cpu_us_per_step"], d["godot_engines_cpu_us_per_step"],
                      d["twin_trainer_cpu_us_per_step"])
        cap = tw / (tw + en / 2)
        details += ("\n\nCPU per env step (medians; the trainer's process, and the engines it started): "
                    f"Godot run: trainer {tr:.1f} µs + the two engines {en:.1f} µs; twin run: trainer "
                    f"{tw:.1f} µs. On two cores the trainer waits while the two engines work side by "
                    f"side, so CPU time alone allows {tw:.1f} / ({tr:.1f} + {en:.1f} / 2) = "
                    f"**{d['cpu_ratio']:.2f}×**; with a free bridge (the trainer's {tw:.1f}) the engines "
                    f"alone cap it at {cap:.2f}×.")
    return {"figure": figure, "details": details + "\n\nThe rounds alone: `python benchmarks/godot.py "
            "--steps 40960 --rounds 3`."}


def g3_text(d: dict[str, Any]) -> Text:
    """G3's figure and details."""
    figure = (f"**{d['after_engines_s']:.2f} s** from the first engine's start to the end of the first "
              f"rollout ({d['rollout_steps']:,} steps); {d['first_rollout_s']:.2f} s from the launch")
    rows = ["| run | first engine started | training engines connected | first progress line | after the "
            "first engine | load |", "|---|---|---|---|---|---|"]
    for i, r in enumerate(d["runs"]):
        rows.append(f"| {i + 1} | {r['engine_started_s']:.2f} s | {r['engines_connected_s']:.2f} s | "
                    f"{r['first_rollout_s']:.2f} s | **{r['after_engines_s']:.2f} s** | {r['load']} |")
    details = ("`train.py --env godot` (configs/godot.yaml: a probe Godot, then 2 Godots × 16 agents) for "
               "one rollout, its console lines timed from the launch, median of the runs. The first progress "
               "line comes after the whole first rollout, so the time from the first engine's start to it "
               "bounds the first training step from above.\n\n" + "\n".join(rows))
    return {"figure": figure, "details": details}


def bench_g1(quick: bool, shared: Shared) -> Row:
    """nondiff's binary 1.1 path against the JSON anchor on Godot, K = 1, 16, 64."""
    d = godot.anchor(1.0 if quick else 3.0, 1 if quick else 2, AGENTS)
    met = d["k64"]["ratio"] >= 3.0 and d["k1"]["ratio"] >= 1.0
    return Row(title="Godot: nondiff's binary protocol 1.1 vs a JSON lock-step driver (Godot RL Agents' "
               "design), same engine and scene",
               goal="≥ 3× the anchor's agent-steps/s at K = 64, not slower at K = 1", met=met,
               value=d["k64"]["ratio"], unit="ratio (nondiff / anchor, agent-steps/s, K = 64)", data=d,
               **g1_text(d))


def bench_g2(quick: bool, shared: Shared) -> Row:
    """PPO's training steps/s on Godot against the same PPO on an in-process twin without physics."""
    d = godot.engine_cost(16384 if quick else 40960, 1 if quick else 3)  # quick: 3 progress lines
    return Row(title="engine cost while training: PPO on `--env godot` vs the same PPO on an in-process env "
               "with the same spaces, no physics", goal="≥ 0.8× the in-process env's training steps/s",
               met=d["ratio"] >= 0.8, value=d["ratio"], unit="ratio (Godot / in-process, steps/s)", data=d,
               **g2_text(d))


def bench_g3(quick: bool, shared: Shared) -> Row:
    """How soon training steps after train.py starts the engines."""
    d = godot.startup(1 if quick else 3)
    return Row(title="Godot start-up: the first training step after `train.py --env godot` starts the "
               "engines",
               goal="≤ 3 s", met=d["after_engines_s"] <= 3.0, value=d["after_engines_s"],
               unit="s (first engine started → first rollout done, an upper bound)", data=d, **g3_text(d))
