"""Issue 25 §3: a replay buffer is sized from the spaces and agent.buffer_size before SAC/TD3 allocate it.

The byte count is checked against SB3's own buffers; the CLI cases run train.py as a real process and
measure its peak RSS: a refused buffer is one line and exit code 2, whether it would fail at once (1e11
transitions) or be allocated lazily and exhaust the machine later (more than half its memory).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from measure import one_line, run_measured
from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer

import envs  # noqa: F401 - registers nondiff/Robot-v0
from agents.run import memory
from envs.errors import UserError

BOX = gym.spaces.Box(-1, 1, (5, 3), np.float32)
ACT64 = gym.spaces.Box(-1, 1, (2,), np.float64)
DICT = gym.spaces.Dict({"img": gym.spaces.Box(0, 255, (4, 4, 3), np.uint8), "pos": gym.spaces.Discrete(5),
                        "bits": gym.spaces.MultiBinary(6), "md": gym.spaces.MultiDiscrete([3, 4])})


def sb3_bytes(buf) -> int:
    total = 0
    for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
        part = getattr(buf, name, None)
        total += (sum(a.nbytes for a in part.values()) if isinstance(part, dict)
                  else (part.nbytes if part is not None else 0))
    return total


@pytest.mark.parametrize(("obs", "optimize"), [(BOX, False), (BOX, True), (DICT, False)],
                         ids=["box", "box-once", "dict"])
def test_replay_bytes_equal_what_sb3_allocates(obs, optimize):
    n_envs, size = 3, 100
    cls = DictReplayBuffer if isinstance(obs, gym.spaces.Dict) else ReplayBuffer
    kw = {"optimize_memory_usage": True, "handle_timeout_termination": False} if optimize else {}
    buf = cls(size, obs, ACT64, device="cpu", n_envs=n_envs, **kw)
    rows = max(size // n_envs, 1)
    assert memory.replay_bytes(obs, ACT64, rows, n_envs, next_observations=not optimize) == sb3_bytes(buf)


def test_the_limit_the_size_and_the_fix_are_in_one_line(monkeypatch):
    monkeypatch.setattr(memory, "machine_memory", lambda: (10_000_000, "MemTotal"))  # limit: 5,000,000 bytes
    per = memory.replay_bytes(BOX, ACT64, 1, 1)  # 2 × 60 + 8 + 12 = 140 bytes
    assert per == 140
    assert memory.check_replay(BOX, ACT64, 5_000_000 // 140, 1, checkpointed=False) == 5_000_000 // 140 * 140
    with pytest.raises(UserError, match=r"^the replay buffer of agent\.buffer_size=30,000 transitions needs "
                                        r"4\.01 MiB .*and writing it into a checkpoint as much again; the "
                                        r"limit is 4\.77 MiB, 50% of this machine's 9\.54 MiB \(MemTotal\); "
                                        r"set agent\.buffer_size to at most 17,857, or "
                                        r"train\.checkpoint_replay: false "):
        memory.check_replay(BOX, ACT64, 30_000, 1, checkpointed=True)
    memory.check_replay(BOX, ACT64, 17_857, 1, checkpointed=True)  # what the message offers fits
    # no checkpoint_replay hint
    with pytest.raises(UserError, match=r"set agent\.buffer_size to at most 35,714$"):
        memory.check_replay(BOX, ACT64, 40_000, 1, checkpointed=False)


def test_machine_memory_reads_meminfo():
    total, source = memory.machine_memory()
    assert total > 2**28 and ("MemTotal" in source or "cgroup" in source)


def robot_transition_bytes() -> int:
    env = gym.make("nondiff/Robot-v0")
    try:
        return memory.replay_bytes(env.observation_space, env.action_space, 1, 1)
    finally:
        env.close()


@pytest.mark.parametrize("share", [None, 0.8], ids=["1e11", "lazily-allocatable"])
def test_sac_with_a_buffer_over_half_the_machine_exits_2_at_once(tmp_path, share):
    total, _ = memory.machine_memory()
    size = 100_000_000_000 if share is None else int(total * share / robot_transition_bytes())
    run = tmp_path / "run"
    res = run_measured("train.py", "--env", "robot", "--algo", "sac", "--set", f"agent.buffer_size={size}",
                       "--run-dir", str(run), "--quiet")
    assert res.returncode == 2, res.stderr
    line = one_line(res.stderr)
    assert line.startswith(f"error: the replay buffer of agent.buffer_size={size:,} transitions needs "), line
    assert "50% of this machine's" in line and "set agent.buffer_size to at most" in line, line
    # leaving checkpoints without the buffer would not make it fit
    assert "checkpoint_replay: false" not in line
    assert res.max_rss_mib < 1024, f"peak RSS {res.max_rss_mib:.0f} MiB"
    assert res.seconds < 60
    assert not run.exists()
