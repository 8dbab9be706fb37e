"""The batch API of the bridge: one program that hosts K env instances, stepped K at a time (protocol 1.1).

:class:`BatchProgram` reuses :class:`~envs.bridge.process.ProcessEnv`'s launch, handshake, watchdog and
restart budget, and replaces the single-instance requests with batched ones: one ``step`` carries K
actions and returns a :class:`~envs.bridge.batchmsg.BatchStep`; ``reset`` takes any subset of the
instances. A fault (crash, hang, protocol breach, ``error`` reply, wrong K or shapes) is one
:class:`~envs.faults.Fault` for the whole program: :meth:`BatchProgram.step` returns it in a
:class:`ProgramStep` instead of raising, the program is stopped, and its next :meth:`reset` restarts it
(one restart, whatever K) and resets every instance. It works with 1.0 programs too (K = 1, unbatched
messages underneath). A vector env over several programs is envs/vector/bridge.py.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from envs.bridge import batchmsg as B
from envs.bridge import messages as M
from envs.bridge import protocol as P
from envs.bridge.process import ProcessEnv
from envs.errors import StopRequested
from envs.faults import Fault


@dataclass(frozen=True)
class ProgramStep:
    """One batched step of one program: K transitions, or the fault that cut all K short."""

    result: B.BatchStep | None
    fault: Fault | None
    seconds: float
    """Wall time of the round trip (send, program, receive, parse)."""
    reset_faults: list[Fault] = field(default_factory=list)
    """Faults of earlier resets (restarts included), reported with this step."""


class BatchProgram(ProcessEnv):
    """A program and its K instances; keyword arguments as :class:`~envs.bridge.process.ProcessEnv`.

    Args:
        expect: the spec every program of the run declared; a program that declares other spaces or another
            K is a fault (in connect mode: refused, and the wait goes on).
    """

    def __init__(self, *, expect: M.SpecReply | None = None, **kwargs: Any) -> None:
        self.expect = expect
        self.want_autoreset = False
        """Ask the program to reset its finished instances within each step's reply, where it speaks 1.2
        (training's vector env does; evaluation seeds and resets every episode itself)."""
        self._asked = False  # whether the step in flight asked for autoreset
        self._stepping = 0  # how many instances the step in flight steps
        super().__init__(**kwargs)

    @property
    def batched(self) -> bool:
        """True when the program speaks the batched form (it declared ``num_instances``)."""
        return bool(self.spec_reply is not None and self.spec_reply.batched)

    @property
    def autoreset(self) -> bool:
        """True when steps ask the program to reset its finished instances itself (protocol 1.2)."""
        return (self.want_autoreset and self.spec_reply is not None and self.spec_reply.batched
                and P.minor_of(self.spec_reply.version) >= 2)

    def reset_instances(self, indices: Sequence[int], seeds: Sequence[int | None] | None = None,
                        options: dict[str, Any] | None = None) -> tuple[Any, list[dict[str, Any]]]:
        """Reset the given instances (every one when the program is restarted first); stacked obs and infos.

        A program that is down is restarted first, within the restart budget; then every instance is reset,
        and the reply covers ``range(K)``, not ``indices``: check :attr:`last_reset_all`.

        Raises:
            RestartBudgetExhausted: the program failed more often than the budget allows.
            StartupError: the program cannot start (a wrong token, a bad spec): not retried.
        """
        seeds = list(seeds) if seeds is not None else [None] * len(indices)
        self.last_reset_all = False
        while True:
            if not self._alive:
                self._spend_restart(*self._last_failure)
                self._start_with_budget(self.reset_timeout)
                indices, self.last_reset_all = list(range(self.num_instances)), True
                seeds = [None] * self.num_instances
            try:
                return self._reset(list(indices), seeds, options or {})
            except StopRequested:
                self._kill()
                raise
            except Exception as e:  # the fault boundary, as ProcessEnv.reset
                self._reset_faults.append(self._fault(e))

    def begin_reset(self, indices: Sequence[int]) -> bool:
        """Send a reset of ``indices`` (no seeds) to a live batched program, so that several programs reset at
        once; whether it was sent. Finish it with :meth:`end_reset` either way."""
        if not self._alive or not self.batched:
            return False
        try:
            assert self._chan is not None
            P.send(self._chan, {"type": "reset", "instances": list(indices), "seeds": [None] * len(indices),
                                "options": {}}, self.reset_timeout)
            return True
        except StopRequested:
            self._kill()
            raise
        except Exception as e:  # the fault boundary, as reset_instances
            self._reset_faults.append(self._fault(e))
            return False

    def end_reset(self, indices: Sequence[int], sent: bool) -> tuple[Any, list[dict[str, Any]]]:
        """The reply to :meth:`begin_reset`; a program that failed on the way is restarted and reset whole,
        as :meth:`reset_instances` does (check :attr:`last_reset_all`)."""
        self.last_reset_all = False
        if sent:
            try:
                assert self._chan is not None
                reply = B.parse_batch_reset(P.recv(self._chan, self.reset_timeout, self.max_message),
                                            self.observation_space, len(indices))
                return reply.obs, reply.infos
            except StopRequested:
                self._kill()
                raise
            except Exception as e:  # the fault boundary, as reset_instances
                self._reset_faults.append(self._fault(e))
        return self.reset_instances(indices)

    def _reset(self, indices: list[int], seeds: list[int | None],
               options: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
        assert self._chan is not None
        if not self.batched:  # a 1.0 program: K = 1
            P.send(self._chan, {"type": "reset", "seed": seeds[0], "options": options}, self.reset_timeout)
            one = M.parse_reset_result(P.recv(self._chan, self.reset_timeout, self.max_message),
                                       self.observation_space)
            return _stack1(self.observation_space, one.obs), [one.info]
        P.send(self._chan, {"type": "reset", "instances": indices, "seeds": seeds, "options": options},
               self.reset_timeout)
        reply = B.parse_batch_reset(P.recv(self._chan, self.reset_timeout, self.max_message),
                                    self.observation_space, len(indices))
        return reply.obs, reply.infos

    def step_all(self, actions: np.ndarray | Sequence[Any]) -> ProgramStep:
        """Step every instance with ``actions`` (leading axis K); a fault comes back in the result, not
        raised."""
        return self.end_step(self.begin_step(actions))

    def begin_step(self, actions: np.ndarray | Sequence[Any],
                   instances: Sequence[int] | None = None) -> float | ProgramStep:
        """Send the step (:meth:`step_all`'s first half, so that several programs run at once) of every
        instance, or of ``instances`` alone (``actions`` then has one row each): the time it was sent, or the
        fault that cut it short."""
        t = time.perf_counter()
        if not self._alive:
            raise RuntimeError("process: step after a fault; reset the program's instances first")
        try:
            assert self._chan is not None
            if self.batched:
                msg: dict[str, Any] = {"type": "step", "actions": B.stack_actions(self.action_space, actions)}
                if instances is not None:
                    msg["instances"] = list(instances)
                self._asked, self._stepping = self.autoreset, len(actions)
                if self._asked:
                    msg["autoreset"] = True
                P.send(self._chan, msg, self.step_timeout)
            else:
                P.send(self._chan, {"type": "step", "action": np.asarray(actions[0])}, self.step_timeout)
        except StopRequested:
            self._kill()
            raise
        except Exception as e:  # the fault boundary: the whole program, all K instances
            return ProgramStep(None, self._fault(e), time.perf_counter() - t, self._take_reset_faults())
        return t

    def end_step(self, began: float | ProgramStep) -> ProgramStep:
        """Receive the reply of the step :meth:`begin_step` sent (:meth:`step_all`'s second half)."""
        if isinstance(began, ProgramStep):
            return began
        try:
            assert self._chan is not None
            if self.batched:
                result = B.parse_batch_step(P.recv(self._chan, self.step_timeout, self.max_message),
                                            self.observation_space, self._stepping, self._asked)
            else:
                one = M.parse_step_result(P.recv(self._chan, self.step_timeout, self.max_message),
                                          self.observation_space)
                result = B.BatchStep(_stack1(self.observation_space, one.obs), np.array([one.reward]),
                                     np.array([one.terminated]), np.array([one.truncated]), [one.info])
        except StopRequested:
            self._kill()
            raise
        except Exception as e:  # the fault boundary: the whole program, all K instances
            fault = self._fault(e)
            return ProgramStep(None, fault, time.perf_counter() - began, self._take_reset_faults())
        return ProgramStep(result, None, time.perf_counter() - began, self._take_reset_faults())

    def _take_reset_faults(self) -> list[Fault]:
        faults, self._reset_faults = self._reset_faults, []
        return faults


def _stack1(space: Any, obs: Any) -> Any:
    """One observation as a stack of one (the batched layout of a 1.0 program's reply)."""
    if isinstance(obs, dict):
        return {k: _stack1(space[k], v) for k, v in obs.items()}
    if isinstance(obs, tuple):
        return tuple(_stack1(s, v) for s, v in zip(space, obs))
    return np.asarray(obs)[None]
