"""Protocol 1.3 in the Godot addon (addons/nondiff/scene.gd): the two-team scene game/teams.tscn against a
real headless Godot 3 (godot3-server, installed by `make install`), as a PettingZoo parallel env, and trained
with a policy per team."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli, scalars

from envs.adapters.godot import GODOT
from envs.bridge.parallel import BridgeParallelEnv

TEAMS = f"{GODOT} --path {{assets}}/godot --fixed-fps 60 res://game/teams.tscn"


def play(env: BridgeParallelEnv, seed: int) -> tuple[dict[str, np.ndarray], dict[str, tuple[int, bool]]]:
    """One episode with seeded random actions: the first observations, and each agent's last step and
    whether it was truncated."""
    first, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    ends: dict[str, tuple[int, bool]] = {}
    t = 0
    while env.agents:
        t += 1
        acts: dict[str, object] = {a: int(rng.integers(5)) if a.startswith("seeker")
                                   else rng.uniform(-1, 1, 2).astype(np.float32) for a in env.agents}
        obs, _, terms, truncs, _ = env.step(acts)
        assert set(obs) == set(acts)
        ends.update({a: (t, truncs[a]) for a in acts if terms[a] or truncs[a]})
    return first, ends


def test_the_two_team_scene_declares_groups_of_other_spaces_whose_agents_finish_at_their_own_steps():
    env = BridgeParallelEnv(command=TEAMS, listen="127.0.0.1:0")
    assert env.program.spec_reply.version == "1.3" and env.metadata["name"] == "godot-teams"
    assert env.agent_groups == {"seeker_0": "seeker", "seeker_1": "seeker", "chaser_0": "chaser",
                                "chaser_1": "chaser"}
    assert env.observation_space("seeker_1").shape == (12,) and env.action_space("seeker_0").n == 5
    assert env.observation_space("chaser_0").shape == (4,) and env.action_space("chaser_1").shape == (2,)
    first, ends = play(env, 3)
    assert ends["chaser_0"] == ends["chaser_1"] == (60, True)  # chasers: truncated after 60 steps
    assert all(60 < ends[a][0] <= 150 for a in ("seeker_0", "seeker_1"))  # seekers: later (goal or 150)
    again, _ = play(env, 3)
    assert all(np.array_equal(first[a], again[a]) for a in first)  # the same seed, the same start
    other, _ = play(env, 4)
    assert not np.array_equal(first["seeker_0"], other["seeker_0"])
    env.close()


def _train_and_evaluate(tmp_path, *args: str, env: dict[str, str] | None = None) -> None:
    """2,048 agent-steps of PPO with a policy per team, then evaluate.py's per-policy returns."""
    config = tmp_path / "teams.yaml"
    config.write_text(json.dumps({
        "env": {"id": "envs.bridge.parallel:BridgeParallelEnv", "command": TEAMS, "listen": "127.0.0.1:0"},
        "agent": {"algo": "ppo", "n_steps": 64, "batch_size": 128, "n_epochs": 1},
        "policies": {"seeker": {"agents": ["seeker_*"]}, "chaser": {"agents": ["chaser_*"]}},
        "train": {"num_envs": 2}, "eval": {"every": 1024, "episodes": 2}}))
    run = tmp_path / "run"
    run_cli("train.py", "--config", str(config), "--timesteps", "2000", "--seed", "1", "--run-dir", str(run),
            "--quiet", *args, check=True, env=env)
    assert {"policy/seeker/rollout/ep_rew_mean", "eval/policy/chaser/return"} <= set(
        scalars(run).Tags()["scalars"])
    out = tmp_path / "eval.json"
    run_cli("evaluate.py", str(run), "--episodes", "2", "--json", str(out), check=True)
    assert set(json.loads(out.read_text())["metrics"]) == {"policy/seeker/return", "policy/chaser/return"}


@pytest.mark.slow
def test_train_a_policy_per_team_in_godot_then_evaluate(tmp_path):
    """On SB3 (28 s at load 8: slow-only; the SDK example's test covers the path in CI)."""
    _train_and_evaluate(tmp_path)


@pytest.mark.ray
@pytest.mark.slow
def test_rllib_trains_a_module_per_team_in_godot_then_evaluate(tmp_path, shared_ray):
    """On RLlib, each env runner starting its own Godots (57 s on the shared Ray at load 7.7)."""
    _train_and_evaluate(tmp_path, "--backend", "rllib", *shared_ray.flags, env=shared_ray.env)
