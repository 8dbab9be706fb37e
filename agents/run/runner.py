"""What train.py does, as importable functions: resolve a config, train (evaluate.py's side is scoring.py)."""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import math
import random
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import envs
from agents.config import (
    CONTINUOUS_ONLY,
    RunConfig,
    apply_override,
    check_algorithm,
    dump,
    load_yaml,
    select_algo,
    validate,
)
from agents.config.loading import check_writable
from agents.run import cli
from agents.run.backend import Backend, get_backend
from agents.run.envfactory import probe
from agents.run.resolved import ResolvedEnv, check_env_kwargs, import_packages, is_image_space, resolve_env
from agents.run.rundir import RunDir
from agents.run.session import Session
from envs.errors import EnvFailure, UserError

if TYPE_CHECKING:
    import gymnasium as gym


log = logging.getLogger(__name__)
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
VERSIONED = ("nondiff", "gymnasium", "stable-baselines3", "torch", "numpy", "mujoco", "ale-py", "ray",
             "pydantic")


def versions() -> dict[str, str]:
    """Installed versions of the packages that decide a run's behaviour."""
    out = {"python": sys.version.split()[0]}
    for name in VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


A2C_FROM_SPACES = ("gamma", "gae_lambda", "ent_coef", "normalize_obs", "normalize_reward")
"""The keys of :func:`space_defaults`' PPO settings that A2C takes over (the rest are PPO's, or would slow
A2C down)."""


def space_defaults(obs_space: Any, act_space: Any, algo: str = "ppo") -> dict[str, Any]:
    """Hyperparameters that suit the spaces and the algorithm, for envs without a config file."""
    import gymnasium as gym

    if algo == "appo":  # APPO starts from ALGO_DEFAULTS (agents/config/algos.py); PPO's would set gae_lambda
        return {}
    if algo in CONTINUOUS_ONLY:  # SB3's own SAC/TD3 networks
        return {"agent": {"net_arch": [256, 256] if algo == "sac" else [400, 300], "activation": "relu"}}
    if is_image_space(obs_space):
        agent = {"n_steps": 128, "batch_size": 256, "n_epochs": 4, "learning_rate": 2.5e-4, "ent_coef": 0.01,
                 "clip_range": 0.1}
    elif isinstance(act_space, gym.spaces.Box):
        agent = {"n_steps": 256, "batch_size": 256, "n_epochs": 10, "learning_rate": 1e-3, "gamma": 0.95,
                 "normalize_obs": True, "normalize_reward": True}
    else:
        agent = {"n_steps": 128, "batch_size": 256, "n_epochs": 10, "learning_rate": 3e-4, "gae_lambda": 0.9,
                 "gamma": 0.98}
    if algo == "a2c":  # its own short rollouts (5 steps) and rate (7e-4); PPO's minibatch keys do not apply
        agent = {k: v for k, v in agent.items() if k in A2C_FROM_SPACES}
    return {"agent": agent}


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def build_config(args: argparse.Namespace) -> tuple[RunConfig, ResolvedEnv, gym.Env | None]:
    """Merge defaults, the YAML file and the CLI (CLI wins) into a validated :class:`RunConfig`.

    The env is resolved here, once, and built once (the probe): returns the config, the env's typed record
    for the backend, and the probed env when it can serve as the evaluation env (else None).
    """
    import_packages(args.env_package or [])
    raw: dict[str, Any] = {}
    source = "command line"
    if args.config:
        raw = load_yaml(args.config)
        source = args.config
    env_name = args.env or (raw.get("env") or {}).get("id")
    shipped = _shipped_config(env_name) if not args.config else None
    packages = (shipped or raw).get("env")
    if isinstance(packages, dict) and isinstance(packages.get("packages"), list):
        # env.packages register the id resolved next (a shipped configs/<id>.yaml's too)
        import_packages([str(p) for p in packages["packages"]])
    if not env_name:
        raise UserError("no env given: pass --env NAME (a nondiff name such as 'robot', a Gymnasium id such "
                        "as 'CartPole-v1', or module:Class)")
    spec = envs.resolve(env_name)  # an UnknownEnvError or PluginError is a UserError
    if not args.config:
        default = CONFIG_DIR / f"{spec.name}.yaml"
        if shipped is not None and spec.name == env_name:  # read above for its env.packages: not twice
            raw, source = shipped, str(default)
        elif default.is_file():
            raw, source = load_yaml(default), str(default)
        elif spec.config is not None:
            raw, source = copy.deepcopy(spec.config), f"the config registered with {spec.name!r}"
    select_algo(raw, args.algo, source)
    raw.setdefault("env", {})
    if not isinstance(raw["env"], dict):
        raise UserError(f"{source}: section 'env' must be a mapping, got {type(raw['env']).__name__}")
    raw["env"]["id"] = env_name
    if args.env_package:
        raw["env"]["packages"] = list(dict.fromkeys([*raw["env"].get("packages", []), *args.env_package]))
    for section, values in cli.overrides(args).items():
        raw.setdefault(section, {}).update(values)
    for assignment in args.set or []:
        apply_override(raw, assignment)
    raw.pop("meta", None)
    raw.pop("search", None)  # a study's settings (agents/config/search.py), read by --optimize
    cfg = validate(raw, source)
    check_writable(cfg, source)  # its config.yaml must read back (evaluate, --resume)
    backend = get_backend(cfg.agent.backend, bool(cfg.policies))
    env = resolve_env(cfg, backend.channels_first, spec)
    check_env_kwargs(cfg, env)
    env, spare = probe(cfg, env, backend)  # bad adapter arguments fail here, as one line
    raw["env"]["action_mask"] = cfg.env.action_mask  # as the probe resolved it
    obs_space, act_space = env.spaces
    try:
        if source == "command line":  # no config file: choose hyperparameters from the spaces
            merged = _deep_merge(space_defaults(obs_space, act_space, cfg.agent.algo), raw)
            cfg = validate(merged, source)
        check_algorithm(cfg, act_space, source)
        if backend.builds_net_arch:  # before the backend builds them
            check_networks(cfg, obs_space)
    except BaseException:
        if spare is not None:
            spare.close()
        raise
    return cfg, env, spare


def check_networks(cfg: RunConfig, obs_space: Any) -> None:
    """A new run's networks (``agent.net_arch``, or each policy's) fit the machine's memory while they train
    (:func:`agents.run.memory.check_networks`).

    Each model counts as two networks of its layers (an actor and a critic: PPO, A2C and APPO build the
    policy's and the value function's, SAC and TD3 an actor and critics), fed by the flat observation where
    an MLP takes it as it is, else by one input (a lower bound).
    """
    import gymnasium as gym

    from agents.run import memory

    if cfg.policies:
        layers = {(f"policies.{name}.net_arch" if spec.net_arch else f"agent.net_arch (policy {name!r})"):
                  list(spec.net_arch or cfg.agent.net_arch) for name, spec in cfg.policies.items()}
        memory.check_networks(layers, copies=2)
        return
    inputs = 1
    if cfg.agent.extractor == "auto" and cfg.agent.policy in ("auto", "mlp"):
        if isinstance(obs_space, gym.spaces.Discrete):  # one-hot
            inputs = int(obs_space.n)
        elif isinstance(obs_space, gym.spaces.Box) and not (cfg.agent.policy == "auto"
                                                            and is_image_space(obs_space)):
            inputs = math.prod(int(n) for n in obs_space.shape or (1,))
    memory.check_networks({"agent.net_arch": list(cfg.agent.net_arch)}, inputs, copies=2)


def _shipped_config(env_name: str | None) -> dict[str, Any] | None:
    """The shipped ``configs/<env>.yaml`` for a name typed as is (a Gymnasium id such as 'VizdoomBasic-v1'),
    read before the name resolves so that its ``env.packages`` can register it; None when there is none."""
    if not env_name or "/" in env_name or ":" in env_name or env_name.startswith("."):
        return None
    path = CONFIG_DIR / f"{env_name}.yaml"
    return load_yaml(path) if path.is_file() else None


@contextlib.contextmanager
def leftovers_stopped() -> Iterator[None]:
    """Stop the processes the envs started and left running when the block ends, however it ends, with one
    line naming them (:mod:`envs.children`; nondiff's own processes are left alone)."""
    from envs.children import Sweeper, report

    sweeper = Sweeper(say=_warn, own=[str(Path(__file__).with_name("raywatch.py"))])  # Ray's undertaker
    try:
        yield
    finally:
        left = sweeper.sweep()
        if left:
            _warn(report(left))


def train(args: argparse.Namespace, argv: list[str]) -> int:
    """Run ``train.py``: a new run, or ``--resume``. Returns the process exit code.

    The run directory is locked (flock) for the whole run, so a second trainer exits 2. Any exception out of
    training writes ``crash/`` first (see :mod:`agents.run.failure`), then one line, then exit 1 (2 for bad
    input); bad input found before the first step is one line and exit 2 alone. Processes the envs left
    running are stopped at the end (:func:`leftovers_stopped`); what in-process envs print is bounded
    (:func:`envs.console.bounded`).
    """
    from envs.console import bounded

    with leftovers_stopped(), bounded():  # what in-process envs print, at a bounded rate
        return _train(args, argv)


def _train(args: argparse.Namespace, argv: list[str]) -> int:
    from agents.run import checkpoint
    from agents.run.trust import load_run_config

    if args.resume:
        changed = cli.given_flags(args, cli.RESUME_FLAGS)
        if changed:
            raise UserError(f"--resume continues {args.resume!r} with its own settings (its config.yaml); "
                            f"{', '.join(changed)} would change them and cannot be applied: drop "
                            f"{'it' if len(changed) == 1 else 'them'} (--resume takes --timesteps, --device, "
                            "--ray-address and --max-memory-gb), or start a new run with train.py --config "
                            "RUN/config.yaml")
        run = RunDir.open(args.resume)
        with run.lock():
            run.remove_stale_temps()
            cfg, _ = load_run_config(run, trust=getattr(args, "trust_run_dir", False), action="resume")
            import_packages(cfg.env.packages)
            path = run.latest()
            if path is None:
                raise UserError(f"run {str(run.path)!r} has no checkpoint to resume from; start a new run "
                                "instead")
            ckpt = checkpoint.load(path, trust=args.trust_checkpoint, backend=cfg.agent.backend)
            start = ckpt.header.num_timesteps
            if args.timesteps is not None:
                cfg.train.timesteps = start + args.timesteps
            elif start >= cfg.train.timesteps and run.final.is_file():  # finished: nothing to train or write
                _say(f"run {str(run.path)!r} has finished: {start:,} of its {cfg.train.timesteps:,} steps, "
                     "final/ written; nothing to train: add --timesteps N to train N more steps")
                return 0
            cfg.train.device = args.device or cfg.train.device  # where it goes on: the run's own math
            cfg.rllib.address = args.ray_address or cfg.rllib.address
            if args.max_memory_gb is not None:
                cfg.train.max_memory_gb = args.max_memory_gb
            seed = int(cfg.train.seed if cfg.train.seed is not None else 0)
            kind = get_backend(cfg.agent.backend, bool(cfg.policies))
            # no probe: the header has the spaces
            env = resolve_env(cfg, kind.channels_first, spaces=ckpt.header.spaces())
            kind = get_backend(cfg.agent.backend, bool(cfg.policies), env.multi_agent)
            backend = kind.load(ckpt, cfg, env, for_training=True, seed=seed)
            _say(f"resuming {run.path} from {path.name} at step {start:,}")
            return _run(args, argv, run, cfg, backend, env, start, seed)
    cfg, env, spare = build_config(args)
    try:
        if cfg.train.seed is None:
            cfg.train.seed = random.SystemRandom().randrange(2**31)
        seed = cfg.train.seed
        run = RunDir.create(cfg.env.id or "env", seed, explicit=args.run_dir)
        with run.lock():
            try:
                kind = get_backend(cfg.agent.backend, bool(cfg.policies), env.multi_agent)
                backend = kind.create(cfg, seed, env)
            except BaseException:
                run.discard_if_empty()  # nothing ran: the same --run-dir works again once the input is fixed
                raise
            return _run(args, argv, run, cfg, backend, env, 0, seed, spare)
    finally:
        if spare is not None:
            spare.close()


def _run(args: argparse.Namespace, argv: list[str], run: RunDir, cfg: RunConfig, backend: Backend,
         env: ResolvedEnv, start: int, seed: int, eval_env: gym.Env | None = None) -> int:
    """Write config, signature and command line, train, checkpoint, and return the exit code.

    ``eval_env``: the probe's env, which the periodic evaluation uses instead of building one (the caller
    closes it).
    """
    from agents.run import failure, loop, trust
    from agents.run.checkpoint import atomic_write_bytes
    from envs.console import bounded
    from envs.errors import BridgeError, StopRequested

    refused = False  # a new run's input refused before its first step: its run dir goes
    try:
        cfg.meta = {"versions": versions(), "seed": seed, "config_source": str(args.config or ""),
                    "started_from_step": start}
        data = dump(cfg).encode()
        kept = failure.kept_config(run) if args.resume else None
        atomic_write_bytes(run.config, data)
        trust.sign(run, data)
        run.write_command(argv)
        logdir = run.path.parent.parent if (not args.resume and not args.run_dir) else run.path
        _say(f"run directory: {run.path}\nwatch it with:  {cli.shown('tensorboard')} --logdir {logdir}")
        step, interrupted = start, None
        with Session(cfg, run, start_step=start, total_steps=cfg.train.timesteps,
                     quiet=args.quiet) as session:
            try:
                with bounded():  # again, in front of the progress bar's own stdout (rich, on a terminal)
                    step = loop.train(backend, session, env, eval_env)
            except StopRequested:  # a signal ended a bridge or worker wait: the same as a clean stop
                step = backend.num_timesteps
            except KeyboardInterrupt:  # a second Ctrl-C while a step hangs, or an env that raised it
                return _report(args, *failure.stopped_at_once(run, backend, session.stop_signal))
            except (EnvFailure, BridgeError) as e:  # EnvGaveUp, RestartBudgetExhausted are EnvFailures
                return _report(args, *_env_failed(e, run, backend))
            except Exception as e:  # noqa: BLE001 - any error out of training: checkpoint first, then one line
                code, line = failure.stop_on_error(e, run, backend, start, kept)
                refused = not args.resume and failure.refused_before_start(e, backend, start)
                return _report(args, code, line)
            try:
                backend.save(run.final)
            except Exception as e:  # noqa: BLE001 - e.g. a full disk; the earlier checkpoints are intact
                return _report(args, 1, failure.save_failed(e, run, run.final))
            interrupted = session.stop_signal
    finally:
        try:
            backend.close()
        except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - closing envs must not hide the outcome
            log.warning("closing the envs failed: %s: %s", type(e).__name__, e)
        if refused:  # after the TensorBoard writer and the envs are closed
            try:
                run.discard_unstarted()
            except OSError as e:  # the refusal's line is the outcome; a directory left behind is not one
                log.warning("removing the refused run's directory %s failed: %s", run.path, e)
    if interrupted:
        print(f"{interrupted}: stopped at step {step:,}; checkpoint written to {run.final}\n"
              f"resume with:  python train.py --resume {run.path}")
        return 0
    best = f"; best eval mean_reward {session.best_reward:.2f}" if session.best_reward > float("-inf") else ""
    evaluate = f"{cli.shown('python')} {cli.script('evaluate.py')}"
    _say(f"done: {step:,} steps{best}\nevaluate with:  {evaluate} {run.path}")
    return 0


def _env_failed(e: BaseException, run: RunDir, backend: Backend) -> tuple[int, str]:
    """The env spent its restart budget, or memory ran out: ``final/`` (a sound model), then one line."""
    from agents.run import failure
    from envs.errors import MemoryExhausted

    try:
        backend.save(run.final)
    except Exception as save_exc:  # noqa: BLE001 - reported in the line
        return 1, failure.save_failed(save_exc, run, run.final) + f" (the env failed first: {e})"
    if isinstance(e, MemoryExhausted):
        return 1, (f"error: training stopped: {e}; checkpoint written to {run.final}; resume with:  python "
                   f"train.py --resume {run.path} (add --max-memory-gb N to change the limit)")
    return 1, (f"error: the env failed and training stopped: {e}; checkpoint written to {run.final}; fix the "
               f"program, then resume with:  python train.py --resume {run.path}")


def _report(args: argparse.Namespace, code: int, line: str) -> int:
    """Print the one line of a failed run (and, with --debug, the traceback being handled)."""
    if getattr(args, "debug", False):
        import traceback

        traceback.print_exc()
    print(line, file=sys.stderr, flush=True)
    return code


def _say(text: str) -> None:
    print(text, flush=True)


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
