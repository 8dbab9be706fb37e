"""An on-policy rollout (agent.n_steps) and the networks (agent.net_arch) are sized before anything is
allocated: over half the machine's memory is one line and exit code 2, for every backend.

The byte counts are checked against what SB3 really allocates (its rollout buffers, its policy's
networks); the refusals run train.py as a real process with sizes the checks refuse, so nothing huge is
ever allocated.
"""

from __future__ import annotations

import re
import time
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from conftest import ROOT, run_cli
from measure import one_line
from sb3_contrib.common.maskable.buffers import MaskableRolloutBuffer
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.policies import ActorCriticPolicy

from agents.config import validate
from agents.run import memory, runner
from envs.errors import UserError

BOX = gym.spaces.Box(-1, 1, (5, 3), np.float32)
DICT = gym.spaces.Dict({"img": gym.spaces.Box(0, 255, (4, 4, 3), np.uint8), "pos": gym.spaces.Discrete(5)})
ACTIONS = [gym.spaces.Discrete(4), gym.spaces.Box(-1, 1, (2,), np.float32), gym.spaces.MultiDiscrete([3, 4]),
           gym.spaces.MultiBinary(6)]
HUGE_STEPS = 75_123_171_719


def buffer_bytes(buf) -> int:
    total = 0
    for name in ("observations", "actions", "rewards", "returns", "episode_starts", "values", "log_probs",
                 "advantages", "action_masks"):
        part = getattr(buf, name, None)
        parts = part.values() if isinstance(part, dict) else [] if part is None else [part]
        total += sum(a.nbytes for a in parts)
    return total


def limit_words() -> str:
    total, source = memory.machine_memory()
    return (f"the limit is {memory.human(int(total * 0.5))}, 50% of this machine's {memory.human(total)} "
            f"({source})")


@pytest.mark.parametrize("act", ACTIONS, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("obs", [BOX, DICT], ids=["box", "dict"])
def test_rollout_bytes_equal_what_sb3_allocates(obs, act):
    cls = DictRolloutBuffer if isinstance(obs, gym.spaces.Dict) else RolloutBuffer
    buf = cls(7, obs, act, device="cpu", n_envs=3)
    assert memory.rollout_bytes(obs, act, 7, 3) == buffer_bytes(buf)
    if not isinstance(obs, gym.spaces.Dict) and not isinstance(act, gym.spaces.Box):  # MaskablePPO's
        masked = MaskableRolloutBuffer(7, obs, act, device="cpu", n_envs=3)
        assert memory.rollout_bytes(obs, act, 7, 3, masks=True) == buffer_bytes(masked)


def test_the_rollout_limit_and_the_fix_are_in_one_line(monkeypatch):
    monkeypatch.setattr(memory, "machine_memory", lambda: (10_000_000, "MemTotal"))  # limit: 5,000,000 bytes
    per = memory.rollout_bytes(BOX, ACTIONS[0], 1, 1)  # 60 + 8 + 6 × 4 = 92 bytes
    assert per == 92
    assert memory.check_rollout(BOX, ACTIONS[0], 5_000_000 // 92 // 4, 4) == 5_000_000 // 92 // 4 * 4 * 92
    with pytest.raises(UserError) as e:
        memory.check_rollout(BOX, ACTIONS[0], 20_000, 4)
    assert str(e.value) == (
        "the rollout of agent.n_steps=20,000 steps × 4 envs needs 7.02 MiB (observations, actions, rewards, "
        "returns, episode starts, values, log-probabilities and advantages, 92 B per step); the limit is "
        "4.77 MiB, 50% of this machine's 9.54 MiB (MemTotal); set agent.n_steps to at most 13,586")
    memory.check_rollout(BOX, ACTIONS[0], 13_586, 4)  # what the message offers fits


def test_network_weights_are_a_lower_bound_of_sb3s_networks():
    """An SB3 actor-critic of agent.net_arch [64, 32] on 15 inputs: its two MLPs are exactly two networks of
    the layers given; the heads come on top."""
    policy = ActorCriticPolicy(BOX, ACTIONS[0], lambda _: 0.0, net_arch=[64, 32])
    mlps = sum(p.numel() for p in policy.mlp_extractor.parameters())
    assert mlps == 2 * memory.network_weights([64, 32], 15) == 2 * ((15 + 1) * 64 + (64 + 1) * 32)
    assert sum(p.numel() for p in policy.parameters()) > mlps


def test_huge_layers_of_a_policies_map_are_named(monkeypatch):
    monkeypatch.setattr(memory, "machine_memory", lambda: (10_000_000, "MemTotal"))
    cfg = validate({"env": {"id": "mpe2.simple_adversary_v3:parallel_env"}, "agent": {"net_arch": [64]},
                    "policies": {"adversary": {"agents": ["adversary_*"], "net_arch": [600, 600]},
                                 "good": {"agents": ["agent_*"]}}}, "test")
    with pytest.raises(UserError) as e:
        runner.check_networks(cfg, BOX)
    assert str(e.value) == (
        "policies.adversary.net_arch [600, 600], agent.net_arch (policy 'good') [64] need at least 11 MiB "
        "to train (723,856 float32 weights in 2 networks per model fed by 1 input, each with its gradient "
        "and Adam's two moments); the limit is 4.77 MiB, 50% of this machine's 9.54 MiB (MemTotal); use "
        "smaller layers")


def _refused(tmp_path, *args: str, env: tuple[str, ...] = ("--env", "CartPole-v1")) -> str:
    """The one line of a 2-env CartPole (or ``env``) ``train.py ARGS`` that must exit 2 before it makes its
    run dir."""
    run = tmp_path / "run"
    proc = run_cli("train.py", *env, "--num-envs", "2", *args, "--run-dir", str(run), "--quiet", timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert not run.exists()
    return one_line(proc.stderr)


@pytest.mark.parametrize("backend", ["sb3", "rllib"])
def test_a_rollout_over_half_the_machine_is_refused_before_anything_runs(tmp_path, backend):
    if backend == "rllib":
        pytest.importorskip("ray")
    line = _refused(tmp_path, "--backend", backend, "--set", f"agent.n_steps={HUGE_STEPS}")
    fits = int(memory.machine_memory()[0] * 0.5) // 48 // 2  # was exit 1: 'unexpected MemoryError: 8.75 TiB'
    assert line == (
        f"error: the rollout of agent.n_steps={HUGE_STEPS:,} steps × 2 envs needs 6.56 TiB (observations, "
        "actions, rewards, returns, episode starts, values, log-probabilities and advantages, 48 B per "
        f"step); {limit_words()}; set agent.n_steps to at most {fits:,}")


@pytest.mark.parametrize("backend", ["sb3", "rllib"])
def test_a_shared_policys_rollout_counts_every_agent(tmp_path, backend):
    """simple_spread's three agents share one policy: each env step adds three rows to its rollout (SB3
    counted the envs only, a third of the bytes)."""
    line = _refused(tmp_path, "--backend", backend, "--set", f"agent.n_steps={HUGE_STEPS}",
                    env=("--config", str(ROOT / "configs" / "simple_spread.yaml")))
    fits = int(memory.machine_memory()[0] * 0.5) // 104 // 6
    assert line == (
        f"error: the rollout of agent.n_steps={HUGE_STEPS:,} steps × 6 envs needs 42.6 TiB (observations, "
        "actions, rewards, returns, episode starts, values, log-probabilities and advantages, 104 B per "
        f"step); {limit_words()}; set agent.n_steps to at most {fits:,}")


def test_layers_over_half_the_machine_are_refused_before_anything_is_built(tmp_path):
    line = _refused(tmp_path, "--set", "agent.net_arch=[64, 1000000000]")  # a study's trial: exit 137
    weights = 2 * ((4 + 1) * 64 + (64 + 1) * 1_000_000_000)
    assert line == (
        f"error: agent.net_arch [64, 1000000000] needs at least 1.89 TiB to train ({weights:,} float32 "
        "weights in 2 networks fed by 4 inputs, each with its gradient and Adam's two moments); "
        f"{limit_words()}; use smaller layers")


def test_a_black_box_strategy_is_not_bounded_by_net_arch(tmp_path):
    """agent.net_arch builds nothing on --backend blackbox (Backend.builds_net_arch): the same layers that
    refuse a PPO run above leave a CMA-ES run alone."""
    run = tmp_path / "run"
    proc = run_cli("train.py", "--env", "renderer", "--backend", "blackbox", "--algo", "cma", "--timesteps",
                   "8", "--set", "agent.net_arch=[64, 1000000000]", "--run-dir", str(run), "--quiet",
                   timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (run / "final" / "model.safetensors").is_file()


def test_worker_processes_over_half_the_machine_are_refused_before_any_starts(tmp_path):
    """--num-envs 100000 with subproc forked workers until it was killed (the rollout bound came after)."""
    run = tmp_path / "run"
    proc = run_cli("train.py", "--env", "CartPole-v1", "--num-envs", "100000", "--set",
                   "train.vec_env=subproc", "--run-dir", str(run), "--quiet", timeout=120)
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc.stderr)
    assert line.startswith("error: train.num_envs=100000 with train.vec_env: subproc would start 100,000 "
                           "worker processes, at least 4.58 TiB at 48 MiB each")
    assert not run.exists()


class _Heavy(gym.Env):
    """An env whose every copy holds 4 MiB of written memory, mapped afresh: a NumPy array of that size may
    reuse pages the process already holds (glibc raises its mmap threshold after earlier frees), which does
    not grow the resident size."""

    observation_space = gym.spaces.Box(-1, 1, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self) -> None:
        import mmap

        self.state = mmap.mmap(-1, 4 * 2**20)
        np.frombuffer(self.state, np.uint8)[:] = 1  # every page written, no temporary copy


def test_env_copies_built_in_process_are_measured_and_refused_over_half_the_machine(monkeypatch):
    """``--env robot --num-envs 100000`` built MuJoCo envs in-process for 25 silent minutes (0.57 MB each,
    57 GB) until the OOM killer came. The 2nd and 3rd copies are measured; the run is refused there. The
    machine is 100 MiB here (limit 50 MiB): 64 copies of 4 MiB pass it, 8 do not."""
    from agents.run.envfactory import _in_process

    monkeypatch.setattr(memory, "machine_memory", lambda: (100 * 2**20, "MemTotal"))
    cfg = validate({"env": {"id": "heavy"}}, "x")
    with pytest.raises(UserError, match=r"train.num_envs=64: each 'heavy' env built in this process takes "
                                        r"about 4(\.\d+)? MiB \(measured on the first ones\).* lower "
                                        r"train.num_envs \(--num-envs\) to at most 1[0-2]"):
        _in_process(cfg, [_Heavy] * 64)
    built = _in_process(cfg, [_Heavy] * 8)  # 32 MiB: under the limit
    assert built is not None and len(built) == 8


def test_threadproc_env_copies_are_measured_before_any_worker_starts(monkeypatch):
    """threadproc's copies live in its worker processes, which nothing bounded. From MEASURED_FROM envs on,
    three copies are built in the trainer, measured and closed first. 100 MiB machine: 16 copies of 4 MiB
    (64 MiB) are refused before any worker process exists."""
    from agents.run import envfactory
    from envs.vector import threadproc

    monkeypatch.setattr(memory, "machine_memory", lambda: (100 * 2**20, "MemTotal"))
    started = []

    def start(self: Any, fns: Any, **kw: Any) -> None:  # workers would start here
        started.append(fns)
        raise _Started

    monkeypatch.setattr(threadproc.ThreadProcVectorEnv, "__init__", start)
    cfg = validate({"env": {"id": "heavy"}, "train": {"vec_env": "threadproc"}}, "x")
    assert envfactory.MEASURED_FROM == 16
    with pytest.raises(UserError, match=r"train.num_envs=16: each 'heavy' env in the worker processes "
                                        r"takes about 4(\.\d+)? MiB \(measured on the first ones\)"):
        envfactory.make_vector_env(cfg, None, [_Heavy] * 16)
    assert not started
    # an env that allows one instance per process (stable-retro) is not measured: its workers start as before
    with pytest.raises(_Started):
        envfactory.make_vector_env(cfg, None, [_OnePerProcess] * 16)
    assert len(started) == 1 and _OnePerProcess.made == 1


def test_rllib_runner_envs_are_measured_before_ray_starts(tmp_path):
    """``--backend rllib --num-envs 100000`` gave one env runner 100,000 MuJoCo envs to build (~60 GiB):
    nothing bounded the runners' copies. Three are now built in the trainer, measured and closed, and the run
    is refused before Ray starts, in the setting the user gave."""
    per_runner = ("--num-envs", "4", "--num-env-runners", "2", "--set", "rllib.envs_per_runner=30000")
    spread = ("--env", "mpe2.simple_spread_v3:parallel_env", "--num-envs", "100000")  # multi-agent: ~1.9 MiB
    for args, setting in ((("--num-envs", "100000"), "train.num_envs=100,000"),
                          (per_runner, "rllib.envs_per_runner=30,000"), (spread, "train.num_envs=100,000")):
        run = tmp_path / "run"
        t = time.monotonic()
        proc = run_cli("train.py", "--backend", "rllib", "--env", "robot", *args, "--run-dir", str(run),
                       "--quiet", timeout=120)  # a fresh process: a warm one may reuse freed pages unmeasured
        assert proc.returncode == 2, proc.stderr
        line = one_line(proc.stderr)
        assert re.match(rf"error: {setting}: each '[^']+' env in the env runners takes about [\d.]+ [KM]iB "
                        r"\(measured on the first ones\), [\d.]+ GiB in all; the limit is .*; lower "
                        rf"{setting.split('=')[0]}( \(--num-envs\))? to at most [\d,]+$", line), line
        assert not run.exists() and time.monotonic() - t < 60 and "ray" not in proc.stderr.lower()


class _Started(BaseException):
    """The vector env's workers would start now."""


class _OnePerProcess(_Heavy):
    made = 0

    def __init__(self) -> None:
        if type(self).made:
            raise RuntimeError("Cannot create multiple emulator instances per process")
        type(self).made += 1
