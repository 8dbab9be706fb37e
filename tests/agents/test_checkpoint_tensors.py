"""Issue 25 §4: every tensor of a checkpoint is checked before anything is built from it.

Real checkpoints of short SAC and PPO runs are edited the way the issue's sweep did (one more observation
column in the replay buffer, ``replay.pos`` = 10^9, int8 observations, all-NaN weights); ``evaluate.py RUN``
and ``train.py --resume RUN`` must each end with exit code 2 and one line naming the tensor or field. The
validation functions of the other kinds (RLlib, black-box) are checked on tensors laid out as theirs are.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from gymnasium.spaces import Box
from measure import one_line
from safetensors.torch import load, save

from agents.run import tensorcheck
from agents.run.backend import get_backend
from agents.run.checkpoint import Checkpoint
from agents.run.header import FORMAT, CheckpointHeader
from envs.errors import CheckpointError
from envs.spaces import space_to_json

SAC = ["--env", "Pendulum-v1", "--algo", "sac", "--timesteps", "300", "--num-envs", "2", "--set",
       "agent.learning_starts=100", "--set", "agent.buffer_size=2000", "--set", "agent.net_arch=[16, 16]",
       "--set", "agent.batch_size=32"]
PPO = ["--env", "CartPole-v1", "--timesteps", "128", "--num-envs", "2", "--set", "agent.n_steps=64", "--set",
       "agent.batch_size=64", "--set", "agent.n_epochs=1", "--set", "agent.net_arch=[16, 16]"]
COMMON = ["--seed", "0", "--quiet", "--set", "eval.every=0", "--set", "train.checkpoint_every=10000"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("ckpt")
    out = {}
    for name, argv in (("sac", SAC), ("ppo", PPO)):
        out[name] = base / name
        run_cli("train.py", *argv, *COMMON, "--run-dir", str(out[name]), check=True)
    return out


def edit(run: Path, change) -> Path:
    """Apply ``change(tensors, meta)`` to every checkpoint of ``run`` (final, best, periodic)."""
    for f in run.rglob("*.safetensors"):
        data = f.read_bytes()
        meta = json.loads(
            json.loads(data[8:8 + int.from_bytes(data[:8], "little")])["__metadata__"]["nondiff"])
        tensors = load(data)
        change(tensors, meta)
        f.write_bytes(save(tensors, metadata={"nondiff": json.dumps(meta)}))
    return run / "final" / "model.safetensors"


def one_more_column(t, _m):
    obs = t["replay/observations"]
    t["replay/observations"] = torch.cat([obs, obs[..., :1]], -1)


def pos_1e9(_t, m):
    m["off_policy"]["replay"]["pos"] = 10**9


def int8_observations(t, _m):
    t["replay/observations"] = t["replay/observations"].to(torch.int8)


def nan_weights(t, _m):
    for k in t:
        if k.startswith("policy/") and t[k].is_floating_point():
            t[k] = torch.full_like(t[k], float("nan"))


CASES = {  # the cases: (run, edit, what the line must say)
    "sac-obs-column": ("sac", one_more_column, "tensor 'replay/observations' has shape [150, 2, 4], expected "
                                               "[150, 2, 3]"),
    "sac-pos-1e9": ("sac", pos_1e9, "field 'off_policy.replay.pos' is 1,000,000,000, expected 0 <= pos < "
                                    "buffer_size (1,000)"),
    "sac-int8-obs": ("sac", int8_observations, "tensor 'replay/observations' has dtype int8, expected "
                                               "float32 (it is refused, not cast)"),
    "sac-nan-weights": ("sac", nan_weights, "NaN or infinite value(s)"),
    "ppo-nan-weights": ("ppo", nan_weights, "NaN or infinite value(s)"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_tampered_tensors_are_exit_2_in_one_line_for_evaluate_and_resume(runs, tmp_path, case):
    name, change, message = CASES[case]
    run = tmp_path / "run"
    shutil.copytree(runs[name], run)
    final = edit(run, change)
    for script, args in (("evaluate.py", [str(run), "--episodes", "1"]),
                         ("train.py", ["--resume", str(run), "--timesteps", "64", "--quiet"])):
        proc = run_cli(script, *args)
        assert proc.returncode == 2, (script, proc.stderr)
        line = one_line(proc.stderr)
        assert line.startswith(f"error: checkpoint '{final}' is corrupted: ") and message in line, line
        assert "policy/" in line or "replay" in line


def test_untouched_checkpoints_still_resume_and_evaluate(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["sac"], run)
    edit(run, lambda t, m: None)  # rewritten by the same writer: nothing changed but the bytes' owner
    run_cli("train.py", "--resume", str(run), "--timesteps", "64", "--quiet", check=True)
    run_cli("evaluate.py", str(run), "--episodes", "1", check=True)


# -- the validation functions, kind by kind ------------------------------------------------------------------
def as_checkpoint(tensors: dict, meta: dict, path: str = "x.safetensors") -> Checkpoint:
    """The record the validators take, with this metadata as it stands (not re-parsed: tests break it)."""
    box = space_to_json(Box(-1.0, 1.0, (1,)))
    core = {"format": FORMAT, "backend": "sb3", "algo": "sac", "num_timesteps": 0, "seed": 0,
            "observation_space": box, "action_space": box, "config": {}}
    extra = {k: v for k, v in meta.items() if k not in core and k not in ("saved_at", "tensor_aliases")}
    header = CheckpointHeader(**{k: meta.get(k, v) for k, v in core.items()}, extra=extra)
    return Checkpoint(Path(path), header, tensors)


def sac_checkpoint(runs) -> tuple[dict, dict]:
    data = (runs["sac"] / "final" / "model.safetensors").read_bytes()
    meta = json.loads(json.loads(data[8:8 + int.from_bytes(data[:8], "little")])["__metadata__"]["nondiff"])
    return load(data), meta


@pytest.mark.parametrize(("edit_replay", "message"), [
    ({"full": True}, r"n=150 rows with pos=150, full=True and buffer_size=1,000; expected n = buffer_size"),
    ({"n": 149}, r"n=149 rows with pos=150"),
    ({"n_envs": 3}, r"tensor 'replay/observations' has shape \[150, 2, 3\], expected \[150, 3, 3\]"),
    ({"buffer_size": 0}, r"buffer_size 0 and n_envs 2, expected both >= 1"),
])
def test_replay_counters_are_consistent(runs, edit_replay, message):
    tensors, meta = sac_checkpoint(runs)
    meta["off_policy"]["replay"].update(edit_replay)
    with pytest.raises(CheckpointError, match=message):
        tensorcheck.check_sb3(as_checkpoint(tensors, meta, "x.safetensors"))


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.pop("replay/timeouts"), r"tensor 'replay/timeouts' is missing"),
    (lambda t: t.__setitem__("replay/rewards", t["replay/rewards"].double()),
     r"'replay/rewards' has dtype float64"),
    (lambda t: t["replay/rewards"].__setitem__(0, float("inf")), r"'replay/rewards' holds 2 NaN or infinite"),
    (lambda t: t.__setitem__("replay/extra", torch.zeros(1)),
     r"'replay/extra' is not part of a replay buffer"),
    (lambda t: t.__setitem__("rng/numpy_keys", torch.zeros(5, dtype=torch.int64)),
     r"'rng/numpy_keys' has shape"),
    (lambda t: t["optim_critic/0/exp_avg"].fill_(float("nan")), r"'optim_critic/0/exp_avg' holds"),
])
def test_every_sb3_tensor_is_checked(runs, change, message):
    tensors, meta = sac_checkpoint(runs)
    change(tensors)
    with pytest.raises(CheckpointError, match=r"^checkpoint 'x\.safetensors' is corrupted: .*" + message):
        tensorcheck.check_sb3(as_checkpoint(tensors, meta, "x.safetensors"))


def rng() -> dict[str, torch.Tensor]:
    return {"rng/torch": torch.get_rng_state(), "rng/numpy_keys": torch.arange(624, dtype=torch.int64)}


def test_rllib_weights_optimiser_references_and_filter_are_checked():
    tensors = {"module/pi.weight": torch.zeros(2, 3), "optim/adam/state/0/exp_avg": torch.zeros(2, 3),
               "norm/obs_mean": torch.zeros(3), "norm/obs_sum_sq": torch.ones(3)}
    meta = {"optimizer": {"adam": {"state": {"0": {"exp_avg": {"$tensor": "optim/adam/state/0/exp_avg"}}}}},
            "normalize": {"norm_obs": True}}
    tensorcheck.check_rllib(as_checkpoint(tensors, meta, "r"))
    with pytest.raises(CheckpointError, match="'optim/x', which the optimiser state refers to, is missing"):
        dangling = {**meta, "optimizer": {"s": [{"$tensor": "optim/x"}]}}
        tensorcheck.check_rllib(as_checkpoint(tensors, dangling, "r"))
    with pytest.raises(CheckpointError, match="tensor 'module/pi.weight' holds 6 NaN"):
        nan = torch.full((2, 3), float("nan"))
        tensorcheck.check_rllib(as_checkpoint({**tensors, "module/pi.weight": nan}, meta, "r"))
    with pytest.raises(CheckpointError, match="'norm/obs_sum_sq' has shape \\[2\\], expected \\[3\\]"):
        tensorcheck.check_rllib(as_checkpoint({**tensors, "norm/obs_sum_sq": torch.ones(2)}, meta, "r"))


def test_blackbox_networks_and_data_bank_are_checked():
    bank = {"bank/x": torch.zeros(4, 2), "bank/c": torch.zeros(4, 1), "bank/f": torch.zeros(4, 5)}
    tensors = {**rng(), "net/0.weight": torch.zeros(8, 3), **bank,
               **{f"amortised/{k}": v for k, v in bank.items()}}
    tensorcheck.check_blackbox(as_checkpoint(tensors, {}, "b"))
    with pytest.raises(CheckpointError, match="tensor 'net/0.weight' holds 1 NaN"):
        bad = tensors["net/0.weight"].clone()
        bad[0, 0] = float("-inf")
        tensorcheck.check_blackbox(as_checkpoint({**tensors, "net/0.weight": bad}, {}, "b"))
    with pytest.raises(CheckpointError,
                       match="tensor 'amortised/bank/f' has shape \\[3, 5\\], expected 4 rows"):
        tensorcheck.check_blackbox(as_checkpoint({**tensors, "amortised/bank/f": torch.zeros(3, 5)}, {}, "b"))
    with pytest.raises(CheckpointError, match="tensor 'rng/torch' is missing"):
        no_rng = {k: v for k, v in tensors.items() if k != "rng/torch"}
        tensorcheck.check_blackbox(as_checkpoint(no_rng, {}, "b"))


@pytest.mark.parametrize("prefix", ["norm/", "norm/good/"])
def test_sb3_normalisation_statistics_are_checked_single_and_per_policy(prefix):
    """A single policy's norm/obs_var and a policies: map's norm/<policy>/obs_var: never negative, shaped
    as their mean (a tampered variance would normalise with NaN)."""
    tensors = {**rng(), "policy/pi.weight": torch.zeros(2, 1),
               f"{prefix}obs_mean": torch.zeros(1), f"{prefix}obs_var": torch.ones(1)}
    meta = {"normalize": {"norm_obs": True}}
    tensorcheck.check_sb3(as_checkpoint(tensors, meta, "s"))
    with pytest.raises(CheckpointError, match=f"tensor '{prefix}obs_var' holds negative variances"):
        tensorcheck.check_sb3(as_checkpoint({**tensors, f"{prefix}obs_var": -torch.ones(1)}, meta, "s"))
    shape = f"tensor '{prefix}obs_var' has shape \\[2\\], expected \\[1\\]"
    with pytest.raises(CheckpointError, match=shape):
        tensorcheck.check_sb3(as_checkpoint({**tensors, f"{prefix}obs_var": torch.ones(2)}, meta, "s"))


def test_a_config_asks_for_no_more_weights_than_the_checkpoint_holds():
    """agent.net_arch [a, b] needs at least a + a·b weights: a checkpoint that holds fewer is refused before
    anything is built; one that fits passes; a black-box strategy's checkpoint is not measured by it."""
    tensors = {**rng(), "policy/pi.weight": torch.zeros(64, 64), "policy/pi.bias": torch.zeros(64)}
    ckpt = as_checkpoint(tensors, {}, "n")
    tensorcheck.check_net_arch(ckpt, [64, 64])  # 64 + 4,096 of the 4,160 + RNG values it holds
    with pytest.raises(CheckpointError, match=r"^checkpoint 'n' does not fit its config: agent.net_arch "
                                              r"\[100000, 100000\] needs at least 10,000,100,000 weights, "
                                              r"its tensors hold [\d,]+; evaluate it with the config"):
        tensorcheck.check_net_arch(ckpt, [100000, 100000])
    # its callers (scoring.load_policy, the self-play opponents' loader) ask the checkpoint's backend first
    assert [get_backend(name).builds_net_arch for name in ("sb3", "rllib", "blackbox")] == [True, True, False]
