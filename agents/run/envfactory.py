"""The one place that builds an env, for every backend: the whole stack on one screen.

One env, bottom up (:func:`_build`, behind the picklable :func:`env_factory`):

1. ``--env-package`` imports, registry resolution and ``gymnasium.make`` (``envs.make``): the adapter, its
   time limit (``env.max_episode_steps``), Gymnasium's order enforcement and env checker;
2. the bridge token, resolved in the process that builds the env;
3. the Guard (``env.nan_policy``): every transition validated, faults recorded;
4. ``env.wrappers`` in order, then the action masks' ``ActionMasks`` when the probe found them
   (``env.action_mask``, agents/run/masks.py);
5. the observation adapter (envs/wrappers.py): Dict/Tuple flattened into one Dict of numeric keys (``Text``
   and ``env.drop_keys`` left out), channel-last images transposed for SB3;
6. a backend's own per-env wrapper, if it passes one (RLlib's reward scaling).

A PettingZoo parallel env (``ResolvedEnv.multi_agent``) is built by :func:`_team` instead: all its agents
as one env (envs/multiagent.py's ``TeamEnv``) under the Guard, which evaluation plays with the shared policy
(with ``policies:``, each policy's agents under its name).

Many envs (:func:`make_vector_env`): ``train.num_envs`` copies in a Gymnasium vector env from envs/vector/
(``train.vec_env``: ``dummy`` in-process, ``thread`` a thread each, ``subproc`` worker processes with a
watchdog, ``threadproc`` threads in several worker processes, ``ale`` ALE's own vector env; K-instance
bridge programs batched; a PettingZoo parallel env's copies with one slot per agent), then the vector
wrappers: the Guard's batched check and the episode statistics. With ``policies:``,
:func:`make_policy_vector_envs` builds the copies once and one such stack per policy
(envs/vector/pettingzoo_groups.py).
A backend adapts the result in one file (agents/sb3/vector.py for SB3; RLlib's env runners vectorise with
envs/vector's ThreadVectorEnv for ``thread``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import multiprocessing
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gymnasium as gym

import envs
from agents.config import RunConfig, tokens
from agents.run.masks import resolve_masks
from agents.run.memory import check_env_copies, check_workers, resident_bytes
from agents.run.resolved import ResolvedEnv, build_errors, check_scalar_reward, one_line, resolve_env
from envs.errors import UserError
from envs.masks import ActionMasks
from envs.registry import EnvSpec
from envs.vector.batch_guard import BatchGuard
from envs.vector.channels import channels_first
from envs.vector.episode_stats import EpisodeStatistics
from envs.vector.pettingzoo_groups import PettingZooGroups
from envs.vector.subproc import SubprocVectorEnv
from envs.vector.sync import SyncVectorEnv
from envs.vector.threadproc import ThreadProcVectorEnv
from envs.vector.threads import ThreadVectorEnv
from envs.wrappers import WrapperSpec, adapt_observations, apply_wrappers, parse_wrappers

if TYPE_CHECKING:
    from agents.run.backend import Backend

log = logging.getLogger(__name__)

RLLIB_CNN_SIZES = ((84, 84), (64, 64), (42, 42), (10, 10))
"""Image sizes (H, W, any channels) for which RLlib's model catalog has a default CNN; others are
flattened."""


def _build(spec: EnvSpec, packages: tuple[str, ...], max_episode_steps: int | None, kwargs: dict[str, Any],
           render_mode: str | None, nan_policy: str = "truncate",
           token: tokens.TokenSource | None = None, outer: Callable[[gym.Env], gym.Env] | None = None,
           wrappers: tuple[WrapperSpec, ...] = (),
           drop_keys: tuple[str, ...] = (), channels_first: bool = True, bounds_policy: str = "clip",
           renders_by_default: bool = False, takes_token: bool = False, action_mask: str = "none") -> gym.Env:
    """Create one env; module-level so that it pickles by reference into any worker process.

    The bridge token is resolved here, the one place, in whichever process builds the env: an env var is
    inherited, a token file is read locally. Without an explicit source, ``NONDIFF_TOKEN`` goes only to an
    adapter that has a ``token`` keyword (``takes_token``).
    """
    if multiprocessing.parent_process() is not None:
        # Ctrl-C reaches the whole process group; the main process decides when workers stop.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    extra: dict[str, Any] = dict(kwargs)
    if max_episode_steps is not None:
        extra["max_episode_steps"] = max_episode_steps
    if render_mode is not None:
        extra["render_mode"] = render_mode
    elif renders_by_default:  # e.g. stable-retro's render_mode='human' would need a display
        extra["render_mode"] = None
    if token is not None and (token.explicit or takes_token):
        value = tokens.resolve(token)
        if value is not None:
            extra["token"] = value
    env = envs.make(spec, packages=packages, nan_policy=nan_policy, bounds_policy=bounds_policy, **extra)
    env = apply_wrappers(env, list(wrappers))
    if action_mask not in ("auto", "none"):  # resolved by the probe (agents/run/masks.py); beneath the
        env = ActionMasks(env, action_mask)  # adapter, which may flatten a Dict observation's mask away
    env = adapt_observations(env, channels_first=channels_first, drop_keys=drop_keys, flat=not channels_first,
                             cnn_sizes=RLLIB_CNN_SIZES)
    return outer(env) if outer is not None else env


def env_factory(cfg: RunConfig, env: ResolvedEnv, render_mode: str | None = None, for_eval: bool = False, *,
                outer: Callable[[gym.Env], gym.Env] | None = None) -> functools.partial[gym.Env]:
    """A picklable zero-argument callable that builds the configured env (``for_eval``: with ``eval_kwargs``),
    as the runner resolved it (``env``).

    It carries where the token comes from, not the token (a literal one excepted, which stays in memory).
    ``outer`` (picklable) wraps the finished env: a backend's own per-env wrapper.
    """
    kwargs = {**cfg.env.adapter_kwargs(), **(cfg.env.eval_kwargs if for_eval else {})}
    if env.multi_agent:
        return functools.partial(_team, env.spec, kwargs, render_mode, cfg.env.max_episode_steps,
                                 cfg.env.nan_policy, cfg.env.bounds_policy, policy_patterns(cfg),
                                 cfg.env.token_source() if env.takes_token else None)
    return functools.partial(_build, env.spec, tuple(cfg.env.packages), cfg.env.max_episode_steps,
                             kwargs, render_mode, cfg.env.nan_policy, cfg.env.token_source(), outer,
                             tuple(parse_wrappers(cfg.env.wrappers)),
                             tuple(cfg.env.drop_keys), env.channels_first,
                             bounds_policy=cfg.env.bounds_policy, renders_by_default=env.renders_by_default,
                             takes_token=env.takes_token, action_mask=cfg.env.action_mask)


def make_vector_env(cfg: RunConfig, env: ResolvedEnv,
                    fns: list[Callable[[], gym.Env]] | None = None) -> gym.vector.VectorEnv:
    """``train.num_envs`` envs in the ``train.vec_env`` vector env (``dummy``, ``thread``, ``subproc``,
    ``threadproc`` or ``ale``), under the batched Guard (``train.batch_guard``) and the episode statistics;
    bridge programs with K > 1 instances (or ``env.listen``) as one batched vector env instead.

    ``fns`` (default: ``train.num_envs`` times :func:`env_factory`) builds the envs.
    """
    venv = None
    if fns is None and env.multi_agent:
        venv = _agents_vector_env(cfg, env)
    elif fns is None and env.batched(cfg):
        venv = _bridge_vector_env(cfg, env)
    if venv is not None:  # batched: images in the layout the per-env stack gives the probe and evaluation
        return EpisodeStatistics(channels_first(venv) if env.channels_first else venv)
    fns = fns if fns is not None else [env_factory(cfg, env) for _ in range(cfg.train.num_envs)]
    with build_errors(cfg):  # a resumed run builds its envs here first (no probe)
        if cfg.train.vec_env == "ale":  # ALE's C++ vector env: no per-env wrapper stack (envs/vector/ale.py)
            from envs.vector.ale import make_ale_vector_env

            return EpisodeStatistics(make_ale_vector_env(
                cfg.train.num_envs, cfg.train.env_workers, cfg.env.adapter_kwargs(), cfg.env.nan_policy,
                cfg.env.bounds_policy, cfg.env.max_episode_steps))  # env.crop: refused by the schema
        if cfg.train.vec_env == "threadproc":
            _measure_copies(cfg, fns)  # before any worker starts
            return EpisodeStatistics(ThreadProcVectorEnv(
                fns, workers=cfg.train.env_workers, start_method=cfg.train.start_method,
                step_timeout=cfg.train.worker_timeout, max_restarts=cfg.train.max_worker_restarts,
                batch_guard=cfg.train.batch_guard, threads=cfg.train.worker_threads))  # one Guard batch each
        built = None if cfg.train.vec_env == "subproc" else _in_process(cfg, fns)
        if built is None:  # subproc, or one instance per process: a worker process each
            check_workers(len(fns), f"train.num_envs={len(fns)} with train.vec_env: subproc would",
                          "lower train.num_envs (--num-envs), or use train.vec_env: threadproc with "
                          "train.env_workers")
            venv = SubprocVectorEnv(fns, start_method=cfg.train.start_method,
                                    step_timeout=cfg.train.worker_timeout,
                                    max_restarts=cfg.train.max_worker_restarts,
                                    threads=cfg.train.worker_threads)
        else:
            made: list[Callable[[], gym.Env]] = [functools.partial(_given, env) for env in built]
            venv = ThreadVectorEnv(made) if cfg.train.vec_env == "thread" else SyncVectorEnv(made)
    return EpisodeStatistics(BatchGuard(venv, cfg.train.batch_guard))


def _bridge_vector_env(cfg: RunConfig, env: ResolvedEnv) -> gym.vector.VectorEnv | None:
    """Bridge programs with K > 1 instances each, or connecting to ``env.listen``: programs × K envs, batched
    (envs/vector/bridge.py); None for single-instance programs, which are envs like any other."""
    from envs.vector.bridge_start import make_bridge_vector_env

    given = " and ".join(f"env.{k}" for k in ("wrappers", "drop_keys") if getattr(cfg.env, k))
    def check_programs(n: int, k: int) -> None:
        check_workers(n, f"train.num_envs={cfg.train.num_envs} at {k} instances per program would",
                      f"lower train.num_envs (--num-envs: each program hosts {k})")

    return make_bridge_vector_env(cfg.env.adapter_kwargs(), cfg.train.num_envs,
                                  tokens.resolve(cfg.env.token_source()), env.num_instances, given,
                                  cfg.env.nan_policy, cfg.env.max_episode_steps, cfg.env.bounds_policy,
                                  check_programs)


def _agents_vector_env(cfg: RunConfig, env: ResolvedEnv) -> gym.vector.VectorEnv:
    """``train.num_envs`` copies of a PettingZoo parallel env, one slot per agent (envs/vector/pettingzoo.py),
    under the Guard's batched checks; ``env.max_episode_steps`` truncates a copy's agents together."""
    from envs.multiagent import make_parallel
    from envs.vector.pettingzoo import PettingZooVectorEnv
    from envs.vector.row_guard import RowGuard

    given = " and ".join(f"env.{k}" for k in ("wrappers", "drop_keys") if getattr(cfg.env, k))
    if given:
        raise UserError(f"env {cfg.env.id!r} is a PettingZoo parallel env, whose agents are stepped as one "
                        f"batch, so per-env wrappers cannot apply; drop {given}")
    kwargs = with_token(cfg.env.adapter_kwargs(), cfg.env.token_source() if env.takes_token else None)
    fns = [functools.partial(make_parallel, env.spec.entry_point, kwargs) for _ in range(cfg.train.num_envs)]
    with build_errors(cfg):
        venv = PettingZooVectorEnv(fns, cfg.env.max_episode_steps, cfg.env.id or "")
    return RowGuard(venv, cfg.env.nan_policy, cfg.env.bounds_policy, None)


@dataclasses.dataclass(frozen=True)
class PolicyVectorEnvs:
    """A PettingZoo parallel env's copies split by policy (``policies:``), as :func:`make_policy_vector_envs`
    builds them.

    Attributes:
        groups: the copies and each policy's agents and spaces; stage every policy's actions here before a
            step (:meth:`~envs.vector.pettingzoo_groups.PettingZooGroups.stage`).
        venvs: each policy's vector env, by name, under the Guard's batched checks and the episode statistics.
    """

    groups: PettingZooGroups
    venvs: dict[str, gym.vector.VectorEnv]


def policy_patterns(cfg: RunConfig) -> dict[str, tuple[str, ...]] | None:
    """``policies:`` as policy name -> agent-id patterns, in the config's order; None without a map."""
    return {name: tuple(p.agents) for name, p in cfg.policies.items()} or None


def make_policy_vector_envs(cfg: RunConfig, env: ResolvedEnv) -> PolicyVectorEnvs:
    """``train.num_envs`` copies of a PettingZoo parallel env, each policy's agents a vector env of their own
    (envs/vector/pettingzoo_groups.py) under the Guard's batched checks and the episode statistics."""
    from envs.multiagent import make_parallel
    from envs.vector.row_guard import RowGuard

    patterns = policy_patterns(cfg) or {}
    kwargs = with_token(cfg.env.adapter_kwargs(), cfg.env.token_source() if env.takes_token else None)
    fns = [functools.partial(make_parallel, env.spec.entry_point, kwargs) for _ in range(cfg.train.num_envs)]
    with build_errors(cfg):
        groups = PettingZooGroups(fns, patterns, cfg.env.max_episode_steps, cfg.env.id or "")
    venvs: dict[str, gym.vector.VectorEnv] = {
        name: EpisodeStatistics(RowGuard(view, cfg.env.nan_policy, cfg.env.bounds_policy, None))
        for name, view in groups.views.items()}
    return PolicyVectorEnvs(groups, venvs)


def with_token(kwargs: dict[str, Any], token: tokens.TokenSource | None) -> dict[str, Any]:
    """A PettingZoo parallel env's keyword arguments with the bridge token, resolved here (in the process that
    builds the env), where the entry point takes one (``token``: its source; None when it takes none): a
    program that declares agents (envs/bridge/parallel.py)."""
    value = tokens.resolve(token) if token is not None else None
    return {**kwargs, "token": value} if value is not None else dict(kwargs)


def _team(spec: EnvSpec, kwargs: dict[str, Any], render_mode: str | None, max_episode_steps: int | None,
          nan_policy: str, bounds_policy: str, patterns: dict[str, tuple[str, ...]] | None = None,
          token: tokens.TokenSource | None = None) -> gym.Env:
    """All agents of one PettingZoo parallel env as one env (``TeamEnv``; with ``patterns``, grouped by
    policy), under the Guard; ``token``: where the bridge token comes from, when the env takes one."""
    from envs.guard import Guard
    from envs.multiagent import TeamEnv

    extra = {**with_token(kwargs, token), **({"render_mode": render_mode} if render_mode is not None else {})}
    return Guard(TeamEnv(str(spec.entry_point), extra, max_episode_steps, spec.name, patterns), nan_policy,
                 bounds_policy=bounds_policy)


def policy_spaces(env: gym.Env) -> tuple[gym.Space, gym.Space]:
    """The spaces the policy acts in: one agent's for a PettingZoo env's ``TeamEnv``, else the env's own."""
    from envs.multiagent import TeamEnv

    inner = env.unwrapped
    if isinstance(inner, TeamEnv):
        return inner.single_observation_space, inner.single_action_space
    return env.observation_space, env.action_space


def probe(cfg: RunConfig, env: ResolvedEnv, backend: type[Backend]) -> tuple[ResolvedEnv, gym.Env | None]:
    """Build the env once: the record with its spaces and K filled in, and the env itself when it can serve
    as the evaluation env (periodic evaluation on, built with the same settings: no ``env.eval_kwargs``, not
    connect mode unless nondiff starts the program itself); None when it was closed."""
    kwargs = cfg.env.adapter_kwargs()
    # connect mode for programs started elsewhere; with env.command nondiff starts each one (bridge/launch.py)
    listen = kwargs.get("listen") if not kwargs.get("command") else None
    if listen and (env.multi_agent or env.turn_based):
        raise UserError("env.listen without env.command (programs started elsewhere that connect to "
                        f"nondiff) serves single-agent envs; env {cfg.env.id!r} has several agents: give "
                        "env.command as well, so that nondiff starts each program and it connects back")
    if listen and not backend.takes_connections:
        raise UserError("env.listen without env.command (programs started elsewhere that connect to nondiff) "
                        "needs --backend sb3; with env.command as well, each env runner starts its own")
    if cfg.policies and not env.multi_agent:
        raise UserError(f"policies: maps the agents of a PettingZoo parallel env to policies, and env "
                        f"{cfg.env.id!r} is not one; give --env module:parallel_env (e.g. "
                        "mpe2.simple_adversary_v3:parallel_env), or leave policies: out")
    if env.multi_agent and "parallel" not in backend.pettingzoo:
        raise UserError(f"env {cfg.env.id!r} is a PettingZoo parallel env, whose agents the "
                        f"{cfg.agent.backend} backend does not train: use --backend sb3 or rllib")
    if env.turn_based and "aec" not in backend.pettingzoo:
        raise UserError(f"env {cfg.env.id!r} is a turn-based PettingZoo game (AEC), which nondiff trains "
                        f"by self-play on --backend sb3 or rllib; the {cfg.agent.backend} backend cannot run "
                        "it: use --backend sb3 or rllib")
    with build_errors(cfg):
        if listen:  # connect mode: the waiting line counts the programs the run needs
            from envs.bridge import listen as L

            token = tokens.resolve(cfg.env.token_source()) or ""
            L.listener(str(listen), token).expected = cfg.train.num_envs
        made = env_factory(cfg, env)()
    keep = False
    try:
        check_scalar_reward(cfg, made)
        k = int(getattr(made.unwrapped, "num_instances", 1))
        if k > 1 and not backend.batches_programs:
            raise UserError(f"env {cfg.env.id!r} hosts {k} instances per program (num_instances); the "
                            f"{cfg.agent.backend} backend drives one instance per program: use --backend sb3 "
                            "or rllib")
        obs_space, act_space = policy_spaces(made)
        record = dataclasses.replace(env, observation_space=obs_space, action_space=act_space,
                                     num_instances=k)
        made = resolve_masks(cfg, record, made, backend)  # env.action_mask: auto → what the env gives
        keep = bool(cfg.eval.every) and not cfg.env.eval_kwargs and not listen
        return record, made if keep else None
    finally:
        if not keep:
            made.close()


def probed(cfg: RunConfig, backend: type[Backend]) -> ResolvedEnv:
    """Resolve and probe in one call, closing the probe's env (benchmarks and tests that skip the runner)."""
    env, spare = probe(cfg, resolve_env(cfg, backend.channels_first), backend)
    if spare is not None:
        spare.close()
    return env


def _given(env: gym.Env) -> gym.Env:
    return env


MEASURED_FROM = 16
"""``train.vec_env: threadproc`` with this many envs or more: three copies are first built in the trainer,
measured and closed, and a count that would not fit in memory is refused before any worker starts (the
copies live in the workers, where nothing measured them: ``--num-envs 100000`` filled the machine)."""


def _measure_copies(cfg: RunConfig, fns: list[Callable[[], gym.Env]]) -> None:
    if len(fns) >= MEASURED_FROM:
        bound_env_copies(cfg, fns[0], len(fns), "in the worker processes")


def bound_env_copies(cfg: RunConfig, make: Callable[[], Any], n: int, where: str,
                     setting: str = "train.num_envs (--num-envs)", per: int = 1) -> None:
    """Build three copies with ``make`` here, measure the 2nd and 3rd, close them, and refuse ``n`` copies
    ``where`` they will live if they would not fit in memory (:func:`~agents.run.memory.check_env_copies`).
    An env that fails to build a copy here is left to fail where its copies live.
    """
    made: list[Any] = []  # gym.Env, or a multi-agent env (anything with close())
    try:
        made.append(make())  # one-time costs (imports, caches) come with the first
        before = resident_bytes()
        made += [make(), make()]
        grown = resident_bytes() - before
    except Exception:  # e.g. one instance per process (a worker each): the workers report what fails
        return
    finally:
        for env in made:
            env.close()
    if before:
        check_env_copies(n, max(grown, 0) // 2, str(cfg.env.id), where, setting, per)


def _in_process(cfg: RunConfig, fns: list[Callable[[], gym.Env]]) -> list[gym.Env] | None:
    """The envs built one after another in this process; None when the first builds and a later one fails,
    which is how an env that allows one instance per process (stable-retro's emulator) shows itself.
    """
    built: list[gym.Env] = []
    before = 0
    try:
        for i, fn in enumerate(fns):
            if i == 1:
                before = resident_bytes()
            built.append(fn())
            if i == 2 and len(fns) > 3 and before:  # the 2nd and 3rd copies' memory, past one-time costs
                check_env_copies(len(fns), max(resident_bytes() - before, 0) // 2, str(cfg.env.id))
    except Exception as e:
        for env in built:
            env.close()
        if not built or isinstance(e, ValueError | TypeError | UserError):  # bad input (a bridge refusal too)
            raise
        log.warning("env %r could not be built a second time in this process (%s); it allows one "
                    "instance per process, so its %d training envs run in a worker process each "
                    "(train.vec_env: subproc; set that in the config to skip this try)", cfg.env.id,
                    one_line(e), len(fns))
        return None
    return built


