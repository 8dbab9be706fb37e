"""The RLlib state that nondiff carries itself, checked against the libraries it imitates (no Ray started)."""

from __future__ import annotations

import numpy as np
import torch
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

import envs
from agents.rllib import state as rllib_state


def test_scale_reward_matches_sb3_vecnormalize_across_episodes():
    ours = rllib_state.ScaleReward(envs.make("robot"), gamma=0.95)
    sb3 = VecNormalize(DummyVecEnv([lambda: envs.make("robot")]), norm_obs=False, gamma=0.95)
    ours.reset(seed=3)
    sb3.seed(3)
    sb3.reset()
    rng = np.random.default_rng(0)
    raw_returns, raw = [], 0.0
    for _ in range(160):  # three 50-step episodes and a bit
        action = rng.uniform(-1, 1, 2).astype(np.float32)
        _, r_ours, terminated, truncated, info = ours.step(action)
        _, r_sb3, _, infos = sb3.step(action[None])
        assert abs(r_ours - r_sb3[0]) < 1e-4
        raw += float(sb3.get_original_reward()[0])
        if terminated or truncated:
            # the env's own return, for rollout/ep_rew_mean
            assert abs(info["nondiff_raw_return"] - raw) < 1e-3
            raw_returns.append(raw)
            raw = 0.0
            ours.reset()
    assert len(raw_returns) == 3 and all(r < 0 for r in raw_returns)


def test_normalize_is_rllibs_mean_std_filter():
    from ray.rllib.utils.filter import MeanStdFilter

    rng = np.random.default_rng(1)
    filt = MeanStdFilter((5,), clip=rllib_state.CLIP_OBS)
    for x in rng.normal(3.0, 2.0, size=(200, 5)):
        filt(x)
    rs = filt.running_stats
    stats = (float(rs.num_pushes), rs.mean_array.copy(), rs.sum_sq_diff_array.copy())
    probe = rng.normal(3.0, 20.0, size=(7, 5))
    np.testing.assert_allclose(rllib_state.normalize(probe, stats), [filt(p, update=False) for p in probe],
                               rtol=1e-5)


def test_optimizer_state_round_trips_through_tensors_and_json():
    import json

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(8, 3)).pow(2).mean().backward()
        opt.step()
    state = {"default_optimizer": {"module_state_dict": {k: v for k, v in opt.state_dict().items()}}}
    tensors: dict[str, torch.Tensor] = {}
    skeleton = json.loads(json.dumps(rllib_state._split(state, "optim", tensors)))  # what the header holds
    back = rllib_state._join(skeleton, tensors)["default_optimizer"]["module_state_dict"]
    fresh = torch.optim.Adam(net.parameters(), lr=1e-3)
    fresh.load_state_dict({"state": {k: {n: torch.as_tensor(v) for n, v in s.items()}
                                     for k, s in back["state"].items()},
                           "param_groups": back["param_groups"]})
    for k, s in opt.state_dict()["state"].items():
        for name, value in s.items():
            torch.testing.assert_close(fresh.state_dict()["state"][k][name], value)
