"""Other people's Gymnasium packages, installed from PyPI (the dev extra), trained and evaluated (issue 18).

Each test runs the real ``train.py`` / ``evaluate.py`` in a temporary working directory (VizDoom writes
``_vizdoom.ini`` into it). Budgets are small: these tests prove that the pipeline fits the spaces, not
that the policies learn. The README's "Using an existing Gymnasium package" table has the longer runs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from envs.faults import faults_in

ROOT = Path(__file__).resolve().parent.parent
TINY = ("agent: {n_steps: 128, batch_size: 64, n_epochs: 2, net_arch: [32], ent_coef: 0.01}\n"
        "train: {num_envs: 2}\n")


def run(tmp: Path, script: str, *args: str, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    """``python script args`` with ``tmp`` as the working directory (``env``: more environment variables)."""
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=tmp, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    """Both streams of a run that must have succeeded."""
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


RLLIB = ("agent: {backend: rllib, n_steps: 256, batch_size: 64, n_epochs: 2, net_arch: [32]}\n"
         "train: {num_envs: 2}\n")


def config(tmp: Path, env: str, rest: str = TINY) -> str:
    """A run config: the ``env`` section given (YAML), tiny PPO settings (or ``rest``)."""
    path = tmp / "run.yaml"
    path.write_text(f"env: {env}\n{rest}")
    return str(path)


def header(run: Path) -> dict:
    """The readable header of the run's final checkpoint."""
    return json.loads((run / "final" / "model.json").read_text())


def test_minigrid_dict_with_text_trains_and_evaluates(tmp_path):
    """MiniGrid's Dict (7×7 image, direction, Text mission) trains with no wrapper; the mission is dropped."""
    out = ok(run(tmp_path, "train.py",
                 "--config", config(tmp_path, "{id: MiniGrid-Empty-5x5-v0, packages: [minigrid]}"),
                 "--timesteps", "512", "--run-dir", str(tmp_path / "run")))
    assert "observation key 'mission' dropped" in out and "env.drop_keys" in out
    assert "smaller than 36x36" in out
    spaces = header(tmp_path / "run")["observation_space"]["spaces"]
    assert sorted(spaces) == ["direction", "image"] and spaces["image"]["shape"] == [3, 7, 7]
    ev = ok(run(tmp_path, "evaluate.py", str(tmp_path / "run"), "--episodes", "2"))
    assert "trained" in ev and "random" in ev


def test_minigrid_7x7_image_via_wrapper(tmp_path):
    """A bare 7×7×3 image (``ImgObsWrapper`` from env.wrappers) gets an MLP, not the 8×8-kernel CNN."""
    env = '{id: MiniGrid-Empty-5x5-v0, packages: [minigrid], wrappers: ["minigrid.wrappers:ImgObsWrapper"]}'
    out = ok(run(tmp_path, "train.py", "--config", config(tmp_path, env), "--timesteps", "512",
                 "--run-dir", str(tmp_path / "run")))
    assert "an MLP on its pixels" in out
    assert header(tmp_path / "run")["observation_space"]["shape"] == [3, 7, 7]
    ok(run(tmp_path, "evaluate.py", str(tmp_path / "run"), "--episodes", "2"))


def test_pointmaze_dict_statistics_evaluate_and_resume(tmp_path):
    """Per-key statistics of a Dict observation are saved, used by evaluate.py and carried on by --resume."""
    env = "{id: PointMaze_UMaze-v3, packages: [gymnasium_robotics], max_episode_steps: 50}"
    cfg = config(tmp_path, env)
    run_dir = tmp_path / "run"
    ok(run(tmp_path, "train.py", "--config", cfg, "--timesteps", "512", "--set", "agent.normalize_obs=true",
           "--run-dir", str(run_dir)))
    first = header(run_dir)["normalize"]["obs_count"]
    assert sorted(first) == ["achieved_goal", "desired_goal", "observation"] and first["observation"] >= 512
    ev = ok(run(tmp_path, "evaluate.py", str(run_dir), "--episodes", "2"))
    assert "success" in ev and "0.00" in ev  # gymnasium-robotics reports info["success"]: a number, not "-"
    ok(run(tmp_path, "train.py", "--resume", str(run_dir), "--timesteps", "256"))
    after = header(run_dir)["normalize"]["obs_count"]
    assert after["observation"] >= first["observation"] + 256  # continued, not restarted from zero


def test_rllib_flattens_dict_observations_and_evaluates(tmp_path, shared_ray):
    """RLlib's catalog has no encoder for a Dict: the env stack flattens it (Discrete one-hot, Text dropped),
    says so, and evaluate.py (no Ray) builds the same stack."""
    cfg = config(tmp_path, "{id: MiniGrid-Empty-5x5-v0, packages: [minigrid]}", RLLIB)
    out = ok(run(tmp_path, "train.py", "--config", cfg, "--timesteps", "512", "--run-dir",
                 str(tmp_path / "run"), *shared_ray.flags, env=shared_ray.env))
    assert "keys direction, image flattened" in out
    obs = header(tmp_path / "run")["observation_space"]
    assert obs["type"] == "Box" and obs["shape"] == [7 * 7 * 3 + 4] and obs["dtype"] == "float32"
    ev = ok(run(tmp_path, "evaluate.py", str(tmp_path / "run"), "--episodes", "2"))
    assert "trained" in ev


@pytest.mark.parametrize(("wrappers", "shape"), [
    (["minigrid.wrappers:ImgObsWrapper"], (7 * 7 * 3,)),
    (["minigrid.wrappers:RGBImgObsWrapper", "minigrid.wrappers:ImgObsWrapper",
      {"resize": {"shape": [42, 42]}}],
     (42, 42, 3)),
], ids=["7x7-flattened", "42x42-kept"])
def test_rllib_env_stack_flattens_images_without_a_default_cnn(wrappers, shape):
    """The RLlib env stack (channel-last) keeps an image that RLlib has a default CNN for and
    flattens others."""
    import minigrid  # noqa: F401 - registers MiniGrid-Empty-5x5-v0

    import envs
    from agents.run.envfactory import _build
    from envs.wrappers import parse_wrappers

    env = _build(envs.resolve("MiniGrid-Empty-5x5-v0"), ("minigrid",), None, {}, None,
                 wrappers=tuple(parse_wrappers(wrappers)), channels_first=False)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.shape == shape and obs.shape == shape and env.observation_space.contains(obs)
    env.close()


def test_rllib_pointmaze_dict_statistics_evaluate_and_resume(tmp_path, shared_ray):
    """A goal-conditioned Dict on RLlib: flattened, normalised by the MeanStdFilter, whose statistics are
    saved, used by evaluate.py and carried on by --resume."""
    cfg = config(tmp_path, "{id: PointMaze_UMaze-v3, packages: [gymnasium_robotics], max_episode_steps: 50}",
                 RLLIB.replace("net_arch: [32]", "net_arch: [32], normalize_obs: true"))
    run_dir = tmp_path / "run"
    ok(run(tmp_path, "train.py", "--config", cfg, "--timesteps", "512", "--run-dir", str(run_dir),
           *shared_ray.flags, env=shared_ray.env))
    first = header(run_dir)
    assert first["observation_space"]["shape"] == [8] and first["normalize"]["obs_count"] >= 512
    ev = ok(run(tmp_path, "evaluate.py", str(run_dir), "--episodes", "2"))
    assert "success" in ev and "0.00" in ev
    ok(run(tmp_path, "train.py", "--resume", str(run_dir), "--timesteps", "256", *shared_ray.flags,
           env=shared_ray.env))
    assert header(run_dir)["normalize"]["obs_count"] >= first["normalize"]["obs_count"] + 256


def test_vizdoom_resize_grayscale_trains_evaluates_and_records(tmp_path):
    """VizDoom at 84×84 grayscale through env.wrappers; evaluate.py records a video of the full frames.
    VizDoom writes ``_vizdoom.ini`` and ``_vizdoom/`` into its working directory: this test's, never
    the repository."""
    # none a user made before
    strays = [p for p in (ROOT / "_vizdoom.ini", ROOT / "_vizdoom") if not p.exists()]
    env = ("{id: VizdoomBasic-v1, packages: [vizdoom.gymnasium_wrapper], "
           "wrappers: [{resize: {shape: [84, 84]}}, grayscale]}")
    ok(run(tmp_path, "train.py", "--config", config(tmp_path, env), "--timesteps", "256",
           "--run-dir", str(tmp_path / "run")))
    spaces = header(tmp_path / "run")["observation_space"]["spaces"]
    assert spaces["screen"]["shape"] == [1, 84, 84]
    video = tmp_path / "doom.mp4"
    ok(run(tmp_path, "evaluate.py", str(tmp_path / "run"), "--episodes", "1", "--video", str(video)))
    assert video.stat().st_size > 10_000
    assert (tmp_path / "_vizdoom.ini").is_file() and not any(p.exists() for p in strays)


def test_flappy_bird_trains_with_the_default_policies_and_no_truncation_storm(tmp_path):
    """FlappyBird's lidar exceeds 1.0 by ~1e-16 on most steps (rounding noise: no fault) and by 0.0021 on some
    (a real violation: clipped onto the bound by the default env.bounds_policy, counted, warned about once;
    no episode is cut short)."""
    import envs

    env = envs.make("FlappyBird-v0", packages=("flappy_bird_gymnasium",))  # the defaults, as train.py's
    env.reset(seed=0)
    rng, clipped, cut = np.random.default_rng(0), 0, 0
    for _ in range(3000):
        obs, _, terminated, truncated, info = env.step(int(rng.random() < 0.1))
        assert env.observation_space.contains(obs)
        faults = faults_in(info)
        clipped += sum(f.clipped for f in faults)
        cut += truncated and bool(faults)
        if terminated or truncated:
            env.reset()
    env.close()
    # the 0.0021 excesses occur (~5% of steps); none truncates
    assert clipped > 0 and cut == 0, (clipped, cut)

    cfg = config(tmp_path, "{id: FlappyBird-v0, packages: [flappy_bird_gymnasium]}")
    out = ok(run(tmp_path, "train.py", "--config", cfg, "--timesteps", "1024",
                 "--run-dir", str(tmp_path / "run")))
    assert ("warning: env FlappyBirdEnv gave faults of kind invalid_output" in out
            and "env.bounds_policy" in out)
    example = re.search(r"out of bounds at flat index \d+: ([-+.\deE]+) not in \[0\.0, 1\.0\]", out)
    assert example is not None, out  # the example names the value, as a plain number
    assert float(example.group(1)) > 1 + 1e-9, example.group(0)  # a real violation, not rounding noise


@pytest.mark.parametrize(("args", "expect"), [
    (["--env", "MiniGrid-Empty-8x8-v0"], "pass --env-package minigrid"),
    # a shipped configs/<id>.yaml's env.packages register its id: the run gets as far as the bad key
    (["--env", "VizdoomBasic-v1", "--set", "agent.nosuch=1"], "unknown key 'agent.nosuch'"),
    (["--env", "minigrid.wrappers:ImgObsWrapper", "--env-package", "minigrid"], "is a gymnasium.Wrapper"),
    (["--env", "FetchReach-v4", "--env-package", "gymnasium_robotics"],
     "env 'FetchReach-v4' failed to start"),
    (["--env", "MiniGrid-Empty-5x5-v0", "--env-package", "minigrid", "--set", "env.wrappers=[nosuch]"],
     "unknown wrapper 'nosuch'"),
], ids=["unknown-id", "shipped-config-packages", "wrapper-as-env", "constructor-error", "unknown-wrapper"])
def test_third_party_errors_are_one_line(tmp_path, args, expect):
    """Bad input about third-party envs: exit 2, one line that names the fix, no traceback."""
    proc = run(tmp_path, "train.py", *args, "--timesteps", "64", "--run-dir", str(tmp_path / "run"))
    assert proc.returncode == 2, proc.stderr
    assert expect in proc.stderr and "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.startswith("error")]) == 1


def test_envs_check_minigrid_text_mission(tmp_path):
    """``python -m envs check`` passes MiniGrid, whose observation holds a Text mission."""
    proc = subprocess.run([sys.executable, "-m", "envs", "check", "MiniGrid-Empty-5x5-v0",
                           "--env-package", "minigrid",
                           "--steps", "200"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS  seeded determinism" in proc.stdout
