"""Python SDK for third-party programs: serve any Gymnasium-style env over the nondiff bridge protocol.

A program needs only this module, ``envs.protocol`` and NumPy (no torch, no RL library)::

    from envs.sdk import serve
    serve(MySimulator())                      # spawned by nondiff: speaks on stdin/stdout
    serve(MySimulator(), listen=("127.0.0.1", 5555), token=os.environ["NONDIFF_TOKEN"])  # a server

Anything the program wants to print must go to stderr: stdout carries the protocol.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

import numpy as np

from envs import protocol as P
from envs.spaces import space_to_json

FOREVER = 10 * 365 * 24 * 3600.0


def _handshake(chan: P.Channel, env: Any, name: str, token: str) -> None:
    hello = P.expect(P.recv(chan, FOREVER), "hello")
    try:
        warning = P.check_version(hello.get("version"), "nondiff")
    except P.VersionError as e:
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
        raise P.AuthError("a client presented a wrong token")
    P.send(chan, {"type": "spec", "env": name, "version": P.VERSION,
                  "observation_space": space_to_json(env.observation_space),
                  "action_space": space_to_json(env.action_space),
                  "metadata": {"render_fps": getattr(env, "metadata", {}).get("render_fps", 30)}}, 10)


def _loop(chan: P.Channel, env: Any, max_size: int) -> None:
    while True:
        try:
            msg = P.recv(chan, FOREVER, max_size)
        except P.PeerClosed:
            return
        kind = msg["type"]
        try:
            if kind == "reset":
                obs, info = env.reset(seed=msg.get("seed"), options=msg.get("options") or None)
                reply = {"type": "reset_result", "obs": obs, "info": _jsonable(info)}
            elif kind == "step":
                action = msg["action"]
                obs, reward, terminated, truncated, info = env.step(action)
                reply = {"type": "step_result", "obs": obs, "reward": float(reward), "terminated": bool(terminated),
                         "truncated": bool(truncated), "info": _jsonable(info)}
            elif kind == "render":
                reply = {"type": "render_result", "frame": np.asarray(env.render(), dtype=np.uint8)}
            elif kind == "close":
                P.send(chan, {"type": "bye"}, 10)
                return
            else:
                reply = {"type": "error", "message": f"unknown message type {kind!r}"}
        except Exception as e:  # report to nondiff, which decides; keep serving
            reply = {"type": "error", "message": f"{type(e).__name__}: {e}"}
        P.send(chan, reply, 60, max_size)


def _jsonable(info: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in (info or {}).items():
        if isinstance(v, np.ndarray | np.generic):
            v = v.tolist()
        if isinstance(v, str | int | float | bool | list | dict) or v is None:
            out[str(k)] = v
    return out


def serve(env: Any, *, name: str | None = None, listen: tuple[str, int] | None = None, token: str = "",
          max_size: int = P.MAX_MESSAGE, once: bool = False) -> None:
    """Serve ``env`` until nondiff closes it.

    Args:
        env: an object with ``observation_space``, ``action_space``, ``reset(seed=, options=)`` and ``step``.
        name: the env name announced in the handshake.
        listen: ``(host, port)`` to accept TCP connections on; default: stdin/stdout.
        token: shared secret; required by nondiff for any non-loopback address.
        max_size: the largest message accepted.
        once: with ``listen``, serve one connection and return.
    """
    name = name or type(env).__name__
    if listen is None:
        out_fd = os.dup(1)
        os.dup2(2, 1)  # stray prints go to stderr instead of corrupting the protocol stream
        chan = P.Channel(0, out_fd)
        _handshake(chan, env, name, token)
        _loop(chan, env, max_size)
        return
    server = socket.create_server(listen)
    print(f"nondiff sdk: listening on {server.getsockname()[0]}:{server.getsockname()[1]}", file=sys.stderr,
          flush=True)
    while True:
        conn, _ = server.accept()
        chan = P.Channel.from_socket(conn)
        try:
            _handshake(chan, env, name, token)
            _loop(chan, env, max_size)
        except P.BridgeError as e:
            print(f"nondiff sdk: connection ended: {e}", file=sys.stderr, flush=True)
        finally:
            chan.close()
        if once:
            server.close()
            return
