"""docs/blender.md is followed: its two files are written out, and its commands check, train and evaluate."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DOC = (ROOT / "docs" / "blender.md").read_text()


@pytest.fixture
def workdir(tmp_path):
    blocks = dict(re.findall(r"```python\n# file: (\S+)\n(.*?)```", DOC, flags=re.S))
    assert set(blocks) == {"my_scene.py", "sphere_problem.py"}
    for name, code in blocks.items():
        (tmp_path / name).write_text(code)
    return tmp_path


def run(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` with the page's files importable and a temp dir of the test's own (``TMPDIR``)."""
    (workdir / "tmp").mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": f"{workdir}{os.pathsep}{ROOT}", "TMPDIR": str(workdir / "tmp")}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.mark.slow
@pytest.mark.ci
def test_the_page_checks_trains_and_evaluates(workdir, tmp_path):
    """About 20 s: Blender starts 4 times (check, probe, training, evaluation)."""
    proc = run(workdir, "-m", "envs", "check", "sphere", "--env-package", "sphere_problem", "--steps", "20")
    assert proc.returncode == 0 and "all checks passed" in proc.stdout, proc.stdout + proc.stderr
    run_dir = tmp_path / "sphere"
    proc = run(workdir, "train.py", "--env", "sphere", "--env-package", "sphere_problem", "--backend",
               "blackbox", "--algo", "cma", "--set", "blackbox.calls_per_instance=40", "--timesteps", "40",
               "--seed", "0", "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "e.json"
    proc = run(workdir, "evaluate.py", str(run_dir), "--episodes", "3", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert res["metrics"]["param_error"] < 0.05 < res["random_metrics"]["param_error"]
    # every Blender the page's server ran removed its session directory (blender_XXXXXX): one was left in
    # /tmp per start before the page's server removed it and nondiff let a program exit after `bye`
    assert not list((workdir / "tmp").iterdir()), list((workdir / "tmp").iterdir())
