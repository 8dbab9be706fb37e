"""Train a policy against an env: ``python train.py --env robot``."""

from __future__ import annotations

import argparse
import logging
import sys


def parser() -> argparse.ArgumentParser:
    """The train.py command line."""
    p = argparse.ArgumentParser(description="Train a policy on a nondiff env (CLI values override the YAML).")
    p.add_argument("--env", help="nondiff name (robot), Gymnasium id (CartPole-v1) or module:Class")
    p.add_argument("--config", help="YAML run config; default configs/<env>.yaml when it exists")
    p.add_argument("--backend", choices=["sb3", "rllib"], help="training backend (default sb3)")
    p.add_argument("--algo", choices=["ppo", "a2c"], help="algorithm (default ppo)")
    p.add_argument("--timesteps", type=int, help="total env steps; with --resume, how many more to train")
    p.add_argument("--seed", type=int, help="seed for Python, NumPy, torch and the envs (drawn if absent)")
    p.add_argument("--num-envs", type=int, help="parallel training envs")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="learner device")
    p.add_argument("--ray-address", help="rllib: address of a running Ray cluster (default: a private local Ray)")
    p.add_argument("--num-env-runners", type=int, help="rllib: number of env-runner actors")
    p.add_argument("--envs-per-runner", type=int, help="rllib: envs per env runner")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. agent.gamma=0.98")
    p.add_argument("--run-dir", help="run directory (default runs/<env>/<time>-s<seed>); never overwritten")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    p.add_argument("--env-package", action="append", metavar="MODULE", help="import MODULE to register adapters")
    p.add_argument("--trust-checkpoint", action="store_true", help="allow loading checkpoints that carry pickle")
    p.add_argument("--trust-run-dir", action="store_true",
                   help="load a run dir that would run code (env.command, env.packages, module:Class) although you "
                        "did not sign it (edited, copied from elsewhere, or written before signing)")
    p.add_argument("--quiet", action="store_true", help="no progress bar; periodic log lines only")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for bad input)."""
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from agents.errors import UserError
    from agents.runner import train

    if args.timesteps is not None and args.timesteps <= 0:
        print(f"error: --timesteps must be a positive number of env steps, got {args.timesteps}", file=sys.stderr)
        return 2
    try:
        return train(args, ["train.py", *argv])
    except UserError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - one line, not a traceback (--debug shows it)
        if args.debug:
            raise
        from agents.failure import describe

        print(f"error: {describe(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
