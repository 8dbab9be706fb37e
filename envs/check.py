"""``python -m envs check NAME``: is an adapter correct, deterministic, closable and fast enough?"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

import envs
from envs.errors import UserError
from envs.faults import faults_in
from envs.guard import obs_problem, reward_problem
from envs.registry import keyword_arguments, parse_assignment


@dataclass
class Result:
    """One line of the report."""

    name: str
    ok: bool
    detail: str


def _flat(x: object) -> np.ndarray:
    if isinstance(x, dict):
        return np.concatenate([_flat(v) for _, v in sorted(x.items())]) if x else np.zeros(0)
    if isinstance(x, tuple):
        return np.concatenate([_flat(v) for v in x]) if x else np.zeros(0)
    if isinstance(x, str):  # a Text subspace (MiniGrid's mission): compared through a stable digest
        return np.frombuffer(hashlib.sha256(x.encode()).digest()[:8], dtype=np.uint8).astype(np.float64)
    try:
        return np.asarray(x, dtype=np.float64).ravel()
    except (TypeError, ValueError):  # Graph, Sequence or another non-numeric value: compare its repr
        return _flat(repr(x))


def _check_api(make: Callable[[], gym.Env]) -> str:
    from gymnasium.utils.env_checker import check_env

    env = make()
    try:
        out = env.unwrapped.reset(seed=0)
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict)):
            raise AssertionError("reset() must return (obs, info), a tuple of the observation and a dict")
        problem = obs_problem(env.observation_space, out[0], "reset() observation")
        if problem:
            raise AssertionError(problem)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env.unwrapped, skip_render_check=True)
        notes = sorted({str(w.message).split("\x1b[0m")[0].split("WARN: ")[-1] for w in caught})
        return "passed" + (f" ({len(notes)} warning(s): {notes[0]})" if notes else "")
    finally:
        env.close()


def _rollout(make: Callable[[], gym.Env], seed: int, steps: int) -> np.ndarray:
    env = make()
    try:
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        out = [_flat(obs)]
        for _ in range(steps):
            obs, reward, term, trunc, _ = env.step(env.action_space.sample())
            out += [_flat(obs), np.array([reward])]
            if term or trunc:
                obs, _ = env.reset()
                out.append(_flat(obs))
        return np.concatenate(out)
    finally:
        env.close()


def _check_determinism(make: Callable[[], gym.Env]) -> str:
    a, b = _rollout(make, 123, 20), _rollout(make, 123, 20)
    if a.shape != b.shape or not np.allclose(a, b, equal_nan=True):
        raise AssertionError("the same seed gave different observations or rewards; seed every random source "
                             "from self.np_random after super().reset(seed=seed)")
    return "same seed, same first 20 steps"


def _check_close(make: Callable[[], gym.Env]) -> str:
    env = make()
    env.reset(seed=0)
    env.close()
    env.close()
    return "close() twice is fine"


def _check_speed(make: Callable[[], gym.Env], steps: int) -> str:
    env = make()
    try:
        env.reset(seed=0)
        lat = []
        t0 = time.perf_counter()
        for _ in range(steps):
            t = time.perf_counter()
            obs, reward, term, trunc, _ = env.step(env.action_space.sample())
            lat.append(time.perf_counter() - t)
            problem = obs_problem(env.observation_space, obs, "step() observation") or reward_problem(reward)
            if problem:
                raise AssertionError(problem)
            if term or trunc:
                env.reset()
        total = time.perf_counter() - t0
    finally:
        env.close()
    p50, p99 = np.percentile(lat, [50, 99]) * 1e6
    return f"{steps / total:,.0f} steps/s, step latency p50 {p50:,.0f} µs, p99 {p99:,.0f} µs"


def _bridge_smoke(make: Callable[..., gym.Env], how: str) -> str:
    """Kill (crash) or SIGSTOP (hang) the program mid-episode; the watchdog must recover."""
    import os
    import signal

    env = make(step_timeout=1.0, term_grace=0.5) if how == "hang" else make()
    try:
        env.reset(seed=0)
        env.step(env.action_space.sample())
        proc = env.unwrapped._proc  # type: ignore[attr-defined]
        if proc is None:
            return "skipped: a TCP program is not ours to kill"
        os.killpg(proc.pid, signal.SIGKILL if how == "crash" else signal.SIGSTOP)
        t = time.perf_counter()
        *_, truncated, info = env.step(env.action_space.sample())
        found = faults_in(info)
        if not found or not truncated:
            raise AssertionError(f"the {how} was not reported as a truncated transition with "
                                 "info['nondiff_fault']")
        env.reset()
        env.step(env.action_space.sample())
        return (f"{found[-1].kind.value} detected in {time.perf_counter() - t:.2f}s, program restarted, "
                "stepping again")
    finally:
        env.close()


def _unknown_key(name: str, gym_id: str, text: str) -> str:
    """For "unexpected keyword argument 'X'": one line with the closest of the adapter's keyword arguments
    and all of them; "" when that is not the error or the entry point's signature cannot be read."""
    import difflib
    import re

    m = re.search(r"unexpected keyword argument '(\w+)'", text)
    if m is None:
        return ""
    try:
        entry = gym.spec(gym_id).entry_point
        names = keyword_arguments(gym.envs.registration.load_env_creator(entry) if isinstance(entry, str)
                                  else entry)
    except Exception:  # noqa: BLE001 - an opaque entry point: the error as it came
        return ""
    if names is None:
        return ""
    close = difflib.get_close_matches(m.group(1), names, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return (f"{name}: unknown keyword argument {m.group(1)!r}; {hint}its keyword arguments are: "
            f"{', '.join(names)}")


def run_checks(name: str, steps: int = 1000, printer: Callable[[str], None] = print,
               kwargs: dict | None = None) -> bool:
    """Run every check on ``name`` (made with ``kwargs``); print a report; return True when all passed.

    Raises:
        UserError: ``name`` is unknown, or its first construction rejects ``kwargs`` (a ``ValueError`` or
            ``TypeError``): the settings are wrong, so no check could say more.
    """
    spec = envs.resolve(name)
    base = dict(kwargs or {})

    made = [False]

    def make(**extra: object) -> gym.Env:
        try:
            env = gym.make(spec.gym_id, **{**base, **extra})
        except (ValueError, TypeError) as e:  # before any env was made: the settings, not a check, failed
            if made[0]:
                raise
            text = (str(e).strip().splitlines() or [""])[0]
            raise UserError(_unknown_key(name, spec.gym_id, text)
                            or f"{name} rejected its settings: {type(e).__name__}: {text}") from e
        made[0] = True
        return env

    checks: list[tuple[str, Callable[[], str]]] = [
        ("gymnasium check_env", lambda: _check_api(make)),
        ("seeded determinism", lambda: _check_determinism(make)),
        ("close() twice", lambda: _check_close(make)),
        (f"random rollout ({steps} steps)", lambda: _check_speed(make, steps)),
    ]
    if str(spec.entry_point).startswith("envs.bridge.process:"):
        checks += [("watchdog: program crash", lambda: _bridge_smoke(make, "crash")),
                   ("watchdog: program hang (SIGSTOP)", lambda: _bridge_smoke(make, "hang"))]
    printer(f"checking {name} ({spec.gym_id} → {spec.entry_point})")
    results = []
    for label, fn in checks:
        try:
            results.append(Result(label, True, fn()))
        except UserError:
            raise
        except Exception as e:  # the report is the product: show every failure, keep checking
            where = traceback.extract_tb(e.__traceback__)[-1]
            results.append(Result(label, False, f"{type(e).__name__}: {e} [{where.filename}:{where.lineno}]"))
        r = results[-1]
        printer(f"  {'PASS' if r.ok else 'FAIL'}  {r.name}: {r.detail}")
    ok = all(r.ok for r in results)
    printer(f"{name}: {'all checks passed' if ok else f'{sum(not r.ok for r in results)} check(s) failed'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m envs``."""
    p = argparse.ArgumentParser(prog="python -m envs", description="Tools for nondiff env adapters.")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="check an adapter: API, determinism, close, speed")
    c.add_argument("name", help="nondiff name, Gymnasium id or module:Class")
    c.add_argument("--steps", type=int, default=1000, help="random-action steps to time (default 1000)")
    c.add_argument("--env-package", action="append", default=[], metavar="MODULE", help="import MODULE first")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="adapter keyword argument, e.g. --set command=./heater (value parsed as YAML)")
    sub.add_parser("list", help="list the registered nondiff envs")
    args = p.parse_args(argv)
    if args.cmd == "list":
        for n in envs.known_names():
            s = envs.resolve(n)
            print(f"{n:<16} {s.gym_id:<28} {s.entry_point}")
        return 0
    try:
        for pkg in args.env_package:
            __import__(pkg)
        kwargs = {}
        for item in args.set:
            try:
                key, value = parse_assignment(item)
            except ValueError as e:
                print(f"error: --set {item.partition('=')[0]}=…: {e}, e.g. --set command=./heater",
                      file=sys.stderr)
                return 2
            kwargs[key.removeprefix("env.")] = value
        return 0 if run_checks(args.name, args.steps, kwargs=kwargs) else 1
    except UserError as e:  # an unknown env, or settings it rejects: one line
        print(f"error: {e}", file=sys.stderr)
        return 2
