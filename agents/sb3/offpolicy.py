"""SAC and TD3 on stable-baselines3: hyperparameters, the chunked off-policy advance and their exact state.

The state that makes a resume exact is written as tensors plus JSON, never pickle: actor, critics and target
networks (the policy's state dict), every optimiser (actor, critic and SAC's entropy coefficient), SAC's
``log_ent_coef``, the replay buffer (the filled part of observations, next_observations, actions, rewards,
dones, timeouts, and its ``pos``/``full``), the action space's sampler (random actions before
``learning_starts``) and Ornstein-Uhlenbeck noise, and a HER buffer's episode index (:mod:`agents.sb3.her`).
``train.checkpoint_replay: false`` leaves the buffer out.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import SAC, TD3
from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer
from stable_baselines3.common.noise import (
    ActionNoise,
    NormalActionNoise,
    OrnsteinUhlenbeckActionNoise,
    VectorizedActionNoise,
)
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from agents.run.header import corrupted
from agents.run.memory import check_replay
from agents.sb3 import her
from envs.errors import CheckpointError

if TYPE_CHECKING:
    from pathlib import Path

    from stable_baselines3.common.callbacks import BaseCallback

    from agents.config import RunConfig

log = logging.getLogger(__name__)

ALGOS: dict[str, type[SAC] | type[TD3]] = {"sac": SAC, "td3": TD3}
CHUNK = 1024
"""Env steps one :func:`advance` collects at most, so that the loop logs and reports about once a second."""
REPLAY_FIELDS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")
Tensors = dict[str, torch.Tensor]
"""A checkpoint's tensors by name."""


def hyperparameters(cfg: RunConfig, action_space: gym.Space | None, activation_fn: type[torch.nn.Module],
                    learning_rate: Any) -> dict[str, Any]:
    """SB3 keyword arguments of SAC or TD3 from the ``agent:`` section (None fields take SB3's defaults).

    Args:
        cfg: the run config; ``cfg.agent.algo`` is ``sac`` or ``td3``.
        action_space: the (Box) action space, for the shape of the exploration noise; None leaves the noise
            out (a policy built for evaluation).
        activation_fn: the hidden-layer activation class.
        learning_rate: a float, a schedule, or None for SB3's default.
    """
    a = cfg.agent
    hp: dict[str, Any] = {"gamma": a.gamma, "buffer_size": a.buffer_size,
                          "learning_starts": a.learning_starts, "train_freq": a.train_freq,
                          "gradient_steps": a.gradient_steps, "tau": a.tau,
                          "policy_kwargs": {"net_arch": list(a.net_arch), "activation_fn": activation_fn}}
    if learning_rate is not None:
        hp["learning_rate"] = learning_rate
    if a.batch_size is not None:
        hp["batch_size"] = a.batch_size
    noise = a.action_noise or ("normal" if a.algo == "td3" else "none")
    if noise != "none" and action_space is not None:
        shape = action_space.shape or (1,)
        kind = NormalActionNoise if noise == "normal" else OrnsteinUhlenbeckActionNoise
        hp["action_noise"] = kind(mean=np.zeros(shape), sigma=a.action_noise_std * np.ones(shape))
    if a.algo == "sac":
        hp.update(ent_coef="auto" if a.ent_coef is None else a.ent_coef, target_entropy=a.target_entropy,
                  target_update_interval=a.target_update_interval)
    else:
        hp.update(policy_delay=a.policy_delay, target_policy_noise=a.target_policy_noise,
                  target_noise_clip=a.target_noise_clip)
    return hp


def check_memory(cfg: RunConfig, observation_space: gym.Space, action_space: gym.Space, n_envs: int, *,
                 optimize_memory_usage: bool = False) -> None:
    """Refuse a replay buffer over a share of the machine's memory before SB3 allocates it (one line, exit 2).

    SB3 keeps ``max(buffer_size // n_envs, 1)`` rows of ``n_envs`` transitions; with ``optimize_memory_usage``
    it stores each observation once. Checkpoints that hold the buffer serialise it into memory again.
    """
    rows = max(cfg.agent.buffer_size // n_envs, 1)
    check_replay(observation_space, action_space, cfg.agent.buffer_size, n_envs, rows=rows,
                 next_observations=not optimize_memory_usage, checkpointed=cfg.train.checkpoint_replay)


def advance(model: OffPolicyAlgorithm, until: int, callback: BaseCallback) -> None:
    """Collect and update up to global step ``until`` (at most :data:`CHUNK` steps) in one ``learn`` call.

    SB3 alternates ``train_freq`` vector steps with ``gradient_steps`` updates inside ``learn``; the callback
    sees every vector step (``session.tick``) and its ``on_rollout_end`` sets the run-wide learning-rate
    progress before each update. The chunk ends between an update and the next collection.
    """
    step = int(model.num_timesteps)
    n = max(1, min(until, step + CHUNK) - step)
    model.learn(n, callback=callback, reset_num_timesteps=False, log_interval=model.n_envs,
                progress_bar=False)


# -- state ----------------------------------------------------------------------------------------------
def optimizers(model: OffPolicyAlgorithm) -> dict[str, torch.optim.Optimizer]:
    """Every optimiser of a SAC or TD3 model, by name (``actor``, ``critic``, ``ent_coef``)."""
    opts = {"actor": model.actor.optimizer, "critic": model.critic.optimizer}  # type: ignore[attr-defined]
    ent = getattr(model, "ent_coef_optimizer", None)
    if ent is not None:
        opts["ent_coef"] = ent
    return opts


def save_optimizer(opt: torch.optim.Optimizer, prefix: str, tensors: Tensors) -> dict[str, Any]:
    """Tensors of an optimiser's state under ``prefix<idx>/<key>``; the rest (param groups, scalars) as
    JSON."""
    sd = opt.state_dict()
    meta: dict[str, Any] = {"param_groups": sd["param_groups"], "state": {}}
    for idx, st in sd["state"].items():
        meta["state"][str(idx)] = {}
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"{prefix}{idx}/{key}"] = val
            else:
                meta["state"][str(idx)][key] = val
    return meta


def load_optimizer(opt: torch.optim.Optimizer, prefix: str, tensors: Tensors,
                   meta: dict[str, Any], path: Path | str = "checkpoint") -> None:
    """Restore what :func:`save_optimizer` wrote; a state tensor must have its parameter's shape and dtype.

    Raises:
        CheckpointError: a state that does not fit the optimiser (torch would load it and fail at a step).
    """
    params = [p for group in opt.param_groups for p in group["params"]]
    try:
        state: dict[str, Any] = {"param_groups": meta["param_groups"],
                                 "state": {int(idx): dict(st) for idx, st in meta["state"].items()}}
        for key, val in tensors.items():
            if key.startswith(prefix):
                idx, name = key[len(prefix):].split("/", 1)
                param = params[int(idx)]
                if val.ndim and (val.shape != param.shape or val.dtype != param.dtype):
                    raise corrupted(path, f"tensor {key!r} is {str(val.dtype)[6:]} {list(val.shape)}, its "
                                          f"parameter is {str(param.dtype)[6:]} {list(param.shape)}")
                state["state"].setdefault(int(idx), {})[name] = val
        opt.load_state_dict(state)
    except (ValueError, KeyError, IndexError, TypeError, RuntimeError) as e:
        first = str(e).splitlines()[0][:160] if str(e) else ""
        raise corrupted(path, f"its optimiser state under {prefix!r} does not fit this model "
                              f"({type(e).__name__}: {first})") from e


def save_state(model: OffPolicyAlgorithm, tensors: Tensors, *, replay: bool) -> dict[str, Any]:
    """Add the off-policy state to ``tensors``; return the header fields (``optimizers``,
    ``off_policy``)."""
    opts = {name: save_optimizer(opt, f"optim_{name}/", tensors) for name, opt in optimizers(model).items()}
    log_ent = getattr(model, "log_ent_coef", None)
    if log_ent is not None:
        tensors["offpolicy/log_ent_coef"] = log_ent.detach().clone()
    ou = _ou_noises(model.action_noise)
    if ou:
        tensors["offpolicy/ou_noise"] = torch.as_tensor(np.stack([n.noise_prev for n in ou]))
    state: dict[str, Any] = {"episode_num": int(model._episode_num), "replay": None,
                             "action_space_rng": model.action_space.np_random.bit_generator.state}
    if replay and model.replay_buffer is not None:
        state["replay"] = _save_replay(model.replay_buffer, tensors)
        state["her"] = her.save_state(model.replay_buffer, tensors, state["replay"]["n"])
    return {"optimizer": None, "optimizers": opts, "off_policy": state}


def load_state(model: OffPolicyAlgorithm, tensors: Tensors, meta: dict[str, Any], path: Path) -> None:
    """Restore what :func:`save_state` wrote into a freshly built model of the same config."""
    opts = optimizers(model)
    if set(opts) != set(meta["optimizers"]):
        raise CheckpointError(f"checkpoint {str(path)!r} holds optimisers {sorted(meta['optimizers'])}, "
                              f"this config builds {sorted(opts)} (agent.ent_coef changed?); resume with the "
                              "config it was trained with")
    for name, opt in opts.items():
        load_optimizer(opt, f"optim_{name}/", tensors, meta["optimizers"][name], path)
    log_ent = getattr(model, "log_ent_coef", None)
    if log_ent is not None and "offpolicy/log_ent_coef" in tensors:
        with torch.no_grad():
            log_ent.copy_(tensors["offpolicy/log_ent_coef"])
    state = meta["off_policy"]
    model._episode_num = state["episode_num"]
    model.action_space.np_random.bit_generator.state = state["action_space_rng"]
    if "offpolicy/ou_noise" in tensors and model.action_noise is not None:
        if model.n_envs > 1 and not isinstance(model.action_noise, VectorizedActionNoise):
            model.action_noise = VectorizedActionNoise(model.action_noise, model.n_envs)
        for noise, prev in zip(_ou_noises(model.action_noise), tensors["offpolicy/ou_noise"].numpy()):
            noise.noise_prev = prev.copy()
    if state["replay"] is None:
        log.warning("checkpoint %s holds no replay buffer (train.checkpoint_replay: false): training "
                    "resumes with an empty buffer, so the resumed run is not exact", path)
    elif model.replay_buffer is not None:
        _load_replay(model.replay_buffer, tensors, state["replay"], path)
        her.load_state(model.replay_buffer, tensors, state.get("her"), state["replay"]["n"], path)


def _ou_noises(noise: ActionNoise | None) -> list[OrnsteinUhlenbeckActionNoise]:
    parts = noise.noises if isinstance(noise, VectorizedActionNoise) else [noise]
    return [p for p in parts if isinstance(p, OrnsteinUhlenbeckActionNoise)]


def _save_replay(buf: ReplayBuffer | DictReplayBuffer | Any, tensors: Tensors) -> dict[str, Any]:
    """The filled part of the buffer as ``replay/<field>`` (``replay/<field>/<key>`` for Dict
    observations)."""
    n = buf.buffer_size if buf.full else buf.pos
    for name in REPLAY_FIELDS:
        arr = getattr(buf, name, None)
        if isinstance(arr, dict):
            for key, part in arr.items():
                tensors[f"replay/{name}/{key}"] = torch.from_numpy(np.ascontiguousarray(part[:n]))
        elif arr is not None:
            tensors[f"replay/{name}"] = torch.from_numpy(np.ascontiguousarray(arr[:n]))
    return {"pos": int(buf.pos), "full": bool(buf.full), "n": int(n), "buffer_size": int(buf.buffer_size),
            "n_envs": int(buf.n_envs)}


def _load_replay(buf: ReplayBuffer | DictReplayBuffer | Any, tensors: Tensors, meta: dict[str, Any],
                 path: Path) -> None:
    if (meta["buffer_size"], meta["n_envs"]) != (buf.buffer_size, buf.n_envs):
        raise CheckpointError(f"checkpoint {str(path)!r} holds a replay buffer of {meta['buffer_size']} "
                              f"rows × {meta['n_envs']} envs, this config builds {buf.buffer_size} × "
                              f"{buf.n_envs}; resume with the agent.buffer_size and train.num_envs it was "
                              "trained with")
    n = meta["n"]
    for name in REPLAY_FIELDS:
        arr = getattr(buf, name, None)
        if isinstance(arr, dict):
            for key, part in arr.items():
                part[:n] = _replay_tensor(tensors, f"replay/{name}/{key}", path)
        elif arr is not None:
            arr[:n] = _replay_tensor(tensors, f"replay/{name}", path)
    buf.pos, buf.full = meta["pos"], meta["full"]


def _replay_tensor(tensors: Tensors, key: str, path: Path) -> np.ndarray:
    if key not in tensors:
        raise corrupted(path, f"replay tensor {key!r} is missing")
    return tensors[key].numpy()
