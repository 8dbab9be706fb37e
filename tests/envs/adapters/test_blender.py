"""Inverse rendering through a real Blender: the render server, the InverseProblem, its faults, its CLI."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import gymnasium as gym
import numpy as np
import pytest
from conftest import run_cli
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers nondiff/Blender-v0)
from envs import errors as E
from envs.adapters.blender import INSTALL, BlenderProblem
from envs.faults import FaultKind

X = np.array([0.3, 0.6, 0.1, 0.9, 0.4, 0.3, 0.2, 0.7])  # one box at (0.3, 0.6), reddish, light from the side


@pytest.fixture(scope="module")
def problem():
    p = BlenderProblem(n_objects=1)
    yield p
    p.close()


def test_env_checker_and_one_episode(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the program's own temp dir is made in it (reaper.py)
    env = gym.make("nondiff/Blender-v0", n_objects=1, steps=2)
    try:
        check_env(env.unwrapped, skip_render_check=True)
        _, info = env.reset(seed=0)
        assert set(info) == {"data_misfit", "is_success"}
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        assert truncated and not terminated and "iou" in info["episode_metrics"]
        assert len(list(tmp_path.glob("nondiff-program-*/blender_*"))) == 1  # Blender's session dir
    finally:
        env.close()
        env.close()  # idempotent
    assert not list(tmp_path.iterdir())  # the server removes it as it ends, and the reaper its temp dir


def test_same_parameters_give_the_same_picture_and_the_truth_scores_perfectly(problem):
    a, b = problem.render(X), problem.render(X)
    assert a.shape == (64, 64, 4) and a.dtype == np.uint8 and np.array_equal(a, b)
    silhouette = a[..., 3] > 127
    assert 0.02 < silhouette.mean() < 0.3  # the box is in view, the floor is not drawn
    assert np.all(a[~silhouette, :3] <= a[~silhouette, 3:])  # premultiplied: the background is black
    inst = problem.sample_instance(np.random.default_rng(1))
    assert problem.misfit(inst.known_truth(), inst) == pytest.approx(0.0, abs=1e-9)
    score = problem.score(inst.known_truth(), inst)
    assert score["iou"] == 1.0 and score["image_error"] == 0.0 and score["param_error"] == 0.0
    far = problem.score(problem.start(), inst)
    assert far["iou"] < 0.95 and far["position_error"] > 0.0


def test_scores_respect_symmetry_and_wrap_around(problem):
    inst = problem.make_instance(X, problem.simulate(X))
    turned = X.copy()
    turned[2] += 0.25  # a quarter turn of a box is the same box
    turned[6] = (X[6] + 0.999) % 1.0  # the azimuth wraps: 0.999 turns away is 0.001 away
    err = problem.errors(turned, inst)
    assert err["rotation_error"] == pytest.approx(0.0, abs=1e-9)
    assert err["light_error"] == pytest.approx(0.001, abs=1e-6)
    assert problem.periodic().tolist() == [False, False, True, False, False, False, True, False]


def test_cycles_with_a_fixed_seed_is_bit_identical_across_processes():
    pictures = []
    for _ in range(2):
        p = BlenderProblem(n_objects=1, engine="cycles", samples=2, seed=7)
        try:
            pictures.append(p.render(X))
        finally:
            p.close()
    assert np.array_equal(*pictures) and pictures[0][..., 3].mean() > 0


def _stop_while_rendering(problem: BlenderProblem, sig: int, after: float) -> None:
    pid = problem.program_pid
    assert pid is not None

    def stop() -> None:
        time.sleep(after)
        os.kill(pid, sig)

    threading.Thread(target=stop, daemon=True).start()


def test_blender_killed_mid_render_or_hung_costs_a_restart_not_the_run():
    p = BlenderProblem(n_objects=1, engine="cycles", samples=512, threads=1, render_timeout=3.0)
    try:
        t = time.monotonic()
        expected = p.render(X)
        slow = time.monotonic() - t
        assert slow > 0.3  # long enough to be killed in the middle
        _stop_while_rendering(p, signal.SIGKILL, slow / 3)
        assert np.array_equal(p.render(X), expected)
        assert p.restarts == 1 and p.faults[-1].kind == FaultKind.CRASH
        _stop_while_rendering(p, signal.SIGSTOP, slow / 3)  # hung: it never answers
        assert np.array_equal(p.render(X), expected)
        assert p.restarts == 2 and p.faults[-1].kind == FaultKind.TIMEOUT
    finally:
        p.close()


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"engine": "eevee"}, "engine must be workbench or cycles"),
    ({"image_size": 60}, "image_size must be a multiple of 16"),
    ({"n_objects": 0}, "n_objects must be an integer from 1 to 8"),
    ({"blender": "/nonexistent/blender"}, "apt-get install -y blender python3-numpy"),
])
def test_bad_arguments_are_one_clear_sentence(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BlenderProblem(**kwargs)


def test_missing_blender_is_one_line_with_the_install_command_and_exit_2(tmp_path):
    proc = run_cli("train.py", "--env", "blender", "--set", "env.blender=/nonexistent/blender",
                   "--run-dir", str(tmp_path / "run"))
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and INSTALL in lines[0] and "Traceback" not in proc.stderr
    with pytest.raises(E.LaunchError, match="was not found"):
        BlenderProblem(blender="no-such-blender-here")


@pytest.mark.slow
@pytest.mark.ci
def test_cma_through_the_cli_recovers_one_object(tmp_path):
    """CMA-ES with 100 renders per instance, through train.py and evaluate.py, on one object (~13 s)."""
    run = tmp_path / "run"
    run_cli("train.py", "--config", "configs/blender.yaml", "--backend", "blackbox", "--algo", "cma",
            "--set", "env.n_objects=1", "--set", "blackbox.calls_per_instance=100", "--timesteps", "100",
            "--seed", "0", "--run-dir", str(run), check=True)
    out = tmp_path / "eval.json"
    run_cli("evaluate.py", str(run), "--episodes", "4", "--json", str(out), check=True)
    res = json.loads(out.read_text())
    # measured: IoU 0.75 and a position error of 3.3% of the floor (a random policy: 0.11 and 34%)
    assert res["forward_calls_per_instance"] <= 100
    assert res["metrics"]["iou"] >= 0.65 and res["random_metrics"]["iou"] < 0.3
    assert res["metrics"]["position_error"] <= 0.05


def test_a_blender_that_never_starts_spends_the_budget_and_says_why(tmp_path):
    fake = tmp_path / "blender"
    fake.write_text("#!/bin/sh\necho \"render_server: Blender's Python has no NumPy\" >&2\nexit 2\n")
    fake.chmod(0o755)
    with pytest.raises(E.RestartBudgetExhausted, match="has no NumPy"):
        BlenderProblem(blender=str(fake), max_restarts=1)
