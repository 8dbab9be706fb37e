"""Config wrappers (``env.wrappers``) and the observation adapter that makes third-party spaces trainable.

``env.wrappers`` is a list; each item is a name, or a one-key mapping from a name to its keyword arguments::

    wrappers:
      - resize: {shape: [84, 84]}        # built-in short names use Gymnasium's own wrappers
      - grayscale
      - frame_stack: {stack_size: 4}
      - gymnasium.wrappers:ClipReward: {min_reward: -1, max_reward: 1}   # any Wrapper by import path

The image built-ins (``resize``, ``grayscale``) also apply to every image inside a Dict observation
(VizDoom's ``screen``). :func:`adapt_observations` then turns what is left into what a learner takes.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

log = logging.getLogger(__name__)

__all__ = ["BUILTIN_WRAPPERS", "WrapperSpec", "adapt_observations", "apply_wrappers", "is_image",
           "parse_wrappers"]

NUMERIC = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)
_told: set[str] = set()  # notes already logged by this process (one line per key, not one per env copy)


@dataclass(frozen=True)
class WrapperSpec:
    """One ``env.wrappers`` item: a built-in short name or an import path, and its keyword arguments."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)


def is_image(space: spaces.Space) -> bool:
    """A uint8 Box of rank 3 with bounds 0..255: what CNN policies take (SB3's ``is_image_space``)."""
    return (isinstance(space, spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3
            and bool(np.all(space.low == 0)) and bool(np.all(space.high == 255)))


class _Stub(gym.Env):
    """A space holder, so that a Gymnasium observation wrapper can be built for one key of a Dict."""

    def __init__(self, space: spaces.Space) -> None:
        self.observation_space, self.action_space = space, spaces.Discrete(1)


class _PerImage(gym.ObservationWrapper):
    """Apply a Gymnasium observation wrapper to every image of a Dict observation."""

    def __init__(self, env: gym.Env, make: Callable[[gym.Env], gym.ObservationWrapper]) -> None:
        super().__init__(env)
        assert isinstance(env.observation_space, spaces.Dict)
        self._inner = {k: make(_Stub(s)) for k, s in env.observation_space.spaces.items() if is_image(s)}
        if not self._inner:
            raise ValueError(f"the Dict observation has no image (uint8, rank 3) to transform: "
                             f"{env.observation_space}")
        self.observation_space = spaces.Dict({k: self._inner[k].observation_space if k in self._inner else s
                                              for k, s in env.observation_space.spaces.items()})

    def observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        """Transform the image keys, pass the others through."""
        return {k: self._inner[k].observation(v) if k in self._inner else v for k, v in observation.items()}


def _image_wrapper(make: Callable[[gym.Env], gym.ObservationWrapper]) -> Callable[..., gym.Env]:
    def build(env: gym.Env) -> gym.Env:
        return _PerImage(env, make) if isinstance(env.observation_space, spaces.Dict) else make(env)
    return build


def _resize(env: gym.Env, shape: int | list[int] = 84) -> gym.Env:
    hw = (shape, shape) if isinstance(shape, int) else tuple(shape)
    return _image_wrapper(lambda e: gym.wrappers.ResizeObservation(e, hw))(env)  # type: ignore[arg-type]


def _grayscale(env: gym.Env, keep_dim: bool = True) -> gym.Env:
    return _image_wrapper(lambda e: gym.wrappers.GrayscaleObservation(e, keep_dim=keep_dim))(env)


def _frame_stack(env: gym.Env, stack_size: int = 4) -> gym.Env:
    return _MergeStack(gym.wrappers.FrameStackObservation(env, stack_size))


def _frame_skip(env: gym.Env, skip: int = 4) -> gym.Env:
    return gym.wrappers.MaxAndSkipObservation(env, skip=skip)


class _MergeStack(gym.ObservationWrapper):
    """After a frame stack, images of shape (N, H, W, C) become (H, W, N*C): still one image."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = _map_space(env.observation_space, self._space)

    @staticmethod
    def _space(s: spaces.Space) -> spaces.Space:
        if isinstance(s, spaces.Box) and s.dtype == np.uint8 and len(s.shape) == 4:
            n, h, w, c = s.shape
            return spaces.Box(0, 255, (h, w, n * c), np.uint8)
        return s

    def observation(self, observation: Any) -> Any:
        """Move the stack axis into the channels of every stacked image."""
        def merge(x: Any) -> Any:
            a = np.asarray(x)
            if a.ndim != 4:
                return x
            return np.ascontiguousarray(a.transpose(1, 2, 0, 3).reshape(*a.shape[1:3], -1))
        if isinstance(observation, dict):
            return {k: merge(v) for k, v in observation.items()}
        return merge(observation)


def _map_space(space: spaces.Space, fn: Callable[[spaces.Space], spaces.Space]) -> spaces.Space:
    if isinstance(space, spaces.Dict):
        return spaces.Dict({k: fn(s) for k, s in space.spaces.items()})
    return fn(space)


BUILTIN_WRAPPERS: dict[str, Callable[..., gym.Env]] = {
    "resize": _resize, "grayscale": _grayscale, "frame_stack": _frame_stack, "frame_skip": _frame_skip,
}
"""Short names for the common image pipeline, each built on the Gymnasium wrapper of the same purpose."""


def parse_wrappers(items: list[Any]) -> list[WrapperSpec]:
    """Validate ``env.wrappers`` items (a name, or ``{name: {kwarg: value}}``) and resolve nothing yet.

    Raises:
        ValueError: an item of another shape, with the expected form.
    """
    out = []
    for item in items:
        if isinstance(item, str):
            out.append(WrapperSpec(item))
        elif isinstance(item, dict) and len(item) == 1:
            (name, kwargs), = item.items()
            if not isinstance(kwargs, dict | None):
                raise ValueError(f"env.wrappers item {name!r}: its arguments must be a mapping, "
                                 f"got {kwargs!r}")
            out.append(WrapperSpec(str(name), dict(kwargs or {})))
        else:
            raise ValueError(f"env.wrappers item {item!r}: expected a name or {{name: {{kwarg: value}}}}, "
                             "e.g. 'grayscale' or {resize: {shape: [84, 84]}}")
    return out


def names_code(items: Any) -> bool:
    """True when ``env.wrappers`` names a wrapper by import path (the built-ins import nothing)."""
    try:
        return any(w.name not in BUILTIN_WRAPPERS for w in parse_wrappers(list(items or [])))
    except ValueError:
        return True


def _resolve(name: str) -> Callable[..., gym.Env]:
    if name in BUILTIN_WRAPPERS:
        return BUILTIN_WRAPPERS[name]
    sep = ":" if ":" in name else "."
    module, _, attr = name.rpartition(sep)
    if not module:
        raise ValueError(f"env.wrappers: unknown wrapper {name!r}; use a built-in "
                         f"({', '.join(BUILTIN_WRAPPERS)}) or an import path such as "
                         "'gymnasium.wrappers:ClipReward'")
    try:
        target = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"env.wrappers: cannot import {name!r} ({type(e).__name__}: {e}); check the path, "
                         "and that its package is installed in this environment") from e
    if not callable(target):
        raise ValueError(f"env.wrappers: {name!r} is not a wrapper class or function")
    return target  # type: ignore[no-any-return]


def apply_wrappers(env: gym.Env, specs: list[WrapperSpec]) -> gym.Env:
    """Wrap ``env`` with each spec in order.

    A wrapper that rejects a list argument is tried once more with it as a NumPy array (YAML has no arrays;
    ``mo_gymnasium.wrappers:LinearReward: {weight: [1, 0]}`` needs one).

    Raises:
        ValueError: a wrapper that cannot be imported or rejects its arguments, in one line naming it.
    """
    for spec in specs:
        make = _resolve(spec.name)
        try:
            try:
                env = make(env, **spec.kwargs)
            except (TypeError, ValueError, AttributeError, AssertionError) as first:
                arrays = _as_arrays(spec.kwargs)
                if arrays is None:
                    raise first
                env = make(env, **arrays)  # YAML has lists, not arrays: the same numbers as NumPy arrays
        except (TypeError, ValueError, AttributeError, AssertionError, gym.error.Error) as e:
            raise ValueError(f"env.wrappers: {spec.name} {spec.kwargs or ''} failed on observation space "
                             f"{env.observation_space} ({type(e).__name__}: {e})") from e
    return env


def _as_arrays(kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """``kwargs`` with every list of numbers as a NumPy array; None when there is none (nothing to retry)."""
    def numeric(v: Any) -> bool:
        return isinstance(v, list) and bool(v) and all(isinstance(x, int | float) or numeric(x) for x in v)
    if not any(numeric(v) for v in kwargs.values()):
        return None
    return {k: np.asarray(v, dtype=np.float32) if numeric(v) else v for k, v in kwargs.items()}


def _tell(key: str, text: str) -> None:
    if key not in _told:
        _told.add(key)
        log.warning(text)


def _flat(env: gym.Env) -> gym.Env:
    return gym.wrappers.DtypeObservation(gym.wrappers.FlattenObservation(env), np.float32)


def _flatten(space: spaces.Space, prefix: str, drop: set[str], out: dict[str, spaces.Space]) -> None:
    items = space.spaces.items() if isinstance(space, spaces.Dict) else enumerate(space.spaces)  # type: ignore[attr-defined]
    for k, sub in items:
        key = f"{prefix}{k}"
        if key in drop or str(k) in drop:
            continue
        if isinstance(sub, spaces.Dict | spaces.Tuple):
            _flatten(sub, key + "_", drop, out)
        elif isinstance(sub, NUMERIC):
            out[key] = sub
        else:
            _tell(key, f"observation key {key!r} dropped: a {type(sub).__name__} space is not numeric "
                       "(list it in env.drop_keys to silence this, or add a wrapper under env.wrappers that "
                       "encodes it)")


class ObservationAdapter(gym.ObservationWrapper):
    """Dict and Tuple observations flattened into one Dict of numeric spaces; channel-last images transposed.

    Args:
        env: the env to adapt.
        channels_first: transpose (H, W, C) images to (C, H, W) (SB3's layout; RLlib takes them as they are).
        drop_keys: observation keys to leave out.
    """

    def __init__(self, env: gym.Env, channels_first: bool, drop_keys: tuple[str, ...] = ()) -> None:
        super().__init__(env)
        space = env.observation_space
        self._structured = isinstance(space, spaces.Dict | spaces.Tuple)
        if self._structured:
            flat: dict[str, spaces.Space] = {}
            _flatten(space, "", set(drop_keys), flat)
            if not flat:
                raise ValueError(f"the observation space {space} has no numeric part left to learn from")
            self._keys = list(flat)
        else:
            flat = {"": space}
        self._transpose = {k for k, s in flat.items() if channels_first and channel_last(s)}
        new = {k: transposed(s) if k in self._transpose else s for k, s in flat.items()}
        self.observation_space = spaces.Dict(new) if self._structured else new[""]

    def observation(self, observation: Any) -> Any:
        """The adapted observation."""
        if not self._structured:
            return np.ascontiguousarray(np.moveaxis(observation, -1, 0)) if self._transpose else observation
        values = _leaves(observation, "")
        return {k: np.ascontiguousarray(np.moveaxis(values[k], -1, 0)) if k in self._transpose else values[k]
                for k in self._keys}


def _leaves(obs: Any, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in (obs.items() if isinstance(obs, dict) else enumerate(obs)):
        if isinstance(v, dict | tuple):
            out.update(_leaves(v, f"{prefix}{k}_"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def channel_last(space: spaces.Space) -> bool:
    """An image whose smallest axis, the channels, comes last (H, W, C)."""
    return is_image(space) and int(np.argmin(space.shape or (0,))) == 2


def transposed(space: spaces.Space) -> spaces.Box:
    """The (C, H, W) form of an (H, W, C) image space."""
    assert isinstance(space, spaces.Box)
    return spaces.Box(np.moveaxis(space.low, -1, 0), np.moveaxis(space.high, -1, 0), dtype=space.dtype)  # type: ignore[arg-type]


def adapt_observations(env: gym.Env, *, channels_first: bool, drop_keys: tuple[str, ...] = (),
                       flat: bool = False, cnn_sizes: tuple[tuple[int, int], ...] = ()) -> gym.Env:
    """``env`` unchanged when its observations are already a numeric Box without a channel-last image; else
    wrapped in :class:`ObservationAdapter`.

    With ``flat`` (RLlib, whose default models take one tensor) a Dict or Tuple observation becomes one
    float32 vector (Boxes flattened, Discrete parts one-hot), a Discrete, MultiDiscrete or MultiBinary one
    its (one-hot) float32 vector, and so does a rank-3 Box (an image, or e.g. a
    one-hot board) whose height × width is not in ``cnn_sizes`` (the sizes the learner has a default CNN for),
    each with one line saying so.

    Raises:
        ValueError: a top-level space that is not numeric (``Text``, ``Graph``, ...), in one line naming the
            fix.
    """
    space = env.observation_space
    if flat and isinstance(space, spaces.Dict | spaces.Tuple):
        adapted = ObservationAdapter(env, channels_first, drop_keys)
        parts = adapted.observation_space.spaces  # type: ignore[attr-defined]
        grids = ", ".join(k for k, s in parts.items() if isinstance(s, spaces.Box) and len(s.shape) == 3)
        grid_note = (f"; its rank-3 parts ({grids}) reach RLlib's default MLP as pixels unless "
                     "agent.extractor: board_cnn takes a board back out; --backend sb3 gives images a CNN"
                     ) if grids else ""
        _tell("flat", f"observation keys {', '.join(parts)} flattened into one float32 vector for the rllib "
                      f"backend (Discrete parts one-hot){grid_note}")
        return _flat(adapted)
    if flat and isinstance(space, spaces.Discrete | spaces.MultiDiscrete | spaces.MultiBinary):  # RLlib: Box
        _tell("flat-discrete", f"observation {space} encoded into one float32 vector for the rllib backend "
                               "(Discrete one-hot, as SB3 encodes it)")
        return _flat(env)
    rank3 = isinstance(space, spaces.Box) and len(space.shape) == 3  # RLlib's catalog takes any as an image
    if flat and isinstance(space, spaces.Box) and not rank3 and not np.issubdtype(space.dtype, np.floating):
        _tell("flat-int", f"observation {space} cast to float32 for the rllib backend (its MLP takes floats)")
        return _flat(env)
    if flat and rank3 and tuple(space.shape[:2]) not in cnn_sizes:  # type: ignore[index]
        sizes = ", ".join(f"{h}×{w}" for h, w in cnn_sizes)
        _tell("flat-image", f"image observation {space.shape} flattened into the MLP: the rllib backend has "
                            f"a default CNN for {sizes} only; add {{resize: {{shape: [84, 84]}}}} under "
                            "env.wrappers for a CNN")
        return _flat(env)
    if isinstance(space, spaces.Dict | spaces.Tuple) or (channels_first and channel_last(space)):
        return ObservationAdapter(env, channels_first, drop_keys)
    if not isinstance(space, NUMERIC):
        raise ValueError(f"observation space {space} is not numeric; add a wrapper under env.wrappers that "
                         "encodes it")
    return env
