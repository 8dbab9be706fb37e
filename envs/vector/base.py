"""What every nondiff vector env shares: Gymnasium's vector API, same-step auto-reset and lossless infos.

A step returns Gymnasium's ``(obs, rewards, terminations, truncations, infos)``. An env that finished is
reset in the same step (``AutoresetMode.SAME_STEP``): its last observation is ``infos["final_obs"][i]``, its
last step's info ``infos["final_info"]`` (env ``i``'s part), and the top level holds its reset info, as in
Gymnasium's ``SyncVectorEnv``. Infos are batched as Gymnasium batches them (a key per info key, a
``_key`` mask per env, nested dicts recursively), but every leaf is an object array, so :func:`unbatch_info`
gives back each env's values as the env returned them (a Python ``bool`` stays one, a ``Fault`` stays itself).

Inside nondiff the same step also comes as :class:`StepRows`, each env's info its own dict as the env
returned it: what :meth:`VectorEnvBase.collect_rows` builds before any batching, what :func:`step_rows` asks
of a vector env (its own ``step_rows`` where it has one, else its Gymnasium step unbatched) and what SB3's
adapter reads, so that a backend that wants per-env infos never pays for batching them and taking them apart
again.
:func:`batched` and :func:`unbatched` turn one form into the other.

Beyond Gymnasium's API, each vector env answers per-env calls by index (:meth:`VectorEnvBase.call_at` and
friends), which a backend's adapter needs (SB3's ``get_attr``/``env_method`` take indices).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from envs.batching import stack

Indices = Sequence[int] | None
Transition = tuple[Any, Any, bool, bool, dict[str, Any], "tuple[Any, dict[str, Any]] | None"]
"""One env's step: observation (after an auto-reset, the reset's), reward, terminated, truncated, info
(after an auto-reset, the reset's) and, when it finished, its last observation and step info."""


Final = tuple[Any, dict[str, Any]]
"""A finished env's last observation and last step's info."""


class StepRows(NamedTuple):
    """One vector step with every env's info kept whole (see the module docstring)."""

    obs: Any
    """The batched observations (after an auto-reset, the reset's)."""
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    infos: list[dict[str, Any]]
    """Env ``i``'s info (after an auto-reset, the reset's)."""
    finals: dict[int, Final]
    """The envs that finished in this step: each one's last observation and step info."""


def batched(rows: StepRows) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Gymnasium's form of a step: the infos batched (``final_obs``/``final_info`` for the finished envs)."""
    n, infos = len(rows.infos), dict[str, Any]()
    for i, info in enumerate(rows.infos):
        final = rows.finals.get(i)
        if final is not None:
            infos = add_info(infos, {"final_obs": final[0], "final_info": final[1]}, i, n)
        infos = add_info(infos, info, i, n)
    return rows.obs, rows.rewards, rows.terminated, rows.truncated, infos


def unbatched(step: tuple[Any, Any, Any, Any, dict[str, Any]], n: int) -> StepRows:
    """:class:`StepRows` of a Gymnasium step of ``n`` envs (the inverse of :func:`batched`)."""
    obs, rewards, terminated, truncated, infos = step
    rows = unbatch_all(infos, n, ("final_obs", "final_info"))
    finals: dict[int, Final] = {}
    if "final_obs" in infos or "final_info" in infos:
        last_infos = unbatch_all(infos.get("final_info", {}), n)
        last_obs, given = infos.get("final_obs"), infos.get("_final_obs")
        for i in np.flatnonzero(np.asarray(terminated) | np.asarray(truncated)).tolist():
            seen = last_obs is not None and (given is None or given[i])
            finals[i] = (last_obs[i] if seen else None, last_infos[i])  # type: ignore[index]
    return StepRows(obs, np.asarray(rewards), np.asarray(terminated), np.asarray(truncated), rows, finals)


def step_rows(env: gym.vector.VectorEnv, actions: Any) -> StepRows:
    """One step of ``env`` as :class:`StepRows`: its own ``step_rows`` where its class has one, else its
    Gymnasium step unbatched (a wrapper from elsewhere has none, and is stepped as Gymnasium steps it)."""
    own = getattr(type(env), "step_rows", None)
    return own(env, actions) if own is not None else unbatched(env.step(actions), env.num_envs)


def add_info(infos: dict[str, Any], info: dict[str, Any], i: int, n: int) -> dict[str, Any]:
    """Add env ``i``'s ``info`` to the batched ``infos`` of ``n`` envs, every leaf in an object array."""
    for key, value in info.items():
        if type(value) is dict and key != "final_obs":  # a Dict observation stays whole, as in Gymnasium
            infos[key] = add_info(infos.get(key, {}), value, i, n)
        else:
            array = infos.get(key)
            if array is None:
                array = infos[key] = np.full(n, None, dtype=object)
            array[i] = value
        mkey = "_" + key
        mask = infos.get(mkey)
        if mask is None:
            mask = infos[mkey] = np.zeros(n, dtype=np.bool_)
        mask[i] = True
    return infos


def unbatch_info(infos: dict[str, Any], i: int) -> dict[str, Any]:
    """Env ``i``'s part of batched ``infos`` (the inverse of :func:`add_info`)."""
    out: dict[str, Any] = {}
    for key, value in infos.items():
        mask = infos.get("_" + key)
        if mask is None or not mask[i]:
            continue
        out[key] = unbatch_info(value, i) if type(value) is dict and key != "final_obs" else value[i]
    return out


def unbatch_all(infos: dict[str, Any], n: int, skip: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Every env's part of batched ``infos`` at once (:func:`unbatch_info` for each of ``n`` envs, key by
    key); the keys in ``skip`` are left out."""
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    for key, value in infos.items():
        mask = infos.get("_" + key)
        if mask is None or key in skip:
            continue
        given = mask.tolist()
        if type(value) is dict and key != "final_obs":
            for part, p, v in zip(out, given, unbatch_all(value, n)):
                if p:
                    part[key] = v
        elif all(given):
            for part, v in zip(out, value.tolist()):
                part[key] = v
        else:
            for part, p, v in zip(out, given, value.tolist()):
                if p:
                    part[key] = v
    return out


def is_wrapped(env: gym.Env, wrapper_class: type) -> bool:
    """Whether ``wrapper_class`` is anywhere in ``env``'s wrapper stack."""
    e: Any = env
    while isinstance(e, gym.Wrapper):
        if isinstance(e, wrapper_class):
            return True
        e = e.env
    return False


class VectorEnvBase(gym.vector.VectorEnv):
    """Gymnasium's ``VectorEnv`` with same-step auto-reset, lossless infos and per-env calls by index.

    Args:
        num_envs: how many envs.
        observation_space: one env's observation space.
        action_space: one env's action space.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP}
    closed = True  # until constructed: a half-built vector env has nothing to close when collected

    def __init__(self, num_envs: int, observation_space: gym.Space, action_space: gym.Space) -> None:
        self.num_envs = num_envs
        self.single_observation_space, self.single_action_space = observation_space, action_space
        self.observation_space = batch_space(observation_space, num_envs)
        self.action_space = batch_space(action_space, num_envs)
        self.closed = False

    def _add_info(self, vector_infos: dict[str, Any], env_info: dict[str, Any],
                  env_num: int) -> dict[str, Any]:
        return add_info(vector_infos, env_info, env_num, self.num_envs)

    def collect(self, results: Sequence[Transition]) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        """The batched step of every env's transition (in env order)."""
        return batched(self.collect_rows(results))

    def collect_rows(self, results: Sequence[Transition]) -> StepRows:
        """Every env's transition (in env order) as :class:`StepRows`: observations and flags batched, infos
        as they came."""
        return StepRows(stack(self.single_observation_space, [r[0] for r in results]),
                        np.array([r[1] for r in results], dtype=np.float64),
                        np.array([r[2] for r in results], dtype=bool),
                        np.array([r[3] for r in results], dtype=bool), [r[4] for r in results],
                        {i: r[5] for i, r in enumerate(results) if r[5] is not None})

    def _indices(self, indices: Indices) -> Sequence[int]:
        return range(self.num_envs) if indices is None else indices

    def _seeds(self, seed: int | Sequence[int | None] | None) -> list[int | None]:
        if seed is None or isinstance(seed, int | np.integer):
            return [None if seed is None else int(seed) + i for i in range(self.num_envs)]
        if len(seed) != self.num_envs:
            raise ValueError(f"{len(seed)} seeds for {self.num_envs} envs; "
                             "give one per env, one int, or None")
        return list(seed)

    def call_at(self, indices: Indices, name: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Call method ``name`` of each env in ``indices`` (None: all) and return the results."""
        raise NotImplementedError

    def get_attr_at(self, indices: Indices, name: str) -> list[Any]:
        """Attribute ``name`` of each env (found through its wrappers)."""
        raise NotImplementedError

    def set_attr_at(self, indices: Indices, name: str, value: Any) -> None:
        """Set attribute ``name`` on each env's innermost env."""
        raise NotImplementedError

    def is_wrapped_at(self, indices: Indices, wrapper_class: type) -> list[bool]:
        """Whether each env's stack holds ``wrapper_class``."""
        raise NotImplementedError

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Gymnasium's ``call``: method ``name`` of every env."""
        return tuple(self.call_at(None, name, *args, **kwargs))

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """Gymnasium's ``get_attr``: attribute ``name`` of every env."""
        return tuple(self.get_attr_at(None, name))

    def render(self) -> tuple[Any, ...] | None:
        """One frame per env."""
        return tuple(self.call_at(None, "render"))


Where = int | slice | list[int]
"""Rows of a batch: one, a range, or a list."""


def row(obs: Any, i: Where) -> Any:
    """The rows ``i`` of a batch of observations, e.g. env ``i``'s (a copy; Dict batches key by key)."""
    if isinstance(obs, dict):
        return {k: row(v, i) for k, v in obs.items()}
    return np.array(obs[i], copy=True)


def set_row(obs: Any, i: Where, value: Any) -> None:
    """Write ``value`` into the rows ``i`` of a batch, cast to its dtype (Dict batches key by key)."""
    if isinstance(obs, dict):
        for k in obs:
            set_row(obs[k], i, value[k])
    else:
        obs[i] = value


def restart(env: gym.vector.VectorEnv, obs: Any, infos: dict[str, Any],
            mask: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """End the envs in ``mask`` after a step that did not: reset them in ``env`` (``options["reset_mask"]``),
    their observation and step info become ``final_obs``/``final_info``, the reset's become theirs."""
    fresh, reset_infos = env.reset(options={"reset_mask": mask})
    n = len(mask)
    out: dict[str, Any] = {}
    for i in range(n):
        if mask[i]:
            out = add_info(out, {"final_obs": row(obs, i), "final_info": unbatch_info(infos, i)}, i, n)
            out = add_info(out, unbatch_info(reset_infos, i), i, n)
            set_row(obs, i, row(fresh, i))
        else:
            out = add_info(out, unbatch_info(infos, i), i, n)
    return obs, out
