"""Score a saved policy: ``python evaluate.py RUN_DIR``."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agents.run.evaluation import EvalSummary, EvaluationReport


def parser() -> argparse.ArgumentParser:
    """The evaluate.py command line (declared in agents/run/cli.py)."""
    from agents.run.cli import evaluate_parser

    return evaluate_parser()


def table(res: EvaluationReport) -> str:
    """The results and the random baseline as a small text table."""
    def row(name: str, r: EvalSummary) -> str:
        s = "-" if r.success_rate is None else f"{r.success_rate:.2f}"
        return (f"{name:<8} {r.mean_reward:>10.2f} ± {r.std_reward:<8.2f} {r.min_reward:>9.2f} "
                f"{r.max_reward:>9.2f} {r.mean_length:>8.1f} {s:>8}")

    head = f"{'policy':<8} {'mean':>10}   {'std':<8} {'min':>9} {'max':>9} {'length':>8} {'success':>8}"
    metrics = [f"{k:<22} trained {v:>10.4g}   random {res.random.metrics.get(k, float('nan')):>10.4g}"
               for k, v in res.trained.metrics.items()]
    alone = [f"{'policy/' + k + '/return':<22} alone   {v:>10.4g}   (the other policies random)"
             for k, v in res.extra.get("policy_alone", {}).items()]
    return "\n".join([head, row("trained", res.trained), row("random", res.random), *metrics, *alone])


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for bad input)."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING)
    from agents.run.runner import leftovers_stopped
    from agents.run.scoring import evaluate
    from envs.console import bounded
    from envs.errors import UserError

    try:
        with leftovers_stopped(), bounded():  # processes the env left running; what it prints, bounded
            res = evaluate(args)
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
    except KeyboardInterrupt:  # Ctrl-C (e.g. on an env whose step never returns), or an env that raised it
        if args.debug:
            raise
        print("error: interrupted (Ctrl-C, or the env raised KeyboardInterrupt) before the evaluation ended; "
              "nothing was scored", file=sys.stderr)
        return 130
    print(f"{res.checkpoint} (step {res.step:,}), {res.trained.episodes} episodes")
    print(table(res))
    if args.video:
        print(f"video: {args.video}")
    if args.figure:
        print(f"figure: {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
