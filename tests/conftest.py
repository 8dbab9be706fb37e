"""Shared test helpers: run the real CLIs as subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_cli(script: str, *args: str, timeout: float = 300, check: bool = False,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python <script> args...`` from the repository root and capture its output (``env``: variables
    set on top of this process's)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def cli():
    """The :func:`run_cli` helper."""
    return run_cli


@pytest.fixture(scope="session")
def heater(tmp_path_factory) -> str:
    """The C example (examples/thirdparty/heater.c), compiled with the system C compiler."""
    out = tmp_path_factory.mktemp("bin") / "heater"
    subprocess.run(["cc", "-O2", "-o", str(out), str(ROOT / "examples" / "thirdparty" / "heater.c"), "-lm"],
                   check=True)
    return str(out)


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (``make test`` runs two workers), the tests that start Ray run one at a time on one
    worker (``--dist loadgroup``): two private Rays at once would share two cores between a dozen processes."""
    for item in items:
        if item.get_closest_marker("ray") or "rllib" in item.nodeid:
            item.add_marker(pytest.mark.xdist_group("serial"))
