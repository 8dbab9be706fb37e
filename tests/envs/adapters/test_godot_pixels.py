"""The Godot camera (issue 27 §4) against a real Godot 3 rendering build (`godot3` under `xvfb-run`, with
Mesa; installed by `make install` as root): the observation's shape, dtype and orientation, frames identical
across processes for the same seeds and actions, render() for evaluate.py --video, a throughput figure, and
the one-line refusal when the build or Xvfb is missing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest

from envs.adapters.godot import CAMERA_COMMAND, PIXELS_INSTALL, GodotEnv, check_pixels
from envs.bridge.batch import BatchProgram

WALL = np.array([64, 64, 76])  # game/view.gd's WALL, as the renderer writes it (Color(0.25, 0.25, 0.3))
FLOOR = np.array([235, 235, 224])


def command(agents: int, camera: int = 64) -> str:
    return CAMERA_COMMAND.replace("--agents=16", f"--agents={agents}").replace("--camera=64",
                                                                                 f"--camera={camera}")


def near(pixels: np.ndarray, color: np.ndarray) -> float:
    """The share of ``pixels`` (…, 3) within a few levels of ``color``."""
    return float((np.abs(pixels.astype(int) - color).max(axis=-1) <= 4).mean())


def test_the_camera_is_an_rgb_image_beside_the_vector_the_right_way_up():
    p = BatchProgram(command=command(2), listen="127.0.0.1:0")
    space = p.observation_space
    assert set(space.spaces) == {"state", "camera"} and space["state"].shape == (12,)
    assert space["camera"].shape == (64, 64, 3) and space["camera"].dtype == np.uint8
    obs, _ = p.reset_instances([0, 1], [1, 2])
    assert obs["camera"].shape == (2, 64, 64, 3) and obs["camera"].dtype == np.uint8
    assert obs["state"].shape == (2, 12)
    centre = obs["camera"][:, 31:33, 31:33]  # the agent itself, red, in the middle of its own camera
    assert (centre[..., 0] > 150).all() and (centre[..., 1] < 80).all()
    for _ in range(40):  # push both up against the top wall (action 4: -y)
        obs = p.step_all(np.array([4, 4])).result.obs
    frames = obs["camera"]
    assert near(frames[:, :8], WALL) > 0.9 and near(frames[:, -8:], FLOOR) > 0.6  # row 0 is the top
    p.close()


def test_same_seeds_and_actions_give_identical_frames_in_two_processes():
    runs = []
    for _ in range(2):
        p = BatchProgram(command=command(3), listen="127.0.0.1:0")
        obs, _ = p.reset_instances(range(3), [11, 12, 13])
        frames = [obs["camera"]]
        for t in range(20):
            frames.append(p.step_all(np.array([1, 3, t % 5])).result.obs["camera"])
        p.close()
        runs.append(np.stack(frames))
    assert np.array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0][0], runs[0][-1])  # and they move


def test_render_is_instance_0s_camera_scaled_up():
    env = GodotEnv(command=command(2), render_mode="rgb_array")
    assert env.metadata["render_fps"] == 15  # 60 physics ticks per second / 4 ticks per step
    obs, _ = env.reset(seed=5)
    frame = env.render()
    assert frame.shape == (256, 256, 3) and frame.dtype == np.uint8
    assert np.array_equal(frame[::4, ::4], obs["camera"])  # nearest-neighbour, 4x
    obs, *_ = env.step(1)
    assert np.array_equal(env.render()[::4, ::4], obs["camera"])
    env.close()


def test_throughput_with_cameras():
    """A figure, not an assertion: 16 agents, 64x64 cameras, one Godot (printed with the load)."""
    p = BatchProgram(command=command(16), listen="127.0.0.1:0")
    p.reset_instances(range(16), list(range(16)))
    actions = np.ones(16, dtype=np.int64)
    for _ in range(10):
        p.step_all(actions)
    n, began = 200, time.monotonic()
    for _ in range(n):
        p.step_all(actions)
    took = time.monotonic() - began
    p.close()
    print(f"godot camera 64x64, K=16: {n / took:.0f} steps/s, {16 * n / took:.0f} agent-steps/s "
          f"(load {os.getloadavg()[0]:.2f})")


def fake(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).write_text("#!/bin/sh\nexit 0\n")
        (folder / name).chmod(0o755)


def test_a_missing_build_or_xvfb_is_one_line_naming_the_install(tmp_path, monkeypatch, cli):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ValueError, match="needs xvfb-run and godot3, not installed here; install with: "
                                         "apt-get install godot3 xvfb"):
        GodotEnv(command=CAMERA_COMMAND)
    fake(tmp_path, "xvfb-run")
    with pytest.raises(ValueError, match=f"needs godot3, not installed here; install with: {PIXELS_INSTALL}"):
        check_pixels(CAMERA_COMMAND, None)
    fake(tmp_path, "godot3")
    check_pixels(CAMERA_COMMAND, "rgb_array")
    with pytest.raises(ValueError, match="rendering build.*godot3-server draws nothing"):
        check_pixels("godot3-server --path x --camera=64", None)
    with pytest.raises(ValueError, match="add --camera=N"):
        check_pixels("godot3-server --path x", "rgb_array")
    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(ValueError, match="needs a display"):
        check_pixels("godot3 --path x --camera=64", None)
    proc = cli("train.py", "--env", "godot", "--timesteps", "256", "--run-dir", str(tmp_path / "run"),
               "--set", f"env.command={CAMERA_COMMAND}", env={"PATH": str(tmp_path / "none")})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"install with: {PIXELS_INSTALL}" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.slow
@pytest.mark.ci
def test_evaluate_py_records_the_camera_after_a_tiny_run(cli, tmp_path):
    run = tmp_path / "run"
    cli("train.py", "--env", "godot", "--timesteps", "1024", "--run-dir", str(run), "--set", "eval.every=0",
        "--set", f"env.command={CAMERA_COMMAND}", "--set", "train.num_envs=16", "--set", "agent.n_steps=64",
        check=True)
    video = tmp_path / "eval.mp4"
    cli("evaluate.py", str(run), "--episodes", "1", "--video", str(video), check=True)
    reader = imageio.get_reader(str(video))  # decoded back by ffmpeg: a playable H.264 file
    frames = [frame for frame in reader]
    assert reader.get_meta_data()["codec"] == "h264" and len(frames) > 10
    assert frames[0].shape == (256, 256, 3)
