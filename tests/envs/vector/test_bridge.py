"""BridgeVectorEnv (envs/vector/bridge.py): K-instance programs as K envs of one vector env, under the Guard's
batched checks and the episode statistics, as SB3 sees it, with real programs."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from conftest import ROOT, run_cli

from agents.run.health import EnvHealth
from agents.sb3.vector import SB3VecEnv
from envs.bridge.batch import BatchProgram
from envs.faults import FAULT_KEY, LATENCY_KEY, FaultKind, faults_in
from envs.vector.bridge import BridgeVectorEnv
from envs.vector.bridge_start import wrap_bridge
from envs.vector.episode_stats import EpisodeStatistics


def BridgeVecEnv(programs, nan_policy="truncate", max_episode_steps=None, bounds_policy="clip"):  # noqa: N802
    """The programs as training builds them, seen through SB3's adapter."""
    inner = BridgeVectorEnv(programs)
    venv = SB3VecEnv(EpisodeStatistics(wrap_bridge(inner, nan_policy, max_episode_steps, bounds_policy)))
    venv.programs = inner.programs
    return venv

FAST = ["--quiet", "--set", "agent.n_steps=32", "--set", "agent.batch_size=64", "--set", "agent.n_epochs=1",
        "--set", "eval.every=0"]


def test_a_crash_truncates_the_k_envs_of_that_program_and_costs_one_restart(heater):
    crashing = BatchProgram(command=f"{heater} --instances 4 --crash-after 3", term_grace=0.5)
    venv = BridgeVecEnv([crashing, BatchProgram(command=f"{heater} --instances 4")])
    assert venv.num_envs == 8
    venv.seed(0)
    venv.reset()
    health = EnvHealth()
    for _ in range(2):
        _, _, dones, infos = venv.step(np.full((8, 1), 0.5, np.float32))
        health.observe(infos)
        assert not dones.any() and all(info[LATENCY_KEY] > 0 for info in infos)
    obs, rewards, dones, infos = venv.step(np.full((8, 1), 0.5, np.float32))  # the 3rd step: abort()
    health.observe(infos)
    assert dones.tolist() == [True] * 4 + [False] * 4
    assert all(FAULT_KEY not in info for info in infos[4:]) and (rewards[:4] == 0).all()
    faults = [info[FAULT_KEY] for info in infos[:4]]
    assert (all(f.kind is FaultKind.CRASH for f in faults)
            and [f.restart for f in faults] == [True, False, False, False])
    assert all(info["TimeLimit.truncated"] and "terminal_observation" in info for info in infos[:4])
    # one program fault
    assert crashing.restarts == 1 and health.restarts == 1 and health.by_kind == {"crash": 1}
    assert health.metrics()["env/envs_cut_by_program_faults"] == 3  # ... that cut its 3 other envs short too
    assert np.isfinite(obs).all() and obs.shape == (8, 3)  # the restarted program's fresh observations
    _, _, dones, infos = venv.step(np.full((8, 1), 0.5, np.float32))  # it runs again
    assert not dones.any() and not any(faults_in(info) for info in infos)
    venv.close()


def test_a_bad_value_of_one_instance_faults_that_env_only(heater):
    # instance 0's obs: NaN
    venv = BridgeVecEnv([BatchProgram(command=f"{heater} --instances 3 --nan-after 2")])
    venv.reset()
    venv.step(np.zeros((3, 1), np.float32))
    obs, rewards, dones, infos = venv.step(np.zeros((3, 1), np.float32))
    assert dones.tolist() == [True, False, False] and np.isfinite(obs).all()
    assert infos[0][FAULT_KEY].kind is FaultKind.NONFINITE and not infos[0][FAULT_KEY].restart
    assert FAULT_KEY not in infos[1] and FAULT_KEY not in infos[2]
    assert venv.programs[0].restarts == 0
    venv.close()


@pytest.mark.parametrize("bounds_policy", ["clip", "truncate"])
def test_finite_values_past_the_bounds_follow_bounds_policy_as_in_the_guard(bounds_policy):
    """A K-instance program's observation 10.5 against a high of 10: clipped and the episodes go on (the
    default), or cut short with ``truncate``; a fault either way, as the Guard does for one env."""
    heater_py = (f"{sys.executable} {ROOT / 'examples' / 'thirdparty' / 'heater.py'} "
                 "--instances 2 --bad bounds")
    venv = BridgeVecEnv([BatchProgram(command=heater_py, cwd=str(ROOT))], bounds_policy=bounds_policy)
    venv.reset()
    for _ in range(3):  # the program turns hostile from its 5th room step on
        obs, _, dones, infos = venv.step(np.zeros((2, 1), np.float32))
    faults = [f for info in infos for f in faults_in(info)]
    assert len(faults) == 2 and all(f.kind is FaultKind.INVALID_OUTPUT for f in faults)
    assert venv.observation_space.contains(obs[0]) and venv.observation_space.contains(obs[1])
    if bounds_policy == "clip":
        assert not dones.any() and np.all(obs[:, 0] == 10.0) and all(f.clipped for f in faults)
    else:
        assert dones.all() and not any(f.clipped for f in faults)
    venv.close()


def test_a_reset_fault_is_reported_with_the_next_step_once():
    heater_py = (f"{sys.executable} {ROOT / 'examples' / 'thirdparty' / 'heater.py'} "
                 "--instances 2 --bad reset_nan")
    venv = BridgeVecEnv([BatchProgram(command=heater_py, cwd=str(ROOT))])
    obs = venv.reset()
    assert np.isfinite(obs).all()  # repaired, as the Guard does
    health = EnvHealth()
    _, _, _, infos = venv.step(np.zeros((2, 1), np.float32))
    health.observe(infos)
    faults = faults_in(infos[0])
    assert [f.kind for f in faults] == [FaultKind.NONFINITE] and "reset" in faults[0].detail
    assert not faults_in(infos[1]) and health.by_kind == {"nonfinite": 1}
    _, _, _, infos = venv.step(np.zeros((2, 1), np.float32))
    assert not any(faults_in(info) for info in infos)
    venv.close()


def test_autoreset_saves_the_reset_round_trips_and_changes_no_transition(heater):
    """A 1.2 program resets its finished instances within the step reply: the same transitions, finals and
    episode ends as with a separate reset request, without that request; a 1.1 program is not asked."""
    heater_py = f"{sys.executable} {ROOT / 'examples' / 'thirdparty' / 'heater.py'} --instances 3"
    arms = [BridgeVecEnv([BatchProgram(command=heater_py, cwd=str(ROOT))]) for _ in range(2)]
    arms[1].programs[0].want_autoreset = False
    assert [venv.programs[0].autoreset for venv in arms] == [True, False]
    resets = [0, 0]

    def counted(a, begin_reset):
        def begin(*args):
            resets[a] += 1
            return begin_reset(*args)
        return begin

    for a, venv in enumerate(arms):
        venv.programs[0].begin_reset = counted(a, venv.programs[0].begin_reset)
        venv.seed(7)
    outs = [venv.reset() for venv in arms]
    np.testing.assert_array_equal(*outs)
    rng, ends = np.random.default_rng(0), 0
    for _ in range(250):  # 100-step episodes: two ends per instance
        act = rng.random((3, 1), dtype=np.float32)
        (o0, r0, d0, i0), (o1, r1, d1, i1) = (venv.step(act) for venv in arms)
        np.testing.assert_array_equal(o0, o1)
        np.testing.assert_array_equal(r0, r1)
        np.testing.assert_array_equal(d0, d1)
        for e in np.flatnonzero(d0):
            np.testing.assert_array_equal(i0[e]["terminal_observation"], i1[e]["terminal_observation"])
            assert [i0[e]["episode"][k] for k in "rl"] == [i1[e]["episode"][k] for k in "rl"]
        ends += int(d0.sum())
    assert ends == 6 and resets == [0, 2]  # the separate resets: one per round of episode ends
    c = BridgeVectorEnv([BatchProgram(command=f"{heater} --instances 2")])
    assert c.programs[0].spec_reply.version == "1.1" and not c.programs[0].autoreset
    c.close()
    for venv in arms:
        venv.close()


def test_c_and_python_k_instance_programs_train(heater, tmp_path):
    python_heater = f"{sys.executable} {ROOT / 'examples' / 'thirdparty' / 'heater.py'} --instances 4"
    for name, command, envs in (("c", f"{heater} --instances 4", 8), ("py", python_heater, 4)):
        run = tmp_path / name
        out = run_cli("train.py", "--env", "process", "--set", f"env.command={command}",
                      "--num-envs", str(envs), "--timesteps", "256", "--run-dir", str(run), *FAST,
                      timeout=120)
        assert out.returncode == 0, out.stderr
        assert "done: 256 steps" in out.stdout, out.stdout
        assert list((run / "final").iterdir())
