"""The fault boundary around every adapter: each transition validated, repaired or cut short, and timed.

Checks (shape, dtype, bounds, finiteness) never raise, whatever an adapter returns. An exception from an
adapter's ``step`` or ``reset`` is a ``crash`` fault of that instance, not the end of training.
"""

from __future__ import annotations

import reprlib
import time
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.bridge.protocol import BridgeError
from envs.faults import LATENCY_KEY, RESET_FAULTS_KEY, EnvGaveUp, Fault, FaultKind, add_fault

NAN_POLICIES = ("truncate", "clip", "raise")
BOUNDS_POLICIES = ("clip", "truncate", "raise")
_repr = reprlib.Repr()
_repr.maxstring, _repr.maxother, _repr.maxlong, _repr.maxlevel = 60, 60, 40, 3


def _short(value: Any) -> str:
    """A bounded repr of anything an adapter may return (huge ints and raising ``__repr__`` included)."""
    try:
        return _repr.repr(value)
    except Exception:
        return f"<{type(value).__name__}>"


@dataclass(frozen=True)
class Problem:
    """Why a value does not belong where it was returned.

    Attributes:
        kind: ``NONFINITE`` (NaN or ±inf) or ``INVALID_OUTPUT`` (type, shape, dtype, bounds).
        text: one line naming the place, the cause and the value.
        bounds: True when the value has the right type, shape and dtype and is finite, but lies past the
            declared bounds (by more than rounding noise): :func:`clip_to_bounds` repairs it.
    """

    kind: FaultKind
    text: str
    bounds: bool = False

    def __str__(self) -> str:
        return self.text


def _invalid(text: str) -> Problem:
    return Problem(FaultKind.INVALID_OUTPUT, text)


def _box_problem(space: spaces.Box, obs: Any, path: str) -> Problem | None:
    return _box_check(space, obs, path)[0]


def _box_check(space: spaces.Box, obs: Any, path: str) -> tuple[Problem | None, Any]:
    """The Box check, and ``obs`` clipped onto the bounds when it strays past them by rounding noise only."""
    arr = np.asarray(obs)
    if arr.shape != space.shape:
        return _invalid(f"{path} has shape {arr.shape}, the space declares {space.shape}"), obs
    if arr.dtype != space.dtype:
        return _invalid(f"{path} has dtype {arr.dtype}, the space declares {space.dtype}; "
                        f"return np.asarray(obs, dtype=np.{space.dtype})"), obs
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        return Problem(FaultKind.NONFINITE, f"{path} contains {'NaN' if np.isnan(arr).any() else 'inf'}"), obs
    outside = (arr < space.low) | (arr > space.high)
    if not outside.any():
        return None, obs
    if arr.dtype.kind == "f":  # rounding noise (1 + 1e-16 against a bound of 1) is no fault: snap it on
        tol = tolerance(space)
        outside = (arr < space.low - tol) | (arr > space.high + tol)
        if not outside.any():
            return None, np.clip(arr, space.low, space.high).astype(space.dtype)
    idx = int(np.argmax(outside))
    return Problem(FaultKind.INVALID_OUTPUT, f"{path} is out of bounds at flat index {idx}: {arr.ravel()[idx]!r} "
                   f"not in [{space.low.ravel()[idx]!r}, {space.high.ravel()[idx]!r}]", bounds=True), obs


ROUNDING_ULPS = 16
"""How many units in the last place past a float bound still count as on it (see :func:`tolerance`)."""


def tolerance(space: spaces.Box) -> np.ndarray:
    """The float slack allowed past ``space``'s bounds: ``ROUNDING_ULPS`` × the dtype's epsilon × max(1, |bound|).

    For float64 and bounds of magnitude ≤ 1 that is 3.6e-15; for float32, 1.9e-6. A value past it is a fault.
    """
    eps = np.finfo(space.dtype).eps
    bound = np.maximum(np.abs(np.where(np.isfinite(space.low), space.low, 0)),
                       np.abs(np.where(np.isfinite(space.high), space.high, 0)))
    return ROUNDING_ULPS * eps * np.maximum(1.0, bound)


def check(space: spaces.Space, obs: Any, path: str = "observation") -> tuple[Problem | None, Any]:
    """:func:`obs_problem` and, when it finds none, ``obs`` with float rounding noise clipped onto the bounds,
    in one pass over the values (the Guard calls it on every step). Never raises."""
    try:
        if isinstance(space, spaces.Box):
            return _box_check(space, obs, path)
        if isinstance(space, spaces.Dict) and isinstance(obs, dict) and set(obs) == set(space.spaces):
            out = {}
            for key, value in obs.items():
                problem, out[key] = check(space.spaces[key], value, f"{path}[{key!r}]")
                if problem:
                    return problem, obs
            return None, out
    except Exception:  # noqa: BLE001 - obs_problem names what cannot be checked
        pass
    return obs_problem(space, obs, path), obs


def obs_problem(space: spaces.Space, obs: Any, path: str = "observation") -> Problem | None:
    """Why ``obs`` does not belong to ``space``; None when it does. Never raises.

    Unlike ``space.contains`` it names the cause (dtype, shape, bounds, NaN/inf) and its kind, and unlike
    Gymnasium's checker it is cheap enough to run on every step.
    """
    try:
        if isinstance(space, spaces.Box):
            return _box_problem(space, obs, path)
        if isinstance(space, spaces.Dict):
            if not isinstance(obs, dict) or set(obs) != set(space.spaces):
                got = sorted(map(str, obs)) if isinstance(obs, dict) else type(obs).__name__
                return _invalid(f"{path} must be a dict with keys {sorted(space.spaces)}, got {_short(got)}")
            for key, sub in space.spaces.items():
                problem = obs_problem(sub, obs[key], f"{path}[{key!r}]")
                if problem:
                    return problem
            return None
        if isinstance(space, spaces.Tuple):
            if not isinstance(obs, tuple) or len(obs) != len(space.spaces):
                return _invalid(f"{path} must be a tuple of {len(space.spaces)} elements, got {_short(obs)}")
            for i, sub in enumerate(space.spaces):
                problem = obs_problem(sub, obs[i], f"{path}[{i}]")
                if problem:
                    return problem
            return None
        return None if space.contains(obs) else _invalid(f"{path} {_short(obs)} is not in {space}")
    except Exception as e:  # garbage that even the checks cannot digest: ragged lists, raising __array__, ...
        return _invalid(f"{path} {_short(obs)} cannot be checked against {space} ({type(e).__name__})")


def reward_problem(reward: Any) -> Problem | None:
    """Why ``reward`` is not a finite real scalar; None when it is. Never raises."""
    try:
        if isinstance(reward, (bool, np.bool_)):
            return None
        arr = np.asarray(reward) if isinstance(reward, (int, float, np.number, np.ndarray)) else None
        if arr is None or arr.dtype.kind not in "iuf":
            return _invalid(f"reward {_short(reward)} is not a number")
        if arr.ndim != 0:
            return _invalid(f"reward has shape {arr.shape}, expected a scalar")
        value = float(arr)
    except Exception:  # an int beyond float range, a subclass with a raising __float__
        return _invalid(f"reward {_short(reward)} is not a real number within float range")
    if not np.isfinite(value):
        return Problem(FaultKind.NONFINITE, f"reward is {value}")
    return None


class InvalidOutputError(RuntimeError):
    """An adapter returned an invalid observation or reward and the policy is ``raise``."""


def placeholder(space: spaces.Space) -> Any:
    """A valid element of ``space`` without sampling: zeros clipped into the bounds, the first action, …"""
    if isinstance(space, spaces.Box):
        return np.clip(np.zeros(space.shape), space.low, space.high).astype(space.dtype)
    if isinstance(space, spaces.Discrete):
        return np.int64(space.start)
    if isinstance(space, spaces.MultiDiscrete):
        return np.asarray(getattr(space, "start", np.zeros(space.shape)), dtype=space.dtype).copy()
    if isinstance(space, spaces.MultiBinary):
        return np.zeros(space.shape, dtype=space.dtype)
    if isinstance(space, spaces.Dict):
        return {k: placeholder(s) for k, s in space.spaces.items()}
    if isinstance(space, spaces.Tuple):
        return tuple(placeholder(s) for s in space.spaces)
    return space.sample()  # Text, Graph, Sequence: no canonical element


def sanitize(space: spaces.Space, obs: Any, fallback: Any = None) -> Any:
    """Force ``obs`` into ``space``: NaN → 0, ±inf and out-of-bounds values clipped, dtype cast. Never raises.

    What cannot be repaired (a wrong shape, a string, a missing key) becomes ``fallback`` when that belongs
    to ``space`` (the last valid observation), else :func:`placeholder`.
    """
    try:
        if isinstance(space, spaces.Box):
            arr = np.asarray(obs)
            if arr.shape == space.shape and arr.dtype.kind in "biuf":
                out = np.clip(np.nan_to_num(arr.astype(np.float64), nan=0.0), space.low, space.high).astype(space.dtype)
                if obs_problem(space, out) is None:
                    return out
        elif isinstance(space, spaces.Dict):
            if isinstance(obs, dict):
                fbd = fallback if isinstance(fallback, dict) else {}
                return {k: sanitize(s, obs.get(k), fbd.get(k)) for k, s in space.spaces.items()}
        elif isinstance(space, spaces.Tuple):
            if isinstance(obs, tuple) and len(obs) == len(space.spaces):
                fbt = fallback if isinstance(fallback, tuple) else (None,) * len(obs)
                return tuple(sanitize(s, o, f) for s, o, f in zip(space.spaces, obs, fbt))
        elif obs_problem(space, obs) is None:
            return obs
    except Exception:
        pass
    return fallback if fallback is not None and obs_problem(space, fallback) is None else placeholder(space)


def clip_to_bounds(space: spaces.Space, obs: Any) -> Any:
    """``obs`` with every Box value of the right shape clipped onto its bounds (nothing else changed). Never raises."""
    try:
        if isinstance(space, spaces.Box):
            arr = np.asarray(obs)
            return np.clip(arr, space.low, space.high).astype(space.dtype) if arr.shape == space.shape else obs
        if isinstance(space, spaces.Dict) and isinstance(obs, dict):
            return {k: clip_to_bounds(space.spaces[k], v) if k in space.spaces else v for k, v in obs.items()}
        if isinstance(space, spaces.Tuple) and isinstance(obs, tuple) and len(obs) == len(space.spaces):
            return tuple(clip_to_bounds(s, o) for s, o in zip(space.spaces, obs))
    except Exception:
        pass
    return obs


def _repair_reward(reward: Any) -> float:
    try:
        arr = np.asarray(reward)
        value = float(arr.astype(np.float64).reshape(-1)[0]) if arr.dtype.kind in "biuf" else 0.0
    except Exception:
        return 0.0
    return 0.0 if np.isnan(value) else float(np.clip(value, -1e6, 1e6))


# The bridge turns its own faults into info; what it raises (a spent restart budget, a refused handshake) is final.
_PASS_THROUGH = (EnvGaveUp, InvalidOutputError, BridgeError)


class Guard(gym.Wrapper):
    """Checks every transition of any adapter and applies the NaN/garbage policy; times every step.

    Policies for an invalid observation or reward (wrong shape, dtype, NaN or inf): ``truncate`` (default)
    ends the episode with the last valid observation and reward 0; ``clip`` repairs the values and goes on;
    ``raise`` stops with :class:`InvalidOutputError`. Finite values past the declared bounds (by more than
    rounding noise, which is snapped on silently) follow ``bounds_policy`` instead: ``clip`` (default) clips
    them onto the bounds and goes on, as Gymnasium's checker only warns and third-party envs often declare
    bounds a little too tight; ``truncate`` and ``raise`` act as above. Either way ``info[FAULT_KEY]``
    records a :class:`~envs.faults.Fault`, and no invalid value reaches the learner.
    ``info[LATENCY_KEY]`` carries the step latency in milliseconds.

    An exception from the adapter's ``step`` is a ``crash`` fault (``restart=True``: the next reset starts
    the instance afresh): the transition ends as truncated on the last valid observation with reward 0. An
    exception from ``reset`` is a ``crash`` fault too, and the reset is retried; after
    ``max_reset_failures`` failures in a row :class:`~envs.faults.EnvGaveUp` stops training. Errors the
    bridge raises on purpose (a spent restart budget, a failed handshake) pass through, and with the
    ``raise`` policy every exception does.

    Args:
        env: the adapter (usually already wrapped by ``gymnasium.make``).
        nan_policy: ``truncate``, ``clip`` or ``raise``.
        max_reset_failures: failed ``reset`` calls in a row before giving up.
        bounds_policy: ``clip``, ``truncate`` or ``raise``, for finite values past the bounds.
    """

    def __init__(self, env: gym.Env, nan_policy: str = "truncate", max_reset_failures: int = 3,
                 bounds_policy: str = "clip") -> None:
        if nan_policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
        if bounds_policy not in BOUNDS_POLICIES:
            raise ValueError(f"bounds_policy must be one of {BOUNDS_POLICIES}, got {bounds_policy!r}")
        if max_reset_failures < 1:
            raise ValueError(f"max_reset_failures must be >= 1, got {max_reset_failures}")
        super().__init__(env)
        self.nan_policy, self.bounds_policy, self.max_reset_failures = nan_policy, bounds_policy, max_reset_failures
        self._last_obs: Any = None
        self._pending: list[Fault] = []  # reset faults, reported with the next step (vector envs drop reset infos)

    def _who(self) -> str:
        try:
            return type(self.env.unwrapped).__name__
        except Exception:
            return type(self.env).__name__

    def _crash(self, where: str, err: Exception) -> Fault:
        return Fault(FaultKind.CRASH, f"{where} raised {type(err).__name__}: {_short(str(err))}", restart=True,
                     program=self._who())

    def _judge(self, obs: Any) -> tuple[Problem | None, Any, Fault | None, str]:
        """Check ``obs`` and apply ``bounds_policy``: a problem of finite values past the bounds is clipped away
        (a ``clipped`` fault) when the policy is ``clip``. Returns what problem is left, the observation
        (snapped or clipped when valid), that fault, and the policy that applies to the problem left."""
        problem, checked = check(self.observation_space, obs)
        if problem is None or not problem.bounds:
            return problem, checked, None, self.nan_policy
        if self.bounds_policy != "clip":
            return problem, obs, None, self.bounds_policy
        again, checked = check(self.observation_space, clip_to_bounds(self.observation_space, obs))
        if again is not None:  # something else is wrong too (another key, a NaN): nan_policy decides
            return again, obs, None, self.nan_policy
        fault = Fault(problem.kind, f"{problem}; clipped onto the bounds (env.bounds_policy)", program=self._who(),
                      clipped=True)
        return None, checked, fault, self.nan_policy

    def _fallback(self) -> Any:
        return self._last_obs if self._last_obs is not None else placeholder(self.observation_space)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset the adapter; retries a raising reset and repairs an invalid observation (see the class)."""
        faults: list[Fault] = []
        for attempt in range(1, self.max_reset_failures + 1):
            try:
                obs, info = self.env.reset(seed=seed, options=options)
                break
            except _PASS_THROUGH:
                raise
            except Exception as e:
                if self.nan_policy == "raise":
                    raise
                faults.append(self._crash("reset", e))
                if attempt == self.max_reset_failures:
                    raise EnvGaveUp(f"env {self._who()}: reset failed {attempt} times in a row; last: "
                                    f"{faults[-1].detail}") from e
        info = dict(info) if isinstance(info, dict) else {}
        problem, checked, clipped, policy = self._judge(obs)
        if clipped is not None:
            faults.append(clipped.merged(detail=f"reset: {clipped.detail}"))
        if problem:
            if policy == "raise":
                raise InvalidOutputError(f"reset: {problem}")
            obs = sanitize(self.observation_space, obs, self._last_obs)
            faults.append(Fault(problem.kind, f"reset: {problem}", program=self._who()))
        else:
            obs = checked
        for fault in faults:
            add_fault(info, fault)
        self._pending.extend(faults)
        self._last_obs = obs
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Step the adapter and apply the policy; never lets an invalid value or an adapter error through."""
        t = time.perf_counter()
        try:
            obs, reward, terminated, truncated, info = self.env.step(action)
            terminated, truncated = bool(terminated), bool(truncated)
        except _PASS_THROUGH:
            raise
        except Exception as e:
            if self.nan_policy == "raise":
                raise
            out: dict[str, Any] = {LATENCY_KEY: (time.perf_counter() - t) * 1e3}
            self._report_pending(out)
            add_fault(out, self._crash("step", e))
            return self._fallback(), 0.0, False, True, out
        info = dict(info) if isinstance(info, dict) else {}
        info[LATENCY_KEY] = (time.perf_counter() - t) * 1e3
        self._report_pending(info)
        problem, checked, clipped, policy = self._judge(obs)
        if clipped is not None:
            add_fault(info, clipped)
        if problem is None and (problem := reward_problem(reward)) is None:
            self._last_obs = obs = checked
            return obs, float(reward), terminated, truncated, info
        if policy == "raise":
            raise InvalidOutputError(f"step: {problem}")
        add_fault(info, Fault(problem.kind, str(problem), program=self._who()))
        if policy == "clip":
            self._last_obs = sanitize(self.observation_space, obs, self._last_obs)
            return self._last_obs, _repair_reward(reward), terminated, truncated, info
        # truncate: end the episode on the last valid observation; nothing invalid reaches the learner
        return self._fallback(), 0.0, False, True, info

    def _report_pending(self, info: dict[str, Any]) -> None:
        for fault in self._pending:
            add_fault(info, fault, RESET_FAULTS_KEY)
        self._pending = []
