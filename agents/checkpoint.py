"""Checkpoint files: tensors in safetensors, metadata as JSON in its header, written atomically.

A nondiff checkpoint is one ``.safetensors`` file. Its tensors hold the policy, the optimiser state,
normalisation statistics and RNG states; its header metadata holds one JSON document (step counters,
spaces, config, RNG states that are not tensors). Nothing in it is ever unpickled. Files that carry
pickle (SB3 ``.zip``, ``.pkl``, ``.pt``) are refused unless the user passes ``--trust-checkpoint``.
A readable ``.json`` copy of the metadata sits beside each file; loading never needs it.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from agents.errors import CheckpointError
from envs.spaces import space_from_json, space_to_json

FORMAT = "nondiff-checkpoint/1"
PICKLE_SUFFIXES = (".zip", ".pkl", ".pickle", ".pt", ".pth", ".ckpt")


def fsync_dir(path: Path) -> None:
    """fsync a directory so that a rename inside it survives power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via temp file in the same dir, fsync, ``os.replace``, fsync of the dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


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


def _looks_pickled(path: Path) -> bool:
    """Pickle-carrying by suffix, or by content: a pickle opcode stream or a zip (torch.save, SB3 .zip)."""
    if path.suffix in PICKLE_SUFFIXES:
        return True
    head = path.read_bytes()[:9]
    header_len = int.from_bytes(head[:8], "little") if len(head) == 9 else 0
    if head[8:9] == b"{" and 0 < header_len < path.stat().st_size:
        return False  # a safetensors header
    return (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")) or head[:2] == b"PK"


def load(path: Path, *, trust: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint, refusing anything that could execute code on load.

    Raises:
        CheckpointError: missing, corrupted, pickle-carrying (without ``trust``) or of another format.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; choose --checkpoint final, best, latest "
                              "or a path to a .safetensors file")
    if _looks_pickled(path):
        if not trust:
            raise CheckpointError(f"checkpoint {str(path)!r} carries a pickle payload, which can run arbitrary code "
                                  "when loaded; refused. Pass --trust-checkpoint only if you trust its origin")
        raise CheckpointError(f"checkpoint {str(path)!r} is a pickle file; nondiff reads only its own .safetensors "
                              "checkpoints (convert it by loading it in SB3 and saving with nondiff)")
    data = path.read_bytes()
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + header_len])
        meta = json.loads(header["__metadata__"]["nondiff"])
    except (SafetensorError, ValueError, KeyError, TypeError, json.JSONDecodeError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupted or not a nondiff checkpoint ({e}); "
                              "use another one (--checkpoint best|latest) or retrain") from e
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {str(path)!r} has format {meta.get('format')!r}, expected {FORMAT!r}")
    for alias, name in meta.get("tensor_aliases", {}).items():
        if name not in tensors:
            raise CheckpointError(f"checkpoint {str(path)!r} is corrupted: tensor {alias!r} refers to missing {name!r}")
        tensors[alias] = tensors[name]
    return tensors, meta


# -- RNG state ----------------------------------------------------------------------------------------
def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Python, NumPy and torch global RNG states, split into tensors and JSON."""
    np_state: Any = np.random.get_state()
    tensors = {"rng/torch": torch.get_rng_state(), "rng/numpy_keys": torch.from_numpy(np_state[1].astype(np.int64))}
    meta = {"python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
            "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    v, state, gauss = meta["python"]
    random.setstate((v, tuple(state), gauss))
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, tensors["rng/numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["rng/torch"])


# -- spaces ----------------------------------------------------------------------------------------------
__all__ = ["space_from_json", "space_to_json"]  # re-exported for the backends


def base_meta(backend: str, algo: str, step: int, seed: int, spaces: tuple[spaces.Space, spaces.Space],
              config: dict[str, Any]) -> dict[str, Any]:
    """The metadata every backend's checkpoint carries: who wrote it, at which step, for which spaces."""
    return {"backend": backend, "algo": algo, "num_timesteps": int(step), "seed": seed,
            "observation_space": space_to_json(spaces[0]), "action_space": space_to_json(spaces[1]),
            "config": config, "saved_at": time.time()}


def check_spaces(meta: dict[str, Any], observation_space: spaces.Space, action_space: spaces.Space, where: str) -> None:
    """Refuse a checkpoint whose saved spaces differ from the env's (SB3's check_for_correct_spaces)."""
    for label, saved, actual in (("observation", meta["observation_space"], observation_space),
                                 ("action", meta["action_space"], action_space)):
        want = space_from_json(saved)
        if want != actual:
            raise CheckpointError(f"{where}: the checkpoint was trained with {label} space {want}, but the env has "
                                  f"{actual}; evaluate it with the env and settings it was trained on")
