"""NextStep (envs/vector/next_step.py): K-instance bridge programs in Gymnasium's NEXT_STEP auto-reset order,
the order RLlib's env runners expect, against Gymnasium's own NEXT_STEP vector env of single programs."""

from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
import pytest
from conftest import ROOT
from gymnasium.vector import AutoresetMode

from envs.bridge.batch import BatchProgram
from envs.bridge.process import ProcessEnv
from envs.vector.bridge import BridgeVectorEnv
from envs.vector.bridge_start import wrap_bridge
from envs.vector.next_step import NextStep

HEATER_PY = f"{sys.executable} {ROOT / 'examples' / 'thirdparty' / 'heater.py'}"


@pytest.mark.parametrize("limit", [None, 40])
def test_k_instances_in_next_step_order_match_gymnasiums_next_step_env_of_single_programs(limit):
    """Episodes end at different steps (one instance reset early), by the program (100 steps) or by
    ``env.max_episode_steps``; every observation, reward and flag of 260 steps is Gymnasium's
    SyncVectorEnv(NEXT_STEP) over three single-instance programs, and a finished instance sits the next step
    out (its program steps the other two alone; the time limit does not count that step)."""
    bridge = BridgeVectorEnv([BatchProgram(command=f"{HEATER_PY} --instances 3", cwd=str(ROOT))])
    mine = NextStep(wrap_bridge(bridge, max_episode_steps=limit))

    def single() -> gym.Env:
        env = ProcessEnv(command=HEATER_PY, cwd=str(ROOT))
        return env if limit is None else gym.wrappers.TimeLimit(env, limit)

    ref = gym.vector.SyncVectorEnv([single] * 3, autoreset_mode=AutoresetMode.NEXT_STEP)
    assert mine.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP
    for a, b in zip(mine.reset(seed=5), ref.reset(seed=5)):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)
    rng, ends, sat_out = np.random.default_rng(0), 0, 0
    for t in range(260):
        if t == 30:  # instance 0 starts over: from now on it ends 30 steps after the others
            mask = np.array([True, False, False])
            np.testing.assert_array_equal(mine.reset(options={"reset_mask": mask})[0],
                                          ref.reset(options={"reset_mask": mask})[0])
        act = rng.random((3, 1), dtype=np.float32)
        (o0, r0, t0, u0, _), (o1, r1, t1, u1, _) = mine.step(act), ref.step(act)
        np.testing.assert_array_equal(o0, o1)
        np.testing.assert_array_equal(r0, r1)
        assert (t0 == t1).all() and (u0 == u1).all(), t
        ends += int((t0 | u0).sum()) if t < 259 else 0
        sat_out += int(bridge.skipped.sum())
        if bridge.skipped.any():
            assert (r0[bridge.skipped] == 0).all() and not (t0 | u0)[bridge.skipped].any()
    # each end is followed by a step sat out; 100-step episodes: two ends each; 40 steps: six or five
    assert sat_out == ends == (6 if limit is None else 17)
    mine.close()
    ref.close()
