"""The trainer's side of the bridge handshake (docs/protocol.md, "Handshake"), shared by every way a
:class:`~envs.bridge.process.ProcessEnv` reaches its program: spawned, TCP, or connect mode, where
:mod:`envs.bridge.listen` runs it in a thread per connection.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from envs import errors as E
from envs.bridge import agentsmsg as A
from envs.bridge import messages as M
from envs.bridge import protocol as P

__all__ = ["check_kind", "left", "shake"]
log = logging.getLogger("envs.bridge.process")


def left(deadline: float) -> float:
    """Seconds until ``deadline``; a tiny positive number once it passed (the next wait then times out)."""
    return max(1e-3, deadline - time.monotonic())


def shake(chan: P.Channel, timeout: float, *, who: str, token: str, max_message: int,
          max_space_elements: int) -> M.SpecReply:
    """The trainer's side of the handshake on ``chan``, all of it within ``timeout``; returns the spec.

    Touches no env, so that connect mode runs it in a thread per connection.
    """
    deadline = time.monotonic() + timeout
    mine = P.nonce()
    P.send(chan, {"type": "hello", "version": P.VERSION, "nonce": mine}, timeout)
    try:
        challenge = P.expect(P.recv(chan, left(deadline), max_message), "challenge")
    except E.RemoteError as e:
        if "version" in str(e):
            raise E.VersionError(f"program {who!r} refused the handshake: {e}") from e
        raise E.StartupError(f"program {who!r} refused the handshake: {e}") from e
    warning = P.check_version(challenge.get("version"), f"program {who!r}")
    if warning:
        log.warning(warning)
    if token and not P.verify(token, "server", mine, challenge.get("mac")):
        raise E.AuthError(f"program {who!r} failed the token check: wrong or missing token; nothing was "
                          "stepped")
    P.send(chan, {"type": "auth", "mac": P.mac(token, "client", str(challenge.get("nonce", "")))},
           left(deadline))
    try:
        msg = P.recv(chan, left(deadline), max_message)
    except E.RemoteError as e:
        raise E.AuthError(f"program {who!r} refused the handshake: {e}") from e
    version = str(challenge.get("version"))[:20]
    try:
        if "agents" in msg:  # protocol 1.3: a scene of agents in policy groups
            if P.minor_of(version) < A.AGENTS_MINOR:
                raise E.SpecError(f"it declares agents, which needs protocol 1.{A.AGENTS_MINOR}, and its "
                                  f"challenge says {version}; announce 1.{A.AGENTS_MINOR}")
            spec = A.parse_agents_spec(msg, max_space_elements, max_message)
        else:
            spec = M.parse_spec(msg, max_space_elements, max_message)
    except E.SpecError as e:
        raise E.SpecError(f"program {who!r} sent a bad spec: {e}") from e
    # the version the program speaks is its challenge's (docs/protocol.md); the spec's is only a label
    return dataclasses.replace(spec, version=version)


def check_kind(spec: M.SpecReply, who: str, takes_agents: bool) -> None:
    """Refuse a program whose spec is of the other kind than the env that drives it: one that declares agents
    (protocol 1.3) to a single-agent env, one without agents to :data:`~envs.bridge.agentsmsg.PARALLEL_ENV`;
    so that neither is sent a request it does not speak.

    Raises:
        SpecError: naming the ``--env`` that drives such a program.
    """
    if spec.agents and not takes_agents:
        raise E.SpecError(f"program {who!r} declares agents (protocol 1.3: {len(spec.agents)} agents in "
                          f"policy groups), which --env process drives as one agent; train it with --env "
                          f"{A.PARALLEL_ENV} (docs/protocol.md, Agents)")
    if takes_agents and not spec.agents:
        raise E.SpecError(f"program {who!r} declares no agents (a single-agent program, protocol "
                          f"{spec.version}); train it with --env process, or declare groups and agents "
                          "(docs/protocol.md, Agents)")
