"""Which SB3 policy follows from the observation space, and observation statistics in checkpoints.

The same functions serve training, ``--resume`` and ``evaluate.py``, so the three build the same network
and normalise observations the same way.
"""

from __future__ import annotations

import logging
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, NatureCNN
from stable_baselines3.common.vec_env import VecNormalize

from agents.config import RunConfig
from envs.errors import CheckpointError, UserError
from envs.wrappers import is_image

log = logging.getLogger(__name__)

MIN_CNN_SIDE = 36
"""The smallest image side SB3's NatureCNN takes (8×8 stride 4, 4×4 stride 2, 3×3 stride 1)."""

_noted: set[str] = set()


def _note(text: str) -> None:
    if text not in _noted:
        _noted.add(text)
        log.warning(text)


def _small(space: gym.Space) -> bool:
    # channel-first by now (envs/wrappers.py)
    return is_image(space) and min((space.shape or (0, 0, 0))[1:]) < MIN_CNN_SIDE


def select_policy(cfg: RunConfig, obs_space: gym.Space) -> tuple[str, dict[str, Any]]:
    """The SB3 policy name and the ``policy_kwargs`` it adds, chosen from ``agent.policy`` and the space.

    ``auto``: ``MultiInputPolicy`` for a Dict, ``CnnPolicy`` for an image of at least 36×36, else
    ``MlpPolicy``. An image smaller than that goes to an MLP (pixels scaled to [0, 1]) with a note.

    Raises:
        UserError: ``agent.policy: cnn`` with an image too small for the CNN, or with no image at all.
    """
    kind: str = cfg.agent.policy
    extra: dict[str, Any] = {}
    if isinstance(obs_space, gym.spaces.Dict):
        small = [k for k, s in obs_space.spaces.items() if _small(s)]
        if small:
            _note(f"observation image(s) {', '.join(small)} smaller than {MIN_CNN_SIDE}x{MIN_CNN_SIDE}: "
                  "flattened into the MLP instead of a CNN")
            extra["features_extractor_class"] = SmallImageExtractor
        if kind == "auto":
            kind = "multi"
    elif kind in ("auto", "cnn") and is_image(obs_space) and _small(obs_space):
        if kind == "cnn":
            raise UserError(f"agent.policy cnn: the image {obs_space.shape} is smaller than {MIN_CNN_SIDE}x"
                            f"{MIN_CNN_SIDE}, too small for the CNN; use agent.policy auto or mlp, or a "
                            "resize under env.wrappers")
        _note(f"observation image {obs_space.shape} smaller than {MIN_CNN_SIDE}x{MIN_CNN_SIDE}: an MLP on "
              "its pixels (scaled to [0, 1]) instead of a CNN")
        kind = "mlp"
    elif kind == "auto":
        kind = "cnn" if is_image(obs_space) else "mlp"
    if cfg.agent.extractor == "board_cnn":  # a board game's planes: small convolutions (agents/sb3/board.py)
        from agents.sb3.board import BoardCNN, board_keys

        board_keys(obs_space)
        extra = {"features_extractor_class": BoardCNN}
        kind = "multi" if isinstance(obs_space, gym.spaces.Dict) else "mlp"
    elif kind == "cnn" and (cfg.agent.cnn, cfg.agent.precision) != ("nature", "fp32"):
        extra["features_extractor_class"] = SmallCNN if cfg.agent.cnn == "small" else AutocastNatureCNN
        extra["features_extractor_kwargs"] = {"bf16": cfg.agent.precision == "bf16"}
    return {"mlp": "MlpPolicy", "cnn": "CnnPolicy", "multi": "MultiInputPolicy"}[kind], extra


def _autocast(x: torch.Tensor, on: bool) -> torch.autocast:
    return torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=on)


class SmallCNN(BaseFeaturesExtractor):
    """A CNN for 42×42 frames (``agent.cnn: small``): the 2013 DQN's two conv layers (16 8×8 stride 4,
    32 4×4 stride 2) and 256 features. On ``uint8[4, 42, 42]`` it costs 0.96 MFLOP forward per sample,
    the Nature CNN 2.1 on the same frames and 18.7 on 84×84 (docs/results.md).

    Args:
        observation_space: a channel-first image Box (pixels are scaled to [0, 1] by SB3's preprocessing).
        features_dim: output features.
        bf16: run the convolutions and the linear layer under bf16 autocast; the output is fp32.
    """

    def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 256,
                 bf16: bool = False) -> None:
        super().__init__(observation_space, features_dim)
        n_in = (observation_space.shape or (1,))[0]
        self.cnn = torch.nn.Sequential(torch.nn.Conv2d(n_in, 16, 8, stride=4), torch.nn.ReLU(),
                                       torch.nn.Conv2d(16, 32, 4, stride=2), torch.nn.ReLU(),
                                       torch.nn.Flatten())
        with torch.no_grad():
            n_flat = self.cnn(torch.zeros(1, *(observation_space.shape or ()))).shape[1]
        self.linear = torch.nn.Sequential(torch.nn.Linear(n_flat, features_dim), torch.nn.ReLU())
        self.bf16 = bf16

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """Features of a batch of images, fp32."""
        with _autocast(observations, self.bf16):
            out = self.linear(self.cnn(observations))
        return out.float()


class AutocastNatureCNN(NatureCNN):
    """SB3's ``NatureCNN`` with its forward (and so its backward) pass under bf16 autocast when ``bf16``."""

    def __init__(self, observation_space: gym.Space, features_dim: int = 512, normalized_image: bool = False,
                 bf16: bool = False) -> None:
        super().__init__(observation_space, features_dim, normalized_image)
        self.bf16 = bf16

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """Features of a batch of images, fp32."""
        with _autocast(observations, self.bf16):
            out = super().forward(observations)
        return out.float()


class SmallImageExtractor(BaseFeaturesExtractor):
    """SB3's ``CombinedExtractor`` for Dict observations, except that an image smaller than the CNN takes
    is flattened (its pixels already scaled to [0, 1] by SB3's preprocessing) instead of convolved.

    Args:
        observation_space: the Dict space.
        cnn_output_dim: features of each large image's NatureCNN.
    """

    def __init__(self, observation_space: gym.spaces.Dict, cnn_output_dim: int = 256) -> None:
        from stable_baselines3.common.preprocessing import get_flattened_obs_dim

        super().__init__(observation_space, features_dim=1)
        extractors: dict[str, torch.nn.Module] = {}
        total = 0
        for key, sub in observation_space.spaces.items():
            if is_image(sub) and not _small(sub):
                extractors[key] = NatureCNN(sub, features_dim=cnn_output_dim)
                total += cnn_output_dim
            else:
                extractors[key] = torch.nn.Flatten()
                total += get_flattened_obs_dim(sub)
        self.extractors = torch.nn.ModuleDict(extractors)
        self._features_dim = total

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        """Each key's features, concatenated."""
        return torch.cat([ex(observations[k]) for k, ex in self.extractors.items()], dim=1)


def save_obs_stats(venv: VecNormalize, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                   prefix: str = "norm/") -> None:
    """Observation statistics into ``tensors``: ``norm/obs_mean`` for a Box, ``norm/obs/KEY/mean`` per Dict
    key (``prefix``: ``norm/<policy>/`` for one policy of a ``policies:`` map)."""
    if not venv.norm_obs:
        return
    if isinstance(venv.obs_rms, dict):
        for key, rms in venv.obs_rms.items():
            tensors[f"{prefix}obs/{key}/mean"] = torch.as_tensor(rms.mean)
            tensors[f"{prefix}obs/{key}/var"] = torch.as_tensor(rms.var)
        meta["obs_count"] = {k: float(r.count) for k, r in venv.obs_rms.items()}
    else:
        tensors[f"{prefix}obs_mean"] = torch.as_tensor(venv.obs_rms.mean)
        tensors[f"{prefix}obs_var"] = torch.as_tensor(venv.obs_rms.var)
        meta["obs_count"] = float(venv.obs_rms.count)


def load_obs_stats(tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                   prefix: str = "norm/") -> RunningMeanStd | dict[str, RunningMeanStd] | None:
    """The statistics :func:`save_obs_stats` wrote under ``prefix``; None when none were saved."""
    def rms(at: str, count: float) -> RunningMeanStd:
        r = RunningMeanStd(shape=tuple(tensors[at + "mean"].shape))
        r.mean, r.var = tensors[at + "mean"].numpy().copy(), tensors[at + "var"].numpy().copy()
        r.count = count
        return r
    if f"{prefix}obs_mean" in tensors:
        return rms(f"{prefix}obs_", float(meta["obs_count"]))
    counts = meta.get("obs_count")
    if isinstance(counts, dict):
        return {k: rms(f"{prefix}obs/{k}/", c) for k, c in counts.items()}
    return None


def saved_norm(tensors: dict[str, torch.Tensor], meta: dict[str, Any] | None, what: str,
               prefix: str = "norm/") -> dict[str, Any] | None:
    """For inference: a checkpoint's observation normalisation (its ``normalize`` record with the
    ``stats``), or None when it did not normalise observations.

    Raises:
        CheckpointError: it normalised observations but holds no statistics (``what`` names the checkpoint).
    """
    if not (meta and meta["norm_obs"]):
        return None
    stats = load_obs_stats(tensors, meta, prefix)
    if stats is None:
        raise CheckpointError(f"{what} normalised observations but holds no statistics (written before they "
                              "were saved for Dict observations); retrain it")
    return {**meta, "stats": stats}


def normalize(obs: Any, stats: RunningMeanStd | dict[str, RunningMeanStd], norm: dict[str, Any]) -> Any:
    """``VecNormalize.normalize_obs`` without a vec env (evaluation): the same clip and epsilon."""
    def one(x: Any, r: RunningMeanStd) -> np.ndarray:
        z = (x - r.mean) / np.sqrt(r.var + norm["epsilon"])
        return np.clip(z, -norm["clip_obs"], norm["clip_obs"]).astype(np.float32)
    if isinstance(stats, dict):
        return {k: one(v, stats[k]) if k in stats else v for k, v in obs.items()}
    return one(obs, stats)
