"""The real-engine adapters (Godot, Blender, Devito) against careless settings: each is refused before any
engine starts or any array is allocated, in one line that names the key and the fix (exit 2 from the
scripts), found by the adversarial pass. None of these needs Godot, Blender or a compiler: the checks run
first."""

from __future__ import annotations

import math
import shutil
import sys

import numpy as np
import pytest
from conftest import ROOT, run_cli

from envs.adapters.blender import BlenderProblem
from envs.adapters.devito import DevitoEnv
from envs.adapters.godot import GodotEnv
from envs.bridge.process import ProcessEnv
from envs.inverse import Instance, InverseEnv, InverseProblem

FAST = ["--timesteps", "256", "--quiet", "--set", "agent.n_steps=64", "--set", "agent.batch_size=64"]


def refused(proc, *words: str) -> str:
    """The one error line of a refused command (exit 2, no traceback), holding every one of ``words``."""
    lines = [line for line in proc.stderr.strip().splitlines()
             if not line.startswith(("WARNING ", "nondiff: "))]  # log warnings, engine start-up lines
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


# -- the watchdog's deadlines (every bridge env: Godot, Blender's render server, your program) -------------
@pytest.mark.parametrize(("kwargs", "words"), [
    ({"step_timeout": math.nan}, ("step_timeout must be a finite number of seconds > 0", "nan")),
    ({"step_timeout": math.inf}, ("step_timeout must be a finite number", "inf")),
    ({"reset_timeout": math.nan}, ("reset_timeout must be a finite number",)),
    ({"connect_timeout": "abc"}, ("connect_timeout must be a finite number", "'abc'")),
    ({"term_grace": -1.0}, ("term_grace must be a finite number of seconds >= 0",)),
    ({"max_restarts": 1.5}, ("max_restarts must be an integer >= 0", "--set env.max_restarts=N")),
    ({"restart_rate": True}, ("restart_rate must be an integer >= 1",)),
], ids=["step-nan", "step-inf", "reset-nan", "connect-text", "grace-negative", "restarts-float", "rate-bool"])
def test_a_deadline_that_is_not_a_finite_number_is_refused(kwargs, words):
    # measured before the fix: step_timeout=.nan or .inf was taken, and a Godot hung in a GDScript loop
    # hung the run for ever (the watchdog never fired; killed by `timeout 60` with no fault reported)
    with pytest.raises(ValueError) as info:
        ProcessEnv(command=f"{sys.executable} -c pass", **kwargs)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_godot_with_a_nan_step_timeout_is_one_line_exit_2(tmp_path):
    proc = run_cli("train.py", "--env", "godot", *FAST, "--set", "env.step_timeout=.nan",
                   "--run-dir", str(tmp_path / "run"), timeout=60)
    refused(proc, "step_timeout", "--set env.step_timeout=SECONDS")
    assert not (tmp_path / "run").exists()


# -- Godot: a --path that is not a project waited for ever in Godot (115 s of restarts before a vague line) --
@pytest.mark.parametrize(("path", "what"), [
    ("/nonexistent/game", "does not exist"),
    (str(ROOT / "envs"), "holds no project.godot"),
    ("{assets}/godot/project.godot", "is a file"),
], ids=["missing", "not-a-project", "the-file-itself"])
def test_a_godot_path_that_is_not_a_project_is_refused_before_godot_starts(path, what):
    with pytest.raises(ValueError) as info:
        GodotEnv(command=f"godot3-server --path {path} --fixed-fps 60")
    assert what in str(info.value) and "project.godot" in str(info.value), str(info.value)


def test_a_godot_scene_that_is_not_in_the_project_is_one_line_exit_2(tmp_path):
    proc = run_cli("train.py", "--env", "godot", *FAST, "--run-dir", str(tmp_path / "run"), "--set",
                   "env.command=godot3-server --path {assets}/godot --fixed-fps 60 res://game/nosuch.tscn",
                   timeout=60)
    refused(proc, "res://game/nosuch.tscn", "env.command", "res://game/main.tscn")


@pytest.mark.parametrize("fps", ["0", "-5", "sixty"])
def test_a_godot_fixed_fps_below_one_is_refused_before_godot_starts(fps):
    # before: --fixed-fps 0 or -5 never ran a physics tick, so Godot never connected: 113 s, then a line
    # that did not say why
    with pytest.raises(ValueError, match=f"--fixed-fps '{fps}' must be a whole number of physics ticks"):
        GodotEnv(command=f"godot3-server --path {{assets}}/godot --fixed-fps {fps}")


def test_the_shipped_godot_commands_pass_the_project_check():
    import shlex

    from envs.adapters.godot import CAMERA_COMMAND, COMMAND
    from envs.bridge.spawn import check_project, under_xvfb

    for command in (COMMAND, CAMERA_COMMAND, f"{COMMAND} res://game/teams.tscn", "./my_exported_game --x"):
        check_project(under_xvfb(shlex.split(command)), None)  # raises on a project or scene not there
    check_project(["godot3-server", "--path", "godot"], str(ROOT / "envs" / "adapters" / "assets"))


def test_the_teams_env_checks_the_godot_project_too():
    from envs.bridge.parallel import BridgeParallelEnv

    with pytest.raises(ValueError, match="is not a Godot project folder"):
        BridgeParallelEnv(command="godot3-server --path /nonexistent --fixed-fps 60 res://game/teams.tscn",
                          listen="127.0.0.1:0")


# -- Blender ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "words"), [
    ({"noise": math.inf}, ("noise must be a finite standard deviation", "inf", "--set env.noise=")),
    ({"render_timeout": math.inf}, ("render_timeout must be a finite number of seconds > 0",)),
    ({"start_timeout": -1.0}, ("start_timeout must be", "got -1.0", "--set env.start_timeout=")),
    ({"n_objects": True}, ("n_objects must be an integer from 1 to 8", "True")),
    ({"success_iou": "nan"}, ("success_iou must be a number in (0, 1]", "'nan'")),
], ids=["noise-inf", "render-timeout-inf", "start-timeout-named", "objects-bool", "iou-text"])
def test_blender_settings_are_refused_before_blender_starts(kwargs, words):
    # before: noise=.inf trained on white pictures, render_timeout=.inf disabled the watchdog, a bad
    # start_timeout was reported as 'render_timeout ... got 10.0', n_objects=true started Blender 11 times
    # and 'nan' was a TypeError with the kwargs dumped
    with pytest.raises(ValueError) as info:
        BlenderProblem(blender="/nonexistent/blender", **kwargs)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_blender_with_infinite_noise_is_one_line_exit_2(tmp_path):
    proc = run_cli("train.py", "--env", "blender", *FAST, "--set", "env.noise=.inf",
                   "--run-dir", str(tmp_path / "run"), timeout=60)
    refused(proc, "noise must be a finite", "--set env.noise=")


class _Line(InverseProblem):
    """y = x on two numbers: the smallest inverse problem."""

    param_dim, score_key, higher_is_better, success_threshold = 2, "param_error", False, 0.1

    def simulate(self, x, context=None):
        return np.asarray(x, dtype=np.float64)

    def data_misfit(self, data, instance):
        return float(np.abs(data - instance.data).sum())

    def sample_instance(self, rng):
        truth = rng.uniform(size=2)
        return Instance(truth.copy(), truth)

    def score(self, x, instance):
        return {"param_error": float(np.abs(np.asarray(x) - instance.known_truth()).mean())}


@pytest.mark.parametrize("step_size", [math.inf, math.nan, "0.5"])
def test_an_inverse_envs_step_size_must_be_a_finite_number(step_size):
    # before: step_size=.inf trained (every step jumped to a corner of the box); '0.5' was a TypeError
    with pytest.raises(ValueError, match="step_size a finite number > 0"):
        InverseEnv(_Line(), step_size=step_size)


# -- Devito ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "words"), [
    ({"grid_points": 100_000}, ("GiB per env", "half of this machine's memory", "env.grid_points")),
    ({"anomaly_velocity": [1000.0, 1e12]}, ("GiB per env", "time steps")),
    ({"receivers": 10_000_000}, ("GiB per env", "env.receivers")),
    ({"duration": "1e9"}, ("duration must be a finite number > 0", "(text, not a number)")),
    ({"snr_db": math.nan}, ("snr_db must be a finite number of dB or null",)),
    ({"anomaly_velocity": [1000.0, math.inf]}, ("anomaly_velocity must satisfy 0 < low < high < infinity",)),
    ({"peak_frequency": 0}, ("peak_frequency must be a finite number > 0",)),
    ({"step_size": math.inf}, ("step_size must be a finite number > 0",)),
    ({"shots": True}, ("shots must be an integer >= 1", "True")),
], ids=["grid-huge", "velocity-huge", "receivers-huge", "duration-text", "snr-nan", "velocity-inf",
        "frequency-zero", "step-inf", "shots-bool"])
def test_devito_settings_are_refused_before_anything_is_allocated(kwargs, words):
    # before: grid_points=100000 was a MemoryError (74.5 GiB), snr_db=.nan trained on NaN observations
    # (512 nonfinite faults), peak_frequency=0 a ZeroDivisionError, 1e9 a TypeError with the kwargs dumped
    with pytest.raises(ValueError) as info:
        DevitoEnv(preset="small", **kwargs)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_devito_with_a_huge_grid_is_one_line_exit_2(tmp_path):
    proc = run_cli("train.py", "--env", "devito", *FAST, "--set", "env.preset=small", "--set",
                   "env.grid_points=100000", "--run-dir", str(tmp_path / "run"), timeout=60)
    refused(proc, "GiB per env", "env.grid_points")


def test_envs_check_with_settings_the_env_rejects_is_one_line_exit_2():
    # before: four FAIL lines, each the same ValueError with its file and line, and exit 1
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "envs", "check", "devito", "--set", "preset=small", "--set",
                           "shots=0"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    line = refused(proc, "devito rejected its settings", "shots must be an integer >= 1", "env.shots=3")
    assert "FAIL" not in proc.stdout and line.startswith("error: ")


def test_envs_check_with_an_unknown_keyword_names_the_closest_one():
    # before: gymnasium's TypeError with the kwargs dumped, no suggestion (train.py has one)
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "envs", "check", "robot", "--set", "frame_skp=3"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    line = refused(proc, "robot: unknown keyword argument 'frame_skp'; did you mean 'frame_skip'? its "
                         "keyword arguments are: model, ")
    assert "was raised from the environment creator" not in line


def test_a_program_that_never_connects_says_which_setting_to_raise_and_what_it_must_do(tmp_path):
    # /bin/sleep 1000 as env.command: 113 s (11 starts x env.reset_timeout 10 s), then a line that named
    # env.reset_timeout but neither fix; here one start of 1 s
    proc = run_cli("train.py", "--env", "godot", *FAST, "--run-dir", str(tmp_path / "run"), "--set",
                   "env.command=/bin/sleep 30", "--set", "env.reset_timeout=1", "--set", "env.max_restarts=0",
                   timeout=60)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "larger env.reset_timeout" in lines[0] and "NONDIFF_CONNECT" in lines[0], lines[0]


@pytest.mark.skipif(shutil.which("godot3-server") is None, reason="needs godot3-server (make install)")
def test_more_godots_than_the_machine_holds_are_refused_before_they_start(tmp_path):
    # before: --num-envs 100000 started 6,250 Godots side by side (16 agents each; load average 220 on 2
    # cores) until killed; now one line after the probe's one Godot, no run dir
    proc = run_cli("train.py", "--env", "godot", *FAST, "--num-envs", "100000", "--run-dir",
                   str(tmp_path / "run"), timeout=60)
    refused(proc, "train.num_envs=100000 at 16 instances per program", "6,250 worker processes",
            "lower train.num_envs (--num-envs: each program hosts 16)")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("name", "what"), [("", "a directory"), ("scene.blend", "a scene file"),
                                             ("notes.txt", "not executable")], ids=["dir", "blend", "plain"])
def test_env_blender_that_is_not_a_program_says_what_it_is(tmp_path, name, what):
    # before: a directory or a .blend file given as env.blender was "'…' was not found; install it with: …"
    path = tmp_path / name
    if name:
        path.write_text("")
    with pytest.raises(ValueError) as info:
        BlenderProblem(blender=str(path))
    text = str(info.value)
    assert f"is {what}, not the Blender program" in text and "--set env.blender=" in text, text


@pytest.mark.skipif(shutil.which("godot3-server") is None, reason="needs godot3-server (make install)")
def test_evaluate_video_of_a_godot_run_without_a_camera_says_to_drop_video(tmp_path):
    # before: 'add --camera=N to env.command', which evaluate.py cannot set and the trained policy cannot use
    run = tmp_path / "run"
    run_cli("train.py", "--env", "godot", *FAST, "--num-envs", "2", "--run-dir", str(run), timeout=60,
            check=True)
    proc = run_cli("evaluate.py", str(run), "--episodes", "1", "--video", str(tmp_path / "v.mp4"), timeout=60)
    refused(proc, "evaluate.py --video", "when training", "without --video")
    assert not (tmp_path / "v.mp4").exists()


@pytest.mark.skipif(shutil.which("godot3-server") is None, reason="needs godot3-server (make install)")
@pytest.mark.parametrize("agents", ["0", "5000"])
def test_reach_refuses_an_agent_count_it_cannot_serve_at_once(tmp_path, agents):
    # before: --agents=0 said "no node in group 'nondiff_agent': add the agents to it"; --agents=5000 took
    # 114 s (a 5,000-ball scene starts in over 10 s, 11 times) before a line that did not say why
    proc = run_cli("train.py", "--env", "godot", *FAST, "--run-dir", str(tmp_path / "run"), "--set",
                   f"env.command=godot3-server --path {{assets}}/godot --fixed-fps 60 --agents={agents}",
                   "--set", "env.max_restarts=0", timeout=60)
    refused(proc, f"--agents=N takes 1 to 4096 agents per Godot, got '{agents}'")


@pytest.mark.skipif(shutil.which("blender") is None, reason="needs blender (make install)")
def test_renders_slower_than_the_render_timeout_say_which_settings_to_change():
    # before: "blender failed 3 renders in a row (last: no complete message within the deadline ...)" while
    # Blender's own progress said a 512 x 512 Cycles render at 4,096 samples needed 5 minutes
    from envs.errors import EnvFailure

    problem = BlenderProblem(engine="cycles", samples=4096, image_size=512, render_timeout=0.5, threads=1)
    try:
        with pytest.raises(EnvFailure, match=r"env.render_timeout=0.5 s: raise it, or lower env.samples"):
            problem.render(problem.start())
    finally:
        problem.close()


@pytest.mark.skipif(shutil.which("godot3-server") is None, reason="needs godot3-server (make install)")
@pytest.mark.parametrize(("counts", "says"), [
    ("--seekers=100000", "--seekers=N takes 0 to 4096 agents, got '100000'"),
    ("--seekers=0 --chasers=0", "leaves no agent"),
], ids=["too-many", "none"])
def test_the_teams_scene_refuses_counts_it_cannot_serve_at_once(counts, says):
    # before: 100,000 seekers built for minutes (killed at 30 s); none said "no node in group"
    from envs.bridge.parallel import BridgeParallelEnv
    from envs.errors import RestartBudgetExhausted

    command = f"godot3-server --path {{assets}}/godot --fixed-fps 60 res://game/teams.tscn {counts}"
    with pytest.raises(RestartBudgetExhausted, match=says):
        BridgeParallelEnv(command=command, listen="127.0.0.1:0", max_restarts=0)
