"""Every tensor of a checkpoint checked before anything is built from it: one validation function per kind.

The header (:func:`agents.run.header.parse_header`) says which fields a checkpoint has; the functions
here check the tensors against it and against the saved spaces: names, shapes, dtypes, finiteness, and the
replay buffer's counters. A tensor that fails is :class:`~envs.errors.CheckpointError` "checkpoint X is
corrupted: tensor 'NAME' ..." (exit code 2), never a cast, a broadcast error or a NaN in the policy.

- :func:`check_sb3`: SB3 PPO/A2C (policy, optimiser, normalisation, RNG, last observations) and SAC/TD3
  (every optimiser, ``log_ent_coef``, OU noise, the replay buffer: :func:`check_replay`).
- :func:`check_rllib`: RLlib module weights, optimiser state, SAC's log α, observation filter.
- :func:`check_blackbox`: a black-box strategy's networks and data bank, RNG.
- :func:`load_policy_state`: tensors into a torch module, naming the first few that do not fit.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from agents.run.header import corrupted
from envs.errors import CheckpointError

if TYPE_CHECKING:
    from agents.run.checkpoint import Checkpoint

REPLAY_FIELDS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")
"""What SB3's replay buffer stores per transition; a checkpoint holds the filled rows of each."""


def check_finite(tensors: dict[str, torch.Tensor], path: Path | str,
                 names: Iterable[str] | None = None) -> None:
    """Every floating-point tensor (of ``names``, or all) holds finite values only.

    Raises:
        CheckpointError: "is corrupted: tensor 'NAME' holds N NaN/inf values of M".
    """
    for name in sorted(tensors if names is None else names):
        t = tensors[name]
        if (t.is_floating_point() or t.is_complex()) and t.numel():
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                raise corrupted(path, f"tensor {name!r} holds {bad:,} NaN or infinite value(s) of "
                                      f"{t.numel():,}")


def expect(tensors: dict[str, torch.Tensor], name: str, shape: tuple[int, ...] | None,
           dtype: torch.dtype | None, path: Path | str) -> torch.Tensor:
    """The tensor ``name``, present with exactly ``shape`` and ``dtype`` (None: any)."""
    if name not in tensors:
        raise corrupted(path, f"tensor {name!r} is missing")
    t = tensors[name]
    if shape is not None and tuple(t.shape) != shape:
        raise corrupted(path, f"tensor {name!r} has shape {list(t.shape)}, expected {list(shape)}")
    if dtype is not None and t.dtype != dtype:
        raise corrupted(path, f"tensor {name!r} has dtype {str(t.dtype).removeprefix('torch.')}, expected "
                              f"{str(dtype).removeprefix('torch.')} (it is refused, not cast)")
    return t


def check_rng(tensors: dict[str, torch.Tensor], path: Path | str) -> None:
    """The global RNG states that :func:`agents.run.checkpoint.rng_state` wrote."""
    state = expect(tensors, "rng/torch", None, torch.uint8, path)
    if state.ndim != 1:
        raise corrupted(path, f"tensor 'rng/torch' has shape {list(state.shape)}, expected one dimension")
    keys = expect(tensors, "rng/numpy_keys", (624,), torch.int64, path)
    if bool(((keys < 0) | (keys >= 2**32)).any()):
        raise corrupted(path, "tensor 'rng/numpy_keys' holds values outside [0, 2^32)")


def _torch_dtype(dtype: Any) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype


def _buffer_layout(space: Any, *, action: bool = False) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Per Dict key ('' for a flat space): the shape of one value in SB3's replay buffer, and its dtype."""
    from gymnasium import spaces

    if isinstance(space, spaces.Dict):
        return {f"/{k}": _buffer_layout(s)[""] for k, s in space.spaces.items()}
    if isinstance(space, spaces.Discrete):
        return {"": ((1,), torch.int64)}
    dtype = np.dtype(space.dtype)
    if action:  # SB3 stores a Box action flattened, float64 as float32
        dtype = np.dtype(np.float32) if dtype == np.float64 else dtype
        return {"": ((int(np.prod(space.shape)),), _torch_dtype(dtype))}
    shape = (len(space.nvec),) if isinstance(space, spaces.MultiDiscrete) else tuple(space.shape)
    return {"": (shape, _torch_dtype(dtype))}


def check_replay(tensors: dict[str, torch.Tensor], replay: dict[str, Any], observation_space: Any,
                 action_space: Any, path: Path | str) -> None:
    """SB3's replay buffer: counters consistent, every field's shape and dtype as the spaces make them.

    ``0 <= pos < buffer_size``; ``n`` (the rows saved) is ``buffer_size`` when ``full``, else ``pos``. Each
    field holds ``n`` rows of ``n_envs`` values: observations and next observations of the observation
    space (per Dict key), actions flattened, rewards, dones and timeouts as float32; all finite.
    """
    pos, n, size, n_envs, full = (replay[k] for k in ("pos", "n", "buffer_size", "n_envs", "full"))
    if size < 1 or n_envs < 1:
        raise corrupted(path, f"field 'off_policy.replay' has buffer_size {size} and n_envs {n_envs}, "
                              "expected both >= 1")
    if not 0 <= pos < size:
        raise corrupted(path, f"field 'off_policy.replay.pos' is {pos:,}, expected 0 <= pos < buffer_size "
                              f"({size:,})")
    if n != (size if full else pos):
        raise corrupted(path, f"field 'off_policy.replay' has n={n:,} rows with pos={pos:,}, full={full} and "
                              f"buffer_size={size:,}; expected n = {'buffer_size' if full else 'pos'}")
    names = []
    for field in REPLAY_FIELDS:
        layout: dict[str, tuple[tuple[int, ...], torch.dtype]]
        if field in ("rewards", "dones", "timeouts"):
            layout = {"": ((), torch.float32)}
        elif field == "actions":
            layout = _buffer_layout(action_space, action=True)
        else:
            layout = _buffer_layout(observation_space)
        for key, (shape, dtype) in layout.items():
            name = f"replay/{field}{key}"
            expect(tensors, name, (n, n_envs, *shape), dtype, path)
            names.append(name)
    extra = sorted(k for k in tensors if k.startswith("replay/") and k not in names)
    if extra:
        raise corrupted(path, f"tensor {extra[0]!r} is not part of a replay buffer of these spaces")
    check_finite(tensors, path, names)


def check_sb3(ckpt: Checkpoint) -> None:
    """An SB3 checkpoint, on-policy (PPO, A2C) or off-policy (SAC, TD3, with its replay buffer if saved).

    Raises:
        CheckpointError: the first tensor that is missing, misshapen, of another dtype or not finite.
    """
    tensors, extra, path = ckpt.tensors, ckpt.header.extra, ckpt.path
    if not any(k.startswith("policy/") for k in tensors):
        raise corrupted(path, "it holds no 'policy/' tensors")
    check_rng(tensors, path)
    obs_space, act_space = ckpt.header.spaces()
    replay = (extra.get("off_policy") or {}).get("replay")
    check_finite(tensors, path, [k for k in tensors if not k.startswith(("rng/", "replay/"))])
    norm = extra.get("normalize") or {}
    if norm.get("norm_obs") and "norm/obs_mean" in tensors:
        shape = tuple(getattr(obs_space, "shape", None) or ())
        expect(tensors, "norm/obs_mean", shape, None, path)
        expect(tensors, "norm/obs_var", shape, None, path)
    for name in sorted(k for k in tensors if k.startswith("norm/") and k.endswith("obs_var")):
        # norm/obs_var, or norm/<policy>/obs_var of a policies: map: shaped as its mean, never negative
        mean = expect(tensors, name.removesuffix("var") + "mean", None, None, path)
        if bool((expect(tensors, name, tuple(mean.shape), None, path) < 0).any()):
            raise corrupted(path, f"tensor {name!r} holds negative variances")
    if replay is not None:
        check_replay(tensors, replay, obs_space, act_space, path)
    elif any(k.startswith("replay/") for k in tensors):
        raise corrupted(path, "it holds 'replay/' tensors but its header says it saved no replay buffer")


def check_net_arch(ckpt: Checkpoint, net_arch: list[int]) -> None:
    """The config that will build the checkpoint's network asks for no more weights than its tensors hold:
    ``agent.net_arch`` layers of widths h₀, h₁, … have at least h₀ + Σ hᵢ₋₁·hᵢ weights, whatever feeds them.
    Checked before anything is built, so a config from elsewhere that names huge layers is refused in one
    line instead of allocating them (a network that fits its checkpoint always passes). Callers ask only
    for a backend that builds ``agent.net_arch`` (``Backend.builds_net_arch``).

    Raises:
        CheckpointError: "does not fit its config: agent.net_arch [...] needs at least N weights, its tensors
            hold M".
    """
    if not net_arch:
        return
    need = int(net_arch[0]) + sum(int(a) * int(b) for a, b in zip(net_arch, net_arch[1:], strict=False))
    held = sum(int(t.numel()) for t in ckpt.tensors.values())
    if need > held:
        raise CheckpointError(f"checkpoint {str(ckpt.path)!r} does not fit its config: agent.net_arch "
                              f"{list(net_arch)} needs at least {need:,} weights, its tensors hold {held:,}; "
                              "evaluate it with the config it was trained with")


def _tensor_refs(tree: Any) -> Iterable[str]:
    if isinstance(tree, dict):
        if set(tree) == {"$tensor"}:
            yield str(tree["$tensor"])
            return
        for v in tree.values():
            yield from _tensor_refs(v)
    elif isinstance(tree, list):
        for v in tree:
            yield from _tensor_refs(v)


def check_rllib(ckpt: Checkpoint) -> None:
    """An RLlib checkpoint: module weights, the optimiser state its header points at, log α, filter.

    Raises:
        CheckpointError: the first tensor that is missing, misshapen or not finite.
    """
    tensors, extra, path = ckpt.tensors, ckpt.header.extra, ckpt.path
    if not any(k.startswith("module/") for k in tensors):
        raise corrupted(path, "it holds no 'module/' tensors")
    for ref in _tensor_refs(extra.get("optimizer")):
        if ref not in tensors:
            raise corrupted(path, f"tensor {ref!r}, which the optimiser state refers to, is missing")
    check_finite(tensors, path)
    norm = extra.get("normalize") or {}
    if norm.get("norm_obs"):
        mean = expect(tensors, "norm/obs_mean", None, None, path)
        if bool((expect(tensors, "norm/obs_sum_sq", tuple(mean.shape), None, path) < 0).any()):
            raise corrupted(path, "tensor 'norm/obs_sum_sq' holds negative sums of squares")


def check_blackbox(ckpt: Checkpoint) -> None:
    """A black-box strategy's checkpoint: finite networks and data, each data bank's rows aligned, RNG.

    Raises:
        CheckpointError: the first tensor that is missing, misshapen or not finite.
    """
    tensors, path = ckpt.tensors, ckpt.path
    check_rng(tensors, path)
    check_finite(tensors, path, [k for k in tensors if not k.startswith("rng/")])
    for name in sorted(k for k in tensors if k.endswith("bank/x")):
        prefix = name[: -len("x")]
        rows = expect(tensors, name, None, None, path).shape[:1]
        for part in ("x", "c", "f"):
            t = expect(tensors, prefix + part, None, None, path)
            if t.ndim != 2 or t.shape[:1] != rows:
                raise corrupted(path, f"tensor {prefix + part!r} has shape {list(t.shape)}, expected "
                                      f"{rows[0]} rows of 2-D data like the bank's other parts")


def load_policy_state(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path,
                      prefix: str = "policy/") -> None:
    """Load a checkpoint's policy tensors (their names under ``prefix`` in the file) into ``module``, refusing
    another dtype, another shape or a missing/extra tensor (one-line :class:`~envs.errors.CheckpointError`
    that names the first few)."""
    own = module.state_dict()
    for name, value in state.items():  # load_state_dict would cast another dtype silently
        if name in own and value.dtype != own[name].dtype:
            raise corrupted(path, f"tensor '{prefix}{name}' has dtype {str(value.dtype)[6:]}, this "
                                  f"policy's is {str(own[name].dtype)[6:]} (it is refused, not cast)")
    missing, unexpected = [k for k in own if k not in state], [k for k in state if k not in own]
    shapes = [f"'{prefix}{k}' has shape {tuple(v.shape)}, this policy's {tuple(own[k].shape)}"
              for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    problems = ([_few(prefix, missing, "missing")] if missing else []) + (
        [_few(prefix, unexpected, "unexpected")] if unexpected else []) + shapes[:FEW] + (
        [f"{len(shapes) - FEW} more of another shape"] if len(shapes) > FEW else [])
    if not problems:
        try:
            module.load_state_dict(state)
            return
        except RuntimeError as e:  # all of torch's lines, as one
            problems = [" ".join(line.strip() for line in str(e).splitlines() if line.strip())[:600]]
    raise CheckpointError(f"checkpoint {str(path)!r} does not fit this policy ({'; '.join(problems)}); "
                          "evaluate it with the config it was trained with")


FEW = 3
"""Tensor names a one-line error lists before it says how many more there are."""


def _few(prefix: str, names: list[str], what: str) -> str:
    """``N tensor(s) WHAT: 'a', 'b', 'c' and K more``."""
    shown = ", ".join(f"'{prefix}{n}'" for n in names[:FEW])
    more = f" and {len(names) - FEW} more" if len(names) > FEW else ""
    return f"{len(names)} tensor{'s' * (len(names) > 1)} {what}: {shown}{more}"
