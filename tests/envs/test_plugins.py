"""Third-party adapters: real entry-point plugins (pip-installed), --env-package, clashes, broken plugins."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "plugins"
FAST = ["--timesteps", "128", "--num-envs", "2", "--quiet", "--set", "agent.n_steps=32", "--set",
        "agent.batch_size=32", "--set", "agent.n_epochs=1", "--set", "eval.every=0"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A directory where the fixture plugins are really pip-installed (found through importlib.metadata)."""
    target = tmp_path_factory.mktemp("site")
    pkgs = [str(FIXTURES / n) for n in ("demo", "clash_a", "clash_b", "broken")]
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), *pkgs], check=True, capture_output=True)
    return target


def run(site, *args, script="train.py", extra_path=()):
    path = os.pathsep.join([str(site), *map(str, extra_path), os.environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": path}, timeout=300)


def test_plugin_trains_with_subprocess_spawn_workers(site, tmp_path):
    proc = run(site, "--env", "demo-heater", "--run-dir", str(tmp_path / "r"),
               "--set", "train.vec_env=subproc", "--set", "train.start_method=spawn", *FAST)
    assert proc.returncode == 0, proc.stderr
    proc = run(site, str(tmp_path / "r"), "--episodes", "2", script="evaluate.py")
    assert proc.returncode == 0 and "trained" in proc.stdout, proc.stderr


def test_env_package_registers_in_forkserver_workers(site, tmp_path):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "import envs\n"
        "envs.register('pkg-heater', 'nondiff_demo_plugin.heater:HeaterEnv', kwargs={'setpoint': 18.0})\n")
    proc = run(site, "--env", "pkg-heater", "--env-package", "mypkg", "--run-dir", str(tmp_path / "r"),
               "--set", "train.vec_env=subproc", "--set", "train.start_method=forkserver", *FAST,
               extra_path=[tmp_path])
    assert proc.returncode == 0, proc.stderr
    assert "mypkg" in (tmp_path / "r" / "config.yaml").read_text()


def test_name_clash_names_both_distributions(site, tmp_path):
    proc = run(site, "--env", "clash", "--run-dir", str(tmp_path / "r"), *FAST)
    assert proc.returncode == 2
    assert ("nondiff-clash-a" in proc.stderr and "nondiff-clash-b" in proc.stderr
            and "Traceback" not in proc.stderr)


def test_broken_plugin_is_named_and_does_not_break_builtins(site, tmp_path):
    proc = run(site, "--env", "broken", "--run-dir", str(tmp_path / "r"), *FAST)
    assert proc.returncode == 2 and "nondiff-broken-plugin" in proc.stderr and "libsim.so" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run(site, "--env", "robot", "--run-dir", str(tmp_path / "ok"), *FAST)
    assert proc.returncode == 0, proc.stderr


def test_check_command_passes_on_builtins_and_plugin(site):
    for name in ("robot", "demo-heater"):
        proc = subprocess.run([sys.executable, "-m", "envs", "check", name, "--steps", "200"], cwd=ROOT,
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(site)})
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "all checks passed" in proc.stdout and "steps/s" in proc.stdout


def test_check_command_fails_readably_on_a_broken_adapter(tmp_path):
    (tmp_path / "badenv.py").write_text(
        "import gymnasium as gym, numpy as np\n"
        "class Bad(gym.Env):\n"
        "    observation_space = gym.spaces.Box(0, 1, (2,), np.float32)\n"
        "    action_space = gym.spaces.Discrete(2)\n"
        "    def reset(self, *, seed=None, options=None):\n"
        "        super().reset(seed=seed)\n"
        "        return np.zeros(2, dtype=np.float64)\n"  # wrong dtype and no info dict
        "    def step(self, a):\n"
        "        return np.zeros(2, np.float32), 0.0, False, False, {}\n")
    proc = subprocess.run([sys.executable, "-m", "envs", "check", "badenv:Bad"], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 1
    assert "FAIL  gymnasium check_env" in proc.stdout and "check(s) failed" in proc.stdout


def test_check_command_passes_on_every_builtin_including_the_watchdog_smoke_tests(heater, tmp_path):
    import envs

    for name in envs.BUILTIN:
        # devito's full grid is checked in tests/envs/adapters/test_devito.py; the small one suffices here
        extra = {"process": ["--set", f"command={heater}"], "devito": ["--set", "preset=small"]}.get(name, [])
        temp = tmp_path / name
        temp.mkdir()
        check = [sys.executable, "-m", "envs", "check", name, "--steps", "50", *extra]
        proc = subprocess.run(check, cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "TMPDIR": str(temp)})
        assert proc.returncode == 0, proc.stdout + proc.stderr
        if name == "process":
            assert "PASS  watchdog: program crash" in proc.stdout
            assert "PASS  watchdog: program hang (SIGSTOP)" in proc.stdout
            # the smoke tests kill the program's whole group, its supervisor too: it left 2 temp dirs
            assert not list(temp.iterdir())


@pytest.mark.ray
def test_plugin_and_env_package_resolve_inside_ray_workers(site, tmp_path):
    pkg = tmp_path / "raypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "import envs\nenvs.register('ray-heater', 'nondiff_demo_plugin.heater:HeaterEnv')\n")
    rl = ["--backend", "rllib", "--num-env-runners", "1", "--timesteps", "600", "--quiet", "--set",
          "agent.n_steps=64", "--set", "agent.batch_size=64", "--set", "agent.n_epochs=1",
          "--set", "eval.every=0", "--num-envs", "2", "--set", "rllib.num_cpus=2"]
    proc = run(site, "--env", "demo-heater", "--run-dir", str(tmp_path / "a"), *rl)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = run(site, "--env", "ray-heater", "--env-package", "raypkg", "--run-dir", str(tmp_path / "b"), *rl,
               extra_path=[tmp_path])
    assert proc.returncode == 0, proc.stderr[-2000:]
