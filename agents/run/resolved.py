"""An env resolved once: the typed record the runner hands to a backend, and the probe that fills it.

The runner resolves ``env.id`` once (:func:`resolve_env`: the registry, one import of the entry point), and
for a new run builds the env once (:func:`agents.run.envfactory.probe`) to learn its spaces and how many
instances a program hosts. That env is not thrown away: it becomes the periodic evaluation's env when it is
built the same way.
A resumed run or an evaluation takes the spaces from the checkpoint header instead, and builds no probe.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

import envs
from agents.config import RunConfig, tokens
from envs import errors as E
from envs.errors import UserError
from envs.guard import vector_reward_shape
from envs.multiagent import is_parallel_source
from envs.registry import EnvSpec, named_arguments, parameters
from envs.selfplay import is_turn_based_source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedEnv:
    """The configured env, resolved once and handed down: runner → backend → env builder.

    Attributes:
        spec: the registry's record (name, Gymnasium id, entry point, where it came from).
        params: the keyword arguments the entry point takes; None when it takes ``**kwargs`` or is opaque.
        renders_by_default: its ``render_mode`` defaults to ``human`` (a window; it is built with
            ``render_mode=None``).
        hosts_instances: the adapter can host K instances per program (the bridge), so K > 1 or connect mode
            (``env.listen``) are stepped as one batched vector env.
        channels_first: build images as (C, H, W) (the backend's
            :attr:`~agents.run.backend.Backend.channels_first`).
        observation_space: the observation space the backend sees (from the probe or the checkpoint).
        action_space: the action space, likewise.
        num_instances: the K a probed program declared; None when nothing was probed (resume, evaluation).
        runs_code: what this config imports, runs or contacts beyond installed packages and loopback
            (:func:`agents.run.trust.runs_code`), as phrases.
        multi_agent: the entry point builds a PettingZoo parallel env
            (:func:`envs.multiagent.is_parallel_source`): its agents share one policy, each a slot of one
            vector env, and its spaces are one agent's.
        turn_based: the entry point builds a two-player PettingZoo AEC game
            (:func:`envs.selfplay.is_turn_based_source`): the learner plays one seat against the self-play
            league (agents/run/selfplay/).
    """

    spec: EnvSpec
    params: tuple[str, ...] | None
    renders_by_default: bool
    hosts_instances: bool
    channels_first: bool
    observation_space: gym.Space | None = None
    action_space: gym.Space | None = None
    num_instances: int | None = None
    runs_code: tuple[str, ...] = ()
    multi_agent: bool = False
    turn_based: bool = False

    @property
    def spaces(self) -> tuple[gym.Space, gym.Space]:
        """The observation and action spaces (filled by the probe or from a checkpoint header)."""
        if self.observation_space is None or self.action_space is None:
            raise RuntimeError(f"env {self.spec.name!r} was handed on before its spaces were known")
        return self.observation_space, self.action_space

    @property
    def takes_token(self) -> bool:
        """The adapter has a ``token`` keyword (``NONDIFF_TOKEN`` reaches it without an explicit source)."""
        return self.params is not None and "token" in self.params

    def batched(self, cfg: RunConfig) -> bool:
        """Whether the training envs are one batched bridge vector env (K > 1, unknown K, or connect mode)."""
        if not self.hosts_instances:
            return False
        return bool(cfg.env.adapter_kwargs().get("listen")) or self.num_instances != 1


def resolve_env(cfg: RunConfig, channels_first: bool, spec: EnvSpec | None = None,
                spaces: tuple[gym.Space, gym.Space] | None = None) -> ResolvedEnv:
    """Resolve ``cfg.env.id`` (unless ``spec`` is the resolution) and import its entry point, once.

    ``channels_first``: the backend's :attr:`~agents.run.backend.Backend.channels_first`. ``spaces``: where
    the checkpoint header gives them (resume, evaluation); otherwise :func:`~agents.run.envfactory.probe`
    fills them.

    Raises:
        UserError: the env is unknown or its entry point does not import.
    """
    from agents.run.trust import runs_code

    assert cfg.env.id is not None
    spec = spec or envs.resolve(cfg.env.id)  # an UnknownEnvError or PluginError is a UserError
    target = _entry_target(spec)
    params: tuple[str, ...] | None = None
    renders = False
    if target is not None:
        sig = parameters(target)
        params = named_arguments(sig)
        if sig is not None:
            mode = sig.get("render_mode")  # e.g. stable-retro's 'human' would need a display
            renders = mode is not None and mode.default == "human"  # panda-gym's 'rgb_array' refuses None
    obs, act = spaces if spaces is not None else (None, None)
    return ResolvedEnv(spec, params, renders, bool(getattr(target, "hosts_instances", False)),
                       channels_first, obs, act, runs_code=tuple(runs_code(cfg, target)),
                       multi_agent=is_parallel_source(target), turn_based=is_turn_based_source(target))


def _entry_target(spec: EnvSpec) -> Any:
    """The entry point's class or function, imported; None when it is not a ``module:attr`` string."""
    entry = spec.entry_point
    if not isinstance(entry, str) or ":" not in entry:
        return None
    module, _, attr = entry.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except Exception as e:
        raise UserError(f"env {spec.name!r} ({spec.source}): cannot import its entry point {entry!r} "
                        f"({type(e).__name__}: {e}); fix or uninstall it") from e


def import_packages(packages: list[str]) -> None:
    """Import ``--env-package`` modules, turning failures into a :class:`UserError`."""
    for pkg in packages:
        try:
            importlib.import_module(pkg)
        except Exception as e:
            raise UserError(f"--env-package {pkg!r} failed to import ({type(e).__name__}: {e}); fix the "
                            "module or drop the flag") from e


def check_env_kwargs(cfg: RunConfig, env: ResolvedEnv) -> None:
    """Reject adapter keyword arguments the adapter does not accept, with a did-you-mean.

    A configured bridge token (``env.token``, ``token_file`` or ``token_env``) counts as the keyword
    ``token``. When ``NONDIFF_TOKEN`` supplies the token of an adapter that takes one, ``env.token_env`` is
    set to it, so that the run directory records that a token was used, and where from, without the token.
    """
    names = env.params
    source = cfg.env.token_source()
    given = {**cfg.env.adapter_kwargs(), **cfg.env.eval_kwargs,
             **({"token": None} if source.explicit else {})}
    if names is None:
        return
    if not source.explicit and env.takes_token and os.environ.get(tokens.DEFAULT_ENV_VAR, "").strip():
        cfg.env.token_env = tokens.DEFAULT_ENV_VAR
    for key in given:
        if key == "token" and key not in names:
            raise UserError(f"env {cfg.env.id!r} takes no bridge token, but env.token, env.token_file or "
                            "env.token_env is set; drop it")
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
            hint = f"did you mean 'env.{close[0]}'? " if close else ""
            raise UserError(f"unknown key 'env.{key}' for env {cfg.env.id!r}; {hint}its keyword arguments "
                            f"are: {', '.join(names) or '(none)'}")


def is_image_space(space: gym.Space) -> bool:
    """A uint8 Box of rank 3: what CNN policies expect."""
    return isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3


@contextlib.contextmanager
def build_errors(cfg: RunConfig) -> Iterator[None]:
    """Errors raised while the configured env is built, as one-line :class:`UserError`s (bad input, exit 2).

    The same for a new run's probe and for the envs of a resumed run (which has no probe).
    """
    try:
        yield
    except E.StartupError as e:  # the bridge: its own line names the program, and says it is the settings
        raise UserError(f"env {cfg.env.id!r} rejected its settings: {one_line(e)}") from e
    except UserError:
        raise
    except (ValueError, TypeError) as e:
        raise UserError(f"env {cfg.env.id!r} rejected its settings: {one_line(e)}") from e
    except Exception as e:  # a third-party constructor: a missing dependency, a bare assert, ...
        raise UserError(f"env {cfg.env.id!r} failed to start: {one_line(e)}; run with --debug for the "
                        "traceback") from e


def check_scalar_reward(cfg: RunConfig, env: gym.Env) -> None:
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
        raise UserError(f"env {cfg.env.id!r} returns a vector reward of shape {shape} (its reward_space), "
                        "and a learner needs one number per step; list a scalarising wrapper under "
                        "env.wrappers, e.g. "
                        f"[{{'mo_gymnasium.wrappers:LinearReward': {{weight: {weights}}}}}]")


def one_line(err: BaseException) -> str:
    """``Type: first line of the message``, or where it was raised when the message is empty (a bare
    assert)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if not text:
        import traceback

        frame = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
        text = f"raised at {frame.filename}:{frame.lineno} ({frame.line})" if frame else "(no message)"
    return f"{type(err).__name__}: {text}"
