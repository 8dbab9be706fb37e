"""Checkpoint files: tensors in safetensors, metadata as JSON in its header, written atomically.

A nondiff checkpoint is one ``.safetensors`` file. Its tensors hold the policy, the optimiser state,
normalisation statistics and RNG states; its header metadata holds one JSON document (step counters,
spaces, config, RNG states that are not tensors). Nothing in it is ever unpickled. Files that carry
pickle (SB3 ``.zip``, ``.pkl``, ``.pt``) are refused unless the user passes ``--trust-checkpoint``.
A readable ``.json`` copy of the metadata sits beside each file; loading never needs it.

The metadata is one typed record, :class:`~agents.run.header.CheckpointHeader`, parsed by
:func:`~agents.run.header.parse_header` only (agents/run/header.py). :func:`read_header` reads only the
header of a file (8 bytes plus at most :data:`MAX_HEADER` bytes), so finding the step of a huge checkpoint
does not read its tensors.
"""

from __future__ import annotations

import json
import os
import random
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from gymnasium import spaces

from agents.run.header import FORMAT, CheckpointHeader, corrupted, parse_header
from envs.errors import CheckpointError
from envs.spaces import space_to_json

if TYPE_CHECKING:  # torch is imported where tensors are made: a run refused before that never loads it
    import torch

PICKLE_SUFFIXES = (".zip", ".pkl", ".pickle", ".pt", ".pth", ".ckpt")
MAX_HEADER = 100 * 2**20
"""The largest safetensors header nondiff reads (bytes); a larger length field means a corrupted file."""
TEMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{6,}\.tmp$")
"""Names of the temp files :func:`atomic_write_bytes` writes (``.<name>.<random>.tmp``)."""


def fsync_dir(path: Path) -> None:
    """fsync a directory so that a rename inside it survives power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via temp file in the same dir, fsync, ``os.replace``, fsync of the dir.

    Raises:
        OSError: with ``filename`` set to ``path`` (a full disk, a file-size limit, a read-only file system),
            so that the message can name the file; the previous content of ``path`` is left intact.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    fsync_dir(path.parent)


def is_temp_name(name: str) -> bool:
    """True for the name of a temp file that :func:`atomic_write_bytes` left behind (killed mid-write)."""
    return TEMP_RE.match(name) is not None


def save(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Atomically write a checkpoint file and its readable JSON sidecar."""
    from safetensors.torch import save as st_save

    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[int, tuple[int, ...], str], str] = {}
    for name, tensor in tensors.items():  # tied weights (a shared CNN) are stored once
        key = (tensor.data_ptr(), tuple(tensor.shape), str(tensor.dtype))
        if tensor.numel() and key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
            unique[name] = tensor.detach().cpu().contiguous()
    meta = {"format": FORMAT, **meta, "tensor_aliases": aliases}
    blob = st_save(unique, metadata={"nondiff": json.dumps(meta)})
    atomic_write_bytes(path, blob)
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(meta, indent=1, default=str).encode())
    return path


def _head(path: Path, n: int) -> tuple[bytes, int]:
    """The first ``n`` bytes of a file and its size, read without reading the rest."""
    with open(path, "rb") as f:
        return f.read(n), os.fstat(f.fileno()).st_size


def _looks_pickled(path: Path) -> bool:
    """Pickle-carrying by suffix, or by content: a pickle opcode stream or a zip (torch.save, SB3 .zip)."""
    if path.suffix in PICKLE_SUFFIXES:
        return True
    head, size = _head(path, 9)
    header_len = int.from_bytes(head[:8], "little") if len(head) == 9 else 0
    if head[8:9] == b"{" and 0 < header_len < size:
        return False  # a safetensors header
    return (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")) or head[:2] == b"PK"


def _check_readable(path: Path, trust: bool) -> None:
    """Refuse a missing file and anything that carries pickle, before any of it is parsed."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; choose --checkpoint final, best, "
                              "latest or a path to a .safetensors file")
    if _looks_pickled(path):
        if not trust:
            raise CheckpointError(f"checkpoint {str(path)!r} carries a pickle payload, which can run "
                                  "arbitrary code when loaded; refused. Pass --trust-checkpoint only if you "
                                  "trust its origin")
        raise CheckpointError(f"checkpoint {str(path)!r} is a pickle file; nondiff reads only its own "
                              ".safetensors checkpoints (convert it by loading it in SB3 and saving with "
                              "nondiff)")


def _meta_from_header(raw: bytes, path: Path) -> Any:
    """The nondiff metadata document inside a safetensors JSON header."""
    try:
        header = json.loads(raw)
        return json.loads(header["__metadata__"]["nondiff"])
    except RecursionError as e:
        raise corrupted(path, "its header is nested too deeply") from e
    except (ValueError, KeyError, TypeError) as e:
        raise corrupted(path, f"no nondiff metadata in its header ({type(e).__name__}: {e})") from e


def read_header(path: Path, *, trust: bool = False) -> CheckpointHeader:
    """The validated header of a checkpoint file, reading at most 8 + :data:`MAX_HEADER` bytes.

    Raises:
        CheckpointError: missing, pickle-carrying, corrupted, or a header field missing or of the wrong type.
    """
    _check_readable(path, trust)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < n <= min(MAX_HEADER, size - 8):
            raise corrupted(path, f"header length {n} does not fit a file of {size} bytes "
                                  f"(limit {MAX_HEADER})")
        raw = f.read(n)
    return parse_header(_meta_from_header(raw, path), path)


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint as read once by :func:`load`: where it came from, its typed header and its tensors.

    Attributes:
        path: the ``.safetensors`` file.
        header: the validated metadata (:class:`~agents.run.header.CheckpointHeader`).
        tensors: every tensor by name, tied weights resolved.
    """

    path: Path
    header: CheckpointHeader
    tensors: dict[str, torch.Tensor]


def load(path: Path, *, trust: bool = False, backend: str | None = None) -> Checkpoint:
    """Read a checkpoint, refusing anything that could execute code on load.

    Args:
        path: the ``.safetensors`` file.
        trust: allow what ``--trust-checkpoint`` allows.
        backend: refuse a checkpoint that another backend wrote.

    Returns:
        The :class:`Checkpoint`: its header validated by :func:`parse_header`, its tensors (aliases resolved).

    Raises:
        CheckpointError: missing, corrupted, pickle-carrying (without ``trust``), of another format, or with
            a header field missing or of the wrong type.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    _check_readable(path, trust)
    data = path.read_bytes()  # once: the header and the tensors come from the same bytes
    n = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    if not 0 < n <= min(MAX_HEADER, len(data) - 8):
        raise corrupted(path, f"header length {n} does not fit a file of {len(data)} bytes")
    header = parse_header(_meta_from_header(data[8:8 + n], path), path)
    if backend is not None and header.backend != backend:
        raise CheckpointError(f"checkpoint {str(path)!r} was written by backend {header.backend!r}, "
                              f"not {backend!r}; evaluate or resume it with --backend {header.backend}")
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise corrupted(path, f"its tensors cannot be read ({e})") from e
    for alias, name in header.tensor_aliases.items():
        if name not in tensors:
            raise corrupted(path, f"tensor {alias!r} refers to missing {name!r}")
        tensors[alias] = tensors[name]
    return Checkpoint(path, header, tensors)


# -- RNG state ----------------------------------------------------------------------------------------
def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Python, NumPy and torch global RNG states, split into tensors and JSON."""
    import torch

    np_state: Any = np.random.get_state()
    tensors = {"rng/torch": torch.get_rng_state(),
               "rng/numpy_keys": torch.from_numpy(np_state[1].astype(np.int64))}
    meta = {"python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
            "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    import torch

    v, state, gauss = meta["python"]
    random.setstate((v, tuple(state), gauss))
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, tensors["rng/numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["rng/torch"])


# -- spaces ----------------------------------------------------------------------------------------------
def base_meta(backend: str, algo: str, step: int, seed: int, spaces: tuple[spaces.Space, spaces.Space],
              config: dict[str, Any]) -> dict[str, Any]:
    """The metadata every backend's checkpoint carries: who wrote it, at which step, for which spaces."""
    return {"backend": backend, "algo": algo, "num_timesteps": int(step), "seed": seed,
            "observation_space": space_to_json(spaces[0]), "action_space": space_to_json(spaces[1]),
            "config": config, "saved_at": time.time()}


def check_spaces(header: CheckpointHeader, observation_space: spaces.Space, action_space: spaces.Space,
                 where: str) -> None:
    """Refuse a checkpoint whose saved spaces differ from the env's (SB3's check_for_correct_spaces)."""
    for label, want, actual in zip(("observation", "action"), header.spaces(),
                                   (observation_space, action_space)):
        if want != actual:
            raise CheckpointError(f"{where}: the checkpoint was trained with {label} space {want}, but "
                                  f"the env has {actual}; evaluate it with the env and settings it was "
                                  "trained on")
