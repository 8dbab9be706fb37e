"""Score a saved policy: ``python evaluate.py RUN_DIR``."""

from __future__ import annotations

import argparse
import logging
import sys


def parser() -> argparse.ArgumentParser:
    """The evaluate.py command line."""
    p = argparse.ArgumentParser(description="Evaluate a trained policy against a uniform-random baseline.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by train.py")
    p.add_argument("--checkpoint", default="final", help="final, best, latest or a path (default final)")
    p.add_argument("--episodes", type=int, default=20, help="episodes to play (default 20)")
    p.add_argument("--seed", type=int, help="seed of the first episode (default 10000)")
    p.add_argument("--stochastic", action="store_true", help="sample actions instead of the deterministic ones")
    p.add_argument("--video", metavar="PATH.mp4", help="record the episodes to an MP4")
    p.add_argument("--figure", metavar="PATH.png",
                   help="save the env's picture of the end of the first episode (render() as a PNG)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--render", action="store_true", help="show the env in a window (needs a display)")
    p.add_argument("--trust-checkpoint", action="store_true", help="allow loading checkpoints that carry pickle")
    p.add_argument("--trust-run-dir", action="store_true",
                   help="load a run dir that would run code (env.command, env.packages, module:Class) although you "
                        "did not sign it (edited, copied from elsewhere, or written before signing)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def table(res: dict) -> str:
    """The results and the random baseline as a small text table."""
    def row(name: str, mean: float, std: float, lo: float, hi: float, length: float, succ: float | None) -> str:
        s = "-" if succ is None else f"{succ:.2f}"
        return f"{name:<8} {mean:>10.2f} ± {std:<8.2f} {lo:>9.2f} {hi:>9.2f} {length:>8.1f} {s:>8}"

    head = f"{'policy':<8} {'mean':>10}   {'std':<8} {'min':>9} {'max':>9} {'length':>8} {'success':>8}"
    r = res["random"]
    metrics = [f"{k:<22} trained {v:>10.4g}   random {res['random_metrics'].get(k, float('nan')):>10.4g}"
               for k, v in res["metrics"].items()]
    return "\n".join([head, row("trained", res["mean_return"], res["std_return"], res["min_return"], res["max_return"],
                                res["mean_length"], res["success_rate"]),
                      row("random", r["mean_reward"], r["std_reward"], r["min_reward"], r["max_reward"],
                          r["mean_length"], r["success_rate"]), *metrics])


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for bad input)."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING)
    from agents.errors import UserError
    from agents.runner import evaluate

    if args.episodes <= 0:
        print(f"error: --episodes must be positive, got {args.episodes}", file=sys.stderr)
        return 2
    try:
        res = evaluate(args)
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
    print(f"{res['checkpoint']} (step {res['step']:,}), {res['episodes']} episodes")
    print(table(res))
    if args.video:
        print(f"video: {args.video}")
    if args.figure:
        print(f"figure: {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
