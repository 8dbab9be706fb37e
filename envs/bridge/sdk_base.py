"""The program side of the bridge protocol that every program the SDK serves shares: the handshake, the
request loop, and replies JSON can carry (docs/protocol.md). :mod:`envs.bridge.sdk` (single-agent envs and
K instances) and :mod:`envs.bridge.sdk_agents` (scenes of agents, protocol 1.3) build on it; NumPy alone.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from envs import errors as E
from envs.bridge import protocol as P
from envs.spaces import space_to_json

FOREVER = 10 * 365 * 24 * 3600.0
"""How long a served connection waits for the trainer's next request (the trainer owns the deadlines)."""


def handshake(chan: P.Channel, env: Any, name: str, token: str, timeout: float,
              instances: int | None = None, spec: dict[str, Any] | None = None) -> None:
    """The program's side of the handshake; ``spec``: the spec to send (a scene's, protocol 1.3), instead of
    one built from ``env``'s spaces."""
    hello = P.expect(P.recv(chan, timeout), "hello")
    try:
        warning = P.check_version(hello.get("version"), "nondiff")
        if instances is not None and P.minor_of(hello.get("version")) < 1:
            raise E.VersionError(f"protocol version mismatch: this program hosts {instances} instances, "
                                 f"which needs protocol 1.1; nondiff speaks {str(hello.get('version'))[:20]}")
        if spec is not None and P.minor_of(hello.get("version")) < 3:
            raise E.VersionError(f"protocol version mismatch: this program declares agents, which needs "
                                 f"protocol 1.3; nondiff speaks {str(hello.get('version'))[:20]}")
    except E.VersionError as e:
        P.send(chan, {"type": "error", "message": str(e)}, 10)
        raise
    if warning:
        print(f"nondiff sdk: {warning}", file=sys.stderr)
    challenge = P.nonce()
    P.send(chan, {"type": "challenge", "version": P.VERSION, "nonce": challenge,
                  "mac": P.mac(token, "server", hello.get("nonce", ""))}, 10)
    auth = P.expect(P.recv(chan, 30), "auth")
    if not P.verify(token, "client", challenge, auth.get("mac")):
        P.send(chan, {"type": "error", "message": "authentication failed: wrong token"}, 10)
        raise E.AuthError("a client presented a wrong token")
    if spec is None:
        spec = {"type": "spec", "env": name, "version": P.VERSION,
                "observation_space": space_to_json(env.observation_space),
                "action_space": space_to_json(env.action_space),
                "metadata": {"render_fps": getattr(env, "metadata", {}).get("render_fps", 30)}}
        if instances is not None:
            spec["num_instances"] = instances
    P.send(chan, spec, 10)


def stack(values: list[Any]) -> Any:
    """Per-instance observations stacked along a new leading axis (Dict and Tuple observations key by key)."""
    first = values[0]
    if isinstance(first, dict):
        return {k: stack([v[k] for v in values]) for k in first}
    if isinstance(first, tuple):
        return [stack([v[i] for v in values]) for i in range(len(first))]
    return np.stack([np.asarray(v) for v in values])


def jsonable(info: dict[str, Any]) -> dict[str, Any]:
    """An info dict with what JSON can carry: NumPy values as lists, other objects left out."""
    out = {}
    for k, v in (info or {}).items():
        if isinstance(v, np.ndarray | np.generic):
            v = v.tolist()
        if isinstance(v, str | int | float | bool | list | dict) or v is None:
            out[str(k)] = v
    return out



Answer = Callable[[str, dict[str, Any]], dict[str, Any]]
"""``answer(kind, msg)``: the reply to a ``reset`` or ``step`` request."""


def answer_requests(chan: P.Channel, max_size: int, served: list[int] | None, answer: Answer,
                    render: Callable[[], Any]) -> None:
    """Answer requests until ``close`` or the end of the stream, counting them in ``served[0]``:
    ``answer`` gives a ``reset`` or ``step`` its reply; ``render()`` draws the frame of a ``render``.
    An exception becomes an ``error`` reply (nondiff decides what to do) and serving goes on."""
    while True:
        try:
            msg = P.recv(chan, FOREVER, max_size)
        except E.PeerClosed:
            return
        if served is not None:
            served[0] += 1
        kind = msg["type"]
        try:
            if kind in ("reset", "step"):
                reply = answer(kind, msg)
            elif kind == "render":
                reply = {"type": "render_result", "frame": np.asarray(render(), dtype=np.uint8)}
            elif kind == "close":
                P.send(chan, {"type": "bye"}, 10)
                return
            else:
                reply = {"type": "error", "message": f"unknown message type {kind!r}"}
        except Exception as e:  # report to nondiff, which decides; keep serving
            reply = {"type": "error", "message": f"{type(e).__name__}: {e}"}
        P.send(chan, reply, 60, max_size)
