"""The rows P1–P5, ENV and MEM: each runs its measurement and returns a :class:`~benchmarks.row.Row`."""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

from benchmarks import overhead, solve
from benchmarks.common import PY, ROOT, Child, run_json, train_cmd
from benchmarks.row import Row, Shared
from benchmarks.texts import p1_text, p2_met, p2_text, p3_text, p4_text, p5_text


def bench_p1(quick: bool, shared: Shared) -> Row:
    """Time to solve `robot`: nondiff vs RL Zoo's Reacher-v2 setup vs SB3 defaults; Reacher-v5."""
    d = solve.run(quick)
    nd = d["runs"]["nondiff"]
    return Row(title="time to solve `robot` (eval success ≥ 0.9)", goal="≤ 0.5× the RL Zoo setup's wall time",
               met=d["ratio_vs_zoo"] is not None and d["ratio_vs_zoo"] <= 0.5,
               value=nd["wall_s"] if nd["solved"] else nd["ran_s"],
               unit="s (nondiff; its run time if unsolved)", data=d, **p1_text(d))


def bench_p2(quick: bool, shared: Shared) -> Row:
    """nondiff's SB3 backend vs plain SB3, alternating."""
    d = overhead.run(quick)
    if quick:
        shared["p2_memory"] = d["pairs"][0]["nondiff"]
    return Row(title="framework overhead: nondiff SB3 backend vs plain SB3 (steps/s)",
               goal="ratio ≥ 0.97 (moonshot 0.99)", met=p2_met(d), value=d["loop_ratio"],
               unit="ratio", data=d, **p2_text(d))


def bench_p3(quick: bool, shared: Shared) -> Row:
    """Bridge cost per step, in a child process (benchmarks/bridge.py)."""
    args = ["300", "1"] if quick else ["3000", "5"]
    d = run_json([PY, str(ROOT / "benchmarks" / "bridge.py"), *args, "--profile"], timeout=600)
    return Row(title="bridge cost per step (C heater over pipes vs the same dynamics in-process)",
               goal="≤ 120 µs added", met=d["bridge_added_us"] <= 120, value=d["bridge_added_us"], unit="µs",
               data=d, **p3_text(d))


def bench_p4(quick: bool, shared: Shared) -> Row:
    """Latency-bound env, 32 envs × 5 ms (benchmarks/latency.py)."""
    d = run_json([PY, str(ROOT / "benchmarks" / "latency.py"), *(["--quick"] if quick else [])], timeout=900)
    ratio = d["train"]["rollout_steps_per_s"] / d["limit_steps_per_s"]
    d["rollout_ratio"] = ratio
    vec_ratio = d["vec"]["threadproc"]["steps_per_s"] / d["limit_steps_per_s"]
    return Row(title="latency-bound env: 32 envs whose step waits 5 ms, on 2 cores",
               goal="vec env alone ≥ 0.95×, PPO's rollout collection ≥ 0.9× the limit (6,400 steps/s)",
               met=ratio >= 0.9 and vec_ratio >= 0.95, value=ratio, unit="ratio", data=d, **p4_text(d))


def bench_p5(quick: bool, shared: Shared) -> Row:
    """RLlib sample throughput with 1 and 2 env runners (benchmarks/scaleout.py); tree memory sampled."""
    args = ["--local", "--rounds", "1", "--n-steps", "32"] if quick else ["--runners", "1,2", "--rounds", "5"]
    child = Child([PY, str(ROOT / "benchmarks" / "scaleout.py"), *args], sample_memory=True).start()
    if child.wait(1200) != 0 or not child.json_lines():
        raise RuntimeError(f"scaleout.py exited {child.proc.returncode}: {child.stderr_tail()}")
    d = child.json_lines()[-1]
    d["peak_pss_mib"], d["peak_rss_mib"] = child.peak_pss_mib, child.peak_rss_mib
    shared["p5_memory"] = d
    rows = d["rows"]
    return Row(title="scale-out: RLlib sample throughput with 1 and 2 env runners",
               goal="method for a real cluster documented; projection stated", met=None,
               value=rows[-1]["sample_steps_per_s"], unit="steps/s", data=d, **p5_text(d))


def bench_env(quick: bool, shared: Shared) -> Row:
    """Raw steps/s of every built-in adapter (benchmarks/adapters.py)."""
    d = run_json([PY, str(ROOT / "benchmarks" / "adapters.py"), "--seconds", "0.5" if quick else "5"],
                 timeout=600)
    ok = {k: v for k, v in d.items() if "steps_per_s" in v}
    figure = ", ".join(f"`{k}` {v['steps_per_s']:,.0f}" for k, v in ok.items()) + " steps/s"
    failed = {k: v["error"] for k, v in d.items() if "error" in v}
    if failed:
        figure += "; failed: " + ", ".join(f"`{k}` ({e})" for k, e in failed.items())
    table = ["| adapter | steps/s | µs/step | note |", "|---|---|---|---|"]
    table += [f"| `{k}` | {v['steps_per_s']:,.0f} | {v['us_per_step']:,.0f} | {v.get('note', '')} |"
              for k, v in ok.items()]
    details = ("One env made with `envs.make` (the Guard and Gymnasium's wrappers included, as in training), "
               "random actions, reset at episode ends, timed for a fixed wall time after 5 warm-up steps.\n\n"
               + "\n".join(table))
    return Row(title="raw env steps/s of every built-in adapter", goal="— (reported)", met=None,
               value=ok.get("robot", {}).get("steps_per_s"), unit="steps/s", data=d, figure=figure,
               details=details, command="python benchmarks/adapters.py --seconds 5")


def bench_mem(quick: bool, shared: Shared) -> Row:
    """Peak memory of the process tree of a `robot` training run on each backend."""
    tmp = tempfile.mkdtemp(prefix="bench-mem-")
    runs: dict[str, Any] = {}
    small = ["--set", "agent.n_steps=64"] if quick else []
    plans = {"sb3": ("512" if quick else "50000", small),
             "rllib": ("512" if quick else "20000", ["--backend", "rllib", *small])}
    reuse = {"sb3": ("p2_memory", "quick mode: P2's nondiff run (2,048 steps)"),
             "rllib": ("p5_memory", "quick mode: the P5 child (one RLlib env runner, no Ray), not a "
                                    "training run")}
    for backend, (steps, extra) in plans.items():
        key, source = reuse[backend]
        # smoke mode: reuse a run that already happened instead of starting another
        if quick and key in shared:
            runs[backend] = {"peak_pss_mib": shared[key]["peak_pss_mib"],
                             "peak_rss_mib": shared[key]["peak_rss_mib"], "source": source}
            continue
        cmd = train_cmd("--env", "robot", "--seed", "0", "--timesteps", steps, "--run-dir",
                        f"{tmp}/{backend}",
                        "--set", "eval.every=0", *extra)
        child = Child(cmd, sample_memory=True).start()
        if child.wait(1200) != 0:
            raise RuntimeError(f"{backend}: train.py exited {child.proc.returncode}: {child.stderr_tail()}")
        runs[backend] = {"peak_pss_mib": child.peak_pss_mib, "peak_rss_mib": child.peak_rss_mib,
                         "steps": int(steps), "wall_s": child.elapsed,
                         "command": " ".join(cmd[1:]).replace(str(ROOT) + "/", "")}
    shutil.rmtree(tmp, ignore_errors=True)
    figure = "; ".join(f"{k.upper() if k == 'sb3' else 'RLlib'} {v['peak_pss_mib']:,.0f} MiB PSS "
                       f"({v['peak_rss_mib']:,.0f} MiB RSS summed)" for k, v in runs.items())
    details = ("Peak over the run of the memory of the trainer and all its descendants (env workers, Ray's "
               "GCS, raylet and workers), sampled every 0.25 s from /proc/PID/smaps_rollup. PSS divides "
               "shared pages between the processes that map them, so its sum is what the tree really holds; "
               "the RSS sum counts shared pages (torch, Ray's object store) once per process and overstates "
               "it.\n\n| backend | peak PSS (MiB) | peak RSS summed (MiB) | run |\n|---|---|---|---|\n" +
               "\n".join(f"| {k} | {v['peak_pss_mib']:,.0f} | {v['peak_rss_mib']:,.0f} | "
                         f"`{v.get('command', v.get('source', ''))}` |" for k, v in runs.items()))
    return Row(title="peak memory of a `robot` training run, per backend", goal="— (reported)", met=None,
               value=runs["sb3"]["peak_pss_mib"], unit="MiB", data=runs, figure=figure, details=details,
               command="python train.py --env robot --timesteps 50000 [--backend rllib --timesteps 20000]")
