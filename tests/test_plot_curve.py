"""benchmarks/experiments/plot_curve.py on real run directories (the v0 fixture runs' TensorBoard
event files)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "tests" / "fixtures" / "runs_v0"
SCRIPT = str(ROOT / "benchmarks" / "experiments" / "plot_curve.py")


def _plot(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_several_runs_in_one_figure_against_minutes(tmp_path):
    out = tmp_path / "curve.png"
    proc = _plot(str(RUNS / "cartpole_sb3"), str(RUNS / "pendulum_sb3"), str(out), "--minutes", "--mark", "1")
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5_000


def test_bad_paths_exit_2_with_one_line(tmp_path):
    proc = _plot(str(tmp_path / "only.png"))
    assert proc.returncode == 2 and "expected one or more run directories, then the output PNG" in proc.stderr
    proc = _plot(str(tmp_path), str(tmp_path / "out.png"))
    assert (proc.returncode == 2 and "has no tensorboard/ folder" in proc.stderr
            and "Traceback" not in proc.stderr)
    assert not (tmp_path / "out.png").exists()
