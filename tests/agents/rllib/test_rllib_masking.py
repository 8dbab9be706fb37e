"""Action masks on RLlib (issue 30 §6): PPO (and APPO) never send an illegal action in training or in
evaluate.py, resume from a checkpoint as a masked policy, and refuse what they cannot mask in one line.

The envs (tests/agents/masked_env.py) count every illegal action they are sent; the same env without masks
(``env.action_mask: none``) is the control that shows the count can fail. The trainers join the session's
shared Ray (``shared_ray`` in tests/conftest.py). The RLModule itself is checked without Ray.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import evaluate_json, read_checkpoint, run_cli

import train
from agents.rllib import algos, masking
from tests.agents.masked_env import read_counts

ENV = "tests.agents.masked_env:"
FAST = ["--backend", "rllib", "--num-env-runners", "0", "--num-envs", "2", "--set", "agent.n_steps=64",
        "--set", "agent.batch_size=64", "--set", "agent.n_epochs=2", "--quiet", "--seed", "0"]


def _train(shared_ray, run, env, counts, *extra, timesteps="256"):
    return run_cli("train.py", "--env", ENV + env, "--timesteps", timesteps, "--run-dir", str(run), *FAST,
                   "--set", f"env.count_file={counts}", *extra, *shared_ray.flags, timeout=300,
                   env=shared_ray.env)


@pytest.mark.ray
def test_rllib_ppo_sends_no_illegal_action_in_training_or_evaluation(tmp_path, shared_ray):
    run, counts = tmp_path / "run", tmp_path / "counts"
    proc = _train(shared_ray, run, "MethodMaskEnv", counts, "--set", "eval.every=256", "--set",
                  "eval.episodes=2")
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if "samples legal actions only" in line]
    assert len(notes) == 1 and "env.action_mask: method" in notes[0] and "RLlib PPO" in notes[0]
    steps, illegal = read_counts(counts)
    assert steps >= 256 + 2 * 20 and illegal == 0  # training envs and one periodic evaluation
    result = evaluate_json(run, tmp_path)
    assert result["metrics"]["illegal"] == 0.0
    assert result["random_metrics"]["illegal"] == 0.0  # the random baseline plays legal moves only too


@pytest.mark.ray
@pytest.mark.slow
def test_a_masked_rllib_run_resumes_as_a_masked_policy(tmp_path, shared_ray):
    run, counts = tmp_path / "run", tmp_path / "counts"
    assert _train(shared_ray, run, "InfoMaskEnv", counts, "--set", "eval.every=0").returncode == 0
    counts.unlink()
    proc = run_cli("train.py", "--resume", str(run), "--timesteps", "128", "--quiet", *shared_ray.flags,
                   timeout=300, env=shared_ray.env)
    assert proc.returncode == 0, proc.stderr
    assert "samples legal actions only" in proc.stderr
    steps, illegal = read_counts(counts)
    assert steps >= 128 and illegal == 0
    _, header = read_checkpoint(run / "final" / "model.safetensors")
    assert header["num_timesteps"] >= 384 and header["backend"] == "rllib"
    assert header["config"]["env"]["action_mask"] == "info"
    assert evaluate_json(run, tmp_path)["metrics"]["illegal"] == 0.0


@pytest.mark.ray
@pytest.mark.slow
def test_without_masks_rllib_ppo_sends_illegal_actions(tmp_path, shared_ray):
    counts = tmp_path / "counts"
    proc = _train(shared_ray, tmp_path / "run", "MethodMaskEnv", counts, "--set", "env.action_mask=none",
                  "--set", "eval.every=0", timesteps="128")
    assert proc.returncode == 0, proc.stderr
    assert "samples legal actions only" not in proc.stderr
    steps, illegal = read_counts(counts)
    assert steps >= 128 and illegal > steps // 5


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize(("env", "source", "algo"), [
    ("InfoMaskEnv", "info", "ppo"), ("ObsMaskEnv", "obs", "ppo"), ("InfoMaskEnv", "info", "appo")])
def test_every_mask_source_and_appo_send_no_illegal_action(tmp_path, shared_ray, env, source, algo):
    run, counts = tmp_path / "run", tmp_path / "counts"
    timesteps = "2000" if algo == "appo" else "256"  # APPO samples 2,000 steps per iteration
    proc = _train(shared_ray, run, env, counts, "--algo", algo, "--set", "eval.every=0", timesteps=timesteps)
    assert proc.returncode == 0, proc.stderr
    assert f"action_mask: {source}" in (run / "config.yaml").read_text()  # found even when flattened (obs)
    steps, illegal = read_counts(counts)
    assert steps >= int(timesteps) and illegal == 0
    assert evaluate_json(run, tmp_path)["metrics"]["illegal"] == 0.0


def test_normalize_obs_with_masks_exits_2_in_one_line(tmp_path, capsys):
    code = train.main(["--env", ENV + "MethodMaskEnv", "--backend", "rllib", "--quiet", "--run-dir",
                       str(tmp_path / "run"), "--set", "agent.normalize_obs=true"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "cannot normalise observations that carry a mask" in err and "agent.normalize_obs: false" in err
    import ray

    assert not ray.is_initialized()


@pytest.mark.parametrize("algo", ["ppo", "appo"])
def test_the_masked_module_masks_every_forward_pass_with_the_plain_modules_weights(algo):
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from agents.config import RunConfig

    cfg = RunConfig.model_validate({"env": {"id": "CartPole-v1"},
                                    "agent": {"backend": "rllib", "algo": algo}})
    inner, actions = gym.spaces.Box(0.0, 1.0, (5,), np.float32), gym.spaces.Discrete(5)
    spaces = gym.spaces.Dict({masking.MASK: gym.spaces.Box(0.0, 1.0, (5,), np.float32),
                              masking.OBSERVATIONS: inner})
    module = RLModuleSpec(module_class=masking.module_class(algos.ALGOS[algo].module_class),
                          observation_space=spaces, action_space=actions,
                          model_config=algos.model_config(cfg, actions), inference_only=False).build()
    plain = algos.build_module(cfg, algo, (inner, actions))
    assert module.get_state().keys() == plain.get_state().keys()  # the same checkpoints
    plain.set_state(module.get_state())

    torch.manual_seed(0)
    obs = torch.rand(64, 5)
    mask = (torch.rand(64, 5) < 0.4).float()
    mask[:, 0] = 1.0
    masked_batch = {"obs": {masking.MASK: mask, masking.OBSERVATIONS: obs}}
    free = plain.forward_inference({"obs": obs})["action_dist_inputs"]
    unmasked = torch.distributions.Categorical(logits=free).sample((20,))
    assert not mask.gather(1, unmasked.T).all()  # the control: unmasked logits do pick illegal actions
    passes = [module.forward_inference(dict(masked_batch)), module.forward_exploration(dict(masked_batch)),
              module.forward_train(dict(masked_batch))]
    if algo == "appo":
        module.make_target_networks()
        target = module.forward_target(dict(masked_batch))["target_network_action_dist_inputs"]
        passes.append({"action_dist_inputs": target})
    for out in passes:
        logits = out["action_dist_inputs"]
        assert torch.equal(logits[mask > 0], free[mask > 0])
        assert (logits[mask == 0] == masking.LOWEST).all()
        sampled = torch.distributions.Categorical(logits=logits).sample((20,))
        assert mask.gather(1, sampled.T).all()  # never an illegal action
    values = module.compute_values(dict(masked_batch))
    assert torch.equal(values, plain.compute_values({"obs": obs}))
    # plain observations (the backend's predict, which masks itself) pass through unmasked
    assert torch.equal(module.forward_inference({"obs": obs})["action_dist_inputs"], free)
