"""What ``evaluate.py`` does: load a checkpoint for inference (:func:`load_policy`, also what benchmarks and
other tools use) and score it against a uniform-random policy on the same seeds (:func:`evaluate`), with
``--video``, ``--figure``, ``--json`` and a two-player game's ``--opponent``."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.config import RunConfig
from agents.run.backend import Backend, get_backend
from agents.run.resolved import ResolvedEnv, build_errors, import_packages, resolve_env
from agents.run.rundir import RunDir
from envs.errors import UserError

if TYPE_CHECKING:
    from agents.run.evaluation import EvaluationReport
    from agents.run.header import CheckpointHeader


def _say(text: str) -> None:
    print(text, flush=True)


@dataclass(frozen=True)
class LoadedPolicy:
    """A checkpoint loaded for inference by :func:`load_policy`.

    Attributes:
        cfg: the run's resolved config.
        backend: the loaded backend (call ``backend.predict(obs, deterministic=True)``).
        path: the checkpoint file.
        header: its typed header.
        env: the run's env, resolved once (spaces from the header), for
            :func:`~agents.run.envfactory.env_factory`.
    """

    cfg: RunConfig
    backend: Backend
    path: Path
    header: CheckpointHeader
    env: ResolvedEnv


def load_policy(run_dir: str | Path, checkpoint: str = "final", *, trust: bool = False,
                trust_run_dir: bool = False) -> LoadedPolicy:
    """Open a run directory and load one of its checkpoints for inference.

    Args:
        run_dir: a directory written by train.py.
        checkpoint: ``final``, ``best``, ``latest``, ``crash`` or a path.
        trust: allow pickle-carrying checkpoints (``--trust-checkpoint``).
        trust_run_dir: load a config that would run code although this user did not sign it
            (``--trust-run-dir``, see :mod:`agents.run.trust`).
    """
    from agents.run import checkpoint as ckpt_files
    from agents.run import tensorcheck
    from agents.run.trust import load_run_config

    run = RunDir.open(run_dir)
    cfg, _ = load_run_config(run, trust=trust_run_dir, action="evaluate")
    import_packages(cfg.env.packages)
    path = run.resolve(checkpoint)
    ckpt = ckpt_files.load(path, trust=trust)  # read and checked once; the backend builds from it
    kind = get_backend(ckpt.header.backend, bool(cfg.policies))
    env = resolve_env(cfg, kind.channels_first, spaces=ckpt.header.spaces())
    kind = get_backend(ckpt.header.backend, bool(cfg.policies), env.multi_agent)
    if kind.builds_net_arch and not cfg.policies:  # a config from elsewhere allocates nothing absurd
        tensorcheck.check_net_arch(ckpt, cfg.agent.net_arch)
    return LoadedPolicy(cfg, kind.load(ckpt, cfg, env), path, ckpt.header, env)


def _check_args(args: argparse.Namespace) -> None:
    """Refuse, in one line, a non-positive ``--episodes``, a negative ``--seed``, and a ``--video``,
    ``--json`` or ``--figure`` path whose directory does not exist or that is a directory itself."""
    if args.episodes <= 0:
        raise UserError(f"--episodes must be positive, got {args.episodes}")
    if args.seed is not None and args.seed < 0:  # Gymnasium refuses it: three failed resets, exit 1
        raise UserError(f"--seed must be 0 or more (episode i is seeded seed + i), got {args.seed}")
    for flag in ("video", "json", "figure"):
        value = getattr(args, flag, None)
        if not value:
            continue
        target = Path(value)
        folder = target.parent if str(target.parent) else Path(".")
        if target.is_dir() or not folder.is_dir():
            what = "is a directory" if target.is_dir() else f"goes into {str(folder)!r}, which does not exist"
            raise UserError(f"--{flag} {value!r} {what}; give a file path in an existing directory")


def evaluate(args: argparse.Namespace) -> EvaluationReport:
    """Run ``evaluate.py``: score a checkpoint and a uniform-random policy on the same seeds."""
    from agents.run.checkpoint import check_spaces
    from agents.run.envfactory import env_factory, policy_spaces
    from agents.run.evaluation import EvaluationReport, episode_cap, random_policy, run_episodes
    from agents.run.masks import masked
    from envs.masks import METHOD

    _check_args(args)  # before the episodes: a bad path found after them costs the whole evaluation
    loaded = load_policy(args.run_dir, args.checkpoint, trust=args.trust_checkpoint,
                         trust_run_dir=getattr(args, "trust_run_dir", False))
    cfg, backend, path = loaded.cfg, loaded.backend, loaded.path
    figure = getattr(args, "figure", None)
    render_mode = "rgb_array" if args.video or figure else ("human" if args.render else None)
    if render_mode == "human" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise UserError("--render needs a display to open a window, and neither DISPLAY nor WAYLAND_DISPLAY "
                        "is set; record the episodes with --video PATH.mp4 instead")
    try:
        with build_errors(cfg):  # one line, exit 2, as train.py says it (a constructor that raises, too)
            env = env_factory(cfg, loaded.env, render_mode=render_mode, for_eval=True)()
    except UserError as e:
        cause = e.__cause__
        if render_mode == "human" and isinstance(cause, (ValueError, TypeError, gym_error())):
            raise UserError(f"--render: env {cfg.env.id!r} cannot open a window ({cause}); record it with "
                            "--video PATH.mp4 instead") from cause
        raise
    check_spaces(loaded.header, *policy_spaces(env), f"evaluate {path}")
    if getattr(args, "opponent", None) is not None:  # a two-player game against it (agents/run/selfplay)
        from agents.run.selfplay.plumbing import pit

        pit(cfg, loaded.env, env, args.opponent)
    backend.bind_env(env)
    frames: list[Any] = []
    seed = args.seed if args.seed is not None else 10_000
    cap = episode_cap(env, cfg.eval.max_episode_steps)
    try:
        result = run_episodes(env, lambda o: backend.predict(o, deterministic=not args.stochastic),
                              args.episodes, seed, on_frame=frames.append if args.video else None,
                              max_steps=cap, say=_say)
        if figure and not args.video:  # render one episode, not all of them
            run_episodes(env, lambda o: backend.predict(o, deterministic=not args.stochastic), 1, seed,
                         on_frame=frames.append, max_steps=cap, say=_say)
        # before the baseline: e.g. forward calls per instance of the policy
        report: dict[str, Any] = dict(backend.eval_report())
        legal = env.get_wrapper_attr(METHOD) if masked(cfg) else None  # the baseline's moves are legal too
        baseline = run_episodes(env, random_policy(env.action_space, seed, legal), args.episodes, seed,
                                max_steps=cap, say=_say)
        if cfg.policies:  # each policy alone against random others (agents/run/evaluation.py)
            from agents.run.evaluation import alone_returns

            report["policy_alone"] = alone_returns(
                env, lambda o: backend.predict(o, deterministic=not args.stochastic), list(cfg.policies),
                args.episodes, seed, max_steps=cap)
    except Exception as e:
        cause = _caused_by(e, gym_error())  # the Guard may wrap the window's error in its own
        if render_mode == "human" and cause is not None:
            raise UserError(f"--render: env {cfg.env.id!r} cannot open a window ({cause}); record it with "
                            "--video PATH.mp4 instead") from e
        raise
    finally:
        try:
            env.close()
        finally:  # a backend may hold envs of its own (blackbox: the problem's program)
            backend.close()
    if args.video:
        _write_video(args.video, frames, env.metadata.get("render_fps", 30))
    if figure:  # the last frame of the first episode: the adapter's picture of where the policy ended
        last = result.lengths[0] if args.video else -1
        _write_png(figure, frames[last] if frames else None)
    out = EvaluationReport(str(path), loaded.header.num_timesteps, result.summary, baseline.summary, report)
    if args.json:
        Path(args.json).write_text(json.dumps(out.to_json(), indent=1))
    return out


def _caused_by(exc: BaseException, kind: type[Exception]) -> BaseException | None:
    """``exc`` or the first exception in its ``__cause__``/``__context__`` chain that is a ``kind``."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, kind):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def gym_error() -> type[Exception]:
    """Gymnasium's base error class."""
    import gymnasium as gym

    return gym.error.Error


def _write_png(path: str, frame: Any) -> None:
    import imageio.v2 as imageio

    if frame is None:
        raise UserError("--figure: this env returned no frame from render(); it does not support rgb_array")
    imageio.imwrite(path, frame)


def _write_video(path: str, frames: list[Any], fps: int) -> None:
    import imageio.v2 as imageio

    if not frames or frames[0] is None:
        raise UserError("--video: this env returned no frames from render(); it does not support rgb_array")
    writer: Any = imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=1)
    with writer as w:
        for f in frames:
            w.append_data(f)
