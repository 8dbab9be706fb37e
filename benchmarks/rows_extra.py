"""The rows P3b, P3c (many instances per program, connect mode), P6, P6b (SAC against PPO) and P7 (APPO on
the latency env): each runs its measurement and returns a :class:`~benchmarks.row.Row`."""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

from benchmarks import sample_efficiency
from benchmarks.bridge import compile_heater
from benchmarks.common import PY, ROOT, run_json
from benchmarks.row import Row, Shared
from benchmarks.texts_extra import p3b_text, p3c_text, p6_medians, p6_text, p7_text


def _batch(quick: bool, shared: Shared) -> dict[str, Any]:
    """benchmarks/bridge.py --batch (with --train unless quick), once per run: P3b and P3c share it."""
    if "p3b" not in shared:
        args = ["400", "1", "--batch"] if quick else ["8000", "5", "--batch", "--train"]
        shared["p3b"] = run_json([PY, str(ROOT / "benchmarks" / "bridge.py"), *args], timeout=1800)
    return shared["p3b"]


def bench_p3b(quick: bool, shared: Shared) -> Row:
    """The bridge's cost per env step with K = 1, 4, 16 instances per program; training K = 16 vs K = 1."""
    d = _batch(quick, shared)
    ratio = d["P3b_P3c"]["spawn_k16_over_k1"]
    train = d.get("P3b_training")
    met = ratio <= 0.2 and (train is None or train["train_ratio_k16_over_k1"] >= 5)
    return Row(title="bridge cost per env step with K = 1, 4, 16 instances per program; heater training "
               "steps/s K = 16 vs K = 1", goal="K = 16 ≤ 0.2× K = 1 per env step; training ≥ 5×", met=met,
               value=ratio, unit="ratio (K = 16 / K = 1, µs per env step)", data=d, **p3b_text(d))


def bench_p3c(quick: bool, shared: Shared) -> Row:
    """Connect mode (loopback TCP) against spawn mode (pipes), from P3b's run."""
    d = _batch(quick, shared)
    return Row(title="connect mode (program connects over loopback TCP) vs spawn mode (pipes), C heater",
               goal="— (reported)", met=None, value=d["P3b_P3c"]["connect_over_spawn_k1_v10"],
               unit="ratio (connect / spawn, µs per env step, K = 1)", data={"P3b_P3c": d["P3b_P3c"]},
               **p3c_text({"P3b_P3c": d["P3b_P3c"]}))


def _sample_efficiency(quick: bool, env: str, sets: list[str]) -> dict[str, Any]:
    """SAC then PPO per seed until eval success ≥ 0.9 (quick: one seed, threshold 0, tiny evaluations)."""
    if quick:
        return sample_efficiency.run([0], {"sac": 500, "ppo": 2048}, {"sac": 120.0, "ppo": 120.0}, episodes=2,
                                     env=env, sets=sets, success=0.0)
    return sample_efficiency.run([0, 1, 2], {"sac": 2000, "ppo": 5000}, {"sac": 1200.0, "ppo": 900.0},
                                 env=env,
                                 sets=sets)


def bench_p6(quick: bool, shared: Shared) -> Row:
    """Env steps to eval success ≥ 0.9 on `robot`, SAC against PPO, shipped configs, 3 seeds."""
    d = _sample_efficiency(quick, "robot", [])
    ratio = p6_medians(d)[2]
    return Row(title="sample efficiency on `robot`: env steps to eval success ≥ 0.9, SAC vs PPO, shipped "
               "configs, median of 3 seeds", goal="SAC ≤ 0.3× PPO's env steps", met=ratio is not None and
               ratio <= 0.3, value=ratio, unit="ratio (SAC / PPO env steps)", data=d, **p6_text(d))


def bench_p6b(quick: bool, shared: Shared) -> Row:
    """P6 on the compiled C heater through the bridge: program calls to eval success ≥ 0.9."""
    tmp = tempfile.mkdtemp(prefix="bench-p6b-")
    try:
        d = _sample_efficiency(quick, "process", [f"env.command={compile_heater(tmp)}"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ratio = p6_medians(d)[2]
    return Row(title="sample efficiency through the bridge: C heater program calls to eval success ≥ 0.9, "
               "SAC vs PPO, median of 3 seeds", goal="— (reported)", met=None, value=ratio,
               unit="ratio (SAC / PPO program calls)", data=d, **p6_text(d))


def bench_p7(quick: bool, shared: Shared) -> Row:
    """RLlib APPO end to end on P4's latency env, side by side with SB3 PPO (benchmarks/latency_appo.py)."""
    # quick: APPO samples in the driver (no env-runner actor: 11 CPU-s instead of 31); the remote runners'
    # path is tested in tests/agents/rllib/test_rllib_appo_sac.py
    args = (["--num-envs", "4", "--runners", "0", "--envs-per-runner", "4", "--fragment", "16", "--batch",
             "64", "--timesteps", "128"] if quick else ["--timesteps", "40000"])
    d = run_json([PY, str(ROOT / "benchmarks" / "latency_appo.py"), *args], timeout=1800)
    x = d["appo"]["x_limit"]
    return Row(title="RLlib APPO end to end on the latency env (32 envs × 5 ms), against SB3 PPO and the "
                     "limit",
               goal="APPO ≥ 0.8× the 6,400 steps/s limit end to end (moonshot 0.9×)", met=x >= 0.8, value=x,
               unit="ratio (× the limit)", data=d, **p7_text(d))
