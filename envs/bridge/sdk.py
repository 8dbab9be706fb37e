"""Python SDK for third-party programs: serve any Gymnasium-style env over the nondiff bridge protocol.

A program needs only envs/bridge/ (this module, sdk_base.py, sdk_agents.py, protocol.py, codec.py) and NumPy::

    from envs.bridge.sdk import serve
    serve(MySimulator)                        # spawned by nondiff: speaks on stdin/stdout
    serve(MySimulator, listen=("127.0.0.1", 5555), token=os.environ["NONDIFF_TOKEN"])  # a server: one
                                              # env per connection, connections served concurrently
    serve(MySimulator, instances=16)          # protocol 1.1: 16 instances behind one connection
    serve(MyScene)                            # protocol 1.3: agents in policy groups (sdk_agents.py)
    serve(MySimulator, connect=("127.0.0.1", 5555))  # connect to a listening nondiff (env.listen), and
                                              # again after each session; NONDIFF_CONNECT=HOST:PORT
                                              # does the same

Anything the program wants to print must go to stderr: stdout carries the protocol.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from typing import Any

import numpy as np

from envs import errors as E
from envs.bridge import protocol as P
from envs.bridge import sdk_agents
from envs.bridge.sdk_base import FOREVER, answer_requests, handshake, jsonable, stack

HANDSHAKE_TIMEOUT = 60.0
"""Seconds a TCP client has to send its ``hello`` before the connection is dropped."""
MAX_REFUSALS = 5
"""Connect mode: sessions refused in a row (ended before the first request) before the program gives up."""
BACKOFF = (0.5, 8.0)
"""Connect mode: the first pause after a refusal and the longest one, in seconds; the pause doubles each
time."""
BUSY_GRACE = 2.0
"""Seconds a second connection waits for a single shared env object before it is refused (a trainer that
closed its previous connection may still be ending it)."""


def _loop_batch(chan: P.Channel, envs: list[Any], max_size: int, served: list[int]) -> None:
    """Serve the batched requests of protocol 1.1 for ``len(envs)`` instances (and 1.2's ``autoreset``
    steps); counts them in ``served[0]``. ``render`` draws instance 0 (the one evaluation drives)."""

    def answer(kind: str, msg: dict[str, Any]) -> dict[str, Any]:
        idx = msg.get("instances", list(range(len(envs))))
        if not isinstance(idx, list) or not all(type(i) is int and 0 <= i < len(envs) for i in idx):
            raise ValueError(f"instances must be a list of indices below {len(envs)}")
        if kind == "reset":
            seeds = msg.get("seeds") or [None] * len(idx)
            out = [envs[i].reset(seed=s, options=msg.get("options") or None) for i, s in zip(idx, seeds)]
            return {"type": "reset_result", "obs": stack([o for o, _ in out]),
                    "infos": [jsonable(info) for _, info in out]}
        actions = msg["actions"]
        res = [envs[i].step(actions[j]) for j, i in enumerate(idx)]
        obs = [r[0] for r in res]
        reply = {"type": "step_result", "rewards": np.array([float(r[1]) for r in res]),
                 "terminated": np.array([bool(r[2]) for r in res]),
                 "truncated": np.array([bool(r[3]) for r in res]),
                 "infos": [jsonable(r[4]) for r in res]}
        ended = [j for j, r in enumerate(res) if r[2] or r[3]]
        if msg.get("autoreset") and ended:  # protocol 1.2: reset the finished ones now
            reply["final_obs"] = stack([obs[j] for j in ended])
            starts = [envs[idx[j]].reset() for j in ended]
            reply["reset_infos"] = [jsonable(info) for _, info in starts]
            for j, (first, _) in zip(ended, starts):
                obs[j] = first
        reply["obs"] = stack(obs)
        return reply

    answer_requests(chan, max_size, served, answer, lambda: envs[0].render())


def _session(chan: P.Channel, env: Any, name: str, token: str, max_size: int, instances: int | None,
             timeout: float, made: list[Any] | None = None, served: list[int] | None = None) -> None:
    """One connection from handshake to close: one env, or ``instances`` envs made by the factory ``env``.

    ``made``: the envs, already made (connect mode makes them before it connects, so that the handshake is
    answered at once); they are closed here when ``env`` is a factory. ``served[0]`` counts the requests.
    """
    served = served if served is not None else [0]
    envs = made if made is not None else _make_all(env, instances)
    try:
        if instances is None:
            _serve_one(chan, envs[0], name or type(envs[0]).__name__, token, timeout, max_size, served)
        else:
            handshake(chan, envs[0], name or type(envs[0]).__name__, token, timeout, instances)
            _loop_batch(chan, envs, max_size, served)
    finally:
        if instances is not None or made is not None:
            _close_made(env, envs)


def _serve_one(chan: P.Channel, env: Any, name: str, token: str, timeout: float, max_size: int,
               served: list[int] | None = None) -> None:
    """Handshake and serve one env on ``chan``: a single-agent env, or a scene of agents (protocol 1.3,
    :mod:`envs.bridge.sdk_agents`)."""
    if sdk_agents.is_scene(env):
        sdk_agents.scene_session(chan, env, name, token, timeout, max_size, served or [0])
        return
    handshake(chan, env, name, token, timeout)
    _loop(chan, env, max_size, served)


def _make_all(env: Any, instances: int | None) -> list[Any]:
    return [_make(env) for _ in range(instances or 1)]


def _close_made(env: Any, envs: list[Any]) -> None:
    """Close envs a factory made (a shared env object stays open)."""
    if _is_factory(env):
        for e in envs:
            if hasattr(e, "close"):
                e.close()


def _connect(address: tuple[str, int], wait: float) -> socket.socket | None:
    """Connect to a listening nondiff, retrying for ``wait`` seconds; None when it never answered."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return socket.create_connection(address, timeout=10)
        except OSError:
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.2)


def _serve_connecting(env: Any, address: tuple[str, int], name: str, token: str, max_size: int,
                      instances: int | None, once: bool, wait: float,
                      max_refusals: int = MAX_REFUSALS) -> None:
    """Connect mode: connect, serve one session, and connect again, until nondiff stops listening.

    A session that ends before its first request (nondiff refused the program, usually with an ``error``
    that says why) is a refusal: the pause before the next try doubles from ``BACKOFF[0]`` up to
    ``BACKOFF[1]`` seconds, and after ``max_refusals`` refusals in a row the program gives up.
    """
    where, refusals = f"{address[0]}:{address[1]}", 0
    while True:
        made = _make_all(env, instances)  # before connecting: the handshake is answered at once
        sock = _connect(address, wait)
        if sock is None:
            _close_made(env, made)
            print(f"nondiff sdk: nobody listens on {where} (waited {wait:g} s); exiting", file=sys.stderr,
                  flush=True)
            return
        chan, served = P.Channel.from_socket(sock), [0]
        why = "nondiff closed the connection before any request"
        try:
            _session(chan, env, name, token, max_size, instances, HANDSHAKE_TIMEOUT, made, served)
        except (E.BridgeError, OSError) as e:
            why = str(e)
            print(f"nondiff sdk: connection ended: {e}", file=sys.stderr, flush=True)
            if isinstance(e, E.StartupError):
                return
        finally:
            chan.close()
        if once:
            return
        if served[0]:
            refusals = 0
            time.sleep(0.2)
            continue
        refusals += 1
        if refusals >= max_refusals:
            print(f"nondiff sdk: {where} refused this program {refusals} times in a row (last: {why}); "
                  "giving up", file=sys.stderr, flush=True)
            return
        pause = min(BACKOFF[1], BACKOFF[0] * 2 ** (refusals - 1))
        print(f"nondiff sdk: refused by {where} ({refusals} of {max_refusals}); trying again in {pause:g} s",
              file=sys.stderr, flush=True)
        time.sleep(pause)


def _loop(chan: P.Channel, env: Any, max_size: int, served: list[int] | None = None) -> None:
    def answer(kind: str, msg: dict[str, Any]) -> dict[str, Any]:
        if kind == "reset":
            obs, info = env.reset(seed=msg.get("seed"), options=msg.get("options") or None)
            return {"type": "reset_result", "obs": obs, "info": jsonable(info)}
        obs, reward, terminated, truncated, info = env.step(msg["action"])
        return {"type": "step_result", "obs": obs, "reward": float(reward), "terminated": bool(terminated),
                "truncated": bool(truncated), "info": jsonable(info)}

    answer_requests(chan, max_size, served, answer, lambda: env.render())


def _is_factory(env: Any) -> bool:
    return isinstance(env, type) or not hasattr(env, "step")


def _make(env: Any) -> Any:
    """An env from ``env``: a zero-argument factory (or class) is called, an env object is used as it is."""
    return env() if _is_factory(env) else env


def _serve_connection(conn: socket.socket, env: Any, name: str, token: str, max_size: int,
                      lock: threading.Lock | None, instances: int | None = None) -> None:
    chan = P.Channel.from_socket(conn)
    try:
        if instances is not None:  # env is the factory: K fresh instances for this connection
            _session(chan, env, name, token, max_size, instances, HANDSHAKE_TIMEOUT)
        elif lock is None:
            _serve_one(chan, env, name, token, HANDSHAKE_TIMEOUT, max_size)
        elif not lock.acquire(timeout=BUSY_GRACE):  # one shared env object, busy: refuse instead of stalling
            P.expect(P.recv(chan, 10), "hello")
            what = type(env).__name__
            P.send(chan, {"type": "error",
                          "message": f"this program serves one env object ({what}), which another "
                          "connection is using; pass a factory so that each connection gets its own env: "
                          f"serve({what}, listen=...) instead of serve({what}(), listen=...)"}, 10)
            print(f"nondiff sdk: refused a second connection: the one {what} object is in use; pass a "
                  "factory", file=sys.stderr, flush=True)
        else:  # one shared env object: one connection at a time uses it
            try:
                _serve_one(chan, env, name, token, HANDSHAKE_TIMEOUT, max_size)
            finally:
                lock.release()
    except (E.BridgeError, OSError) as e:
        print(f"nondiff sdk: connection ended: {e}", file=sys.stderr, flush=True)
    finally:
        chan.close()
        if instances is None and lock is None and hasattr(env, "close"):
            env.close()


def serve(env: Any, *, name: str | None = None, listen: tuple[str, int] | None = None, token: str = "",
          max_size: int = P.MAX_MESSAGE, once: bool = False, max_connections: int = 64,
          instances: int | None = None,
          connect: tuple[str, int] | None = None, connect_wait: float = 30.0,
          max_refusals: int = MAX_REFUSALS) -> None:
    """Serve an env until nondiff closes it (pipes) or forever (TCP).

    Args:
        env: a zero-argument factory that makes an env (one per TCP connection; the recommended form), or
            one env object with ``observation_space``, ``action_space``, ``reset(seed=, options=)`` and
            ``step``; or a scene of agents in policy groups (protocol 1.3, :mod:`envs.bridge.sdk_agents`;
            one scene per connection, without ``instances``). A single object serves one TCP connection at
            a time: a second concurrent connection is answered with an ``error`` that says to pass a
            factory (the trainer stops with that line).
        name: the env name announced in the handshake.
        listen: ``(host, port)`` to accept TCP connections on; default: stdin/stdout.
        token: shared secret; required by nondiff for any non-loopback address.
        max_size: the largest message accepted.
        once: with ``listen``, serve one connection and return.
        max_connections: with ``listen``, connections served at once (each in its own thread); more are
            refused with an ``error`` message.
        instances: host this many env instances behind each connection (protocol 1.1, ``num_instances``);
            ``env`` must then be a factory. None: one instance, the 1.0 messages.
        connect: ``(host, port)`` of a nondiff that listens (``env.listen``): connect to it instead of
            waiting to be spawned or connected to; after each session, connect again. Default: the
            ``NONDIFF_CONNECT=HOST:PORT`` environment variable, when set.
        connect_wait: with ``connect``, seconds to keep retrying a refused connection before returning.
        max_refusals: with ``connect``, sessions refused in a row (ended by nondiff before the first request)
            before giving up; the pause between tries doubles from 0.5 s to at most 8 s.
    """
    if instances is not None and (type(instances) is not int or not 1 <= instances <= P.MAX_INSTANCES
                                  or not _is_factory(env)):
        raise ValueError(f"instances must be an integer from 1 to {P.MAX_INSTANCES} and env a factory, got "
                         f"{instances!r}")
    if connect is None and listen is None and os.environ.get("NONDIFF_CONNECT"):
        host, _, port = os.environ["NONDIFF_CONNECT"].rpartition(":")
        connect = (host.strip("[]"), int(port))
    if connect is not None:
        _serve_connecting(env, connect, name or "", token, max_size, instances, once, connect_wait,
                          max_refusals)
        return
    if listen is None:
        out_fd = os.dup(1)
        os.dup2(2, 1)  # stray prints go to stderr instead of corrupting the protocol stream
        _session(P.Channel(0, out_fd), env, name or "", token, max_size, instances, FOREVER)
        return
    shared = None if _is_factory(env) else env
    lock = threading.Lock() if shared is not None else None
    label = str(name or (type(shared).__name__ if shared is not None else getattr(env, "__name__", "env")))
    server = socket.create_server(listen)
    print(f"nondiff sdk: listening on {server.getsockname()[0]}:{server.getsockname()[1]}", file=sys.stderr,
          flush=True)
    slots = threading.BoundedSemaphore(max_connections)
    while True:
        conn, _ = server.accept()
        if once:
            _serve_connection(conn, env if instances is not None else _make(env), label, token, max_size,
                              None if shared is None else lock, instances)
            server.close()
            return
        if not slots.acquire(blocking=False):
            chan = P.Channel.from_socket(conn)
            try:
                P.send(chan, {"type": "error", "message": f"busy: {max_connections} connections already"}, 1)
            except E.BridgeError:
                pass
            chan.close()
            continue

        def run(conn: socket.socket = conn) -> None:
            try:
                target = env if instances is not None else shared if shared is not None else _make(env)
                _serve_connection(conn, target, label, token, max_size, lock, instances)
            except Exception as e:  # a factory that raised: this connection ends, the server goes on
                print(f"nondiff sdk: connection failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                conn.close()
            finally:
                slots.release()

        threading.Thread(target=run, daemon=True, name="nondiff-sdk-conn").start()
