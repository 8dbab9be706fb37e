"""Env construction shared by the backends: picklable factories, adapter keyword checks, the bridge token."""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import multiprocessing
import os
import signal
from typing import Any

import gymnasium as gym
import numpy as np

import envs
from agents import tokens
from agents.config import RunConfig
from agents.errors import UserError


def _build(name: str, packages: tuple[str, ...], max_episode_steps: int | None, kwargs: dict[str, Any],
           render_mode: str | None, nan_policy: str = "truncate",
           token: tokens.TokenSource | None = None) -> gym.Env:
    """Create one env; module-level so that it pickles by reference into any worker process.

    The bridge token is resolved here, the one place, in whichever process builds the env: an env var is
    inherited, a token file is read locally. Without an explicit source, ``NONDIFF_TOKEN`` goes only to an
    adapter that has a ``token`` keyword.
    """
    if multiprocessing.parent_process() is not None:
        # Ctrl-C reaches the whole process group; the main process decides when workers stop.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    extra: dict[str, Any] = dict(kwargs)
    if max_episode_steps is not None:
        extra["max_episode_steps"] = max_episode_steps
    if render_mode is not None:
        extra["render_mode"] = render_mode
    if token is not None:
        for pkg in packages:
            importlib.import_module(pkg)
        if token.explicit or "token" in (_adapter_params(name) or ()):
            value = tokens.resolve(token)
            if value is not None:
                extra["token"] = value
    return envs.make(name, packages=packages, nan_policy=nan_policy, **extra)


def env_factory(cfg: RunConfig, render_mode: str | None = None, for_eval: bool = False) -> functools.partial[gym.Env]:
    """A picklable zero-argument callable that builds the configured env (``for_eval``: with ``eval_kwargs``).

    It carries where the token comes from, not the token (a literal one excepted, which stays in memory).
    """
    assert cfg.env.id is not None
    kwargs = {**cfg.env.adapter_kwargs(), **(cfg.env.eval_kwargs if for_eval else {})}
    return functools.partial(_build, cfg.env.id, tuple(cfg.env.packages), cfg.env.max_episode_steps,
                             kwargs, render_mode, cfg.env.nan_policy, cfg.env.token_source())


def import_packages(packages: list[str]) -> None:
    """Import ``--env-package`` modules, turning failures into a :class:`UserError`."""
    for pkg in packages:
        try:
            importlib.import_module(pkg)
        except Exception as e:
            raise UserError(f"--env-package {pkg!r} failed to import ({type(e).__name__}: {e}); fix the module or "
                            "drop the flag") from e


def _adapter_params(name: str) -> list[str] | None:
    """The keyword arguments the adapter's entry point takes; None when it takes ``**kwargs`` or is opaque.

    Raises:
        UserError: the env is unknown or its entry point does not import.
    """
    try:
        spec = envs.resolve(name)
    except (envs.UnknownEnvError, envs.PluginError) as e:
        raise UserError(str(e)) from e
    entry = spec.entry_point
    if not isinstance(entry, str) or ":" not in entry:
        return None
    module, _, attr = entry.partition(":")
    try:
        target = getattr(importlib.import_module(module), attr)
    except Exception as e:
        raise UserError(f"env {name!r} ({spec.source}): cannot import its entry point {entry!r} "
                        f"({type(e).__name__}: {e}); fix or uninstall it") from e
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and n != "self"]


def check_env_kwargs(cfg: RunConfig) -> None:
    """Reject adapter keyword arguments the adapter does not accept, with a did-you-mean.

    A configured bridge token (``env.token``, ``token_file`` or ``token_env``) counts as the keyword ``token``.
    When ``NONDIFF_TOKEN`` supplies the token of an adapter that takes one, ``env.token_env`` is set to it, so
    that the run directory records that a token was used, and where from, without the token.
    """
    assert cfg.env.id is not None
    names = _adapter_params(cfg.env.id)
    source = cfg.env.token_source()
    given = {**cfg.env.adapter_kwargs(), **cfg.env.eval_kwargs, **({"token": None} if source.explicit else {})}
    if names is None:
        return
    if not source.explicit and "token" in names and os.environ.get(tokens.DEFAULT_ENV_VAR, "").strip():
        cfg.env.token_env = tokens.DEFAULT_ENV_VAR
    for key in given:
        if key == "token" and key not in names:
            raise UserError(f"env {cfg.env.id!r} takes no bridge token, but env.token, env.token_file or "
                            "env.token_env is set; drop it")
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
