"""docs/adapters.md is executed: its code must register, check and train, and its error table must be true."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "adapters.md").read_text()


def files_from_doc() -> dict[str, str]:
    blocks = re.findall(r"```python\n# file: (\S+)\n(.*?)```", DOC, flags=re.S)
    return {name: code for name, code in blocks}


@pytest.fixture
def workdir(tmp_path):
    for name, code in files_from_doc().items():
        (tmp_path / name).write_text(code)
    return tmp_path


def run(workdir, *args):
    env = {**os.environ, "PYTHONPATH": f"{workdir}{os.pathsep}{ROOT}"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=300)


def test_doc_has_the_adapter_and_the_registration():
    assert set(files_from_doc()) == {"tank_env.py", "tank_plugin.py", "decay_problem.py", "decay_plugin.py"}


def test_tutorial_check_passes(workdir):
    proc = run(workdir, "-m", "envs", "check", "tank", "--env-package", "tank_plugin", "--steps", "300")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all checks passed" in proc.stdout


def test_tutorial_trains_and_beats_random(workdir, tmp_path):
    run_dir = tmp_path / "run"
    proc = run(workdir, "train.py", "--env", "tank", "--env-package", "tank_plugin", "--seed", "0", "--quiet",
               "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    proc = run(workdir, "evaluate.py", str(run_dir), "--episodes", "10", "--json", str(tmp_path / "e.json"))
    assert proc.returncode == 0, proc.stderr
    import json

    res = json.loads((tmp_path / "e.json").read_text())
    assert res["mean_return"] > res["random_mean_return"], res
    proc = run(workdir, "train.py", "--env", "tank", "--env-package", "tank_plugin", "--set", "env.targt=0.4",
               "--run-dir", str(tmp_path / "bad"))
    assert proc.returncode == 2 and "did you mean 'env.target'" in proc.stderr


MISTAKES = {
    "spaces not set": (lambda code: code.replace("self.observation_space = gym.spaces.Box(",
                                                 "self._obs_space = gym.spaces.Box("),
                       "must specify an observation space"),
    "wrong dtype": (lambda code: code.replace("self.target - self.level], dtype=np.float32)",
                                              "self.target - self.level], dtype=np.float64)"),
                    "has dtype float64, the space declares float32"),
    "reset returns obs only": (lambda code: code.replace("        return self._obs(), {}",
                                                         "        return self._obs()"),
                               "reset() must return (obs, info)"),
    "global numpy RNG": (lambda code: code.replace("float(self.np_random.uniform(0.0, self.max_level))",
                                                   "float(np.random.uniform(0.0, self.max_level))"),
                         "the same seed gave different observations"),
}


@pytest.mark.parametrize("mistake", list(MISTAKES), ids=list(MISTAKES))
def test_common_mistakes_give_the_documented_message(workdir, mistake):
    mutate, message = MISTAKES[mistake]
    path = workdir / "tank_env.py"
    broken = mutate(path.read_text())
    assert broken != path.read_text(), "the mutation no longer applies to the tutorial code"
    path.write_text(broken)
    proc = run(workdir, "-m", "envs", "check", "tank", "--env-package", "tank_plugin", "--steps", "100")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert message in proc.stdout, proc.stdout


def test_inverse_problem_example_trains_with_the_blackbox_backend(workdir, tmp_path, monkeypatch):
    """The DecayProblem of "An inverse problem", in-process (two subprocesses would cost ~30 s under load)."""
    import json

    import evaluate
    import train

    monkeypatch.syspath_prepend(str(workdir))
    run_dir, out = tmp_path / "run", tmp_path / "e.json"
    try:
        code = train.main(["--env", "decay", "--env-package", "decay_plugin", "--backend", "blackbox",
                           "--algo", "cma", "--timesteps", "100", "--set", "blackbox.calls_per_instance=50",
                           "--seed", "0", "--quiet", "--run-dir", str(run_dir)])
        assert code == 0
        assert evaluate.main([str(run_dir), "--episodes", "5", "--json", str(out)]) == 0
    finally:
        for name in ("decay_plugin", "decay_problem"):
            sys.modules.pop(name, None)
    res = json.loads(out.read_text())
    assert res["forward_calls_per_instance"] == 50
    assert (res["success_rate"] >= 0.8
            and res["metrics"]["param_error"] < res["random_metrics"]["param_error"]), res
