"""A program that declares agents (protocol 1.3) as a PettingZoo parallel env, so that nondiff's multi-agent
path trains it as it trains any PettingZoo env: parameter sharing by default, a ``policies:`` map per agent-id
pattern, evaluation of the whole team (envs/multiagent.py), on SB3 and RLlib (docs/protocol.md, "In the
trainer (1.3)").

``python train.py --env envs.bridge.parallel:BridgeParallelEnv --set env.command="python my_scene.py"``

:class:`AgentsProgram` is the bridge side: :class:`~envs.bridge.process.ProcessEnv`'s launch (pipes, TCP,
connect mode, spawn-then-connect), handshake, watchdog and restart budget, with the scene's requests of
docs/protocol.md, "Agents (1.3)" instead of the single-agent ones, which it never sends. A program that
declares no agents is refused at the handshake (one line, exit code 2), as ``--env process`` refuses one that
does. :class:`BridgeParallelEnv` is the PettingZoo face: every declared agent is in ``possible_agents`` and
starts each episode; an agent whose step reports ``terminated`` or ``truncated`` leaves ``agents``; the
episode is over when none is left, and the next ``reset`` starts a new one.

A fault of the program (crash, hang, ``error``, a malformed reply: an unknown agent id, an agent that had
finished, a group's array of the wrong shape) ends the step of every live agent as truncated with its last
observation and reward 0; the first one's ``info["nondiff_fault"]`` holds the fault (``restart: true``), the
others a shared copy, so the run counts it and spends the restart budget once. The next ``reset`` restarts
the program, within the run's budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from envs.bridge import agentsmsg as A
from envs.bridge import protocol as P
from envs.bridge.process import ProcessEnv
from envs.errors import StopRequested
from envs.faults import FAULT_KEY, RESET_FAULTS_KEY, Fault
from envs.reach import Reach, beyond_loopback
from envs.spaces import MAX_SPACE_ELEMENTS

__all__ = ["AgentsProgram", "BridgeParallelEnv", "SceneStep"]


@dataclass(frozen=True)
class SceneStep:
    """One step of a scene: the reply, or the fault that cut every live agent's step short."""

    result: A.SceneReply | None
    fault: Fault | None
    reset_faults: list[Fault] = field(default_factory=list)
    """Faults of earlier resets (restarts included), reported with this step."""


class AgentsProgram(ProcessEnv):
    """A program whose spec declares agents, and its scene; keyword arguments as
    :class:`~envs.bridge.process.ProcessEnv` (``num_instances`` excepted: one scene per connection).

    Its ``reset`` and ``step`` (the single-agent requests) are refused: use :meth:`reset_scene` and
    :meth:`step_agents`.
    """

    takes_agents = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Refused: a scene resets with :meth:`reset_scene`."""
        raise TypeError("AgentsProgram: a program that declares agents resets with reset_scene()")

    def step(self, action):
        """Refused: a scene steps with :meth:`step_agents`."""
        raise TypeError("AgentsProgram: a program that declares agents steps with step_agents()")

    def reset_scene(self, seed: int | None = None, options: dict[str, Any] | None = None) -> A.SceneReply:
        """Start an episode of every agent, restarting the program first when it is down (within the budget;
        a restarted program is never seeded); a fault here is recorded and the reset tried again.

        Raises:
            RestartBudgetExhausted: the program failed more often than the budget allows.
            StartupError: the program cannot start (a wrong token, a bad spec): not retried.
        """
        if seed is not None and not 0 <= seed < 2**63:
            raise ValueError(f"process: seed must be in [0, 2**63) or None, got {seed}")
        while True:
            if not self._alive:
                self._spend_restart(*self._last_failure)
                self._start_with_budget(self.reset_timeout)
                seed = None
            try:
                assert self._chan is not None and self.spec_reply is not None
                P.send(self._chan, {"type": "reset", "seed": seed, "options": options or {}},
                       self.reset_timeout)
                return A.parse_scene_reset(P.recv(self._chan, self.reset_timeout, self.max_message),
                                           self.spec_reply)
            except StopRequested:
                self._kill()
                raise
            except Exception as e:  # the fault boundary, as ProcessEnv.reset
                self._reset_faults.append(self._fault(e))

    def step_agents(self, actions: dict[str, Any]) -> SceneStep:
        """Step the agents in ``actions`` (the live ones); a fault comes back in the result, not raised."""
        if not self._alive:
            raise RuntimeError("process: step after a fault; reset the scene first")
        try:
            assert self._chan is not None and self.spec_reply is not None
            msg = A.step_request(self.spec_reply, actions)
            P.send(self._chan, msg, self.step_timeout)
            reply = A.parse_scene_step(P.recv(self._chan, self.step_timeout, self.max_message),
                                       self.spec_reply, msg["agents"])
        except StopRequested:
            self._kill()
            raise
        except Exception as e:  # the fault boundary: the whole scene
            return SceneStep(None, self._fault(e), self._take_reset_faults())
        return SceneStep(reply, None, self._take_reset_faults())

    def _take_reset_faults(self) -> list[Fault]:
        faults, self._reset_faults = self._reset_faults, []
        return faults


class BridgeParallelEnv(ParallelEnv):
    """A program that declares agents, as a PettingZoo parallel env (see the module docstring).

    Args:
        command: program to spawn, e.g. ``"python examples/thirdparty/teams.py"``.
        address: ``host:port`` of a program that already runs and listens.
        listen: ``host:port`` on which nondiff listens for the program (with ``command``: it starts the
            command, which connects back).
        connect_timeout, handshake_timeout, token, allow_remote, step_timeout, reset_timeout, max_restarts,
        restart_rate, restart_period, term_grace, max_message, max_space_elements, cwd: as
            :class:`~envs.bridge.process.ProcessEnv`.
        render_mode: ``"rgb_array"`` to ask the program for frames of the scene.
    """

    metadata = {"name": "bridge_agents", "render_modes": ["rgb_array"], "is_parallelizable": True}

    def __init__(self, *, command: Annotated[str | None, Reach.RUN.mark("start the program")] = None,
                 address: Annotated[str | None, Reach.CONTACT.mark("connect to", beyond_loopback)] = None,
                 listen: Annotated[str | None,
                                   Reach.CONTACT.mark("listen for programs on", beyond_loopback)] = None,
                 connect_timeout: float = 60.0, handshake_timeout: float = 5.0, token: str = "",
                 allow_remote: bool = False, step_timeout: float = 5.0, reset_timeout: float = 30.0,
                 max_restarts: int = 10, restart_rate: int = 10, restart_period: float = 60.0,
                 term_grace: float = 2.0, max_message: int = P.MAX_MESSAGE,
                 max_space_elements: int = MAX_SPACE_ELEMENTS, cwd: str | None = None,
                 render_mode: str | None = None) -> None:
        self.program = AgentsProgram(
            command=command, address=address, listen=listen, connect_timeout=connect_timeout,
            handshake_timeout=handshake_timeout, token=token, allow_remote=allow_remote,
            step_timeout=step_timeout, reset_timeout=reset_timeout, max_restarts=max_restarts,
            restart_rate=restart_rate, restart_period=restart_period, term_grace=term_grace,
            max_message=max_message, max_space_elements=max_space_elements, cwd=cwd, render_mode=render_mode)
        spec = self.program.spec_reply
        assert spec is not None
        obs, act = spec.observation_space, spec.action_space
        assert isinstance(obs, spaces.Dict) and isinstance(act, spaces.Dict)
        self.possible_agents: list[str] = [d.id for d in spec.agents]
        self.agent_groups: dict[str, str] = {d.id: d.group for d in spec.agents}
        """Each agent's policy group, as the program declared it."""
        self.observation_spaces = {d.id: obs[d.group] for d in spec.agents}
        self.action_spaces = {d.id: act[d.group] for d in spec.agents}
        self.agents: list[str] = []
        self.render_mode = render_mode
        self.metadata = {**self.metadata, **spec.metadata, "name": spec.env or "bridge_agents"}
        self._last: dict[str, Any] = {}

    def observation_space(self, agent: str) -> spaces.Space:
        """The observation space of ``agent``'s group."""
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        """The action space of ``agent``'s group."""
        return self.action_spaces[agent]

    def reset(self, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """Start an episode of every agent (restarting the program first after a fault)."""
        reply = self.program.reset_scene(seed, options)
        self.agents = list(reply.agents)
        self._last = dict(reply.obs)
        return dict(reply.obs), {a: dict(reply.infos[a]) for a in reply.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict[str, Any], dict[str, float], dict[str, bool],
                                                     dict[str, bool], dict[str, dict[str, Any]]]:
        """Every live agent acts; an agent that finishes leaves :attr:`agents` (see the module docstring)."""
        live = list(self.agents)
        if not live:
            raise RuntimeError("BridgeParallelEnv: step() with no agent left; call reset()")
        missing = [a for a in live if a not in actions]
        if missing:
            raise ValueError(f"BridgeParallelEnv: no action for live agent(s) {missing[:5]}")
        res = self.program.step_agents({a: actions[a] for a in live})
        pending: dict[str, Any] = {RESET_FAULTS_KEY: res.reset_faults} if res.reset_faults else {}
        if res.result is None:  # the program's fault: every live agent ends truncated, counted once
            assert res.fault is not None
            shared = res.fault.merged(restart=False, budget=None, shared=True)
            infos = {a: {FAULT_KEY: res.fault if i == 0 else shared} for i, a in enumerate(live)}
            infos[live[0]].update(pending)
            self.agents = []
            return ({a: self._last[a] for a in live}, {a: 0.0 for a in live}, {a: False for a in live},
                    {a: True for a in live}, infos)
        r = res.result
        assert r.rewards is not None and r.terminated is not None and r.truncated is not None
        rewards = {a: float(x) for a, x in zip(live, r.rewards)}
        terms = {a: bool(x) for a, x in zip(live, r.terminated)}
        truncs = {a: bool(x) for a, x in zip(live, r.truncated)}
        infos = {a: dict(r.infos[a]) for a in live}
        infos[live[0]].update(pending)
        self._last.update(r.obs)
        self.agents = [a for a in live if not (terms[a] or truncs[a])]
        return dict(r.obs), rewards, terms, truncs, infos

    def render(self) -> np.ndarray | None:
        """A frame of the scene from the program (``render_mode="rgb_array"``), or None."""
        return self.program.render()

    def state(self) -> np.ndarray:
        """Not given by the protocol."""
        raise NotImplementedError("a bridge program sends no global state")

    def close(self) -> None:
        """Say goodbye and stop the program; idempotent."""
        self.program.close()
