"""Trainer-side helpers for spawned programs: a pre-flight check, the environment they inherit and a
stderr tail bounded in bytes."""

from __future__ import annotations

import collections
import os
import shlex
import shutil
import threading
from pathlib import Path

from envs import errors as E

ASSETS = Path(__file__).resolve().parent.parent / "adapters" / "assets"
"""What ``{assets}`` stands for in a command: the folder of nondiff's shipped assets (e.g. the Godot game)."""
PRIVATE_VARIABLES = ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE")
"""Variables a program never inherits: the private Ray's credentials (a program inside an env runner would
otherwise hold the key to the cluster). ``NONDIFF_TOKEN`` is kept: pipe programs check the bridge token
with it."""
INSTALL = {"godot3-server": "apt-get install godot3-server", "godot3": "apt-get install godot3",
           "xvfb-run": "apt-get install xvfb"}
"""The one command that installs a program nondiff's adapters start (envs/adapters/godot.py), named when it is
missing."""
STDERR_LINES = 20
"""Lines of a program's stderr kept for fault reports."""
STDERR_BYTES = 64 * 1024
"""Bytes of a program's stderr kept for fault reports, whatever its lines' lengths."""


class StderrTail:
    """The last lines a program wrote to stderr, bounded in lines and in bytes, fed in chunks."""

    def __init__(self, max_lines: int = STDERR_LINES, max_bytes: int = STDERR_BYTES) -> None:
        self.max_lines, self.max_bytes = max_lines, max_bytes
        self._lines: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._partial = bytearray()
        self._lock = threading.Lock()

    def feed(self, chunk: bytes) -> None:
        """Add raw bytes; only the newest ``max_bytes`` are ever kept."""
        with self._lock:
            *done, rest = chunk.split(b"\n")
            for piece in done:
                self._partial += piece
                self._push(bytes(self._partial))
                self._partial.clear()
            self._partial += rest
            if len(self._partial) > self.max_bytes:  # a flood without newlines: keep its newest bytes
                del self._partial[:len(self._partial) - self.max_bytes]

    def _push(self, line: bytes) -> None:
        line = line[-self.max_bytes:]
        self._lines.append(line)
        self._size += len(line)
        while len(self._lines) > self.max_lines or self._size + len(self._partial) > self.max_bytes:
            self._size -= len(self._lines.popleft())
            if not self._lines:
                break

    def lines(self) -> list[str]:
        """The kept lines, the unfinished one last, decoded with replacement."""
        with self._lock:
            raw = [*self._lines, *([bytes(self._partial)] if self._partial else [])]
        return [b.decode(errors="replace").rstrip() for b in raw]

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._lines.clear()
            self._partial.clear()
            self._size = 0


def drain(fd: int, tail: StderrTail) -> None:
    """Read a program's stderr in chunks until end of stream (never line by line)."""
    try:
        while chunk := os.read(fd, 1 << 20):
            tail.feed(chunk)
    except OSError:
        pass
    finally:
        os.close(fd)


XVFB_OPTIONS = ("-e", "-f", "-n", "-p", "-s", "-w")
"""``xvfb-run`` options that take a value (the program to run comes after them)."""


def under_xvfb(argv: list[str]) -> list[str]:
    """The command ``xvfb-run`` runs (``argv`` itself when it is not started by ``xvfb-run``)."""
    if not argv or os.path.basename(argv[0]) != "xvfb-run":
        return argv
    i = 1
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] in XVFB_OPTIONS else 1
    return argv[i:]


def check_program(argv: list[str], cwd: str | None) -> None:
    """Raise :class:`~envs.errors.LaunchError` when the program or its cwd is missing or not
    executable (for a program started by ``xvfb-run``, that one too)."""
    inner = under_xvfb(argv)
    if inner is not argv and inner:  # xvfb-run, then the program it runs
        check_program(argv[:1], cwd)
        check_program(inner, cwd)
        return
    if not argv:
        raise E.LaunchError("env.command is empty; give the program to run, e.g. "
                            "env.command='./my_sim --fast'")
    if cwd is not None and not os.path.isdir(cwd):
        raise E.LaunchError(f"env.cwd {cwd!r} is not a directory")
    prog = argv[0]
    if "/" not in prog:
        if shutil.which(prog) is None and prog in INSTALL:
            raise E.LaunchError(f"program {prog!r} is not installed; install it with: {INSTALL[prog]}")
        if shutil.which(prog) is None:
            raise E.LaunchError(f"program {prog!r} was not found on PATH; give its path, e.g. ./{prog}")
        check_project(argv, cwd)
        return
    path = os.path.join(cwd or ".", prog)
    if not os.path.isfile(path):
        raise E.LaunchError(f"program {prog!r} does not exist (looked at {os.path.abspath(path)})")
    if not os.access(path, os.X_OK):
        raise E.LaunchError(f"program {prog!r} is not executable; run: chmod +x {path}")
    check_project(argv, cwd)


def check_project(argv: list[str], cwd: str | None) -> None:
    """Raise :class:`~envs.errors.LaunchError` when a Godot command's ``--fixed-fps`` is not a positive
    integer, its ``--path`` is not a project folder or the scene it names (``res://….tscn``) is not in it.

    Godot 3 given a ``--path`` without ``project.godot`` neither fails nor connects: it waits for ever, so
    each start cost ``reset_timeout`` seconds, restarts included, before a line that did not say why. A
    missing scene exits at once, and was restarted up to ``max_restarts`` times for nothing. With
    ``--fixed-fps 0`` (or a negative one) Godot never runs a physics tick, so it never connects either.
    """
    if "godot" not in os.path.basename(argv[0]).lower():
        return
    fps = argv[argv.index("--fixed-fps") + 1] if "--fixed-fps" in argv[:-1] else "60"
    if not fps.isdigit() or int(fps) < 1:  # Godot would never run a physics tick, so never connect
        raise E.LaunchError(f"godot: env.command's --fixed-fps {fps!r} must be a whole number of physics "
                            "ticks per second >= 1, e.g. --fixed-fps 60")
    if "--path" not in argv[:-1]:
        return
    given = argv[argv.index("--path") + 1]
    folder = os.path.abspath(os.path.join(cwd or ".", given.replace("{assets}", str(ASSETS))))
    if not os.path.isfile(os.path.join(folder, "project.godot")):
        what = "does not exist" if not os.path.exists(folder) else "is a file" if os.path.isfile(folder) \
            else "holds no project.godot"
        raise E.LaunchError(f"godot: env.command's --path {given!r} is not a Godot project folder ({folder} "
                            f"{what}); point --path at the folder that holds your project.godot, e.g. "
                            "--path {assets}/godot for the shipped game")
    scenes = [a for a in argv if a.startswith("res://") and a.endswith((".tscn", ".scn"))]
    for scene in scenes:
        if not os.path.isfile(os.path.join(folder, scene.removeprefix("res://"))):
            raise E.LaunchError(f"godot: env.command names the scene {scene!r}, which is not in the project "
                                f"{folder}; give a scene of the project (res:// is the --path folder), e.g. "
                                "res://game/main.tscn")


def child_environment() -> dict[str, str]:
    """The trainer's environment minus :data:`PRIVATE_VARIABLES` (docs/protocol.md, "Environment")."""
    return {k: v for k, v in os.environ.items() if k not in PRIVATE_VARIABLES}


def split_command(command: str) -> list[str]:
    """``env.command`` as arguments (shell quoting, no shell); a non-string or an unbalanced quote is a
    ``ValueError`` that names the fix."""
    if not isinstance(command, str):  # a YAML list or number: shlex would fail with "no attribute 'read'"
        raise ValueError(f"process: env.command must be one string, the command line (e.g. env.command: "
                         f"'./sim --fast'), got {type(command).__name__} {command!r}; write it as one string")
    try:
        return shlex.split(command)
    except ValueError as e:
        raise ValueError(f"process: env.command {command!r} cannot be split into arguments: {e}") from e
