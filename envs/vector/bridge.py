"""Bridge programs that host K instances each (protocol 1.1) or connect to nondiff, as one vector env.

:class:`BridgeVectorEnv` holds M programs (:class:`~envs.bridge.batch.BatchProgram`); program j's K_j
instances are envs ``offset_j … offset_j + K_j - 1``, so ``num_envs = Σ K_j`` (M × K when all declare the same
K). One vector step sends one batched ``step`` to every program before it reads any reply (the programs run
at once in their own processes; no thread hand-offs), then one batched ``reset`` to every program with
finished instances, again all sent before any reply is read (same-step auto-reset). A program that speaks
protocol 1.2 is asked to reset its finished instances itself, within the step's reply (``autoreset``: their
last observations come as ``final_obs``), which saves that second round trip. Replies are parsed stacked,
per-instance work is left for the finished instances. ``info["nondiff_step_ms"]`` is the program's
round trip as read (from its request to its reply), on each of its envs.

A fault of a program (crash, hang, protocol breach, wrong K or shapes, ``error`` reply) truncates all its K
envs: the first carries the :class:`~envs.faults.Fault` (``restart=True``, the run-wide budget), the others a
copy with ``restart=False`` and ``shared=True``, so the run's restart budget is spent once and
``env/faults_by_kind`` counts the fault once (the copies count in ``env/envs_cut_by_program_faults``). The
program is restarted (spawned again, or, in connect mode, the next program that connects takes the slot) and
all its instances reset before the step returns.

How many programs a run needs, how they are started, and the wrappers around this env are
:mod:`envs.vector.bridge_start`.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from gymnasium.vector.utils import create_empty_array, iterate

from envs.batching import stack
from envs.bridge.batch import BatchProgram, ProgramStep
from envs.bridge.batchmsg import unstack
from envs.errors import EnvFailure, RestartBudgetExhausted, UserError
from envs.faults import FAULT_KEY, LATENCY_KEY, RESET_FAULTS_KEY, Fault, add_fault
from envs.repair import placeholder
from envs.vector.base import (
    Final,
    Indices,
    StepRows,
    VectorEnvBase,
    add_info,
    batched,
    row,
    set_row,
)


class BridgeVectorEnv(VectorEnvBase):
    """M bridge programs as one vector env of Σ K_j envs.

    Args:
        programs: started programs, all with the same spaces.
    """

    def __init__(self, programs: Sequence[BatchProgram]) -> None:
        self.programs = list(programs)
        first = self.programs[0]
        for p in self.programs[1:]:
            if p.observation_space != first.observation_space or p.action_space != first.action_space:
                raise UserError(f"program {p.who!r} declares other spaces than {first.who!r}; every program "
                                "of a run must declare the same observation and action spaces")
        self.sizes = [p.num_instances for p in self.programs]
        for p in self.programs:
            p.want_autoreset = True
        self.offsets = [int(x) for x in np.cumsum([0, *self.sizes])]
        super().__init__(self.offsets[-1], first.observation_space, first.action_space)
        self.render_mode = None
        self._cur: Any = stack(self.single_observation_space,
                               [placeholder(self.single_observation_space)] * self.num_envs)
        """Every env's latest observation, as a batch (a program fault ends its episode on it)."""
        self._pending: list[list[Fault]] = [[] for _ in range(self.num_envs)]
        """Program faults met while resetting, reported with the env's next step."""
        self._pool = (ThreadPoolExecutor(len(self.programs), "nondiff-program") if len(self.programs) > 1
                      else None)
        self.skip: np.ndarray | None = None
        """Envs the next step leaves out (a NEXT_STEP caller's just-finished envs, envs/vector/next_step.py):
        their programs step the others alone (``instances``); read and cleared by that step."""
        self._none = np.zeros(self.num_envs, dtype=bool)
        self._none.flags.writeable = False
        self.skipped = self._none
        """The envs the last step left out (read-only)."""

    def _each(self, fn: Any) -> list[Any]:
        """``fn(j)`` for every program, concurrently; the first exception is re-raised."""
        try:
            if self._pool is None:
                return [fn(j) for j in range(len(self.programs))]
            return list(self._pool.map(fn, range(len(self.programs))))
        except RestartBudgetExhausted as e:
            raise EnvFailure(str(e)) from e

    def _reset_program(self, j: int, local: list[int], seeds: list[int | None] | None,
                       faults: list[Fault], sent: bool | None = None) -> tuple[list[int], list[Any]]:
        """Reset instances ``local`` of program j (``sent``: the reset :meth:`BatchProgram.begin_reset` sent
        already, or not); the instances actually reset (all of them after a restart) and their reset infos.
        The program's faults on the way are added to ``faults``."""
        p, lo = self.programs[j], self.offsets[j]
        obs, infos = p.reset_instances(local, seeds) if sent is None else p.end_reset(local, sent)
        if p.last_reset_all:  # the program was restarted: every instance starts over
            local = list(range(p.num_instances))
        faults.extend(p._take_reset_faults())
        set_row(self._cur, [lo + i for i in local], obs)
        return local, infos

    def _step_program(self, j: int, res: ProgramStep | None,
                      local: list[int] | None = None) -> tuple[StepRows, list[int]]:
        """Program j's batched step as rows (finals keyed by global env index), batch-wise: per-instance work
        only for the faults waiting to be reported and the finished instances; and the finished instances
        that are still to be reset (:meth:`_restart_ended` does it; none after an autoreset step).
        ``local``: the instances the step was for (None: all K); the others sat it out (``res`` None when
        all did), their rows the current observations, reward 0, not finished, an empty info."""
        lo, k = self.offsets[j], self.sizes[j]
        space = self.single_observation_space
        if res is not None and res.result is None:  # the program's fault: all K envs end as truncated
            assert res.fault is not None
            obs = row(self._cur, slice(lo, lo + k))
            rewards, terminated, truncated = np.zeros(k), np.zeros(k, dtype=bool), np.ones(k, dtype=bool)
            shared = res.fault.merged(restart=False, budget=None, shared=True)
            infos: list[dict[str, Any]] = [{FAULT_KEY: res.fault if i == 0 else shared} for i in range(k)]
        else:
            obs = create_empty_array(space, k, fn=np.empty)  # a fresh batch of the space's dtypes
            rewards, terminated, truncated = np.zeros(k), np.zeros(k, dtype=bool), np.zeros(k, dtype=bool)
            if local is not None:  # a subset stepped: the others keep their current observations
                set_row(obs, slice(None), row(self._cur, slice(lo, lo + k)))
                infos = [{} for _ in range(k)]
            if res is not None:
                r, at = res.result, slice(None) if local is None else local
                assert r is not None
                set_row(obs, at, r.obs)
                rewards[at], terminated[at], truncated[at] = r.rewards, r.terminated, r.truncated
                if local is None:
                    infos = r.infos  # fresh dicts, one per instance (batchmsg)
                else:
                    for pos, i in enumerate(local):
                        infos[i] = r.infos[pos]
        if res is not None:
            self._annotate(j, res, infos, res.seconds * 1e3)
        ended = np.flatnonzero(terminated | truncated).tolist()
        finals: dict[int, Final] = {}
        if res is not None and res.result is not None and res.result.reset_infos is not None:  # autoreset
            for pos, i in enumerate(ended):  # (1.2): reset already; ended in reply order (local ascends)
                finals[lo + i] = (_own(unstack(space, res.result.final_obs, pos)), infos[i])
                infos[i] = res.result.reset_infos[pos]
            ended = []
        return StepRows(obs, rewards, terminated, truncated, infos, finals), ended

    def _annotate(self, j: int, res: ProgramStep, infos: list[dict[str, Any]], ms: float) -> None:
        """Program j's faults of earlier resets, and its round trip, into its envs' step infos."""
        lo, k = self.offsets[j], self.sizes[j]
        if any(self._pending[lo:lo + k]):  # faults of earlier resets, reported with this step
            for i in range(k):
                for earlier in self._pending[lo + i]:
                    add_fault(infos[i], earlier, RESET_FAULTS_KEY)
                self._pending[lo + i] = []
        for earlier in res.reset_faults:
            add_fault(infos[0], earlier, RESET_FAULTS_KEY)
        for info in infos:
            info[LATENCY_KEY] = ms

    def _restart_ended(self, j: int, part: StepRows, ended: list[int], sent: bool | None) -> None:
        """Reset program j's finished instances ``ended`` (same-step auto-reset): their last observations and
        step infos become the part's finals, the reset's take their place."""
        lo, k = self.offsets[j], self.sizes[j]
        obs, infos, truncated = part.obs, part.infos, part.truncated
        if ended:
            faults: list[Fault] = []
            reset, rinfos = self._reset_program(j, ended, None, faults, sent)
            for fault in faults:  # reported with this step, on the program's first env
                add_fault(infos[0], fault, RESET_FAULTS_KEY)
            gone = set(ended)
            for pos, i in enumerate(reset):  # a restart during the reset ended the other episodes too
                part.finals[lo + i] = (_own(unstack(self.single_observation_space, obs, i)), infos[i])
                infos[i] = rinfos[pos]
                truncated[i] = truncated[i] or i not in gone
            set_row(obs, reset, row(self._cur, [lo + i for i in reset]))
        set_row(self._cur, slice(lo, lo + k), obs)

    def reset(self, *, seed: int | Sequence[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset every instance of every program (env ``i`` with ``seed + i``), or those of
        ``options["reset_mask"]``."""
        mask = (options or {}).get("reset_mask")
        seeds = self._seeds(seed)
        chosen = [True] * self.num_envs if mask is None else [bool(m) for m in mask]
        infos: dict[str, Any] = {}

        def one(j: int) -> None:
            nonlocal infos
            lo, k = self.offsets[j], self.sizes[j]
            local = [i for i in range(k) if chosen[lo + i]]
            if not local:
                return
            reset, rinfos = self._reset_program(j, local, None if mask is not None else seeds[lo:lo + k],
                                                self._pending[lo])  # reported with the next step
            for pos, i in enumerate(reset):
                infos = add_info(infos, rinfos[pos], lo + i, self.num_envs)

        self._each(one)
        return row(self._cur, slice(None)), infos

    def step_rows(self, actions: Any) -> StepRows:
        """One batched step per program, concurrently, then batched resets of the finished instances; each
        env's info as it came (:class:`~envs.vector.base.StepRows`)."""
        acts = np.asarray(actions) if isinstance(actions, np.ndarray) else np.array(
            list(iterate(self.action_space, actions)))
        programs = self.programs
        skip, self.skip = self.skip, None
        self.skipped = skip if skip is not None else self._none  # no allocation on a step without skips
        # every program steps (then resets its finished instances) at once, in its own process; the
        # replies are read in turn: no thread hand-offs, one wake-up per program and request
        local: list[list[int] | None] = [None] * len(programs)
        sent: list[float | ProgramStep | None] = []
        for j, (p, lo, k) in enumerate(zip(programs, self.offsets, self.sizes)):
            if skip is None or not skip[lo:lo + k].any():
                sent.append(p.begin_step(acts[lo:lo + k]))
                continue
            some = local[j] = np.flatnonzero(~skip[lo:lo + k]).tolist()
            sent.append(p.begin_step(acts[[lo + i for i in some]], some) if some else None)
        steps = [self._step_program(j, None if (began := sent[j]) is None else p.end_step(began), local[j])
                 for j, p in enumerate(programs)]
        resets = [p.begin_reset(ended) if ended and p._alive else False
                  for p, (_, ended) in zip(programs, steps)]
        try:
            for j, (part, ended) in enumerate(steps):
                self._restart_ended(j, part, ended, resets[j])
        except RestartBudgetExhausted as e:
            raise EnvFailure(str(e)) from e
        parts = [part for part, _ in steps]
        if len(parts) == 1:
            return parts[0]
        finals: dict[int, Final] = {}
        for part in parts:
            finals.update(part.finals)
        return StepRows(_concat([part.obs for part in parts]),
                        np.concatenate([part.rewards for part in parts]),
                        np.concatenate([part.terminated for part in parts]),
                        np.concatenate([part.truncated for part in parts]),
                        [info for part in parts for info in part.infos], finals)

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """One batched step per program, concurrently, then batched resets of the finished instances."""
        return batched(self.step_rows(actions))

    def _program_of(self, e: int) -> BatchProgram:
        return self.programs[int(np.searchsorted(self.offsets, e, side="right")) - 1]

    def call_at(self, indices: Indices, name: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Call a method of each env's program."""
        return [getattr(self._program_of(i), name)(*args, **kwargs) for i in self._indices(indices)]

    def get_attr_at(self, indices: Indices, name: str) -> list[Any]:
        """An attribute of each env's program (``render_mode``: None)."""
        if name == "render_mode":
            return [None for _ in self._indices(indices)]
        return [getattr(self._program_of(i), name) for i in self._indices(indices)]

    def set_attr_at(self, indices: Indices, name: str, value: Any) -> None:
        """Set an attribute on each env's program."""
        for i in self._indices(indices):
            setattr(self._program_of(i), name, value)

    def is_wrapped_at(self, indices: Indices, wrapper_class: type) -> list[bool]:
        """No env here is a Gymnasium wrapper stack."""
        return [False for _ in self._indices(indices)]

    def render(self) -> tuple[Any, ...] | None:
        """Programs behind this vector env are not rendered."""
        return tuple(None for _ in range(self.num_envs))

    def close_extras(self, **kwargs: Any) -> None:
        """Close every program and stop listening."""
        for p in self.programs:
            p.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False)


def _own(value: Any) -> Any:
    """A copy of one instance's observation that no later write to its batch can change."""
    if isinstance(value, dict):
        return {k: _own(v) for k, v in value.items()}
    return np.array(value, copy=True) if isinstance(value, np.ndarray) else value


def _concat(batches: list[Any]) -> Any:
    """Batches of the same space, one after the other (Dict batches key by key)."""
    if isinstance(batches[0], dict):
        return {k: _concat([b[k] for b in batches]) for k in batches[0]}
    return np.concatenate(batches)
