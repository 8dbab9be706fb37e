"""Train a policy against an env: ``python train.py --env robot``."""

from __future__ import annotations

import argparse
import logging
import sys


def parser() -> argparse.ArgumentParser:
    """The train.py command line (declared in agents/run/cli.py)."""
    from agents.run.cli import train_parser

    return train_parser()


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for bad input)."""
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from agents.run import cli
    from agents.run.runner import train
    from envs.errors import UserError

    if args.timesteps is not None and args.timesteps <= 0:
        print(f"error: --timesteps must be a positive number of env steps, got {args.timesteps}",
              file=sys.stderr)
        return 2
    try:
        if args.optimize or cli.search_overrides(args) or args.study_dir:  # a study of runs (agents/search)
            from agents.search.study import optimize

            return optimize(args, ["train.py", *argv])
        return train(args, ["train.py", *argv])
    except UserError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - one line, not a traceback (--debug shows it)
        if args.debug:
            raise
        from agents.run.failure import describe

        print(f"error: {describe(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before training started, or a third one while a checkpoint is written
        if args.debug:
            raise
        print("error: interrupted (Ctrl-C) before training started or while its checkpoint was written; "
              "nothing more was saved", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
