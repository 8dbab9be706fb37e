"""The private local Ray that ``train.py --backend rllib`` (and a study on Ray) starts: loopback only,
token-authenticated.

What binds where (Ray 2.60, measured by tests/agents/rllib/test_ray_exposure.py):

- gcs_server, raylet (node manager and object manager), the driver's and every worker's core-worker gRPC
  server, and the runtime-env agent bind to the node IP address. ``ray.init(_node_ip_address="127.0.0.1")``
  alone does not make that loopback: Ray replaces a loopback address by the machine's routable address
  (``services.resolve_ip_for_localhost``) unless ``ray_constants.ENABLE_RAY_CLUSTER`` is off. nondiff turns it
  off for the duration of ``ray.init``, so the node IP, and with it every listener, is 127.0.0.1.
- Ray has no switch that keeps a server off the node IP; should a Ray version bind one elsewhere, token
  authentication is what protects it. nondiff therefore requires it: ``RAY_AUTH_MODE=token`` and a fresh
  random ``RAY_AUTH_TOKEN`` per start, set in this process's environment (inherited by every Ray process)
  and never written to disk by nondiff. With the token in the environment Ray does not write
  ``~/.ray/auth_token`` either (it does when it generates a token itself). A private Ray is refused, with
  one line, when the environment turns authentication off or the installed Ray has none.

A trainer killed by SIGKILL cannot stop its Ray; :func:`start` therefore leaves an undertaker
(agents/run/raywatch.py) that kills what is left of the session once the trainer is gone. :func:`shutdown`
stops both.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

from envs.errors import UserError

log = logging.getLogger(__name__)
AUTH_MODE_VAR = "RAY_AUTH_MODE"
AUTH_TOKEN_VAR = "RAY_AUTH_TOKEN"
LOOPBACK = "127.0.0.1"
WATCH_GRACE_S = 5.0
"""Seconds the undertaker gives what is left of a dead trainer's Ray to exit by itself before SIGKILL."""
_watch: tuple[subprocess.Popen[bytes], int] | None = None  # the undertaker and the write end of its pipe


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback (``::ffff:127.0.0.1``)."""
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool((mapped or ip).is_loopback)


def _auth_api() -> tuple[Any, Any, Any]:
    """Ray's token-authentication hooks, or a :class:`UserError` when this Ray has none."""
    import ray

    try:
        from ray._raylet import (  # type: ignore[attr-defined]
            AuthenticationMode,
            AuthenticationTokenLoader,
            Config,
            get_authentication_mode,
        )
    except ImportError as e:
        raise UserError(f"Ray {ray.__version__} has no token authentication, and a private local Ray without "
                        "it runs code for anyone who reaches its ports; install ray[rllib]>=2.60 "
                        "(make install) or join a secured cluster with --ray-address") from e
    return AuthenticationMode, (AuthenticationTokenLoader, Config), get_authentication_mode


def require_token_auth() -> None:
    """Turn Ray's token authentication on for a private Ray, with a fresh token, or refuse to start one.

    Raises:
        UserError: the environment sets ``RAY_AUTH_MODE`` to anything but ``token``, or Ray lacks token auth.
    """
    mode = os.environ.get(AUTH_MODE_VAR)
    if mode is not None and mode.strip().lower() != "token":
        raise UserError(f"{AUTH_MODE_VAR}={mode} is set in the environment, but nondiff starts a private "
                        f"local Ray only with token authentication (its ports run code for whoever "
                        f"connects); unset {AUTH_MODE_VAR} or set it to token")
    auth_mode, (loader, config), get_mode = _auth_api()
    os.environ[AUTH_MODE_VAR] = "token"
    os.environ[AUTH_TOKEN_VAR] = secrets.token_hex(32)  # fresh per start; inherited, never written by nondiff
    config.initialize("")  # Ray caches RAY_AUTH_MODE and the token: make this process see the new ones
    loader.instance().reset_cache()
    if get_mode() != auth_mode.TOKEN:
        raise UserError(f"Ray did not turn token authentication on although {AUTH_MODE_VAR}=token; refusing "
                        "to start a private local Ray without it")


def start(num_cpus: int | None, dashboard: bool) -> None:
    """Start the private local Ray: token authentication required, every listener on 127.0.0.1.

    Raises:
        UserError: token authentication is unavailable or turned off (see :func:`require_token_auth`).
    """
    import ray
    from ray._private import ray_constants

    require_token_auth()
    cluster_mode = ray_constants.ENABLE_RAY_CLUSTER
    # keep _node_ip_address="127.0.0.1" instead of the routable address
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(address="local", _node_ip_address=LOOPBACK, include_dashboard=dashboard,
                 dashboard_host=LOOPBACK, log_to_driver=False, num_cpus=num_cpus)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = cluster_mode
    node_ip = str(getattr(ray._private.worker._global_node, "node_ip_address", ""))
    if not is_loopback(node_ip):
        log.warning("this Ray version binds the private local Ray to %s, not loopback; its ports are "
                    "protected by token authentication only", node_ip)
    _start_watch(ray._private.worker._global_node)


def _start_watch(node: Any) -> None:
    """Start the undertaker of ``node``'s processes (module docstring): it holds the read end of a pipe whose
    write end only this process holds, and acts when that reads end of file."""
    global _watch
    from ray._private import ray_constants

    procs = getattr(node, "all_processes", {}) or {}
    if not procs.get(ray_constants.PROCESS_TYPE_RAYLET):  # not a node this process started
        return
    pids = [info.process.pid for infos in procs.values() for info in infos if info.process is not None]
    r, w = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-I", "-S", str(Path(__file__).with_name("raywatch.py")),
                                 repr(WATCH_GRACE_S), str(r), node.get_session_dir_path(), *map(str, pids)],
                                pass_fds=(r,), stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError as e:  # Ray runs; only its clean-up after a SIGKILL is lost
        os.close(w)
        log.warning("could not start the local Ray's undertaker (%s): a trainer killed by SIGKILL may leave "
                    "Ray processes behind", e)
        return
    finally:
        os.close(r)
    _watch = (proc, w)


def shutdown() -> None:
    """``ray.shutdown()``, then end the undertaker (nothing is left for it: it exits at once)."""
    global _watch
    import ray

    ray.shutdown()
    if _watch is not None:
        proc, w = _watch
        _watch = None
        try:
            os.write(w, b"stopped")  # raywatch.STOPPED: what is left now was not Ray's to stop
        except OSError:
            pass
        os.close(w)
        try:
            proc.wait(timeout=WATCH_GRACE_S + 5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
