"""The fault boundary around every adapter: each transition validated, repaired or cut short, and timed.

Checks (shape, dtype, bounds, finiteness) never raise, whatever an adapter returns. An exception from an
adapter's ``step`` or ``reset`` is a ``crash`` fault of that instance, not the end of training. The checks
themselves live in envs/value_checks.py (re-exported here); a vector env may run them once for all its envs
(:meth:`Guard.prefetch`, :meth:`Guard.vouch`) instead of once per env.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, NoReturn

import gymnasium as gym
import numpy as np

from envs.errors import BridgeError, EnvFailure, EnvGaveUp, InvalidOutputError
from envs.faults import LATENCY_KEY, RESET_FAULTS_KEY, Fault, FaultKind, add_fault
from envs.repair import clip_to_bounds, placeholder, repair_reward, sanitize
from envs.value_checks import (
    BOUNDS_POLICIES,
    NAN_POLICIES,
    REWARD_LIMIT,
    ROUNDING_ULPS,
    Problem,
    RowCheck,
    _short,
    check,
    obs_problem,
    reward_problem,
    tolerance,
    valid_rewards,
    valid_rows,
)

log = logging.getLogger(__name__)
__all__ = ["BOUNDS_POLICIES", "NAN_POLICIES", "ROUNDING_ULPS", "Guard", "Problem", "RowCheck",
           "Verdict", "check", "clip_to_bounds", "judge", "judge_reset", "judge_step", "obs_problem",
           "placeholder", "reward_problem", "sanitize", "tolerance", "valid_rewards", "valid_rows"]


def vector_reward_shape(env: gym.Env) -> tuple[int, ...] | None:
    """The shape of a declared vector reward (mo-gymnasium's ``reward_space``), else None (one number).

    Such an env's rewards pass the Guard as finite vectors of that shape, for a scalarising wrapper listed
    in ``env.wrappers`` to turn into one number; without one, the run is refused at its start."""
    try:
        space = getattr(env.unwrapped, "reward_space", None)
    except Exception:
        return None
    shape = getattr(space, "shape", None)
    return tuple(shape) if shape is not None and int(np.prod(shape)) > 1 else None


def _valid_vector(reward: Any, shape: tuple[int, ...]) -> bool:
    try:
        a = np.asarray(reward, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return a.shape == shape and bool((np.abs(a) <= REWARD_LIMIT).all())  # NaN, inf and 1e308 fail


def _finite_float(reward: Any) -> bool:
    """True for a finite Python or NumPy float within float32 range (the common case, tested without NumPy);
    others go to the full check."""
    return type(reward) in _FLOATS and abs(reward) <= REWARD_LIMIT  # NaN fails the comparison


_FLOATS = (float, np.float64, np.float32)


def judge(space: gym.Space, obs: Any, nan_policy: str, bounds_policy: str,
          program: str | None) -> tuple[Problem | None, Any, Fault | None, str]:
    """Check ``obs`` and apply ``bounds_policy``: a problem of finite values past the bounds is clipped away
    (a ``clipped`` fault of ``program``) when that policy is ``clip``. Returns what problem is left, the
    observation (snapped or clipped when valid), that fault, and the policy that applies to the problem left.
    The Guard and the K-instance bridge vector env decide through this one function."""
    problem, checked = check(space, obs)
    if problem is None or not problem.bounds:
        return problem, checked, None, nan_policy
    if bounds_policy != "clip":
        return problem, obs, None, bounds_policy
    again, checked = check(space, clip_to_bounds(space, obs))
    if again is not None:  # something else is wrong too (another key, a NaN): nan_policy decides
        return again, obs, None, nan_policy
    fault = Fault(problem.kind, f"{problem}; clipped onto the bounds (env.bounds_policy)", program=program,
                  clipped=True)
    return None, checked, fault, nan_policy


@dataclass(frozen=True)
class Verdict:
    """One transition of a batched vector env after the Guard's checks and policies (:func:`judge_step`)."""

    obs: Any
    reward: Any
    """The reward as given when valid, else the repaired float."""
    faults: list[Fault]
    """What to record in the env's info, in order (a ``clipped`` fault first)."""
    cut: bool
    """``truncate`` applied: the episode ends here with the fallback observation and reward 0."""


def judge_step(space: gym.Space, obs: Any, reward: Any, fallback: Any, nan_policy: str, bounds_policy: str,
               program: str | None) -> Verdict:
    """The Guard's decision on one transition that no batched check vouched for (the Guard itself, or the
    RowGuard vector wrapper): the observation and ``bounds_policy`` (:func:`judge`), then the reward, then the
    policy that applies: ``raise`` raises :class:`InvalidOutputError`, ``clip`` repairs (``fallback`` fills
    what cannot be repaired), ``truncate`` cuts the episode with ``fallback`` and reward 0."""
    problem, checked, clipped, policy = judge(space, obs, nan_policy, bounds_policy, program)
    faults = [clipped] if clipped is not None else []
    if problem is None:
        obs = checked
        problem, policy = reward_problem(reward), nan_policy
        if problem is None:
            return Verdict(obs, reward, faults, False)
    if policy == "raise":
        raise InvalidOutputError(f"step: {problem}")
    faults.append(Fault(problem.kind, str(problem), program=program))
    if policy == "clip":
        return Verdict(sanitize(space, obs, fallback), repair_reward(reward), faults, False)
    return Verdict(fallback, 0.0, faults, True)


def judge_reset(space: gym.Space, obs: Any, fallback: Any, nan_policy: str, bounds_policy: str,
                program: str | None) -> tuple[Any, Fault | None]:
    """:func:`judge_step` for a reset observation: the observation to use and the fault to record (its detail
    starts with ``reset:``); ``raise`` raises, any other policy repairs the observation (a reset cannot be
    cut)."""
    problem, checked, clipped, policy = judge(space, obs, nan_policy, bounds_policy, program)
    if problem is None:
        return checked, None if clipped is None else clipped.merged(detail=f"reset: {clipped.detail}")
    if policy == "raise":
        raise InvalidOutputError(f"reset: {problem}")
    return sanitize(space, obs, fallback), Fault(problem.kind, f"reset: {problem}", program=program)


# The bridge turns its own faults into info; what it raises (a spent restart budget, a refused handshake) is
# final.
_PASS_THROUGH = (EnvFailure, BridgeError)
# What an adapter raises that is its own failure: any Exception, and SystemExit (an env that calls sys.exit()
# would otherwise end training silently, with its exit code and no checkpoint). KeyboardInterrupt is not one:
# a second Ctrl-C raises it wherever the main thread is, an env's step included, to stop the run.
_ADAPTER_ERRORS = (Exception, SystemExit)
_CLOSE_WARNED: set[str] = set()
_OLD_API = {
    "step": "Gymnasium's step() returns 5 values (obs, reward, terminated, truncated, info); Gym before 0.26 "
            "returned 4 (obs, reward, done, info): port the env",
    "reset": "Gymnasium's reset() returns (obs, info); Gym before 0.26 returned obs alone: return obs, {}",
}
"""What to do about an adapter that follows Gym's old API (a ValueError from unpacking its result)."""


def _returned(out: Any) -> str:
    """What a ``reset`` returned instead of a pair: its type, and its length for a tuple."""
    return f"a tuple of {len(out)}" if isinstance(out, tuple) else f"a {type(out).__name__}"


def _reraise(e: BaseException) -> NoReturn:
    """Raise the adapter's error for ``nan_policy: raise``; a SystemExit as a RuntimeError that says so (a
    SystemExit would end training without its line and checkpoint)."""
    if isinstance(e, SystemExit):
        raise RuntimeError(f"the env called sys.exit({e.code!r})") from e
    raise e


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
    ``raise`` policy every exception does. After ``max_step_failures`` steps in a row that raised (an env that
    cannot step at all, such as one returning Gym's old 4-tuple) :class:`~envs.faults.EnvGaveUp` stops
    training too.

    Args:
        env: the adapter (usually already wrapped by ``gymnasium.make``).
        nan_policy: ``truncate``, ``clip`` or ``raise``.
        max_reset_failures: failed ``reset`` calls in a row before giving up.
        max_step_failures: failed ``step`` calls in a row (with resets between) before giving up.
        bounds_policy: ``clip``, ``truncate`` or ``raise``, for finite values past the bounds.
    """

    def __init__(self, env: gym.Env, nan_policy: str = "truncate", max_reset_failures: int = 3,
                 bounds_policy: str = "clip", max_step_failures: int = 100) -> None:
        if nan_policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
        if bounds_policy not in BOUNDS_POLICIES:
            raise ValueError(f"bounds_policy must be one of {BOUNDS_POLICIES}, got {bounds_policy!r}")
        if max_reset_failures < 1 or max_step_failures < 1:
            raise ValueError(f"max_reset_failures and max_step_failures must be >= 1, got "
                             f"{max_reset_failures} and {max_step_failures}")
        super().__init__(env)
        # pinned: an adapter that assigns itself new spaces after make (a (5,) Box where (4,) was declared)
        # is judged against the spaces the learner was built for, not waved through to crash the vector env
        self.observation_space, self.action_space = env.observation_space, env.action_space
        self.nan_policy, self.bounds_policy = nan_policy, bounds_policy
        self.max_reset_failures, self.max_step_failures = max_reset_failures, max_step_failures
        self._step_failures = 0  # steps in a row that raised
        self._closed = False
        self._last_obs: Any = None
        # reset faults, reported with the next step (vector envs drop reset infos)
        self._pending: list[Fault] = []
        # the one-pass check of an observation that is valid as is
        self._rows = RowCheck(self.observation_space)
        # a prefetched transition: action, result, latency (ms)
        self._held: tuple[Any, Any, float] | None = None
        self._vouched = False
        self._reward_shape = vector_reward_shape(env)

    def _who(self) -> str:
        try:
            return type(self.env.unwrapped).__name__
        except Exception:
            return type(self.env).__name__

    def _crash(self, where: str, err: BaseException) -> Fault:
        text = str(err)
        old_api = isinstance(err, ValueError) and ("values to unpack" in text or "not (obs, info)" in text)
        hint = _OLD_API.get(where) if old_api else None
        return Fault(FaultKind.CRASH, f"{where} raised {type(err).__name__}: {_short(text)}"
                     f"{'; ' + hint if hint else ''}", restart=True, program=self._who())

    def _fallback(self) -> Any:
        return self._last_obs if self._last_obs is not None else placeholder(self.observation_space)

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset the adapter; retries a raising reset and repairs an invalid observation (see the class)."""
        faults: list[Fault] = []
        for attempt in range(1, self.max_reset_failures + 1):
            try:
                out = self.env.reset(seed=seed, options=options)
                if not (isinstance(out, tuple) and len(out) == 2):
                    raise ValueError(f"reset() returned {_returned(out)}, not (obs, info)")
                obs, info = out
                break
            except _PASS_THROUGH:
                raise
            except _ADAPTER_ERRORS as e:
                if self.nan_policy == "raise":
                    _reraise(e)
                faults.append(self._crash("reset", e))
                if attempt == self.max_reset_failures:
                    raise EnvGaveUp(f"env {self._who()}: reset failed {attempt} times in a row; last: "
                                    f"{faults[-1].detail}") from e
        info = dict(info) if isinstance(info, dict) else {}
        obs, fault = judge_reset(self.observation_space, obs, self._last_obs, self.nan_policy,
                                 self.bounds_policy, self._who())
        if fault is not None:
            faults.append(fault)
        for fault in faults:
            add_fault(info, fault)
        self._pending.extend(faults)
        self._last_obs = obs
        return obs, info

    def prefetch(self, action: Any) -> tuple[Any, Any] | None:
        """Step the adapter now, ahead of :meth:`step`, which then returns this transition (for ``action``,
        the same object). A vector env prefetches every env, checks the observations and rewards of all of
        them at once (:class:`~envs.value_checks.RowCheck`, :func:`~envs.value_checks.valid_rewards`) and
        vouches (:meth:`vouch`) for the valid ones; the wrappers above the Guard then step as usual and see
        exactly what :meth:`step` would give them. Returns the raw observation and reward, or None when the
        adapter raised (a crash fault)."""
        if self._held is not None:
            raise RuntimeError("Guard.prefetch called twice without a step in between")
        out, ms = self._step_adapter(action)
        self._held = (action, out, ms)
        self._vouched = False
        return None if isinstance(out, BaseException) else (out[0], out[1])

    def _step_adapter(self, action: Any) -> tuple[tuple[Any, ...] | BaseException, float]:
        """The adapter's transition (or the exception it raised, unless the policy is ``raise``) and its
        latency in milliseconds."""
        t = time.perf_counter()
        try:
            obs, reward, terminated, truncated, info = self.env.step(action)
            out: tuple[Any, ...] | BaseException = (obs, reward, bool(terminated), bool(truncated), info)
        except _PASS_THROUGH:
            raise
        except _ADAPTER_ERRORS as e:
            if self.nan_policy == "raise":
                _reraise(e)
            out = e
        return out, (time.perf_counter() - t) * 1e3

    def vouch(self) -> None:
        """Mark the prefetched transition as checked and valid (its observation and reward passed the batch
        check)."""
        self._vouched = self._held is not None

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Step the adapter and apply the policy; never lets an invalid value or an adapter error through."""
        if self._held is not None:
            held_action, out, ms = self._held
            vouched, self._held, self._vouched = self._vouched, None, False
            if held_action is not action:
                raise RuntimeError("Guard.step got another action than the one prefetched; a wrapper between "
                                   "the vector env and the Guard changed it")
        else:
            vouched = False
            out, ms = self._step_adapter(action)
        if isinstance(out, BaseException):
            crashed: dict[str, Any] = {LATENCY_KEY: ms}
            self._report_pending(crashed)
            fault = self._crash("step", out)
            self._step_failures += 1
            if self._step_failures >= self.max_step_failures:  # an env that cannot step, e.g. Gym's 4-tuple
                raise EnvGaveUp(f"env {self._who()}: step failed {self._step_failures} times in a row, with "
                                f"no good step between; last: {fault.detail}; fix the env (python -m envs "
                                "check lists what breaks the Gymnasium API)") from out
            add_fault(crashed, fault)
            return self._fallback(), 0.0, False, True, crashed
        self._step_failures = 0
        obs, reward, terminated, truncated, info = out
        info = dict(info) if isinstance(info, dict) else {}
        info[LATENCY_KEY] = ms
        if self._pending:
            self._report_pending(info)
        vector = None
        if self._reward_shape is not None:  # judged as one number: 0 when the vector is valid, NaN when not
            vector, reward = reward, 0.0 if _valid_vector(reward, self._reward_shape) else math.nan
        if vouched or (self._rows.valid_one(obs) and _finite_float(reward)):
            self._last_obs = obs  # the hot path: one float() for the common scalar reward
            out_reward = float(reward) if vector is None else self._reward(0.0, vector)
            return obs, out_reward, terminated, truncated, info
        v = judge_step(self.observation_space, obs, reward, self._fallback(), self.nan_policy,
                       self.bounds_policy, self._who())
        for fault in v.faults:
            add_fault(info, fault)
        # truncate: end the episode on the last valid observation; nothing invalid reaches the learner
        if v.cut:
            return v.obs, self._reward(0.0, None), False, True, info
        self._last_obs = v.obs
        kept = vector if _finite_float(reward) else None
        return v.obs, self._reward(float(v.reward), kept), terminated, truncated, info

    def close(self) -> None:
        """Close the adapter once; an error from its ``close`` is a warning, not the end of a run that went
        well (and a second call does nothing, where the vector env's ``__del__`` would repeat the error)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.env.close()
        except _ADAPTER_ERRORS as e:
            who = self._who()
            level = logging.DEBUG if who in _CLOSE_WARNED else logging.WARNING  # once per env and process
            _CLOSE_WARNED.add(who)
            log.log(level, "env %s: close() raised %s: %s (ignored)", who, type(e).__name__, _short(str(e)))

    def _reward(self, scalar: float, vector: Any) -> Any:
        """``scalar``; for an env with a vector reward, ``vector`` when it was valid, else zeros of its
        shape."""
        if self._reward_shape is None:
            return scalar
        if vector is None:
            return np.zeros(self._reward_shape, np.float32)
        return np.asarray(vector, np.float32)

    def _report_pending(self, info: dict[str, Any]) -> None:
        for fault in self._pending:
            add_fault(info, fault, RESET_FAULTS_KEY)
        self._pending = []
