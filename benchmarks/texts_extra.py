"""The figure and the explanation of the rows P3b, P3c, P6, P6b and P7, written from their measured data."""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.row import Text

_P3B_PATHS = {"spawn_{}": "spawn (pipes), batch API (`BatchProgram.step_all`)",
              "spawn_{}_vec": "spawn, through the vector env (`BridgeVectorEnv`: Guard checks, Monitor "
                              "stats, auto-reset)",
              "connect_{}": "connect mode (loopback TCP), batch API"}
_P3B_RATIOS = {"spawn_{}": "spawn_k16_over_k1", "spawn_{}_vec": "spawn_k16_vec_over_k1_vec",
               "connect_{}": "connect_k16_over_k1"}


def _n(x: float) -> str:
    return f"{x:,.0f}"


def p3b_text(d: dict[str, Any]) -> Text:
    """P3b's figure and details (benchmarks/bridge.py --batch [--train])."""
    b, t = d["P3b_P3c"], d.get("P3b_training")
    figure = (f"K = 16 / K = 1 per env step **{b['spawn_k16_over_k1']:.3f}** (batch API; "
              f"{b['spawn_k16_vec_over_k1_vec']:.3f} through the vector env); ")
    table = ["| path | K = 1, a 1.0 program | K = 1 (1.1 messages) | K = 4 | K = 16 | K = 16 / K = 1 |",
             "|---|---|---|---|---|---|"]
    for key, name in _P3B_PATHS.items():
        cells = " | ".join(f"{b[key.format(k)]:.1f}" for k in ("k1_v10", "k1", "k4", "k16"))
        table.append(f"| {name} | {cells} | **{b[_P3B_RATIOS[key]]:.3f}** |")
    details = (f"{b['env_steps_per_measure']:,} env steps per measurement, median of {b['repeats']}; µs per "
               "env step = wall time of the vector steps / (steps × K). The heater's own dynamics cost "
               f"nanoseconds, so this is the bridge. Load average {b['load_at_start']} at the start, "
               f"{b['load_at_end']} at the end.\n\n" + "\n".join(table))
    if t is None:
        figure += "training not run (`--quick`)"
    else:
        k1 = " and ".join(_n(x) for x in t["train_k1_steps_per_s"])
        k16 = " and ".join(_n(x) for x in t["train_k16_steps_per_s"])
        ratio = t["train_ratio_k16_over_k1"]
        figure += f"training **{ratio:.1f}×** ({k16} vs {k1} steps/s)"
        details += ("\n\nThe heater's training steps/s through one program (train.py, configs/process.yaml, "
                    f"PPO, {t['train_steps']:,} steps, eval off), K = 16 (16 envs from one program) against "
                    f"K = 1 (one env): {k16} against {k1} steps/s, **{ratio:.2f}×** (medians; goal ≥ 5×: "
                    f"{'met' if ratio >= 5 else 'missed'}). The gain is the rollout: one policy forward and "
                    f"one bridge round trip serve 16 env steps. Load average {t['load_at_start']} at the "
                    f"start of training, {t['load_at_end']} at the end.")
    command = "python benchmarks/bridge.py 8000 5 --batch --train"
    return {"figure": figure, "details": details, "command": command}


def p3c_text(d: dict[str, Any]) -> Text:
    """P3c's figure and details (P3b's run: connect mode against spawn mode)."""
    b = d["P3b_P3c"]
    r1, r16 = b["connect_over_spawn_k1_v10"], b["connect_over_spawn_k16"]
    figure = (f"a 1.0 program with K = 1: **{r1:.2f}×** the spawn cost per env step "
              f"({b['connect_k1_v10']:.1f} vs {b['spawn_k1_v10']:.1f} µs); K = 16: {r16:.2f}× "
              f"({b['connect_k16']:.1f} vs {b['spawn_k16']:.1f} µs)")
    details = ("The C heater of P3b, once spawned (pipes) and once connecting to a listening nondiff over "
               "loopback TCP (connect mode), in the same run (P3b's table has every K). µs per env step:\n\n"
               "| K | spawn | connect | connect / spawn |\n|---|---|---|---|\n"
               f"| 1, a 1.0 program | {b['spawn_k1_v10']:.1f} | {b['connect_k1_v10']:.1f} | **{r1:.2f}** |\n"
               f"| 16 | {b['spawn_k16']:.1f} | {b['connect_k16']:.1f} | {r16:.2f} |")
    return {"figure": figure, "details": details, "command": "python benchmarks/bridge.py 8000 5 --batch"}


def p6_medians(d: dict[str, Any]) -> tuple[float | None, float | None, float | None]:
    """SAC's and PPO's median steps to the threshold and their ratio; PPO's re-run where one is recorded."""
    sac, ppo = d["median"]["sac"]["steps"], d["median"]["ppo"]["steps"]
    if "ppo_rerun" in d:
        ppo = d["ppo_rerun"]["median"]
    return sac, ppo, (sac / ppo if sac and ppo else None)


def p6_text(d: dict[str, Any]) -> Text:
    """P6's or P6b's figure and details (benchmarks/sample_efficiency.py)."""
    sac, ppo, ratio = p6_medians(d)
    unit = "program calls" if d["env"] == "process" else "env steps"
    rows, success = d["rows"], d.get("success", 0.9)
    walls = [r["wall_ratio"] for r in rows if "wall_ratio" in r]
    wall = f"; wall time {statistics.median(walls):.1f}× PPO's" if len(walls) == len(rows) else ""
    if ratio is None:
        figure = f"not solved on every seed (SAC {sac}, PPO {ppo} median {unit})"
    else:
        figure = f"SAC {sac:,.0f} vs PPO {ppo:,.0f} {unit} (median of {len(rows)}) → **{ratio:.2f}×**{wall}"

    def cell(r: dict[str, Any], key: str, fmt: str) -> str:
        return "—" if r.get(key) is None else format(r[key], fmt)

    table = [f"| seed | SAC {unit} | PPO {unit} | ratio | SAC wall (s) | PPO wall (s) | wall ratio SAC/PPO | "
             "load at start (SAC, PPO) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s, p = r["sac"], r["ppo"]
        table.append(f"| {r['seed']} | {cell(s, 'steps', ',')} | {cell(p, 'steps', ',')} | "
                     f"{cell(r, 'step_ratio', '.2f')} | {cell(s, 'wall_s', ',.0f')} | "
                     f"{cell(p, 'wall_s', ',.0f')} | {cell(r, 'wall_ratio', '.1f')} | "
                     f"{s['loadavg_at_start']}, {p['loadavg_at_start']} |")
    ev = d["eval_every"]
    details = (f"`--env {d['env']}` with its shipped configs/{d['env']}.yaml (`--algo sac` takes its "
               "`algos.sac` entry), one seed at a time, SAC then PPO; each run stops at the first periodic "
               f"evaluation ({d['eval_episodes']} deterministic episodes; SAC every {ev['sac']:,}, PPO every "
               f"{ev['ppo']:,} steps, so each figure is an upper bound within that interval) with success ≥ "
               f"{success}. Steps do not depend on the load; wall times do, so they are per-seed ratios of "
               "runs taken one after the other.\n\n" + "\n".join(table))
    if "ppo_rerun" in d:
        details += f"\n\n**PPO re-measured.** {d['ppo_rerun']['note']}"
    command = "python benchmarks/sample_efficiency.py --seeds 0 1 2"
    if d["env"] == "process":
        command = "python benchmarks/sample_efficiency.py --env process --set env.command=./heater"
    return {"figure": figure, "details": details, "command": command}


def p7_text(d: dict[str, Any]) -> Text:
    """P7's figure and details (benchmarks/latency_appo.py)."""
    a, p, limit, cfg = d["appo"], d.get("sb3_ppo"), d["limit_steps_per_s"], d["config"]
    cores = d.get("cpu_count", 2)
    ceiling = cores * 1e3 / a["cpu_ms_per_step"]
    figure = (f"APPO **{_n(a['train_steps_per_s'])} steps/s = {a['x_limit']:.2f}×** the {_n(limit)} limit "
              f"end to end (steady {a['steady_x_limit']:.2f}×), {a['cpu_ms_per_step']:.2f} ms CPU per env "
              "step")
    if p is not None:
        figure += (f"; SB3 PPO in the same run {p['x_limit']:.2f}×; APPO / SB3 PPO "
                   f"{d['appo_over_sb3_ppo']:.2f}")
    start, mid, end = d["loadavg_start"][0], d["loadavg_after_appo"][0], d["loadavg_end"][0]
    table = ["| run | steps/s end to end | × limit | after the first iteration | CPU per env step | load |",
             "|---|---|---|---|---|---|",
             f"| RLlib APPO, {cfg['runners']} env runners × {cfg['envs_per_runner']} envs | "
             f"{_n(a['train_steps_per_s'])} | **{a['x_limit']:.2f}** | {_n(a['steady_steps_per_s'])} "
             f"({a['steady_x_limit']:.2f}×) | {a['cpu_ms_per_step']:.2f} ms | {start} → {mid} |"]
    if p is not None:
        table.append(f"| SB3 PPO (latency.py's run, same process) | {_n(p['train_steps_per_s'])} | "
                     f"**{p['x_limit']:.2f}** | — (rollout phase {_n(p['rollout_steps_per_s'])} = "
                     f"{p['rollout_steps_per_s'] / limit:.2f}×; envs idle {100 * p['env_idle_fraction']:.0f} "
                     f"%) | {p['cpu_ms_per_step']:.2f} ms | {mid} → {end} |")
    details = (f"P4's latency env (benchmarks/latency.py `SleepEnv`, {d['num_envs']} envs × "
               f"{d['latency_ms']:g} ms, limit {_n(limit)} steps/s). APPO is built as `train.py --backend "
               "rllib --algo appo` builds it (private loopback Ray, Guard, watchdog callback) with "
               f"`train.vec_env: thread`, learner in the driver, fragment {cfg['fragment']} steps per env, "
               f"learner batch {cfg['batch']:,}, {cfg['epochs']} pass; SB3 PPO is "
               "`benchmarks.latency.training` in the same process right after. Throughput is env steps over "
               "the training iterations (APPO's Ray start-up reported apart); CPU is user + system time of "
               "the whole process tree.\n\n" + "\n".join(table) +
               f"\n\nAt {a['cpu_ms_per_step']:.2f} ms of CPU per env step, {cores} cores carry at most ≈ "
               f"{_n(ceiling)} steps/s ({ceiling / limit:.2f}× the limit) however the work is spread; the "
               "goal needs RLlib's cost per step to fall or env runners with cores of their own "
               "(docs/results.md, \"RLlib APPO and SAC\").")
    command = "python benchmarks/latency_appo.py --timesteps 40000"
    return {"figure": figure, "details": details, "command": command}
