"""The one place that builds an env, for every backend: the whole stack on one screen.

One env, bottom up (:func:`_build`, behind the picklable :func:`env_factory`):

1. ``--env-package`` imports, registry resolution and ``gymnasium.make`` (``envs.make``): the adapter, its
   time limit (``env.max_episode_steps``), Gymnasium's order enforcement and env checker;
2. the bridge token, resolved in the process that builds the env;
3. the Guard (``env.nan_policy``): every transition validated, faults recorded;
4. ``env.wrappers`` in order, then the observation adapter (envs/wrappers.py): Dict/Tuple flattened into one
   Dict of numeric keys (``Text`` and ``env.drop_keys`` left out), channel-last images transposed for SB3;
5. a backend's own per-env wrapper, if it passes one (RLlib's reward scaling).

Many envs (:func:`make_vector_env`): ``train.num_envs`` copies in a Gymnasium vector env from envs/vector/
(``train.vec_env``: ``dummy`` in-process, ``thread`` a thread each, ``subproc`` worker processes with a
watchdog, ``threadproc`` threads in several worker processes, ``ale`` ALE's own vector env; K-instance
bridge programs batched), then the vector wrappers: the Guard's batched check and the episode statistics.
A backend adapts the result in one file (agents/sb3/vector.py for SB3; RLlib's env runners vectorise with
envs/vector's ThreadVectorEnv for ``thread``).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib
import inspect
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

import gymnasium as gym
import numpy as np

import envs
from agents.config import RunConfig
from agents.run import tokens
from envs import errors as E
from envs.errors import UserError
from envs.guard import vector_reward_shape
from envs.vector.batch_guard import BatchGuard
from envs.vector.episode_stats import EpisodeStatistics
from envs.vector.subproc import SubprocVectorEnv
from envs.vector.sync import SyncVectorEnv
from envs.vector.threadproc import ThreadProcVectorEnv
from envs.vector.threads import ThreadVectorEnv
from envs.wrappers import WrapperSpec, adapt_observations, apply_wrappers, parse_wrappers

log = logging.getLogger(__name__)

RLLIB_CNN_SIZES = ((84, 84), (64, 64), (42, 42), (10, 10))
"""Image sizes (H, W, any channels) for which RLlib's model catalog has a default CNN; others are flattened."""


def _build(name: str, packages: tuple[str, ...], max_episode_steps: int | None, kwargs: dict[str, Any],
           render_mode: str | None, nan_policy: str = "truncate",
           token: tokens.TokenSource | None = None, outer: Callable[[gym.Env], gym.Env] | None = None,
           wrappers: tuple[WrapperSpec, ...] = (),
           drop_keys: tuple[str, ...] = (), channels_first: bool = True, bounds_policy: str = "clip") -> gym.Env:
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
    elif _renders_by_default(name):  # e.g. stable-retro's render_mode='human' would need a display
        extra["render_mode"] = None
    if token is not None:
        for pkg in packages:
            importlib.import_module(pkg)
        if token.explicit or "token" in (_adapter_params(name) or ()):
            value = tokens.resolve(token)
            if value is not None:
                extra["token"] = value
    env = envs.make(name, packages=packages, nan_policy=nan_policy, bounds_policy=bounds_policy, **extra)
    env = apply_wrappers(env, list(wrappers))
    env = adapt_observations(env, channels_first=channels_first, drop_keys=drop_keys, flat=not channels_first,
                             cnn_sizes=RLLIB_CNN_SIZES)
    return outer(env) if outer is not None else env


def env_factory(cfg: RunConfig, render_mode: str | None = None, for_eval: bool = False, *,
                outer: Callable[[gym.Env], gym.Env] | None = None) -> functools.partial[gym.Env]:
    """A picklable zero-argument callable that builds the configured env (``for_eval``: with ``eval_kwargs``).

    It carries where the token comes from, not the token (a literal one excepted, which stays in memory).
    ``outer`` (picklable) wraps the finished env: a backend's own per-env wrapper.
    """
    assert cfg.env.id is not None
    kwargs = {**cfg.env.adapter_kwargs(), **(cfg.env.eval_kwargs if for_eval else {})}
    return functools.partial(_build, cfg.env.id, tuple(cfg.env.packages), cfg.env.max_episode_steps,
                             kwargs, render_mode, cfg.env.nan_policy, cfg.env.token_source(), outer,
                             tuple(parse_wrappers(cfg.env.wrappers)),
                             tuple(cfg.env.drop_keys), cfg.agent.backend == "sb3",
                             bounds_policy=cfg.env.bounds_policy)


def make_vector_env(cfg: RunConfig, fns: list[Callable[[], gym.Env]] | None = None) -> gym.vector.VectorEnv:
    """``train.num_envs`` envs in the ``train.vec_env`` vector env (``dummy``, ``thread``, ``subproc``,
    ``threadproc`` or ``ale``), under the batched Guard (``train.batch_guard``) and the episode statistics;
    bridge programs with K > 1 instances (or ``env.listen``) as one batched vector env instead.

    ``fns`` (default: ``train.num_envs`` times :func:`env_factory`) builds the envs.
    """
    venv: gym.vector.VectorEnv | None = _bridge_vector_env(cfg) if fns is None and _is_bridge(cfg.env.id) else None
    if venv is not None:
        return EpisodeStatistics(venv)
    fns = fns if fns is not None else [env_factory(cfg) for _ in range(cfg.train.num_envs)]
    with build_errors(cfg):  # a resumed run builds its envs here first (no probe)
        if cfg.train.vec_env == "ale":  # ALE's C++ vector env: no per-env wrapper stack (envs/vector/ale.py)
            from envs.vector.ale import make_ale_vector_env

            return EpisodeStatistics(make_ale_vector_env(
                cfg.train.num_envs, cfg.train.env_workers, cfg.env.adapter_kwargs(), cfg.env.nan_policy,
                cfg.env.bounds_policy, cfg.env.max_episode_steps))  # env.crop: refused by the schema
        if cfg.train.vec_env == "threadproc":
            return EpisodeStatistics(ThreadProcVectorEnv(
                fns, workers=cfg.train.env_workers, start_method=cfg.train.start_method,
                step_timeout=cfg.train.worker_timeout, max_restarts=cfg.train.max_worker_restarts,
                batch_guard=cfg.train.batch_guard))  # each worker checks its envs in one batch
        built = None if cfg.train.vec_env == "subproc" else _in_process(cfg, fns)
        if built is None:  # subproc, or one instance per process: a worker process each
            venv = SubprocVectorEnv(fns, start_method=cfg.train.start_method, step_timeout=cfg.train.worker_timeout,
                                    max_restarts=cfg.train.max_worker_restarts)
        else:
            made: list[Callable[[], gym.Env]] = [functools.partial(_given, env) for env in built]
            venv = ThreadVectorEnv(made) if cfg.train.vec_env == "thread" else SyncVectorEnv(made)
    return EpisodeStatistics(BatchGuard(venv, cfg.train.batch_guard))


def _is_bridge(env_id: str | None) -> bool:
    """True when ``env_id`` is the bridge adapter (``process``)."""
    try:
        return env_id is not None and envs.resolve(env_id).entry_point == "envs.bridge.process:ProcessEnv"
    except Exception:
        return False


def _bridge_vector_env(cfg: RunConfig) -> gym.vector.VectorEnv | None:
    """Bridge programs with K > 1 instances each, or connecting to ``env.listen``: programs × K envs, batched
    (envs/vector/bridge.py); None for single-instance programs, which are envs like any other."""
    from envs.vector.bridge import make_bridge_vector_env

    given = " and ".join(f"env.{k}" for k in ("wrappers", "drop_keys") if getattr(cfg.env, k))
    return make_bridge_vector_env(cfg.env.adapter_kwargs(), cfg.train.num_envs,
                                  tokens.resolve(cfg.env.token_source()), declared_instances(cfg), given,
                                  cfg.env.nan_policy, cfg.env.max_episode_steps, cfg.env.bounds_policy)


def _given(env: gym.Env) -> gym.Env:
    return env


def _in_process(cfg: RunConfig, fns: list[Callable[[], gym.Env]]) -> list[gym.Env] | None:
    """The envs built one after another in this process; None when the first builds and a later one fails,
    which is how an env that allows one instance per process (stable-retro's emulator) shows itself.
    """
    built: list[gym.Env] = []
    try:
        for fn in fns:
            built.append(fn())
    except Exception as e:
        for env in built:
            env.close()
        if not built or isinstance(e, ValueError | TypeError | UserError):  # bad input (a bridge refusal too)
            raise
        log.warning("env %r could not be built a second time in this process (%s); it allows one instance "
                    "per process, so its %d training envs run in a worker process each (train.vec_env: subproc; "
                    "set that in the config to skip this try)", cfg.env.id, _one_line(e), len(fns))
        return None
    return built


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
    spec = envs.resolve(name)  # an UnknownEnvError or PluginError is a UserError
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


def _renders_by_default(name: str) -> bool:
    """Whether the env's constructor takes a ``render_mode`` that defaults to something (rendering nobody
    asked for); such an env is given ``render_mode=None`` unless a render mode is asked for."""
    try:
        entry = envs.resolve(name).entry_point
        module, _, attr = str(entry).partition(":")
        param = inspect.signature(getattr(importlib.import_module(module), attr)).parameters.get("render_mode")
    except Exception:
        return False
    return param is not None and param.default not in (None, inspect.Parameter.empty)


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


_DECLARED_INSTANCES: dict[str, int] = {}
"""``num_instances`` each probed env config declared (bridge programs), so that the vector env need not start a
program again to learn it."""


def declared_instances(cfg: RunConfig) -> int | None:
    """The ``num_instances`` the probe found for this env config (None: not probed in this process)."""
    return _DECLARED_INSTANCES.get(_instances_key(cfg))


def _instances_key(cfg: RunConfig) -> str:
    return repr((cfg.env.id, sorted(cfg.env.adapter_kwargs().items())))


@contextlib.contextmanager
def build_errors(cfg: RunConfig) -> Iterator[None]:
    """Errors raised while the configured env is built, as one-line :class:`UserError`s (bad input, exit 2).

    The same for a new run's probe and for the envs of a resumed run (which has no probe).
    """
    try:
        yield
    except E.StartupError as e:  # the bridge: its own line names the program, and says it is the settings
        raise UserError(f"env {cfg.env.id!r} rejected its settings: {_one_line(e)}") from e
    except UserError:
        raise
    except (ValueError, TypeError) as e:
        raise UserError(f"env {cfg.env.id!r} rejected its settings: {_one_line(e)}") from e
    except Exception as e:  # a third-party constructor: a missing dependency, a bare assert, ...
        raise UserError(f"env {cfg.env.id!r} failed to start: {_one_line(e)}; run with --debug for the "
                        "traceback") from e


def probe_spaces(cfg: RunConfig) -> tuple[gym.Space, gym.Space]:
    """Make the env once and return its observation and action spaces, with friendly errors."""
    if cfg.agent.backend != "sb3" and cfg.env.adapter_kwargs().get("listen"):
        raise UserError("env.listen (programs that connect to nondiff) needs --backend sb3")
    with build_errors(cfg):
        if cfg.env.adapter_kwargs().get("listen"):  # connect mode: the waiting line counts the programs the run needs
            from envs.bridge import listen

            listen.listener(str(cfg.env.adapter_kwargs()["listen"]),
                            tokens.resolve(cfg.env.token_source()) or "").expected = cfg.train.num_envs
        env = env_factory(cfg)()
    try:
        _check_scalar_reward(cfg, env)
        k = getattr(env.unwrapped, "num_instances", 1)
        _DECLARED_INSTANCES[_instances_key(cfg)] = k
        if k > 1 and cfg.agent.backend != "sb3":
            raise UserError(f"env {cfg.env.id!r} hosts {k} instances per program (num_instances); the "
                            f"{cfg.agent.backend} backend drives one instance per program: use --backend sb3")
        return env.observation_space, env.action_space
    finally:
        env.close()


def _check_scalar_reward(cfg: RunConfig, env: gym.Env) -> None:
    """An env that declares a vector reward (mo-gymnasium's ``reward_space``) takes one step in the probe:
    the learner needs one number, so without a scalarising wrapper the run is refused here, not faulted on
    every step."""
    shape = vector_reward_shape(env)
    if shape is None:
        return
    with build_errors(cfg):
        env.reset(seed=0)
        reward: Any = env.step(env.action_space.sample())[1]
    if np.ndim(reward) != 0:
        weights = [1.0] + [0.0] * (int(np.prod(shape)) - 1)
        raise UserError(f"env {cfg.env.id!r} returns a vector reward of shape {shape} (its reward_space), and a "
                        "learner needs one number per step; list a scalarising wrapper under env.wrappers, e.g. "
                        f"[{{'mo_gymnasium.wrappers:LinearReward': {{weight: {weights}}}}}]")


def _one_line(err: BaseException) -> str:
    """``Type: first line of the message``, or where it was raised when the message is empty (a bare assert)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if not text:
        import traceback

        frame = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
        text = f"raised at {frame.filename}:{frame.lineno} ({frame.line})" if frame else "(no message)"
    return f"{type(err).__name__}: {text}"
