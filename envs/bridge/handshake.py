"""The trainer's side of the bridge handshake (docs/protocol.md, "Handshake"), shared by every way a
:class:`~envs.bridge.process.ProcessEnv` reaches its program: spawned, TCP, or connect mode, where
:mod:`envs.bridge.listen` runs it in a thread per connection.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from envs import errors as E
from envs.bridge import messages as M
from envs.bridge import protocol as P

__all__ = ["left", "shake"]
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
    try:
        spec = M.parse_spec(msg, max_space_elements, max_message)
    except E.SpecError as e:
        raise E.SpecError(f"program {who!r} sent a bad spec: {e}") from e
    # the version the program speaks is its challenge's (docs/protocol.md); the spec's is only a label
    return dataclasses.replace(spec, version=str(challenge.get("version"))[:20])
