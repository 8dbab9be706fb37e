"""Bridge adapter: any program that speaks docs/protocol.md, spawned (pipes) or running elsewhere (TCP).

The watchdog lives here. Every reply passes one fault boundary: a crash, a hang past the deadline, or any
exception while decoding, validating or applying a reply ends the current transition as truncated with a
:class:`~envs.faults.Fault` in ``info["nondiff_fault"]``; the program is stopped and respawned, or
reconnected, at the next reset. Restarts are budgeted for the whole run (the trainer sums them over all
env instances); each instance also stops by itself at the same cap, and at a rate limit, raising
:class:`RestartBudgetExhausted` with the program, its exit code and its last stderr lines. Spawned
programs run under :mod:`envs.bridge.reaper`, so no descendant survives the env or a killed trainer.
Errors that cannot heal (:class:`~envs.errors.StartupError`) are raised at once, without retries.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from typing import Annotated, Any

import gymnasium as gym
import numpy as np

from envs import errors as E
from envs import stop as S
from envs.bridge import batchmsg as B
from envs.bridge import listen as L
from envs.bridge import messages as M
from envs.bridge import protocol as P
from envs.bridge import reaper
from envs.bridge.fit import same_spec
from envs.bridge.handshake import check_kind, shake
from envs.bridge.launch import ConnectBack, spawn
from envs.bridge.settings import EXIT_AFTER_BYE_S, TIMEOUTS_BEFORE_UP, check_settings, remote_address
from envs.bridge.spawn import StderrTail, split_command
from envs.errors import RestartBudgetExhausted, StopRequested
from envs.faults import FAULT_KEY, RESET_FAULTS_KEY, Fault, FaultKind
from envs.reach import Reach, beyond_loopback
from envs.spaces import MAX_SPACE_ELEMENTS

__all__ = ["ProcessEnv"]
log = logging.getLogger(__name__)


class ProcessEnv(gym.Env):
    """A third-party program behind the nondiff bridge protocol, guarded by a watchdog.

    Args:
        command: program to spawn, e.g. ``"./heater --fast"``; it speaks on stdin/stdout.
        address: ``host:port`` of a program that already runs and listens.
        listen: ``host:port`` on which nondiff listens; a program that connects there becomes this env
            (connect mode, :mod:`envs.bridge.listen`; port 0 picks a free port). With ``command``:
            nondiff starts the command and it connects back (:mod:`envs.bridge.launch`; port 0).
        connect_timeout: seconds to wait, in connect mode, until a program that fits has completed a
            handshake.
        handshake_timeout: connect mode: each connection's own deadline for its handshake (spawned and TCP
            programs have ``reset_timeout``).
        num_instances: the K each program must declare (``spec.num_instances``); None: any. In connect mode a
            program that declares another K is refused and the wait goes on; otherwise it stops the run.
        token: shared secret for the HMAC handshake; required for any non-loopback address.
        allow_remote: must be True to connect to a non-loopback address.
        step_timeout: seconds a step may take before the program counts as hung.
        reset_timeout: seconds a reset (and the start-up handshake of a spawned or TCP program) may take.
        max_restarts: the run's restart budget; this instance also stops by itself past it.
        restart_rate: at most this many restarts within ``restart_period`` seconds.
        restart_period: the rate-limit window in seconds.
        term_grace: seconds between SIGTERM and SIGKILL when stopping a program.
        max_message: the largest message accepted, in bytes.
        max_space_elements: the largest declared space accepted, in scalar elements.
        cwd: working directory for ``command``.
        render_mode: ``"rgb_array"`` to request frames with the ``render`` message.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}
    hosts_instances = True
    """A program may host K instances (protocol 1.1): K > 1 or connect mode train as one batched vector env
    (envs/vector/bridge.py)."""
    takes_agents = False
    """Whether this env drives a program that declares agents (protocol 1.3); such a program is refused here
    (:func:`~envs.bridge.handshake.check_kind`), so that it is never sent a single-agent request."""

    def __init__(self, *, command: Annotated[str | None, Reach.RUN.mark("start the program")] = None,
                 address: Annotated[str | None, Reach.CONTACT.mark("connect to", beyond_loopback)] = None,
                 listen: Annotated[str | None,
                                   Reach.CONTACT.mark("listen for programs on", beyond_loopback)] = None,
                 connect_timeout: float = 60.0, handshake_timeout: float = 5.0,
                 num_instances: int | None = None,
                 token: str = "",
                 allow_remote: bool = False, step_timeout: float = 5.0, reset_timeout: float = 30.0,
                 max_restarts: int = 10, restart_rate: int = 10, restart_period: float = 60.0,
                 term_grace: float = 2.0, max_message: int = P.MAX_MESSAGE,
                 max_space_elements: int = MAX_SPACE_ELEMENTS, cwd: str | None = None,
                 render_mode: str | None = None) -> None:
        check_settings(command, address, listen, connect_timeout, handshake_timeout, num_instances,
                       step_timeout, reset_timeout, term_grace, max_restarts, restart_rate, restart_period,
                       max_message, max_space_elements)
        self._argv: list[str] = []
        self.listen, self.connect_timeout, self.handshake_timeout = listen, connect_timeout, handshake_timeout
        self.want_instances = num_instances
        self._addr: tuple[str, int] | None = None
        self._back: ConnectBack | None = None
        if listen is not None and command is not None:  # spawn, then let it connect (envs/bridge/launch.py)
            self._argv = split_command(command)
            self._back = ConnectBack(self._argv, listen, token, cwd, term_grace, next(_SLOTS) * 1000)
            token = self._back.token
        elif listen is not None:
            L.parse_address(listen)
        elif address is not None:
            self._addr = remote_address(address, allow_remote, token)
        else:
            assert command is not None
            self._argv = split_command(command)
        self.command, self.token, self.render_mode = command, token, render_mode
        self.step_timeout, self.reset_timeout, self.term_grace = step_timeout, reset_timeout, term_grace
        self.max_restarts, self.restart_rate, self.restart_period = max_restarts, restart_rate, restart_period
        self.max_message, self.max_space_elements, self.cwd = max_message, max_space_elements, cwd
        self.who = command if command is not None else f"tcp://{address}" if address is not None else (
            f"a program connected to {listen}")
        self.restarts = 0
        self._restart_times: collections.deque[float] = collections.deque()
        self._timeouts_before_up = 0  # starts in a row timed out before a first handshake (spec_reply)
        self._proc: subprocess.Popen[bytes] | None = None
        self._held: L.Listener | None = None
        self._drainer: threading.Thread | None = None
        self._chan: P.Channel | None = None
        self._stderr = StderrTail()
        self._alive = False
        self._last_obs: Any = None
        self._reset_faults: list[Fault] = []
        self._last_failure: tuple[str, int | None] = ("was restarted", None)
        self.spec_reply: M.SpecReply | None = None
        self._start_with_budget(self.reset_timeout)
        assert self.spec_reply is not None
        self.observation_space = self.spec_reply.observation_space
        self.action_space = self.spec_reply.action_space
        self.metadata = {**self.metadata, **self.spec_reply.metadata}
        self.num_instances: int = self.spec_reply.num_instances
        """Instances the program hosts (protocol 1.1); this env drives instance 0, the batch API all of
        them."""

    # -- process and connection ---------------------------------------------------------------------------
    @property
    def program_pid(self) -> int | None:
        """The pid of the program itself (its supervisor's child), when it is spawned and running."""
        if self._proc is None:
            return None
        kids = [p for p in reaper.descendants(self._proc.pid)]
        return kids[0] if kids else None

    def _launch(self, timeout: float) -> None:
        if self._back is not None:  # spawn, then let it connect
            self._proc, self._drainer = self._back.start(self._stderr)
            self._chan, self.spec_reply = self._back.take(
                self._proc, self._stderr, timeout, self._shake, self.handshake_timeout,
                self.spec_reply or getattr(self, "expect", None), self.want_instances)
            self._alive = True
            return
        if self.listen is not None:
            lst = L.listener(self.listen, self.token)
            self.who = f"a program connected to {lst.address}"
            # the listener decides which spec fits the run (its own, or this env's expectation)
            self._held = lst
            self._chan, self.spec_reply = lst.take(self.connect_timeout, self._shake, self.handshake_timeout,
                                                   self.spec_reply or getattr(self, "expect", None),
                                                   self.want_instances)
            self._alive = True
            return
        elif self._addr is None:
            self._proc, self._drainer, self._chan = spawn(self._argv, self.cwd, self.term_grace, self._stderr)
        else:
            self._chan = P.Channel.from_socket(socket.create_connection(self._addr,
                                                                        timeout=min(timeout, 10.0)))
        self._handshake(timeout)
        self._alive = True

    def _handshake(self, timeout: float) -> None:
        assert self._chan is not None
        spec = self._shake(self._chan, timeout)
        if self.want_instances is not None and spec.num_instances != self.want_instances:
            raise E.SpecError(f"program {self.who!r} declares num_instances {spec.num_instances}; "
                              f"env.num_instances asks for {self.want_instances}")
        self._check_same_spec(spec)
        self.spec_reply = spec

    def _shake(self, chan: P.Channel, timeout: float) -> M.SpecReply:
        """The handshake on ``chan`` (:func:`envs.bridge.handshake.shake`); touches nothing of this env."""
        spec = shake(chan, timeout, who=self.who, token=self.token, max_message=self.max_message,
                     max_space_elements=self.max_space_elements)
        check_kind(spec, self.who, self.takes_agents)
        return spec

    def _check_same_spec(self, spec: M.SpecReply) -> None:
        old = self.spec_reply or getattr(self, "expect", None)  # BatchProgram: the spec of the run's programs
        if old is not None and not same_spec(old, spec):
            raise E.ProtocolError(f"program {self.who!r} came back with other spaces, num_instances or "
                                  "agents than it started with; every program of a run must declare the same "
                                  "spec")

    def _kill(self) -> int | None:
        """Stop the program: SIGTERM to its supervisor, which escalates to SIGKILL. Returns its exit code."""
        self._alive = False
        if self._chan is not None:
            self._chan.close()
            self._chan = None
        if self._held is not None:  # connect mode: the slot is free for the next program that connects
            self._held.release()
            self._held = None
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(self.term_grace + 1.0)  # the supervisor SIGKILLs everything after term_grace
            except subprocess.TimeoutExpired:  # the supervisor itself is stopped or stuck: do its job
                for pid in [*reaper.descendants(proc.pid), proc.pid]:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        code = proc.wait()
        reaper.tidy(proc.pid)  # a supervisor killed itself leaves its program's temp dir
        if self._drainer is not None:
            self._drainer.join(1.0)  # its last stderr lines belong in the fault report
        return code

    def _start_with_budget(self, timeout: float) -> None:
        while True:
            S.check_stop()
            try:
                self._launch(timeout)
                return
            except (E.StartupError, StopRequested):
                self._kill()
                raise
            except Exception as e:  # one failed start of any other kind: a fault, counted against the budget
                fault = self._fault(e)
                tag = next((line for line in self._stderr.lines() if line.startswith(reaper.REAPER_TAG)),
                           None)
                if tag and fault.exit_code in (126, 127):
                    raise E.LaunchError(f"program {self.who!r}: "
                                        f"{tag.removeprefix(reaper.REAPER_TAG).strip()}") from e
                hung = self.spec_reply is None and fault.kind is FaultKind.TIMEOUT
                self._timeouts_before_up = self._timeouts_before_up + 1 if hung else 0
                if self._timeouts_before_up >= TIMEOUTS_BEFORE_UP:  # misconfigured, not flaky: say so now
                    slow = "" if self._back is not None else f"; one only slow to start needs a larger " \
                        f"env.reset_timeout (now {timeout:g} s)"  # (ConnectBack's own timeout says so)
                    raise E.StartupError(f"program {self.who!r} never came up: {TIMEOUTS_BEFORE_UP} starts in"
                                         f" a row timed out (last: {fault.detail}), so the run stops instead"
                                         f" of spending the restart budget{slow}") from e
                self._spend_restart(f"failed to start ({fault.kind.value}: {fault.detail})", fault.exit_code)
                self._reset_faults.append(fault.merged(restarts=self.restarts))  # every restart is on record

    def _spend_restart(self, why: str, code: int | None) -> None:
        now = time.monotonic()
        while self._restart_times and now - self._restart_times[0] > self.restart_period:
            self._restart_times.popleft()
        if self.restarts >= self.max_restarts or len(self._restart_times) >= self.restart_rate:
            budget = (f"the run's restart budget of {self.max_restarts} (env.max_restarts, shared by all "
                      "envs) reached by this env alone" if self.restarts >= self.max_restarts
                      else f"rate limit {self.restart_rate} per {self.restart_period:g}s")
            tail = " | ".join(self._stderr.lines()[-5:])[-2000:] or "(no stderr)"
            slow = (f"; a program that is slow rather than hung needs a larger env.step_timeout (now "
                    f"{self.step_timeout:g} s) or env.reset_timeout ({self.reset_timeout:g} s)"
                    if FaultKind.TIMEOUT.value in why else "")
            raise RestartBudgetExhausted(f"program {self.who!r} {why}; exit code {code}; restart budget "
                                         f"spent after {self.restarts} restart(s) ({budget}){slow}; "
                                         f"last stderr: {tail}")
        self.restarts += 1
        self._restart_times.append(now)

    def _fault(self, err: Exception) -> Fault:
        kind = (FaultKind.TIMEOUT if isinstance(err, E.BridgeTimeout) else FaultKind.CRASH
                if isinstance(err, E.PeerClosed) else FaultKind.REMOTE_ERROR if isinstance(err, E.RemoteError)
                else FaultKind.PROTOCOL)
        if not isinstance(err, E.BridgeError):  # anything else that a reply provoked is a protocol fault
            err = E.ProtocolError(f"{type(err).__name__} while reading the reply: {str(err)[:300]}")
        code = self._kill()
        self._last_failure = (f"failed ({kind.value}: {err})", code)
        # the trainer reports faults
        log.info("program %r: %s (%s); it will be restarted", self.who, kind.value, err)
        return Fault(kind, str(err), restart=True, program=self.who, exit_code=code,
                     stderr=tuple(line[-500:] for line in self._stderr.lines()[-5:]), restarts=self.restarts,
                     budget=self.max_restarts)

    # -- gymnasium API ------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset the program, restarting it first when it is dead; faults here are retried within budget."""
        if seed is not None and not 0 <= seed < 2**63:
            raise ValueError(f"process: seed must be in [0, 2**63) or None, got {seed}")
        super().reset(seed=seed)
        info: dict[str, Any] = {}
        while True:
            if not self._alive:
                self._spend_restart(*self._last_failure)
                self._start_with_budget(self.reset_timeout)
            try:
                assert self._chan is not None and self.spec_reply is not None
                if self.spec_reply.batched:  # protocol 1.1: this env is instance 0
                    P.send(self._chan, {"type": "reset", "instances": [0], "seeds": [seed],
                                        "options": options or {}}, self.reset_timeout)
                    batch = B.parse_batch_reset(P.recv(self._chan, self.reset_timeout, self.max_message),
                                                self.observation_space, 1)
                    reply = M.ResetReply(B.unstack(self.observation_space, batch.obs, 0), batch.infos[0])
                else:
                    P.send(self._chan, {"type": "reset", "seed": seed, "options": options or {}},
                           self.reset_timeout)
                    reply = M.parse_reset_result(P.recv(self._chan, self.reset_timeout, self.max_message),
                                                 self.observation_space)
                self._last_obs = reply.obs
                return reply.obs, {**reply.info, **info}
            except StopRequested:
                self._kill()
                raise
            except Exception as e:  # the fault boundary: whatever the reply provoked is this program's fault
                info[FAULT_KEY] = fault = self._fault(e)
                self._reset_faults.append(fault)

    def step(self, action):
        """Step the program; on a fault return a truncated transition with ``info["nondiff_fault"]``."""
        if not self._alive:
            raise RuntimeError("process: step() after a fault; call reset() (the vector env does this)")
        try:
            assert self._chan is not None and self.spec_reply is not None
            if self.spec_reply.batched:  # protocol 1.1: this env is instance 0
                P.send(self._chan, {"type": "step", "instances": [0],
                                    "actions": B.stack_actions(self.action_space, [action])},
                       self.step_timeout)
                batch = B.parse_batch_step(P.recv(self._chan, self.step_timeout, self.max_message),
                                           self.observation_space, 1)
                reply = M.StepReply(B.unstack(self.observation_space, batch.obs, 0), float(batch.rewards[0]),
                                    bool(batch.terminated[0]), bool(batch.truncated[0]), batch.infos[0])
            else:
                P.send(self._chan, {"type": "step", "action": np.asarray(action)}, self.step_timeout)
                reply = M.parse_step_result(P.recv(self._chan, self.step_timeout, self.max_message),
                                            self.observation_space)
        except StopRequested:
            self._kill()
            raise
        except Exception as e:  # the fault boundary
            return self._last_obs, 0.0, False, True, {FAULT_KEY: self._fault(e), **self._pop_reset_faults()}
        self._last_obs = reply.obs
        return (reply.obs, reply.reward, reply.terminated, reply.truncated,
                {**reply.info, **self._pop_reset_faults()})

    def _pop_reset_faults(self) -> dict[str, Any]:
        """Vector envs drop reset infos: faults of resets (and renders) travel with the next step."""
        if not self._reset_faults:
            return {}
        faults, self._reset_faults = self._reset_faults, []
        return {RESET_FAULTS_KEY: faults}

    def render(self):
        """Ask the program for an RGB frame; an ``error`` reply or a bad frame makes the program faulty.

        Raises:
            BridgeError: the fault (also reported with the next step; the program restarts at the next reset).
        """
        if self.render_mode != "rgb_array" or not self._alive or self._chan is None:
            return None
        try:
            P.send(self._chan, {"type": "render"}, self.step_timeout)
            return M.parse_render_result(P.recv(self._chan, self.step_timeout, self.max_message)).frame
        except StopRequested:
            self._kill()
            raise
        except Exception as e:
            fault = self._fault(e)
            self._reset_faults.append(fault)
            raise E.BridgeError(f"program {self.who!r} failed to render ({fault.kind.value}: "
                                f"{fault.detail}); it restarts at the next reset") from e

    def close(self) -> None:
        """Say goodbye, then stop the program; safe to call twice. In connect mode a healthy connection is
        parked with the listener for the next env instead (the program is not made to connect again)."""
        if self._alive and self._chan is not None and self._held is not None and self.spec_reply is not None:
            self._held.park(self._chan, self.spec_reply)
            self._chan, self._held, self._alive = None, None, False
            return
        if self._alive and self._chan is not None:
            try:
                P.send(self._chan, {"type": "close"}, 1.0)
                P.recv(self._chan, 1.0, self.max_message)
                if self._proc is not None and self._back is None:  # pipes: after `bye` the program exits
                    self._proc.wait(min(self.term_grace, EXIT_AFTER_BYE_S))  # by itself, its cleanup done
            except (E.BridgeError, StopRequested, subprocess.TimeoutExpired):
                pass
        self._kill()
        if self._back is not None:
            self._back.close()


_SLOTS = itertools.count()
"""Spawn-then-connect slots made in this process: slot n's copies get ``NONDIFF_SEED`` 1000 n, 1000 n + 1…"""

