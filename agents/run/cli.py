"""The command lines of train.py and evaluate.py, declared once.

Every flag that sets a config key is one row of :data:`CONFIG_FLAGS`: its config path, and its choices and
type taken from the schema (agents/config/schema.py, env.py), so the parser, the YAML precedence
(:func:`overrides`) and the documentation cannot drift apart. ``--set SECTION.KEY=VALUE`` is parsed by
:func:`agents.config.apply_override`.
"""

from __future__ import annotations

import argparse
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel

from agents.config import SECTIONS
from agents.config.search import SearchSection

# flag -> (config path, help); choices and types come from the schema field at that path.
CONFIG_FLAGS: dict[str, tuple[str, str]] = {
    "--backend": ("agent.backend", "training backend (default sb3)"),
    "--algo": ("agent.algo", "algorithm (default ppo)"),
    "--timesteps": ("train.timesteps", "total env steps; with --resume, how many more to train"),
    "--seed": ("train.seed", "seed for Python, NumPy, torch and the envs (drawn if absent)"),
    "--num-envs": ("train.num_envs", "parallel training envs"),
    "--device": ("train.device", "learner device"),
    "--max-memory-gb": ("train.max_memory_gb",
                        "the most GiB the trainer and its processes may hold; past it: final/, exit 1"),
    "--ray-address": ("rllib.address",
                      "rllib: address of a running Ray cluster (default: a private local Ray)"),
    "--num-env-runners": ("rllib.num_env_runners", "rllib: number of env-runner actors"),
    "--envs-per-runner": ("rllib.envs_per_runner", "rllib: envs per env runner"),
}
# flag -> (search: key, help): train.py --optimize (agents/search); the file's search: section is below them.
SEARCH_FLAGS: dict[str, tuple[str, str]] = {
    "--trials": ("trials", "trials in the whole study (default 20)"),
    "--seeds-per-trial": ("seeds_per_trial", "seeded runs per trial, their scores combined (default 3)"),
    "--across-seeds": ("across_seeds", "a trial's score from its seeds': mean, min or mean_minus_std "
                                       "(default mean)"),
    "--evaluations": ("evaluations", "evaluations per run, each reported to the pruner (default 5)"),
    "--sampler": ("sampler", "Optuna sampler (default tpe)"),
    "--pruner": ("pruner", "Optuna pruner (default median)"),
    "--jobs": ("jobs", "trials run at once (default 1)"),
}
TRUST_RUN_DIR_HELP = ("load a run dir that would run code (env.command, env.packages, module:Class) although "
                      "you did not sign it (edited, copied from elsewhere, or written before signing)")


def _dest(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def _schema_kwargs(path: str, model: type[BaseModel] | None = None) -> dict[str, Any]:
    """argparse ``choices``/``type`` from the schema field at ``section.key`` (``X | None`` looks at X)."""
    section, key = path.split(".")
    annotation = (model or SECTIONS[section]).model_fields[key].annotation
    options = ([a for a in get_args(annotation) if a is not type(None)]
               if get_origin(annotation) is not Literal else [])
    kind = options[0] if len(options) == 1 else annotation
    if get_origin(kind) is Literal:
        return {"choices": list(get_args(kind))}
    return {"type": int} if kind is int else {}


def _add_trust(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow loading checkpoints that carry pickle")
    p.add_argument("--trust-run-dir", action="store_true", help=TRUST_RUN_DIR_HELP)


def train_parser() -> argparse.ArgumentParser:
    """The train.py command line."""
    p = argparse.ArgumentParser(prog="train.py",
                                description="Train a policy on a nondiff env (CLI values override the YAML).")
    p.add_argument("--env", help="nondiff name (robot), Gymnasium id (CartPole-v1) or module:Class")
    p.add_argument("--config", help="YAML run config; default configs/<env>.yaml when it exists")
    for flag, (path, text) in CONFIG_FLAGS.items():
        p.add_argument(flag, help=text, **_schema_kwargs(path))
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key, e.g. agent.gamma=0.98, or one entry of a mapping key, "
                   "e.g. rllib.extra.vf_clip_param=10")
    p.add_argument("--run-dir", help="run directory (default runs/<env>/<time>-s<seed>); never overwritten")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue a run from its latest checkpoint (with --optimize: a study dir)")
    p.add_argument("--env-package", action="append", metavar="MODULE",
                   help="import MODULE to register adapters")
    _add_trust(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar; periodic log lines only")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    g = p.add_argument_group("hyperparameter search", "--optimize: an Optuna study of trials, each a few "
                             "seeded runs of --timesteps steps (the config's search: section; agents/search)")
    g.add_argument("--optimize", action="store_true", help="search hyperparameters instead of one run")
    for flag, (key, text) in SEARCH_FLAGS.items():
        g.add_argument(flag, help=text, **_schema_kwargs(f"search.{key}", SearchSection))
    g.add_argument("--study-dir", help="the study's directory (default runs/<env>/study-<time>)")
    return p


RESUME_FLAGS = ("--timesteps", "--device", "--ray-address", "--max-memory-gb")
"""The config flags ``--resume`` honours: how many more steps, and where the run goes on (its learner's
device, the Ray cluster, the memory it may take there). Every other setting is the run's own config.yaml."""


def given_flags(args: argparse.Namespace, allowed: tuple[str, ...]) -> list[str]:
    """The setting flags given on the command line, but those ``allowed``: what a resume (of a run,
    :data:`RESUME_FLAGS`, or of a study) would not apply, as it keeps the settings it was started with."""
    flags = ("--env", "--config", *CONFIG_FLAGS, "--set", "--run-dir", "--env-package", *SEARCH_FLAGS)
    return [f for f in flags if f not in allowed and getattr(args, _dest(f), None) is not None]


def search_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The ``search:`` values the flags of :data:`SEARCH_FLAGS` set."""
    values = {key: getattr(args, _dest(flag), None) for flag, (key, _) in SEARCH_FLAGS.items()}
    return {k: v for k, v in values.items() if v is not None}


def evaluate_parser() -> argparse.ArgumentParser:
    """The evaluate.py command line."""
    p = argparse.ArgumentParser(prog="evaluate.py",
                                description="Evaluate a trained policy against a uniform-random baseline.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by train.py")
    p.add_argument("--checkpoint", default="final",
                   help="final, best, latest, crash or a path (default final)")
    p.add_argument("--episodes", type=int, default=20, help="episodes to play (default 20)")
    p.add_argument("--seed", type=int, help="seed of the first episode (default 10000)")
    p.add_argument("--stochastic", action="store_true",
                   help="sample actions instead of the deterministic ones")
    p.add_argument("--video", metavar="PATH.mp4", help="record the episodes to an MP4")
    p.add_argument("--figure", metavar="PATH.png",
                   help="save the env's picture of the end of the first episode (render() as a PNG)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--render", action="store_true", help="show the env in a window (needs a display)")
    p.add_argument("--opponent", metavar="WHO",
                   help="a two-player game's opponent: random (default), lookahead, or a checkpoint file "
                        "such as RUN_DIR/league/step_<N>.safetensors")
    _add_trust(p)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The config values the flags of :data:`CONFIG_FLAGS` set, as ``{section: {key: value}}``."""
    out: dict[str, dict[str, Any]] = {}
    for flag, (path, _) in CONFIG_FLAGS.items():
        value = getattr(args, _dest(flag), None)
        if value is not None:
            section, key = path.split(".")
            out.setdefault(section, {})[key] = value
    return out


def shown(program: str) -> str:
    """How to type ``program`` (``python``, ``tensorboard``) in a printed command so that it runs this
    environment's: its bare name when the shell's PATH finds this interpreter's, else the path beside this
    interpreter (a venv used without activating it: ``.venv/bin/python train.py``)."""
    import os
    import shutil
    import sys

    here = os.path.dirname(sys.executable)
    mine = os.path.join(here, program)
    found = shutil.which(program)
    if found and os.path.realpath(os.path.dirname(found)) == os.path.realpath(here):
        return program
    return _typable(mine) if os.path.exists(mine) else program  # nothing beside it: the bare name


def script(name: str) -> str:
    """``name`` (``evaluate.py``) as a path a user can type from the current directory."""
    from pathlib import Path

    return _typable(str(Path(__file__).resolve().parents[2] / name))


def _typable(path: str) -> str:
    """``path`` relative to the current directory when it lies below it, else absolute."""
    import os

    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else os.path.abspath(path)
