"""P4: a latency-bound env (every step waits 5 ms, like a remote robot) with 32 envs on 2 cores.

Measures raw vector-env stepping for each ``train.vec_env`` (dummy, subproc, thread, threadproc) against the
physical limit num_envs / latency, then nondiff PPO training runs on the threadproc and thread vec envs with
their time split into rollout collection and learner updates (the envs sit idle during updates), and the
ceiling of an asynchronous (EnvPool-style) pool on this machine, with and without the policy's forward pass
in its loop. Prints one JSON object.

    python benchmarks/latency.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ENTRY = "benchmarks.latency:SleepEnv"


class SleepEnv(gym.Env):
    """A stand-in for a remote robot or a slow renderer: each step waits ``latency`` seconds, then answers.

    The dynamics are a trivial 4-D point that follows the action, so PPO has something to learn.
    """

    def __init__(self, *, latency: float = 0.005, episode_steps: int = 100) -> None:
        self.latency, self.episode_steps = float(latency), int(episode_steps)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._x = np.zeros(4, dtype=np.float32)
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start at a random point."""
        super().reset(seed=seed)
        self._x = self.np_random.uniform(-1, 1, 4).astype(np.float32)
        self._t = 0
        return self._x.copy(), {}

    def step(self, action):
        """Wait, then move the first two coordinates towards the last two by the action."""
        time.sleep(self.latency)
        self._x[:2] += 0.1 * np.asarray(action, dtype=np.float32)
        self._t += 1
        reward = -float(np.linalg.norm(self._x[:2] - self._x[2:]))
        return self._x.copy(), reward, False, self._t >= self.episode_steps, {}


def _cfg(num_envs: int, vec_env: str, n_steps: int, timesteps: int, workers: int = 2) -> Any:
    from agents.config import RunConfig

    return RunConfig.model_validate({
        "env": {"id": ENTRY},
        "agent": {"n_steps": n_steps, "batch_size": 256, "n_epochs": 10, "learning_rate": 1e-3, "gamma": 0.95,
                  "normalize_obs": True, "normalize_reward": True},
        "train": {"num_envs": num_envs, "vec_env": vec_env, "timesteps": timesteps, "threads": 1,
                  "start_method": "forkserver", "env_workers": workers},
        "eval": {"every": 0}})


def bare_threads_steps_per_s(num_envs: int, latency: float, seconds: float) -> dict[str, float]:
    """A reference under the current load: a thread pool doing nothing but the waits, no env, no SB3."""
    with ThreadPoolExecutor(num_envs) as pool:
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            list(pool.map(time.sleep, [latency] * num_envs))
            n += 1
        return {"steps_per_s": n * num_envs / (time.perf_counter() - t0), "vector_steps": n}


def _policy() -> Any:
    """The policy these runs train (SB3 PPO's [64, 64] MLP, 1 torch thread), freshly initialised."""
    import torch
    from stable_baselines3 import PPO

    torch.set_num_threads(1)
    return PPO("MlpPolicy", SleepEnv(latency=0.0), device="cpu").policy


def _act(policy: Any, obs: np.ndarray) -> np.ndarray:
    """One forward pass, as a collector calls it: observations in, actions (and values) out as NumPy."""
    import torch

    with torch.no_grad():
        actions, values, _ = policy(torch.as_tensor(obs))
    values.numpy()
    return actions.numpy()


def async_pool_steps_per_s(num_envs: int, latency: float, seconds: float,
                           policy: Any = None) -> dict[str, float]:
    """The ceiling of an EnvPool-style asynchronous pool on this machine, with no env and no SB3 collector:
    one thread per env waits ``latency`` per step; the main thread takes whichever envs are ready (at least
    one), runs ``policy``'s forward pass on their observations (none: no policy) and hands each its new
    action. Unlike a vector step, no env waits for the slowest of the others, only for the main thread."""
    ready: queue.SimpleQueue[int] = queue.SimpleQueue()
    go: list[queue.SimpleQueue[Any]] = [queue.SimpleQueue() for _ in range(num_envs)]
    obs = np.zeros((num_envs, 4), dtype=np.float32)

    def env_thread(i: int) -> None:
        while go[i].get() is not None:
            time.sleep(latency)
            ready.put(i)

    threads = [threading.Thread(target=env_thread, args=(i,), daemon=True) for i in range(num_envs)]
    for t in threads:
        t.start()
    for q in go:
        q.put(0)
    n = calls = 0
    t_policy, t0 = 0.0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        ids = [ready.get()]
        while True:
            try:
                ids.append(ready.get_nowait())
            except queue.Empty:
                break
        if policy is not None:
            t_act = time.perf_counter()
            actions = _act(policy, obs[ids])
            t_policy += time.perf_counter() - t_act
        else:
            actions = np.zeros((len(ids), 2), dtype=np.float32)
        for i, a in zip(ids, actions):
            go[i].put(a)
        n, calls = n + len(ids), calls + 1
    elapsed = time.perf_counter() - t0
    for q in go:
        q.put(None)
    return {"steps_per_s": n / elapsed, "mean_batch": n / max(calls, 1),
            "policy_us": t_policy / max(calls, 1) * 1e6}


def vec_steps_per_s(vec_env: str, num_envs: int, seconds: float, wrapped: bool = True, workers: int = 2,
                    batch_guard: bool = True) -> dict[str, float]:
    """Stepping of a vec env with fixed actions: vector steps × envs / s. ``wrapped``: as nondiff trains
    (envs.make with Guard and Gymnasium's wrappers, the episode statistics); otherwise the bare SleepEnv.
    ``workers``: processes of ``threadproc``. Built as training builds it (envfactory.make_vector_env, seen
    through SB3's adapter)."""
    from agents.run.envfactory import env_factory, make_vector_env, probed
    from agents.sb3.backend import SB3Backend
    from agents.sb3.vector import SB3VecEnv

    cfg = _cfg(num_envs, vec_env, 64, 1, workers)
    cfg.train.batch_guard = batch_guard
    env = probed(cfg, SB3Backend)
    fns: list[Callable[[], gym.Env]] = [env_factory(cfg, env) if wrapped else SleepEnv
                                        for _ in range(num_envs)]
    venv = SB3VecEnv(make_vector_env(cfg, env, fns))
    try:
        venv.reset()
        actions = np.zeros((num_envs, 2), dtype=np.float32)
        for _ in range(3):  # warm-up
            venv.step(actions)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            venv.step(actions)
            n += 1
        return {"steps_per_s": n * num_envs / (time.perf_counter() - t0), "vector_steps": n}
    finally:
        venv.close()


def training(num_envs: int, n_steps: int, timesteps: int, vec_env: str = "threadproc") -> dict[str, Any]:
    """nondiff's SB3 backend on ``vec_env``, with rollout and update phases timed by a callback."""
    from stable_baselines3.common.callbacks import BaseCallback

    from agents.sb3.backend import SB3Backend

    marks: list[tuple[str, float]] = []

    class Phases(BaseCallback):
        def _on_rollout_start(self) -> None:
            marks.append(("start", time.perf_counter()))

        def _on_rollout_end(self) -> None:
            marks.append(("end", time.perf_counter()))

        def _on_step(self) -> bool:
            return True

    from agents.run.envfactory import probed

    cfg = _cfg(num_envs, vec_env, n_steps, timesteps)
    backend = SB3Backend.create(cfg, 0, probed(cfg, SB3Backend))
    assert backend.model is not None
    try:
        t0 = time.perf_counter()
        backend.model.learn(timesteps, callback=Phases())
        wall = time.perf_counter() - t0
    finally:
        backend.close()
    rollout = sum(e - s for (_, s), (_, e) in zip(marks[0::2], marks[1::2]))
    steps = backend.model.num_timesteps
    return {"train_steps_per_s": steps / wall, "rollout_steps_per_s": steps / rollout, "wall_s": wall,
            "rollout_s": rollout, "update_s": wall - rollout, "env_idle_fraction": (wall - rollout) / wall,
            "steps": steps, "vec_env": vec_env}


def main(argv: list[str] | None = None) -> int:
    """Print the P4 measurements as one JSON object (``vec`` rows: steps/s of each vector env alone)."""
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--num-envs", type=int, default=32)
    args = p.parse_args(argv)
    n, latency = args.num_envs, 0.005
    limit = n / latency
    out: dict[str, Any] = {"num_envs": n, "latency_ms": latency * 1e3, "limit_steps_per_s": limit,
                           "loadavg": round(os.getloadavg()[0], 2)}
    secs = 0.5 if args.quick else 6.0
    vec = out["vec"] = {"bare_threads": bare_threads_steps_per_s(n, latency, secs)}
    out["async_ceiling"] = {"no_policy": async_pool_steps_per_s(n, latency, secs),
                            "with_policy": async_pool_steps_per_s(n, latency, secs, _policy())}
    vec["threadproc"] = vec_steps_per_s("threadproc", n, secs, workers=2)
    vec["threadproc_bare_env"] = vec_steps_per_s("threadproc", n, secs, wrapped=False, workers=2)
    vec["thread"] = vec_steps_per_s("thread", n, secs)
    vec["thread_per_env_checks"] = vec_steps_per_s("thread", n, secs, batch_guard=False)
    vec["thread_bare_env"] = vec_steps_per_s("thread", n, secs, wrapped=False)
    if not args.quick:
        vec["threadproc_4"] = vec_steps_per_s("threadproc", n, secs, workers=4)
        vec["dummy"] = vec_steps_per_s("dummy", n, secs / 2)
        vec["subproc"] = vec_steps_per_s("subproc", n, secs)
    n_steps = 16 if args.quick else 64
    out["train"] = training(n, n_steps, n * n_steps * (1 if args.quick else 8), "threadproc")
    out["train_thread"] = training(n, n_steps, n * n_steps * (1 if args.quick else 8), "thread")
    out["loadavg_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
