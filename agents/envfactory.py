"""Env construction shared by the backends: picklable factories and adapter keyword checks."""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import multiprocessing
import signal
from typing import Any

import gymnasium as gym
import numpy as np

import envs
from agents.config import RunConfig
from agents.errors import UserError


def _build(name: str, packages: tuple[str, ...], max_episode_steps: int | None, kwargs: dict[str, Any],
           render_mode: str | None, nan_policy: str = "truncate") -> gym.Env:
    """Create one env; module-level so that it pickles by reference into any worker process."""
    if multiprocessing.parent_process() is not None:
        # Ctrl-C reaches the whole process group; the main process decides when workers stop.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    extra: dict[str, Any] = dict(kwargs)
    if max_episode_steps is not None:
        extra["max_episode_steps"] = max_episode_steps
    if render_mode is not None:
        extra["render_mode"] = render_mode
    return envs.make(name, packages=packages, nan_policy=nan_policy, **extra)


def env_factory(cfg: RunConfig, render_mode: str | None = None, for_eval: bool = False) -> functools.partial[gym.Env]:
    """A picklable zero-argument callable that builds the configured env (``for_eval``: with ``eval_kwargs``)."""
    assert cfg.env.id is not None
    kwargs = {**cfg.env.adapter_kwargs(), **(cfg.env.eval_kwargs if for_eval else {})}
    return functools.partial(_build, cfg.env.id, tuple(cfg.env.packages), cfg.env.max_episode_steps,
                             kwargs, render_mode, cfg.env.nan_policy)


def import_packages(packages: list[str]) -> None:
    """Import ``--env-package`` modules, turning failures into a :class:`UserError`."""
    for pkg in packages:
        try:
            importlib.import_module(pkg)
        except Exception as e:
            raise UserError(f"--env-package {pkg!r} failed to import ({type(e).__name__}: {e}); fix the module or "
                            "drop the flag") from e


def check_env_kwargs(cfg: RunConfig) -> None:
    """Reject adapter keyword arguments the adapter does not accept, with a did-you-mean."""
    assert cfg.env.id is not None
    try:
        spec = envs.resolve(cfg.env.id)
    except (envs.UnknownEnvError, envs.PluginError) as e:
        raise UserError(str(e)) from e
    given = {**cfg.env.adapter_kwargs(), **cfg.env.eval_kwargs}
    entry = spec.entry_point
    if not isinstance(entry, str) or ":" not in entry:
        return
    module, _, attr = entry.partition(":")
    try:
        target = getattr(importlib.import_module(module), attr)
    except Exception as e:
        raise UserError(f"env {cfg.env.id!r} ({spec.source}): cannot import its entry point {entry!r} "
                        f"({type(e).__name__}: {e}); fix or uninstall it") from e
    if not given:
        return
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    names = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and n != "self"]
    for key in given:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
            hint = f"did you mean 'env.{close[0]}'? " if close else ""
            raise UserError(f"unknown key 'env.{key}' for env {cfg.env.id!r}; {hint}its keyword arguments are: "
                            f"{', '.join(names) or '(none)'}")


def is_image_space(space: gym.Space) -> bool:
    """A uint8 Box of rank 3: what CNN policies expect."""
    return isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3


def probe_spaces(cfg: RunConfig) -> tuple[gym.Space, gym.Space]:
    """Make the env once and return its observation and action spaces, with friendly errors."""
    try:
        env = env_factory(cfg)()
    except (envs.UnknownEnvError, envs.PluginError) as e:
        raise UserError(str(e)) from e
    except (ValueError, TypeError) as e:
        raise UserError(f"env {cfg.env.id!r} rejected its settings: {e}") from e
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()
