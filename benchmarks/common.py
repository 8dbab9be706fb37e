"""Shared helpers of the benchmark harness: timed child processes, process-tree memory, machine facts."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
PACKAGES = ("gymnasium", "stable-baselines3", "torch", "numpy", "mujoco", "ale-py", "ray", "pydantic")


def machine() -> dict[str, Any]:
    """Cores, GPU, load average and Python: the facts every row is read against."""
    try:
        import torch

        gpu = torch.cuda.is_available()
    except ImportError:
        gpu = False
    mem = 0.0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) / 2**20
    return {"cpu_count": os.cpu_count(), "gpu": gpu, "loadavg": [round(x, 2) for x in os.getloadavg()],
            "mem_gib": round(mem, 1), "python": sys.version.split()[0]}


def versions() -> dict[str, str]:
    """Installed versions of the packages the figures depend on."""
    out = {}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree_memory_mib(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of ``pid`` and all its descendants, in MiB. PSS splits shared pages between processes,
    so its sum is the memory the tree really holds; the RSS sum counts shared pages once per process."""
    kids = _children()
    todo, rss, pss = [pid], 0, 0
    while todo:
        p = todo.pop()
        todo.extend(kids.get(p, ()))
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return rss / 1024, pss / 1024


@dataclass
class Child:
    """A child process whose stdout lines are read with arrival times, and whose tree memory is sampled."""

    cmd: list[str]
    sample_memory: bool = False
    env: dict[str, str] | None = None
    lines: list[tuple[float, str]] = field(default_factory=list)
    peak_rss_mib: float = 0.0
    peak_pss_mib: float = 0.0

    def start(self) -> Child:
        """Launch; ``t0`` is the launch time every arrival is measured from."""
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1", **(self.env or {})},
                                     start_new_session=True)
        self._stderr: list[str] = []
        self._threads = [threading.Thread(target=self._read, daemon=True),
                         threading.Thread(target=lambda: self._stderr.extend(self.proc.stderr or ()),
                                          daemon=True)]
        if self.sample_memory:
            self._threads.append(threading.Thread(target=self._sample, daemon=True))
        for t in self._threads:
            t.start()
        return self

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.perf_counter() - self.t0, line.rstrip("\n")))

    def _sample(self) -> None:
        while self.proc.poll() is None:
            rss, pss = tree_memory_mib(self.proc.pid)
            self.peak_rss_mib, self.peak_pss_mib = max(self.peak_rss_mib, rss), max(self.peak_pss_mib, pss)
            time.sleep(0.25)

    def stop(self) -> None:
        """SIGTERM (nondiff writes a checkpoint and exits 0), then SIGKILL of the whole group after 30 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit (killing the group on timeout) and for the readers."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for t in self._threads:
            t.join(5)
        return self.proc.returncode

    @property
    def elapsed(self) -> float:
        """Seconds since launch."""
        return time.perf_counter() - self.t0

    def stderr_tail(self, n: int = 5) -> str:
        """The last lines of stderr, for error reports."""
        return "\n".join(line.rstrip() for line in self._stderr[-n:])

    def json_lines(self) -> list[dict[str, Any]]:
        """Every stdout line that parses as a JSON object."""
        out = []
        for _, line in self.lines:
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if isinstance(obj, dict):
                    out.append(obj)
        return out


def run_json(cmd: list[str], timeout: float) -> dict[str, Any]:
    """Run a child that prints one JSON object as its last stdout line; raise with its stderr on failure."""
    child = Child(cmd).start()
    rc = child.wait(timeout)
    objs = child.json_lines()
    if rc != 0 or not objs:
        raise RuntimeError(f"{' '.join(cmd[1:])} exited {rc}: {child.stderr_tail()}")
    return objs[-1]


def train_cmd(*args: str) -> list[str]:
    """``python train.py ARGS --quiet``."""
    return [PY, str(ROOT / "train.py"), *args, "--quiet"]
