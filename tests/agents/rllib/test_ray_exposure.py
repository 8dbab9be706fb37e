"""The private local Ray: every listening socket of its process tree is loopback or token-authenticated."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import ray  # puts Ray's bundled psutil on sys.path
from conftest import ROOT

from agents.config import validate
from agents.rllib.backend import _connect
from agents.run.localray import is_loopback

psutil = importlib.import_module("psutil")  # Ray's bundled copy, on sys.path once ray is imported

pytestmark = pytest.mark.ray


@dataclass(frozen=True)
class Listener:
    """One listening TCP socket of the Ray process tree."""

    pid: int
    process: str
    address: str
    port: int
    auth: str | None


def _auth_mode(pid: int) -> str | None:
    """RAY_AUTH_MODE in the environment a process runs with (this process: os.environ, which Ray reads)."""
    if pid == os.getpid():
        return os.environ.get("RAY_AUTH_MODE")
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    env = dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    value = env.get(b"RAY_AUTH_MODE")
    return None if value is None else value.decode()


def listeners() -> list[Listener]:
    """Every listening inet socket of this driver and all its descendants (gcs_server, raylet,
    agents, workers)."""
    me = psutil.Process()
    found = []
    for proc in [me, *me.children(recursive=True)]:
        try:
            conns, name = proc.net_connections(kind="inet"), proc.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for c in conns:
            if c.status == psutil.CONN_LISTEN:
                found.append(Listener(proc.pid, name, c.laddr.ip, c.laddr.port, _auth_mode(proc.pid)))
    return found


def exposed(found: list[Listener]) -> list[Listener]:
    """Listeners reachable beyond loopback whose process does not run with Ray's token authentication."""
    return [s for s in found if not is_loopback(s.address) and (s.auth or "").lower() != "token"]


def test_private_ray_listens_on_loopback_or_with_token_auth_only(tmp_path):
    if ray.is_initialized():
        ray.shutdown()
    os.environ.pop("RAY_AUTH_MODE", None)
    t0 = time.monotonic()
    _connect(validate({"env": {"id": "CartPole-v1"}, "rllib": {"num_cpus": 1}}, "test"))
    try:
        token = os.environ["RAY_AUTH_TOKEN"]
        assert os.environ["RAY_AUTH_MODE"] == "token" and len(token) == 64

        @ray.remote
        def pid() -> int:
            return os.getpid()

        ray.get(pid.remote())  # a worker process exists and listens too
        found = listeners()
        names = {s.process for s in found}
        print("\n".join(f"{s.process:<24} pid {s.pid:<7} {s.address}:{s.port}  RAY_AUTH_MODE={s.auth}"
                        for s in found))
        assert {"gcs_server", "raylet"} <= names and len(found) >= 5, found
        assert exposed(found) == []
        assert all(is_loopback(s.address) for s in found), found  # Ray 2.60: every listener is loopback
        assert all(s.auth == "token" for s in found
                   if s.process in ("gcs_server", "raylet") or s.pid == os.getpid())

        # the check is real: a descendant listening on all interfaces without Ray's auth is reported
        clean_env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        rogue = subprocess.Popen([sys.executable,
                                  "-c", "import socket, time; s = socket.create_server(('0.0.0.0', 0));"
                                  " print(s.getsockname()[1], flush=True); time.sleep(60)"],
                                 env=clean_env, stdout=subprocess.PIPE, text=True)
        try:
            port = int(rogue.stdout.readline())
            bad = exposed(listeners())
            assert [(s.pid, s.port, s.auth) for s in bad] == [(rogue.pid, port, None)]
        finally:
            rogue.kill()
            rogue.wait()

        # nondiff's token is in no file of the Ray session, nor in ~/.ray/auth_token (Ray's own default file)
        session = Path(ray._private.worker._global_node.get_session_dir_path())
        holders = subprocess.run(["grep", "-rlF", token, str(session), str(Path.home() / ".ray")],
                                 capture_output=True, text=True)
        assert holders.stdout == "", holders.stdout
    finally:
        ray.shutdown()
    assert time.monotonic() - t0 < 60


@pytest.mark.parametrize("mode", ["disabled", "nonsense"])
def test_private_ray_without_token_auth_is_refused(tmp_path, mode):
    env = {**os.environ, "RAY_AUTH_MODE": mode}
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), "--env", "CartPole-v1",
                           "--backend", "rllib", "--timesteps", "256", "--run-dir", str(tmp_path / "run"),
                           "--quiet"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.count("\n") == 1 and f"RAY_AUTH_MODE={mode} is set" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()
