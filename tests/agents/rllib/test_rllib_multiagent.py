"""PettingZoo parallel envs on --backend rllib (issue 31 §4): RLlib's multi-agent API with one shared RLModule
(simple_spread) or one per policy of configs/simple_adversary.yaml's ``policies:`` map; the same TensorBoard
names as SB3, checkpoints that resume, evaluate.py per policy; the one-line refusals before Ray starts.

The trainers join the session's shared private Ray (``shared_ray`` in tests/conftest.py)."""

from __future__ import annotations

import json

import pytest
from conftest import adam_steps, read_checkpoint, run_cli, scalars

import train

pytest.importorskip("mpe2")
pytestmark = pytest.mark.ray

SPREAD = "mpe2.simple_spread_v3:parallel_env"
ADVERSARY = "mpe2.simple_adversary_v3:parallel_env"
SMALL = ["--backend", "rllib", "--num-env-runners", "1", "--num-envs", "2", "--quiet",
         "--set", "env.max_cycles=25", "--set", "agent.n_steps=25", "--set", "agent.batch_size=50",
         "--set", "agent.n_epochs=2"]


def _train(run, shared_ray, *args: str) -> None:
    run_cli("train.py", *args, "--run-dir", str(run), *SMALL, *shared_ray.flags, timeout=300, check=True,
            env=shared_ray.env)


def _resume(run, shared_ray, steps: int) -> tuple[dict, dict]:
    """Resume ``run`` for ``steps`` more agent-steps; the final checkpoint before and after."""
    _, before = read_checkpoint(run / "final" / "model.safetensors")
    done = run_cli("train.py", "--resume", str(run), "--timesteps", str(steps), "--quiet", timeout=300,
                   check=True, env=shared_ray.env)
    assert f"at step {before['num_timesteps']:,}" in done.stdout
    _, after = read_checkpoint(run / "final" / "model.safetensors")
    return before, after


def test_shared_module_trains_resumes_and_evaluates_simple_spread(tmp_path, shared_ray):
    """Three agents, one RLModule: 450 agent-steps (3 iterations of 2 copies x 25 steps x 3 agents)."""
    run = tmp_path / "run"
    _train(run, shared_ray, "--env", SPREAD, "--timesteps", "450", "--seed", "1", "--set", "eval.every=0")
    tensors, meta = read_checkpoint(run / "final" / "model.safetensors")
    assert meta["backend"] == "rllib" and meta["num_timesteps"] == 450  # agent-steps, as on SB3
    assert meta["modules"] == {"shared": ["agent_0", "agent_1", "agent_2"]}
    assert {k.split("/")[1] for k in tensors if k.startswith("module/")} == {"shared"}
    tags = set(scalars(run).Tags()["scalars"])
    want = {"rollout/ep_rew_mean", "rollout/ep_len_mean", "train/loss", "train/policy_gradient_loss",
            "train/value_loss", "train/learning_rate", "time/fps"}
    assert want <= tags, want - tags
    assert not any(t.startswith("policy/") for t in tags)

    out = tmp_path / "eval.json"
    run_cli("evaluate.py", str(run), "--episodes", "2", "--json", str(out), check=True)
    res = json.loads(out.read_text())
    assert res["episodes"] == 2 and res["mean_length"] == 25.0 and -200 < res["mean_return"] < 0

    before, after = _resume(run, shared_ray, 300)
    assert after["num_timesteps"] == 750 and adam_steps(after) > adam_steps(before) > 0


def test_two_modules_log_per_policy_resume_and_evaluate_per_policy(tmp_path, shared_ray):
    """configs/simple_adversary.yaml's map (adversary: 8 floats, good agents: 10), shrunk: two RLModules, each
    with its own network and learning rate; TensorBoard under policy/<name>/; a resume goes on from the
    saved modules and optimisers; evaluate.py reports each policy, and each alone."""
    run = tmp_path / "run"
    _train(run, shared_ray, "--config", "configs/simple_adversary.yaml", "--timesteps", "1500", "--seed", "2",
           "--set", "eval.every=750", "--set", "eval.episodes=2", "--set", "train.checkpoint_every=750",
           "--set", "agent.net_arch=[32,32]")
    tensors, meta = read_checkpoint(run / "final" / "model.safetensors")
    assert meta["modules"] == {"adversary": ["adversary_0"], "good": ["agent_0", "agent_1"]}
    assert tensors["module/adversary/encoder.actor_encoder.net.mlp.0.weight"].shape == (32, 8)
    assert tensors["module/good/encoder.actor_encoder.net.mlp.0.weight"].shape == (32, 10)
    assert set(meta["observation_space"]["spaces"]) == {"adversary", "good"}
    acc = scalars(run)
    tags = set(acc.Tags()["scalars"])
    for name in ("adversary", "good"):
        names = ("train/loss", "train/policy_gradient_loss", "train/value_loss", "train/entropy_loss",
                 "train/learning_rate", "rollout/ep_rew_mean", "rollout/ep_len_mean")
        want = {f"policy/{name}/{t}" for t in names}
        assert want <= tags, want - tags
        assert f"eval/policy/{name}/return" in tags
    lrs = {name: acc.Scalars(f"policy/{name}/train/learning_rate")[-1].value
           for name in ("adversary", "good")}
    assert lrs == {"adversary": pytest.approx(0.001), "good": pytest.approx(0.0005)}  # each its own

    out = tmp_path / "eval.json"
    proc = run_cli("evaluate.py", str(run), "--episodes", "2", "--json", str(out), check=True)
    assert "policy/adversary/return" in proc.stdout and "alone" in proc.stdout
    res = json.loads(out.read_text())
    assert set(res["metrics"]) == set(res["random_metrics"]) == {"policy/adversary/return",
                                                                  "policy/good/return"}
    assert set(res["policy_alone"]) == {"adversary", "good"} and res["mean_length"] == 25.0

    before, after = _resume(run, shared_ray, 750)
    assert after["num_timesteps"] == 2250 and adam_steps(after) > adam_steps(before) > 0
    assert after["modules"] == meta["modules"]


@pytest.mark.parametrize(("args", "said"), [
    (["--env", ADVERSARY], ["different observation spaces", "policies:"]),
    (["--config", "{gamma}"],
     ["policies.good gives gamma, which RLlib sets for all modules at once",
      "a policy may override: learning_rate"]),
    (["--env", SPREAD, "--algo", "appo"], ["trains --algo ppo, got 'appo'"]),
    (["--env", SPREAD, "--set", "agent.normalize_obs=true"], ["does not normalise observations"]),
], ids=["spaces-differ", "per-learner-override", "appo", "normalize"])
def test_refusals_exit_2_in_one_line_before_ray_starts(tmp_path, capsys, args, said):
    import ray

    gamma = tmp_path / "gamma.yaml"
    gamma.write_text(f"env: {{id: {ADVERSARY}}}\npolicies:\n  adversary: {{agents: ['adversary_*']}}\n"
                     "  good: {agents: ['agent_*'], gamma: 0.9}\n")
    args = [a.replace("{gamma}", str(gamma)) for a in args]
    code = train.main([*args, "--backend", "rllib", "--timesteps", "64", "--run-dir", str(tmp_path / "r"),
                       "--quiet"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1, lines
    assert all(text in lines[0] for text in said), lines[0]
    assert not ray.is_initialized() and not (tmp_path / "r").exists()


@pytest.mark.slow  # not in CI (its 20-minute budget): SB3's map has the CI learning test; make test-all
def test_each_module_beats_random_on_its_own(tmp_path, shared_ray):
    """configs/simple_adversary.yaml on --backend rllib, 48k agent-steps (45-110 s on 2 busy cores):
    played alone against random others (50 episodes), each module's return is above a random policy's on the
    same seeds (random: adversary -27.0, good 6.4). Measured (docs/results.md): seed 2 adversary -17.5,
    good 17.7; seed 3 -17.6 and 16.7 (before time limits truncated RLlib's episodes: seed 2, four runs,
    -18.0 to -20.3 and 14.0 to 16.9; seed 3 -24.2 and 16.0)."""
    run = tmp_path / "run"
    run_cli("train.py", "--config", "configs/simple_adversary.yaml", "--backend", "rllib", "--timesteps",
            "48000", "--seed", "2", "--run-dir", str(run), "--set", "eval.every=0", "--quiet",
            *shared_ray.flags, timeout=600, check=True, env=shared_ray.env)
    out = tmp_path / "eval.json"
    run_cli("evaluate.py", str(run), "--episodes", "50", "--json", str(out), check=True)
    res = json.loads(out.read_text())
    random = res["random_metrics"]
    assert res["policy_alone"]["adversary"] > random["policy/adversary/return"] + 3.0, res
    assert res["policy_alone"]["good"] > random["policy/good/return"] + 5.0, res


@pytest.mark.slow  # not in CI (its 20-minute budget): SB3's shared policy has the CI learning test
def test_shared_module_beats_random_on_simple_spread(tmp_path, shared_ray):
    """The README's simple_spread command on --backend rllib, 122,880 agent-steps (89 s with Ray's start and
    the evaluation, at load 5): the shared module's team return is 3 above a random team's on the same 50
    seeds (random -26.08). Measured (docs/results.md): seed 1 -19.94 and -20.27, seed 2 -19.57; -23.5 to
    -28.1 before RLlib's episodes were told that a time limit truncates (ParallelAgents)."""
    run = tmp_path / "run"
    run_cli("train.py", "--env", SPREAD, "--backend", "rllib", "--num-envs", "8", "--timesteps", "120000",
            "--seed", "1", "--set", "agent.learning_rate=0.001", "--set", "agent.gamma=0.95", "--set",
            "agent.batch_size=512", "--set", "agent.gae_lambda=0.95", "--set", "eval.every=0",
            "--run-dir", str(run), "--quiet", *shared_ray.flags, timeout=600, check=True, env=shared_ray.env)
    out = tmp_path / "eval.json"
    run_cli("evaluate.py", str(run), "--episodes", "50", "--json", str(out), check=True)
    res = json.loads(out.read_text())
    assert res["mean_return"] > res["random_mean_return"] + 3.0, res


def test_an_agent_that_finishes_at_its_first_step_trains(tmp_path, shared_ray):
    """RLlib's env check compares a step's rewards with the agents left after it, so it refused an agent that
    finishes at its first step (the 1.3 teams example one run in three); nondiff's Guard checks instead."""
    run = tmp_path / "run"
    _train(run, shared_ray, "--env", "tests.agents.first_step_env:QuickAndSteady", "--timesteps", "200",
           "--set", "eval.every=0")
    _, header = read_checkpoint(run / "final" / "model.safetensors")
    assert header["num_timesteps"] >= 200
