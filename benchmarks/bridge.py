"""P3: per-step cost of the bridge (C heater over pipes) against the same dynamics in-process, a raw pipe
round trip, and gymnasium's AsyncVectorEnv. Prints one JSON object; figures are medians of the repeats.

    python benchmarks/bridge.py [STEPS] [REPEATS] [--profile]
    python benchmarks/bridge.py [STEPS] [REPEATS] --batch [--train]   # P3b and P3c (protocol 1.1, connect)

``--batch``: P3b, the bridge's cost per env step with K = 1, 4 and 16 instances behind one program (the
batch API, envs/bridge/batch.py, and the vector env over it, envs/vector/bridge.py, whose per-env
Guard checks are included), and P3c, the same through connect mode (the program connects to a listening
nondiff over loopback TCP) against spawn mode (pipes). ``--train`` adds the heater's training steps/s
through one program with K = 16 against K = 1 (train.py, configs/process.yaml, PPO). Each row records the
load average when it started.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class PyHeater(gym.Env):
    """The heater's dynamics (examples/thirdparty/heater.c) in Python."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-10, 10, (3,), np.float32)
        self.action_space = gym.spaces.Box(0, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.amb, self.s = 10 * self.np_random.random(), 15 + 10 * self.np_random.random()
        self.temp, self.t = self.amb + 5 * self.np_random.random(), 0
        return self._obs(), {}

    def _obs(self):
        return np.array([self.temp / 30, (self.s - self.temp) / 10, self.amb / 10], dtype=np.float32)

    def step(self, action):
        u = float(np.clip(action[0], 0, 1))
        self.temp += 0.1 * (30 * u - 0.5 * (self.temp - self.amb))
        self.t += 1
        return self._obs(), -abs(self.s - self.temp) / 10, False, self.t >= 100, {}


def per_step_us(env, n: int) -> float:
    env.reset(seed=0)
    action = np.array([0.5], dtype=np.float32)
    t = time.perf_counter()
    for _ in range(n):
        _, _, term, trunc, _ = env.step(action)
        if term or trunc:
            env.reset()
    return (time.perf_counter() - t) / n * 1e6


def vec_per_step_us(env, n: int) -> float:
    env.reset(seed=0)
    action = np.array([[0.5]], dtype=np.float32)
    t = time.perf_counter()
    for _ in range(n):
        env.step(action)
    return (time.perf_counter() - t) / n * 1e6


def pipe_round_trip_us(n: int) -> float:
    proc = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    msg = b"x" * 64
    if proc.stdin is None or proc.stdout is None:
        raise RuntimeError("`cat` started without pipes")
    w, r = proc.stdin.fileno(), proc.stdout.fileno()
    t = time.perf_counter()
    for _ in range(n):
        os.write(w, msg)
        got = 0
        while got < len(msg):
            got += len(os.read(r, 4096))
    dt = (time.perf_counter() - t) / n * 1e6
    proc.kill()
    return dt


def compile_heater(directory: str) -> str:
    """Build examples/thirdparty/heater.c with the system C compiler (as tests/conftest.py does)."""
    heater = os.path.join(directory, "heater")
    subprocess.run(["cc", "-O2", "-o", heater, str(ROOT / "examples/thirdparty/heater.c"), "-lm"], check=True)
    return heater


def measure(n: int, repeats: int = 5) -> dict[str, float]:
    """Medians over ``repeats`` of µs per step for every path, plus the added costs over in-process."""
    import envs
    from envs.bridge.process import ProcessEnv

    tmp = tempfile.mkdtemp()
    heater = compile_heater(tmp)
    if "bench/PyHeater-v0" not in gym.registry:
        gym.register("bench/PyHeater-v0", entry_point="benchmarks.bridge:PyHeater")
    rows: dict[str, list[float]] = {k: [] for k in ("in_process", "in_process_guarded", "bridge_raw",
                                                     "bridge_guarded", "pipe_round_trip", "async_vector_env")}
    for _ in range(repeats):
        rows["in_process"].append(per_step_us(PyHeater(), n))
        rows["in_process_guarded"].append(per_step_us(envs.make("bench/PyHeater-v0"), n))
        bridge = ProcessEnv(command=heater)
        rows["bridge_raw"].append(per_step_us(bridge, n))
        bridge.close()
        guarded = envs.make("process", command=heater)
        rows["bridge_guarded"].append(per_step_us(guarded, n))
        guarded.close()
        rows["pipe_round_trip"].append(pipe_round_trip_us(n))
        vec = gym.vector.AsyncVectorEnv([PyHeater])
        rows["async_vector_env"].append(vec_per_step_us(vec, n))
        vec.close()
    shutil.rmtree(tmp)
    med: dict[str, float] = {k: round(float(np.median(v)), 1) for k, v in rows.items()}
    med["bridge_added_us"] = round(med["bridge_raw"] - med["in_process"], 1)
    med["bridge_guarded_added_us"] = round(med["bridge_guarded"] - med["in_process_guarded"], 1)
    med["async_added_us"] = round(med["async_vector_env"] - med["in_process"], 1)
    med["steps_per_measure"] = n
    med["repeats"] = repeats
    return med


def profile_us(n: int) -> dict[str, float]:
    """Where a bridge step's time goes: cProfile's own time per function, in µs per step (top 8)."""
    import cProfile
    import pstats

    from envs.bridge.process import ProcessEnv

    tmp = tempfile.mkdtemp()
    bridge = ProcessEnv(command=compile_heater(tmp))
    prof = cProfile.Profile()
    try:
        prof.enable()
        per_step_us(bridge, n)
        prof.disable()
    finally:
        bridge.close()
        shutil.rmtree(tmp)
    funcs = pstats.Stats(prof).get_stats_profile().func_profiles
    own = sorted(((fp.tottime, f"{Path(fp.file_name).name}:{fn}") for fn, fp in funcs.items()), reverse=True)
    return {name: round(tt / n * 1e6, 1) for tt, name in own[:8]}


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _batch_us(prog, n: int, vec: bool) -> float:
    """µs per env step of ``n`` vector steps (× K env steps) through the batch API or the vec env."""
    k = prog.num_instances
    actions = np.full((k, 1), 0.5, np.float32)
    if vec:
        from agents.sb3.vector import SB3VecEnv
        from envs.vector.bridge import BridgeVectorEnv
        from envs.vector.bridge_start import wrap_bridge
        from envs.vector.episode_stats import EpisodeStatistics

        venv = SB3VecEnv(EpisodeStatistics(wrap_bridge(BridgeVectorEnv([prog]))))
        venv.reset()
        t = time.perf_counter()
        for _ in range(n):
            venv.step(actions)
        dt = time.perf_counter() - t
        venv.close()
        return dt / (n * k) * 1e6
    prog.reset_instances(range(k))
    t = time.perf_counter()
    for _ in range(n):
        res = prog.step_all(actions)
        done = np.flatnonzero(res.result.truncated)
        if done.size:
            prog.reset_instances(done.tolist())
    dt = time.perf_counter() - t
    prog.close()
    return dt / (n * k) * 1e6


def _connected(heater: str, flags: list[str]):
    """A BatchProgram whose heater connects to a listener of this process (connect mode)."""
    from envs.bridge import listen as L
    from envs.bridge.batch import BatchProgram

    lst = L.listener("127.0.0.1:0")
    lst.say = lambda line: None
    proc = subprocess.Popen([heater, *flags, "--connect", lst.address, "--connect-wait", "1"],
                            stderr=subprocess.DEVNULL)
    return BatchProgram(listen="127.0.0.1:0", connect_timeout=10), proc


def measure_batch(n: int, repeats: int) -> dict[str, object]:
    """P3b and P3c: µs per env step for K = 1 (1.0 program), 1, 4 and 16 (1.1), spawn and connect mode."""
    from envs.bridge import listen as L
    from envs.bridge.batch import BatchProgram

    tmp = tempfile.mkdtemp()
    heater = compile_heater(tmp)
    cases = {"k1_v10": [], "k1": ["--instances", "1"], "k4": ["--instances", "4"],
             "k16": ["--instances", "16"]}
    rows: dict[str, list[float]] = {}
    load = _load()
    for _ in range(repeats):
        for name, flags in cases.items():
            k = int(flags[1]) if flags else 1
            steps = max(200, n // k)
            rows.setdefault(f"spawn_{name}", []).append(
                _batch_us(BatchProgram(command=" ".join([heater, *flags])), steps, False))
            rows.setdefault(f"spawn_{name}_vec", []).append(_batch_us(
                BatchProgram(command=" ".join([heater, *flags])), steps, True))
            prog, proc = _connected(heater, flags)
            rows.setdefault(f"connect_{name}", []).append(_batch_us(prog, steps, False))
            L.close_all()  # the heater reconnects after the session; with nobody listening it gives up
            proc.wait(10)
    shutil.rmtree(tmp)
    med: dict[str, object] = {k: round(float(np.median(v)), 2) for k, v in rows.items()}
    for mode in ("spawn", "connect"):
        for many in ("k4", "k16"):
            med[f"{mode}_{many}_over_k1"] = round(float(np.median(rows[f"{mode}_{many}"])) /
                                               float(np.median(rows[f"{mode}_k1_v10"])), 3)
    med["spawn_k16_vec_over_k1_vec"] = round(float(np.median(rows["spawn_k16_vec"])) /
                                             float(np.median(rows["spawn_k1_v10_vec"])), 3)
    for case in ("k1_v10", "k16"):
        med[f"connect_over_spawn_{case}"] = round(float(np.median(rows[f"connect_{case}"])) /
                                                  float(np.median(rows[f"spawn_{case}"])), 3)
    med.update({"env_steps_per_measure": n, "repeats": repeats, "load_at_start": load,
                "load_at_end": _load()})
    return med


def _train_steps_per_s(command: str, envs: int, steps: int) -> float:
    """The last steps/s figure train.py prints for the heater with ``command`` (configs/process.yaml, PPO)."""
    import re

    run = tempfile.mkdtemp()
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "--env", "process", "--set",
                          f"env.command={command}",
                          "--num-envs", str(envs), "--timesteps", str(steps), "--set", "eval.every=0",
                          "--seed", "0",
                          "--run-dir", os.path.join(run, "r"), "--set", "train.checkpoint_every=1000000"],
                         cwd=ROOT, capture_output=True, text=True, timeout=1800)
    shutil.rmtree(run)
    found = re.findall(r"([\d,]+) steps/s", out.stdout)
    if out.returncode != 0 or not found:
        raise RuntimeError(f"train.py exited {out.returncode}: {out.stderr[-500:]}")
    return float(found[-1].replace(",", ""))


def measure_training(steps: int, pairs: int) -> dict[str, object]:
    """The heater's training steps/s through one program: K = 16 (16 envs) vs K = 1 (1 env), in pairs."""
    tmp = tempfile.mkdtemp()
    heater = compile_heater(tmp)
    load = _load()
    k1, k16 = [], []
    for _ in range(pairs):
        k1.append(_train_steps_per_s(heater, 1, steps))
        k16.append(_train_steps_per_s(f"{heater} --instances 16", 16, steps))
    shutil.rmtree(tmp)
    return {"train_k1_steps_per_s": k1, "train_k16_steps_per_s": k16, "train_steps": steps,
            "train_ratio_k16_over_k1": round(float(np.median(k16)) / float(np.median(k1)), 2),
            "load_at_start": load, "load_at_end": _load()}


def main() -> None:
    """Print one JSON object (the module docstring has the command line)."""
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 5000
    if "--batch" in sys.argv:
        result: dict[str, object] = {"P3b_P3c": measure_batch(n, int(args[1]) if len(args) > 1 else 5)}
        if "--train" in sys.argv:
            result["P3b_training"] = measure_training(16384, 2)
        print(json.dumps(result))
        return
    out: dict[str, object] = dict(measure(n, int(args[1]) if len(args) > 1 else 5))
    if "--profile" in sys.argv:
        out["profile_us_per_step"] = profile_us(n)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
