"""The run directory: creation without overwriting, its layout, and finding checkpoints in it.

Layout::

    runs/<env>/<YYYYmmdd-HHMMSS>-s<seed>/
        config.yaml        resolved config, seed and package versions
        command.txt        every command line that trained in this directory, one per line
        tensorboard/       event files
        checkpoints/       step_<N>.safetensors (+ .json), the last K kept
        best/              model.safetensors from the best periodic evaluation
        final/             model.safetensors at the end of training
        evaluations.jsonl  one line per periodic evaluation
"""

from __future__ import annotations

import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from agents.checkpoint import atomic_write_bytes
from agents.errors import CheckpointError, UserError

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
        return self.path / "config.yaml"

    @property
    def tensorboard(self) -> Path:
        """``tensorboard/``."""
        return self.path / "tensorboard"

    @property
    def checkpoints(self) -> Path:
        """``checkpoints/``."""
        return self.path / "checkpoints"

    @property
    def best(self) -> Path:
        """``best/model.safetensors``."""
        return self.path / "best" / "model.safetensors"

    @property
    def final(self) -> Path:
        """``final/model.safetensors``."""
        return self.path / "final" / "model.safetensors"

    @classmethod
    def create(cls, env: str, seed: int, explicit: str | Path | None = None, root: str | Path = "runs") -> RunDir:
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
        for sub in ("tensorboard", "checkpoints", "best", "final"):
            (path / sub).mkdir(exist_ok=True)
        return cls(path)

    def discard_if_empty(self) -> None:
        """Remove a run directory that :meth:`create` made and nothing has written to yet.

        Used when a run fails before it starts (bad backend settings), so that the same ``--run-dir``
        can be used again once the input is fixed. Anything holding a file is left in place.
        """
        for sub in ("tensorboard", "checkpoints", "best", "final"):
            d = self.path / sub
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        if self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing run directory, or a :class:`UserError` that says why it is not one."""
        p = Path(path)
        if not p.is_dir():
            raise UserError(f"run directory {str(p)!r} does not exist; pass a directory made by train.py "
                            "(runs/<env>/<time>-s<seed>)")
        if not (p / "config.yaml").is_file():
            raise UserError(f"{str(p)!r} is not a nondiff run directory (no config.yaml); pass a directory made by "
                            "train.py (runs/<env>/<time>-s<seed>)")
        return cls(p)

    def write_command(self, argv: list[str] | None = None) -> None:
        """Append the command line to ``command.txt`` (each resume adds a line)."""
        line = shlex.join([Path(sys.executable).name, *(argv if argv is not None else sys.argv)])
        old = (self.path / "command.txt").read_text() if (self.path / "command.txt").exists() else ""
        atomic_write_bytes(self.path / "command.txt", (old + line + "\n").encode())

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
        """Delete all but the newest ``keep`` periodic checkpoints."""
        for _, f in self.step_checkpoints()[:-keep]:
            f.unlink(missing_ok=True)
            f.with_suffix(".json").unlink(missing_ok=True)

    def latest(self) -> Path | None:
        """The newest checkpoint by step among ``checkpoints/`` and ``final/``, or None."""
        import json

        candidates = list(self.step_checkpoints())
        if self.final.is_file():
            side = self.final.with_suffix(".json")
            step = json.loads(side.read_text()).get("num_timesteps", 0) if side.is_file() else 0
            candidates.append((step, self.final))
        return max(candidates, key=lambda c: c[0])[1] if candidates else None

    def resolve(self, which: str) -> Path:
        """Turn ``--checkpoint final|best|latest|PATH`` into a file path."""
        if which == "final":
            path = self.final
        elif which == "best":
            path = self.best
        elif which == "latest":
            latest = self.latest()
            if latest is None:
                raise CheckpointError(f"run {str(self.path)!r} has no checkpoint yet; train longer or pass "
                                      "--checkpoint PATH")
            path = latest
        else:
            path = Path(which)
        if not path.exists():
            raise CheckpointError(f"checkpoint {str(path)!r} does not exist in run {str(self.path)!r}; choose "
                                  "--checkpoint final, best, latest or a path to a .safetensors file")
        return path
