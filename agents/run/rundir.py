"""The run directory: creation without overwriting, its layout, and finding checkpoints in it.

Layout::

    runs/<env>/<YYYYmmdd-HHMMSS>-s<seed>/
        config.yaml        resolved config, seed and package versions
        command.txt        every command line that trained in this directory, one per line
        tensorboard/       event files
        checkpoints/       step_<N>.safetensors (+ .json), the last K kept
        best/              model.safetensors from the best periodic evaluation
        final/             model.safetensors at the end of training
        crash/             model.safetensors written when training stopped on an unexpected error
        evaluations.jsonl  one line per periodic evaluation
        config.sig         HMAC of config.yaml under the user's key (agents/run/trust.py)
        lock               held (flock) by the one process training in this directory

Nothing here is written or deleted through a symbolic link: a run directory whose entries are links, or
lead outside it, is refused (another run's files must never be overwritten or pruned through it).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import shlex
import socket
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agents.run.checkpoint import atomic_write_bytes, is_temp_name, read_header
from envs.errors import CheckpointError, UserError

log = logging.getLogger(__name__)
SUBDIRS = ("tensorboard", "checkpoints", "best", "final", "crash")
FILES = ("config.yaml", "config.sig", "command.txt", "lock", "evaluations.jsonl")

STEP_RE = re.compile(r"^step_(\d+)\.safetensors$")


def safe_name(env: str) -> str:
    """A filesystem-friendly form of an env name (``nondiff/Robot-v0`` → ``nondiff_Robot-v0``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", env).strip("_") or "env"


@dataclass
class RunDir:
    """One training run's directory."""

    path: Path

    @property
    def config(self) -> Path:
        """``config.yaml``."""
        return self._inside("config.yaml")

    @property
    def signature(self) -> Path:
        """``config.sig``: this user's HMAC of config.yaml (agents/run/trust.py)."""
        return self._inside("config.sig")

    @property
    def tensorboard(self) -> Path:
        """``tensorboard/``."""
        return self._inside("tensorboard")

    @property
    def league(self) -> Path:
        """``league/``: a self-play run's snapshots and league states (agents/run/selfplay/), refused when it
        is a link (a resumed run would write its snapshots into the league of the run it points at)."""
        return self._inside("league")

    @property
    def checkpoints(self) -> Path:
        """``checkpoints/``."""
        return self._inside("checkpoints")

    @property
    def best(self) -> Path:
        """``best/model.safetensors``."""
        return self._inside("best") / "model.safetensors"

    @property
    def final(self) -> Path:
        """``final/model.safetensors``."""
        return self._inside("final") / "model.safetensors"

    @property
    def crash(self) -> Path:
        """``crash/model.safetensors``: the checkpoint written when training stopped on an unexpected
        error."""
        return self._inside("crash") / "model.safetensors"

    def _inside(self, name: str) -> Path:
        """``path/name``, refused when it is a symbolic link or leads outside the run directory."""
        p = self.path / name
        try:
            st = p.lstat()
        except FileNotFoundError:
            return p
        except OSError as e:
            raise UserError(f"run directory {str(self.path)!r}: cannot inspect {name!r} "
                            f"({e.strerror})") from e
        outside = not p.resolve().is_relative_to(self.path.resolve())
        if stat.S_ISLNK(st.st_mode) or outside:
            target = os.readlink(p) if stat.S_ISLNK(st.st_mode) else str(p.resolve())
            raise UserError(f"run directory {str(self.path)!r}: {name!r} is a symbolic link to {target!r}; "
                            "nondiff never writes or deletes through a link (it could reach another run's "
                            "files). Replace it with a real directory or file, e.g. "
                            f"mv {shlex.quote(str(p))} elsewhere")
        return p

    def check_layout(self) -> None:
        """Refuse the run directory when any of its own entries is a link or leads outside it, or is a file
        where nondiff keeps a directory or the other way round (a resume met it mid-run: exit 1). ``crash``
        is left to the failure path, which names the last good checkpoint when the crash save fails."""
        for name in (*SUBDIRS, "league", *FILES):
            p = self._inside(name)
            folder = name not in FILES
            if name != "crash" and p.exists() and p.is_dir() != folder:
                raise UserError(f"run directory {str(self.path)!r}: {name!r} is "
                                f"{'no directory' if folder else 'a directory, not a file'}, where nondiff "
                                f"keeps its {'folder' if folder else 'file'} {name!r}; move it away, e.g. "
                                f"mv {shlex.quote(str(p))} elsewhere")

    @classmethod
    def create(cls, env: str, seed: int, explicit: str | Path | None = None,
               root: str | Path = "runs") -> RunDir:
        """Make a new run directory; an existing non-empty one is never reused."""
        if explicit is not None:
            path = Path(explicit)
            if path.exists() and (not path.is_dir() or any(path.iterdir())):
                raise UserError(f"run directory {str(path)!r} already exists and is not empty; choose a new "
                                f"--run-dir, or continue it with --resume {path}")
        else:
            base = Path(root) / safe_name(env) / f"{time.strftime('%Y%m%d-%H%M%S')}-s{seed}"
            path, n = base, 1
            while path.exists():
                path, n = base.with_name(f"{base.name}.{n}"), n + 1
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path)
        run.check_layout()
        for sub in SUBDIRS[:4]:
            (path / sub).mkdir(exist_ok=True)
        return run

    def discard_if_empty(self) -> None:
        """Remove a run directory that :meth:`create` made and nothing has written to yet.

        Used when a run fails before it starts (bad backend settings), so that the same ``--run-dir``
        can be used again once the input is fixed. Anything holding a file is left in place.
        """
        for sub in SUBDIRS:
            d = self.path / sub
            if d.is_dir() and not d.is_symlink() and not any(d.iterdir()):
                d.rmdir()
        lock = self.path / "lock"
        if lock.is_file() and not lock.is_symlink() and {p.name for p in self.path.iterdir()} == {"lock"}:
            lock.unlink()
        if self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()

    def discard_unstarted(self) -> None:
        """Remove a new run's directory whose input was refused before its first step: what the start wrote
        (config.yaml, config.sig, command.txt, TensorBoard's event files), then :meth:`discard_if_empty`.

        So the same ``--run-dir`` works again once the input is fixed. Links are left alone, and anything
        else (a checkpoint, a league snapshot, a file of the user's) keeps the directory.
        """
        started = [self.path / n for n in ("config.yaml", "config.sig", "command.txt")]
        for p in [*started, *(self.path / "tensorboard").glob("events.out.tfevents.*")]:
            if p.is_file() and not p.is_symlink():
                p.unlink()
        self.discard_if_empty()

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing run directory, or a :class:`UserError` that says why it is not one."""
        p = Path(path)
        if not p.is_dir():  # e.g. its final/model.safetensors, which evaluate.py takes as --checkpoint
            what = "is a file, not a directory" if p.exists() else "does not exist"
            raise UserError(f"run directory {str(p)!r} {what}; pass a directory made by train.py "
                            "(runs/<env>/<time>-s<seed>)")
        if not (p / "config.yaml").is_file():
            study = (", but a study dir of train.py --optimize: its runs are its trial-NNNN/seed-S" if
                     (p / "study.yaml").is_file() else "")
            raise UserError(f"{str(p)!r} is not a nondiff run directory (no config.yaml{study}); pass a "
                            "directory made by train.py (runs/<env>/<time>-s<seed>)")
        run = cls(p)
        run.check_layout()
        return run

    def write_command(self, argv: list[str] | None = None) -> None:
        """Append the command line to ``command.txt`` (each resume adds a line).

        The one place a command line is written: secrets in it are redacted by
        ``agents.config.redact_argv`` where that exists.
        """
        args = list(argv if argv is not None else sys.argv)
        try:
            from agents import config as _config

            redact = getattr(_config, "redact_argv", None)
        except ImportError:
            redact = None
        if redact is not None:
            args = list(redact(args))
        line = shlex.join([Path(sys.executable).name, *args])
        path = self._inside("command.txt")
        old = path.read_text() if path.exists() else ""
        atomic_write_bytes(path, (old + line + "\n").encode())

    def step_checkpoints(self) -> list[tuple[int, Path]]:
        """Periodic checkpoints as ``(step, path)``, oldest first."""
        found = []
        for f in self.checkpoints.glob("step_*.safetensors"):
            m = STEP_RE.match(f.name)
            if m:
                found.append((int(m.group(1)), f))
        return sorted(found)

    def checkpoint_path(self, step: int) -> Path:
        """Where the periodic checkpoint for ``step`` goes."""
        return self.checkpoints / f"step_{step:010d}.safetensors"

    def rotate(self, keep: int) -> None:
        """Delete all but the newest ``keep`` periodic checkpoints, never through a symbolic link."""
        doomed = [f.name for _, f in self.step_checkpoints()[:-keep]]
        if not doomed:
            return
        with _open_dir(self.checkpoints) as fd:  # O_NOFOLLOW: a directory swapped for a link is refused
            for name in doomed:
                for n in (name, name[:-len(".safetensors")] + ".json"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(n, dir_fd=fd)  # unlink removes a link itself, never its target

    def latest(self) -> Path | None:
        """The newest checkpoint by step among ``checkpoints/``, ``final/`` and ``crash/``, or None.

        On a tie the periodic or final checkpoint wins over a crash checkpoint (it is an exact resume point).
        The step of final/ and crash/ comes from their header (:func:`agents.run.checkpoint.read_header`).
        """
        candidates = [(step, 2, f) for step, f in self.step_checkpoints()]
        for rank, path in ((1, self.final), (0, self.crash)):
            if path.is_file():
                candidates.append((read_header(path).num_timesteps, rank, path))
        return max(candidates, key=lambda c: (c[0], c[1]))[2] if candidates else None

    def remove_stale_temps(self) -> list[Path]:
        """Delete temp files a killed checkpoint write left (``.<name>.<random>.tmp``); return them.

        Only the run directory itself and its own subdirectories are searched, never through a link.
        Call it only while holding :meth:`lock` (a live trainer's temp files are not stale).
        """
        removed = []
        for sub in ("", *SUBDIRS):
            d = self._inside(sub) if sub else self.path
            if not d.is_dir():
                continue
            with _open_dir(d) as fd:
                for name in os.listdir(fd):
                    if not is_temp_name(name):
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        if stat.S_ISREG(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                            os.unlink(name, dir_fd=fd)
                            removed.append(d / name)
        if removed:
            log.info("removed %d stale temp file(s): %s", len(removed), ", ".join(map(str, removed)))
        return removed

    def resolve(self, which: str) -> Path:
        """Turn ``--checkpoint final|best|latest|PATH`` into a file path."""
        if which == "final":
            path = self.final
        elif which == "best":
            path = self.best
        elif which == "crash":
            path = self.crash
        elif which == "latest":
            latest = self.latest()
            if latest is None:
                raise CheckpointError(f"run {str(self.path)!r} has no checkpoint yet; train longer or pass "
                                      "--checkpoint PATH")
            path = latest
        else:
            path = Path(which)
        if not path.exists():
            raise CheckpointError(f"checkpoint {str(path)!r} does not exist in run {str(self.path)!r}; "
                                  "choose --checkpoint final, best, latest, crash or a path to a "
                                  ".safetensors file")
        return path

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive ``flock`` on ``lock`` while training; it dies with the process.

        The file records the holder's pid, host and start time (not its command line, which may hold a
        secret), read back only to name the live process when a second trainer is refused. Readers
        (evaluate.py) do not take the lock: checkpoints are replaced atomically.

        Raises:
            UserError: another live process trains in this directory (its pid and host are named).
        """
        path = self._inside("lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise UserError(f"run directory {str(self.path)!r}: cannot open its lock file ({e.strerror}); "
                            "check the directory's permissions") from e
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise UserError(f"run {str(self.path)!r} is being trained right now by {_holder(fd)}; a "
                                "second trainer would mix its checkpoints. Wait for it to finish or stop it "
                                "(Ctrl-C or kill -INT PID), then resume") from e
            info = {"pid": os.getpid(), "host": socket.gethostname(),
                    "started": time.strftime("%Y-%m-%d %H:%M:%S")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the flock


def _holder(fd: int) -> str:
    """Who holds the lock, from what that process wrote into the lock file."""
    try:
        info = json.loads(os.pread(fd, 65536, 0) or b"{}")
        return f"pid {int(info['pid'])} on host {info['host']} (since {info['started']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (it has not yet written its pid)"


@contextlib.contextmanager
def _open_dir(path: Path) -> Iterator[int]:
    """A directory file descriptor, refusing a symbolic link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UserError(f"{str(path)!r} is a symbolic link or not a directory; nondiff never deletes "
                            "through a link. Replace it with a real directory") from e
        raise
    try:
        yield fd
    finally:
        os.close(fd)
