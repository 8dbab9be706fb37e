"""Shared test helpers: run the real CLIs as subprocesses, read what a run wrote, share one private Ray."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


def run_cli(script: str, *args: str, timeout: float = 300, check: bool = False,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python <script> args...`` from the repository root and capture its output (``env``: variables
    set on top of this process's)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} exited {proc.returncode}\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def evaluate_json(run: Path, out_dir: Path, episodes: int = 5) -> dict[str, Any]:
    """``evaluate.py RUN --episodes N --json``'s document (the run must evaluate: exit 0)."""
    out = run_cli("evaluate.py", str(run), "--episodes", str(episodes), "--json", str(out_dir / "e.json"),
                  timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads((out_dir / "e.json").read_text())


@pytest.fixture
def cli():
    """The :func:`run_cli` helper."""
    return run_cli


_PORTS = itertools.count()


def free_port() -> int:
    """A loopback port that nothing listens on, and that no other test of this session is given.

    Not an ephemeral one: a port the kernel handed out and took back can be handed to another test's
    ``listen 127.0.0.1:0`` before this test listens on it, and then each test counts the other's
    connections. The ports come from below the kernel's ephemeral range (32768 up) and above Ray's worker
    ports (10002-19999): a block of 1,000 for each pytest-xdist worker, each port once per session.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    base = 20000 + 1000 * (int(worker) % 12 if worker.isdigit() else 0)
    for _ in range(1000):
        port = base + next(_PORTS) % 1000
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:  # something else on this machine has it
                continue
            return port
    raise RuntimeError(f"no free loopback port in {base}-{base + 999}")


def scalars(run: Path) -> Any:
    """The TensorBoard scalars of a run directory (an ``EventAccumulator``, every point kept)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return acc


def last_scalar(run: Path, tag: str) -> float:
    """The last value of a run's TensorBoard scalar ``tag``; 0.0 when the run never wrote it."""
    acc = scalars(run)
    return acc.Scalars(tag)[-1].value if tag in acc.Tags()["scalars"] else 0.0


def undertakers_of(driver: int) -> list[int]:
    """The private Ray undertakers (agents/run/raywatch.py) still running for the Ray session of the driver
    process ``driver`` (Ray names a session after its driver's pid)."""
    found = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        at = [i for i, part in enumerate(cmd) if part.endswith(b"raywatch.py")]
        if at and len(cmd) > at[0] + 3 and cmd[at[0] + 3].endswith(f"_{driver}".encode()):
            found.append(int(name))
    return found


def read_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A checkpoint's tensors and its header as the JSON document it was written as (for assertions)."""
    from agents.run import checkpoint

    ckpt = checkpoint.load(path)
    return ckpt.tensors, ckpt.header.to_json()


def adam_steps(meta: dict[str, Any]) -> float:
    """The largest Adam step count in a checkpoint header's optimiser state (a fresh optimiser has fewer)."""
    found: list[float] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                found.append(v) if k == "step" and isinstance(v, (int, float)) else walk(v)

    walk(meta["optimizer"])
    return max(found)


def pids_of(path: str) -> list[int]:
    """PIDs of the live (not zombie) processes whose ``argv[0]`` is ``path``, read from /proc."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")[0].decode()
                state = (entry / "stat").read_text().rsplit(") ", 1)[1][0]
            except (OSError, IndexError):
                continue
            if cmd == path and state != "Z":
                out.append(int(entry.name))
    return out


@pytest.fixture(scope="session")
def heater(tmp_path_factory) -> str:
    """The C example (examples/thirdparty/heater.c), compiled with the system C compiler."""
    out = tmp_path_factory.mktemp("bin") / "heater"
    subprocess.run(["cc", "-O2", "-o", str(out), str(ROOT / "examples" / "thirdparty" / "heater.c"), "-lm"],
                   check=True)
    return str(out)


@dataclass(frozen=True)
class SharedRay:
    """The session's private local Ray, for ``train.py --backend rllib`` subprocesses to join.

    Attributes:
        address: its GCS address on loopback (``127.0.0.1:PORT``).
        flags: ``["--ray-address", address]``, for the train.py command line.
        env: the variables a joining process needs, on top of ``os.environ``: the token, and Ray's switch that
            keeps the joiner's own node address on loopback (as ``agents.run.localray.start`` does for
            the head).
    """

    address: str
    flags: list[str]
    env: dict[str, str]


_RAY_HEAD = """
import os, sys
import ray
from agents.run import localray as local
local.start(num_cpus=int(sys.argv[1]), dashboard=False)
# Ray reports the routable IP; it listens on loopback
port = ray.get_runtime_context().gcs_address.rpartition(":")[2]
print(f"{local.LOOPBACK}:{port}", os.environ[local.AUTH_TOKEN_VAR], flush=True)
sys.stdin.read()  # until the test session closes our stdin (or dies)
ray.shutdown()
"""


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that joins the shared Ray runs on one pytest-xdist worker (``--dist loadgroup``, as
    `make test` runs): one shared Ray for the session instead of one per worker, and no two of these tests at
    once (tests/test_suite_groups.py)."""
    for item in items:
        if "shared_ray" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("shared-ray"))


@pytest.fixture(scope="session")
def shared_ray() -> Iterator[SharedRay]:
    """One private local Ray for the whole session (loopback, token-authenticated: agents/run/localray.py);
    under pytest-xdist, the tests that ask for it share a worker (:func:`pytest_collection_modifyitems`).

    It runs in a helper process, so that this process never initialises Ray (tests assert that bad input and
    evaluate.py leave Ray alone); the trainers join it with ``--ray-address`` instead of starting their own.
    Tests that check the private Ray itself (its listeners, Ctrl-C reaching its processes) still start
    their own.
    """
    head = subprocess.Popen([sys.executable, "-c", _RAY_HEAD, "2"], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = head.stdout.readline().split() if head.stdout else []
        if len(line) != 2:
            raise RuntimeError(f"the shared Ray did not start (exit {head.poll()})")
        address, token = line
        yield SharedRay(address, ["--ray-address", address],
                        {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
                         "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
    finally:
        if head.stdin:
            head.stdin.close()
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()


def lockstep(ref, other, n_envs: int, seed: int, steps: int = 20):
    """Seed two SB3 vector envs alike, check that their resets are equal, then yield their step results for
    the same uniform-random Box actions of shape (n_envs, 1)."""
    import numpy as np

    ref.seed(seed)
    other.seed(seed)
    np.testing.assert_array_equal(ref.reset(), other.reset())
    rng = np.random.default_rng(0)
    for _ in range(steps):
        act = rng.uniform(-1, 1, (n_envs, 1)).astype(np.float32)
        yield ref.step(act), other.step(act)
