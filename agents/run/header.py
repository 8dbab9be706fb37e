"""The checkpoint header: the metadata every nondiff checkpoint carries, as one typed record.

:class:`CheckpointHeader` is parsed by :func:`parse_header` only: a missing or wrongly typed field is a
:class:`~envs.errors.CheckpointError` ("checkpoint X is corrupted: field 'num_timesteps' ..."), never a
``KeyError``. agents/run/checkpoint.py writes and reads the files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envs.errors import CheckpointError
from envs.spaces import space_from_json

if TYPE_CHECKING:
    import gymnasium as gym

FORMAT = "nondiff-checkpoint/1"


CORRUPTED_FIX = "use another one (--checkpoint best|latest) or retrain"
"""How :func:`corrupted` says to fix it (evaluate.py's words; a self-play opponent's loader says its own)."""


def corrupted(path: Path | str, what: str) -> CheckpointError:
    """The one-line error for a damaged checkpoint: "checkpoint X is corrupted: WHAT; use another one ..."."""
    return CheckpointError(f"checkpoint {str(path)!r} is corrupted: {what}; {CORRUPTED_FIX}")


@dataclass(frozen=True)
class CheckpointHeader:
    """The metadata every nondiff checkpoint carries, typed; written by
    :func:`~agents.run.checkpoint.save`, read by :func:`parse_header`.

    Attributes:
        format: :data:`FORMAT`.
        backend: the backend that wrote it (``sb3``, ``rllib``).
        algo: the algorithm (``ppo``, ``a2c``, ``sac``, ``td3``).
        num_timesteps: the global env step it was written at.
        seed: the run's seed.
        observation_space: the observation space as :func:`space_to_json` writes it.
        action_space: the action space, likewise.
        config: the resolved run config.
        saved_at: Unix time of writing.
        tensor_aliases: tensors stored once under another name (tied weights).
        extra: backend-specific fields (optimizer, RNG, normalisation, env states ...), type-checked where
            known.
    """

    format: str
    backend: str
    algo: str
    num_timesteps: int
    seed: int | None
    observation_space: dict[str, Any]
    action_space: dict[str, Any]
    config: dict[str, Any]
    saved_at: float | None = None
    tensor_aliases: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def spaces(self) -> tuple[gym.Space, gym.Space]:
        """The observation and action spaces it was trained on, as Gymnasium spaces."""
        return space_from_json(self.observation_space), space_from_json(self.action_space)

    def to_json(self) -> dict[str, Any]:
        """The metadata document, as :func:`~agents.run.checkpoint.save` writes it."""
        core = {k: getattr(self, k) for k in _FIELDS if k != "extra"}
        return {**self.extra, **core}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_CHECKS: dict[str, tuple[str, Any]] = {  # field -> (expected, predicate); None allowed where noted below
    "format": ("a string", lambda v: isinstance(v, str)),
    "backend": ("a string", lambda v: isinstance(v, str)),
    "algo": ("a string", lambda v: isinstance(v, str)),
    "num_timesteps": ("a non-negative integer", lambda v: _is_int(v) and v >= 0),
    "seed": ("an integer or null", lambda v: v is None or _is_int(v)),
    "observation_space": ("a space description (an object)", lambda v: isinstance(v, dict)),
    "action_space": ("a space description (an object)", lambda v: isinstance(v, dict)),
    "config": ("an object", lambda v: isinstance(v, dict)),
    "saved_at": ("a number or null",
                 lambda v: v is None or (isinstance(v, int | float) and not isinstance(v, bool))),
    "tensor_aliases": ("an object of names", lambda v: isinstance(v, dict)
                       and all(isinstance(a, str) and isinstance(b, str) for a, b in v.items())),
}
_FIELDS = ("format", "backend", "algo", "num_timesteps", "seed", "observation_space", "action_space",
           "config", "saved_at", "tensor_aliases", "extra")
_OPTIONAL: dict[str, Any] = {"saved_at": None, "tensor_aliases": {}}
_EXTRA: dict[str, tuple[str, Any]] = {  # backend-specific fields, checked when present
    "n_updates": ("an integer", _is_int),
    "optimizer": ("an object with 'param_groups' (list) and 'state' (object), or null",
                  lambda v: v is None or (isinstance(v, dict) and isinstance(v.get("param_groups"), list)
                                          and isinstance(v.get("state"), dict))),
    "rng": ("an object with 'python' and 'numpy' lists",
            lambda v: isinstance(v, dict) and isinstance(v.get("python"), list) and len(v["python"]) == 3
            and isinstance(v.get("numpy"), list) and len(v["numpy"]) == 4),
    "normalize": ("an object or null", lambda v: v is None or isinstance(v, dict)),
    "env_states": ("a list or null", lambda v: v is None or isinstance(v, list)),
    "ep_info_buffer": ("a list", lambda v: isinstance(v, list)),
    "optimizers": ("an object (optimiser name -> {'param_groups': list, 'state': object})",
                   lambda v: isinstance(v, dict)
                   and all(isinstance(o, dict) and isinstance(o.get("param_groups"), list)
                           and isinstance(o.get("state"), dict) for o in v.values())),
    "policies": ("an object (policy name -> {'agents': list, 'num_timesteps': integer, 'n_updates': integer, "
                 "'optimizer': object, 'ep_info_buffer': list, 'episodes': list})", lambda v: _policies(v)),
    "off_policy": ("an object with 'episode_num' (integer), 'action_space_rng' (object) and 'replay' "
                   "(object with integer 'pos', 'n', 'buffer_size', 'n_envs' and boolean 'full', or null)",
                   lambda v: _off_policy(v)),
}
# RLlib keys its optimiser state by optimiser name
_EXTRA_OVERRIDES: dict[str, dict[str, tuple[str, Any]]] = {
    "rllib": {"optimizer": ("an object (optimiser name -> state) or null",
                            lambda v: v is None or isinstance(v, dict))},
}
_REQUIRED_EXTRA = {"sb3": ("n_updates", "optimizer", "rng")}
_REQUIRED_ALGO_EXTRA = {("sb3", "sac"): ("optimizers", "off_policy"),
                        ("sb3", "td3"): ("optimizers", "off_policy")}
"""Fields an algorithm's checkpoint must carry beyond its backend's (SAC/TD3: every optimiser, the replay
state)."""


def _policies(v: Any) -> bool:
    """A ``policies:`` map's per-policy state (agents/sb3/multipolicy.py)."""
    return isinstance(v, dict) and all(
        isinstance(p, dict) and isinstance(p.get("agents"), list) and _is_int(p.get("num_timesteps"))
        and _is_int(p.get("n_updates")) and isinstance(p.get("optimizer"), dict)
        and isinstance(p["optimizer"].get("param_groups"), list)
        and isinstance(p["optimizer"].get("state"), dict)
        and isinstance(p.get("ep_info_buffer"), list) and isinstance(p.get("episodes"), list)
        for p in v.values())


def _off_policy(v: Any) -> bool:
    if not (isinstance(v, dict) and _is_int(v.get("episode_num"))
            and isinstance(v.get("action_space_rng"), dict)):

        return False
    r = v.get("replay")
    return r is None or (isinstance(r, dict) and all(_is_int(r.get(k)) and r[k] >= 0
                                                     for k in ("pos", "n", "buffer_size", "n_envs"))
                         and isinstance(r.get("full"), bool) and r["n"] <= r["buffer_size"])


def parse_header(meta: Any, where: Path | str) -> CheckpointHeader:
    """The one parser of checkpoint metadata: a :class:`CheckpointHeader`, or a one-line error.

    Used by :func:`load`, :func:`read_header` (runner, ``RunDir.latest``) and so by every backend.

    Raises:
        CheckpointError: "checkpoint X is corrupted: field 'num_timesteps' ..." for a missing or mistyped
            field, or "has format ..." for another format.
    """
    if not isinstance(meta, dict):
        raise corrupted(where, f"its metadata is {type(meta).__name__}, expected an object")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {str(where)!r} has format {meta.get('format')!r}, "
                              f"expected {FORMAT!r}; it was not written by this version of nondiff")
    values: dict[str, Any] = {}
    for name, (expected, ok) in _CHECKS.items():
        if name not in meta:
            if name in _OPTIONAL:
                values[name] = _OPTIONAL[name]
                continue
            raise corrupted(where, f"field {name!r} is missing (expected {expected})")
        if not ok(meta[name]):
            raise corrupted(where, f"field {name!r} should be {expected}, got {type(meta[name]).__name__} "
                                    f"{_short(meta[name])}")
        values[name] = meta[name]
    for name in ("observation_space", "action_space"):
        try:
            space_from_json(values[name])
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError) as e:
            raise corrupted(where, f"field {name!r} is not a space description "
                                   f"({type(e).__name__}: {e})") from e

    extra = {k: v for k, v in meta.items() if k not in _CHECKS}
    for name in (*_REQUIRED_EXTRA.get(values["backend"], ()),
                 *_REQUIRED_ALGO_EXTRA.get((values["backend"], values["algo"]), ())):
        if name not in extra:
            raise corrupted(where, f"field {name!r} is missing (expected {_EXTRA[name][0]})")
    for name, (expected, ok) in {**_EXTRA, **_EXTRA_OVERRIDES.get(values["backend"], {})}.items():
        if name in extra and not ok(extra[name]):
            raise corrupted(where, f"field {name!r} should be {expected}, got {type(extra[name]).__name__} "
                                    f"{_short(extra[name])}")
    return CheckpointHeader(**values, extra=extra)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
