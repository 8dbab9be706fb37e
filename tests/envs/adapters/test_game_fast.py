"""The fast Atari path of issue 17: 42×42 frames, the small CNN, bf16 autocast, CPU tensors in checkpoints."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors import safe_open

import envs
from agents.config import RunConfig
from agents.run import checkpoint
from agents.sb3.policies import AutocastNatureCNN, SmallCNN, select_policy


def _conv_macs(module: torch.nn.Module, shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of every Conv2d and Linear for one sample, counted from the real output shapes."""
    macs = 0

    def hook(m: torch.nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(m, torch.nn.Conv2d):
            macs += out[0].numel() * m.in_channels * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, torch.nn.Linear):
            macs += m.in_features * m.out_features
    handles = [m.register_forward_hook(hook) for m in module.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    module(torch.zeros(1, *shape))
    for h in handles:
        h.remove()
    return macs


def test_frame_size_42_observation_and_bad_size():
    env = envs.make("game", frame_size=42)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 42, 42) and obs.dtype == np.uint8 and obs.max() > 0
    obs, *_ = env.step(0)
    assert obs.shape == (4, 42, 42)
    env.close()
    with pytest.raises(ValueError, match="frame_size must be an integer >= 8"):
        envs.make("game", frame_size=4)


def test_crop_keeps_the_play_field_rows_then_resizes():
    """env.crop: rows top:bottom of the grayscale screen, area-resized, equal what cv2 gives from the
    full frame."""
    import cv2

    full = envs.make("game", frame_size=42, noop_max=0)
    crop = envs.make("game", frame_size=42, noop_max=0, crop=[34, 194], render_mode="rgb_array")
    a, _ = crop.reset(seed=0)
    b, _ = full.reset(seed=0)
    assert a.shape == b.shape == (4, 42, 42) and crop.observation_space == full.observation_space
    for _ in range(40):  # the ball is in play: the cropped frame differs from the whole-screen resize
        a, *_ = crop.step(2)
        b, *_ = full.step(2)
    assert not np.array_equal(a, b)
    screen = cv2.cvtColor(crop.render(), cv2.COLOR_RGB2GRAY)  # the last emulator frame (before max-pooling)
    want = cv2.resize(screen[34:194], (42, 42), interpolation=cv2.INTER_AREA)
    # max-pool of the last two frames may differ
    assert np.abs(a[-1].astype(int) - want.astype(int)).max() <= 40
    assert np.abs(a[-1].astype(int) - want.astype(int)).mean() < 1
    crop.close()
    full.close()
    for bad in ([194, 34], [0, 211], [10, 12], "34,194", [34.0, 194]):
        with pytest.raises(ValueError, match="crop must be two row numbers"):
            envs.make("game", crop=bad)


def test_small_cnn_costs_a_twentieth_of_the_nature_cnn():
    """The FLOP figures docs/results.md quotes: 0.96 MFLOP (small, 42×42) vs 18.7 (Nature, 84×84)."""
    small = SmallCNN(gym.spaces.Box(0, 255, (4, 42, 42), np.uint8))
    nature = AutocastNatureCNN(gym.spaces.Box(0, 255, (4, 84, 84), np.uint8))
    s, n = _conv_macs(small, (4, 42, 42)), _conv_macs(nature, (4, 84, 84))
    assert (round(2 * s / 1e6, 2), round(2 * n / 1e6, 1)) == (0.96, 18.7)
    assert n / s > 19


def test_bf16_autocast_gives_fp32_features_and_fp32_gradients():
    space = gym.spaces.Box(0, 255, (4, 42, 42), np.uint8)
    for cnn in (SmallCNN(space, bf16=True), AutocastNatureCNN(space, bf16=True)):
        x = torch.rand(8, 4, 42, 42)
        y = cnn(x)
        assert y.dtype == torch.float32
        y.sum().backward()
        grads = [p.grad for p in cnn.parameters()]
        assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads if g is not None)


def test_select_policy_follows_agent_cnn_and_precision():
    space = gym.spaces.Box(0, 255, (4, 42, 42), np.uint8)
    name, extra = select_policy(RunConfig(agent={"policy": "cnn", "cnn": "small", "precision": "bf16"}),
                                space)
    assert name == "CnnPolicy" and extra == {"features_extractor_class": SmallCNN,
                                            "features_extractor_kwargs": {"bf16": True}}
    name, extra = select_policy(RunConfig(agent={"policy": "cnn"}), space)
    assert name == "CnnPolicy" and extra == {}  # SB3's own NatureCNN, as before: old checkpoints still load


def test_bf16_training_saves_fp32_cpu_tensors(tmp_path, request):
    """A PPO update under bf16 autocast, then the checkpoint path: every stored tensor is a contiguous CPU
    tensor with the parameter's own dtype (fp32), whatever the views, gradients or autocast around it."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import Logger
    from stable_baselines3.common.vec_env import DummyVecEnv

    threads = torch.get_num_threads()
    # as train.threads: 2 threads spin-wait on a loaded 2-core machine (docs/results.md)
    torch.set_num_threads(1)
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    cfg = RunConfig(agent={"policy": "cnn", "cnn": "small", "precision": "bf16"})
    venv = DummyVecEnv([lambda: envs.make("game", frame_size=42)])
    name, extra = select_policy(cfg, venv.observation_space)
    model = PPO(name, venv, n_steps=64, batch_size=32, n_epochs=1, policy_kwargs=extra, seed=0, device="cpu")
    model.set_logger(Logger(folder=None, output_formats=[]))  # SB3's default would make /tmp/SB3-<time>/
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    model.learn(64)
    state = model.policy.state_dict()
    assert any(not torch.equal(before[k], state[k]) for k in state)  # the bf16 update changed the weights
    tensors = {f"policy/{k}": v for k, v in state.items()}
    w = model.policy.features_extractor.cnn[0].weight
    tensors["view"] = w.transpose(0, 1)  # a non-contiguous view that requires grad
    path = checkpoint.save(tmp_path / "c.safetensors", tensors, {"step": 64})
    with safe_open(str(path), "pt", device="cpu") as f:
        for k in f.keys():  # noqa: SIM118 - safe_open is not iterable
            t = f.get_tensor(k)
            assert t.device.type == "cpu" and t.is_contiguous()
            assert t.dtype == (tensors[k].dtype if k in tensors else t.dtype)
        assert torch.equal(f.get_tensor("view"), w.detach().transpose(0, 1))
        assert f.get_tensor("policy/features_extractor.cnn.0.weight").dtype == torch.float32
    venv.close()
