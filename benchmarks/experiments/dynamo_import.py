"""CPU seconds of a short `train.py` and `evaluate.py` as shipped (TorchDynamo left unimported in processes
that never compile: agents/run/torchstart.py) against the same commands with ``torch._dynamo`` imported
first, alternating in rounds; prints one JSON line per round with the 1-minute load before and after."""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cpu_seconds(argv: list[str]) -> float:
    """User + system CPU seconds of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, cwd=ROOT, check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def command(script: str, args: list[str], dynamo: bool) -> list[str]:
    """``python SCRIPT ARGS``, or the same run after ``import torch._dynamo``."""
    if not dynamo:
        return [sys.executable, script, *args]
    code = (f"import runpy, sys, torch._dynamo; sys.argv = {[script, *args]!r}; sys.path.insert(0, '.'); "
            f"runpy.run_path({script!r}, run_name='__main__')")
    return [sys.executable, "-c", code]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timesteps", type=int, default=512)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        train = ["--env", "CartPole-v1", "--timesteps", str(args.timesteps), "--quiet", "--run-dir"]
        subprocess.run([sys.executable, "train.py", *train, f"{tmp}/scored"], cwd=ROOT, check=True,
                       capture_output=True)
        evaluate = [f"{tmp}/scored", "--episodes", "2"]
        for i in range(args.rounds):
            row: dict[str, object] = {"load_before": round(os.getloadavg()[0], 2)}
            for arm in (("shipped", "dynamo") if i % 2 == 0 else ("dynamo", "shipped")):
                dynamo = arm == "dynamo"
                row[f"train_{arm}"] = round(cpu_seconds(command("train.py", [*train, f"{tmp}/r{i}{arm}"],
                                                                dynamo)), 2)
                row[f"evaluate_{arm}"] = round(cpu_seconds(command("evaluate.py", evaluate, dynamo)), 2)
            row["load_after"] = round(os.getloadavg()[0], 2)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
