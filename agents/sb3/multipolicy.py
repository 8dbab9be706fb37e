"""Several SB3 policies on one PettingZoo parallel env (``policies:``): one PPO or A2C model per policy, each
with its own network, optimiser, settings and TensorBoard names (``policy/<name>/…``).

The models collect in lock-step over the same copies (agents/run/envfactory.py's
:func:`~agents.run.envfactory.make_policy_vector_envs`; each policy's agents are the slots of its own vector
env) and update one after another (:mod:`agents.sb3.lockstep`). Checkpoints hold every model's weights and
optimiser state under ``policy/<name>/`` and ``optim/<name>/``, its counters under the header's
``policies``; the header's spaces are Dicts keyed by policy. Evaluation plays every agent with its policy
(envs/multiagent.py's ``TeamEnv`` with Dict observations and actions).
"""

from __future__ import annotations

import logging
from collections import deque
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.logger import Logger, TensorBoardOutputFormat
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import VecNormalize

from agents.config import RunConfig
from agents.run import checkpoint, tensorcheck, torchstart
from agents.run.backend import Backend, Iteration, resolve_device
from agents.run.envfactory import PolicyVectorEnvs, make_policy_vector_envs
from agents.run.memory import check_rollouts
from agents.run.resolved import ResolvedEnv
from agents.run.session import Session
from agents.sb3 import lockstep, offpolicy
from agents.sb3.backend import (
    ALGOS,
    hyperparameters,
    load_vecnormalize,
    n_steps,
    save_vecnormalize,
)
from agents.sb3.lockstep import Member
from agents.sb3.policies import normalize, saved_norm, select_policy
from agents.sb3.vector import SB3VecEnv, normalized
from envs.errors import CheckpointError

log = logging.getLogger(__name__)


def policy_config(cfg: RunConfig, name: str) -> RunConfig:
    """The run config as policy ``name`` sees it: ``agent:`` with the policy's overrides."""
    return cfg.model_copy(update={"agent": cfg.agent.model_copy(update=cfg.policies[name].overrides())})


class MultiPolicyBackend(Backend):
    """A ``policies:`` map on SB3: PPO or A2C, one model per policy (see the module docstring)."""

    channels_first = True
    batches_programs = True  # a PettingZoo parallel env's agents as the slots of batched vector envs
    pettingzoo = ("parallel",)

    def __init__(self, cfg: RunConfig, seed: int, members: list[Member], policies: dict[str, Any],
                 spaces: tuple[gym.spaces.Dict, gym.spaces.Dict],
                 built: PolicyVectorEnvs | None = None,
                 norms: dict[str, dict[str, Any]] | None = None) -> None:
        self.cfg, self.seed, self.members, self.policies, self.built = cfg, seed, members, policies, built
        self.norms = norms or {}
        """Each normalising policy's saved observation statistics (evaluation: no VecNormalize lives)."""
        self.observation_space, self.action_space = spaces
        self._step = 0  # the checkpoint's step when there is no model (evaluation)

    # -- construction -----------------------------------------------------------------------------------
    @classmethod
    def create(cls, cfg: RunConfig, seed: int, env: ResolvedEnv) -> MultiPolicyBackend:
        """Build the copies, one vector env and one fresh model per policy, and reset them all."""
        torchstart.start_torch(cfg.train.threads)
        set_random_seed(seed)
        device = resolve_device(cfg.train.device)
        built = make_policy_vector_envs(cfg, env)
        members: list[Member] = []
        try:  # every policy's rollout buffer is allocated whole: bound them first
            check_rollouts([(g.observation_space, g.action_space, built.venvs[g.name].num_envs)
                            for g in built.groups.groups], n_steps(cfg, hyperparameters(cfg)))
            for group in built.groups.groups:
                pcfg = policy_config(cfg, group.name)
                hp = hyperparameters(pcfg, group.action_space)
                venv = normalized(SB3VecEnv(built.venvs[group.name]), pcfg)  # the policy's own statistics
                name, extra = select_policy(pcfg, venv.observation_space)
                hp["policy_kwargs"].update(extra)
                model: Any = ALGOS[cfg.agent.algo](name, venv, seed=seed, device=device, verbose=0, **hp)
                members.append(Member(group.name, group.agents, model, built.venvs[group.name]))
        except BaseException:
            built.groups.close()
            raise
        if len({m.model.n_steps for m in members}) != 1:
            raise AssertionError("the policies' n_steps differ; they collect in lock-step")
        for m in members:  # the first reset resets every copy; the others take their part
            m.model._last_obs = m.model.env.reset()  # type: ignore[union-attr,assignment]
            m.model._last_episode_starts = np.ones((m.model.n_envs,), dtype=bool)
        spaces = (gym.spaces.Dict({g.name: g.observation_space for g in built.groups.groups}),
                  gym.spaces.Dict({g.name: g.action_space for g in built.groups.groups}))
        return cls(cfg, seed, members, {m.name: m.model.policy for m in members}, spaces, built)

    # -- training ---------------------------------------------------------------------------------------
    @property
    def num_timesteps(self) -> int:  # type: ignore[override]
        """Global agent-steps so far: every policy's, summed."""
        return sum(int(m.model.num_timesteps) for m in self.members) if self.members else self._step

    def attach(self, session: Session) -> None:
        """Each model logs into the run's TensorBoard writer under ``policy/<name>/``."""
        for m in self.members:
            fmt = TensorBoardOutputFormat(str(session.run.tensorboard))
            fmt.writer.close()
            fmt.writer = session.writer
            out = lockstep.Prefixed(fmt, f"policy/{m.name}/")
            m.model.set_logger(Logger(str(session.run.tensorboard), [out]))
            lockstep.start(m.model)

    def advance(self, until: int, session: Session) -> Iteration:
        """One lock-step rollout of every policy, then each policy's update (none after a stop request)."""
        assert self.built is not None
        done = lockstep.collect(self.members, self.built.groups, session, lambda: self.num_timesteps)
        if done:
            for m in self.members:
                lockstep.update(m.model, self.num_timesteps, session.total_steps)
        returns = [e["r"] for m in self.members for e in (m.model.ep_info_buffer or [])]
        mean = float(np.mean(returns)) if returns else None
        return Iteration(self.num_timesteps, mean, {"rollout/ep_rew_mean": mean} if mean is not None else {})

    def predict(self, obs: Any, deterministic: bool = True) -> Any:
        """Each policy's actions for its agents' observations (a Dict keyed by policy, as ``TeamEnv`` gives
        them)."""
        return {name: policy.predict(self._normalized(name, obs[name]), deterministic=deterministic)[0]
                for name, policy in self.policies.items()}

    def _normalized(self, name: str, obs: Any) -> Any:
        live = next((m.model.get_env() for m in self.members if m.name == name), None)
        if isinstance(live, VecNormalize):
            return live.normalize_obs(obs)
        norm = self.norms.get(name)
        return obs if norm is None else normalize(obs, norm["stats"], norm)

    # -- checkpoints ------------------------------------------------------------------------------------
    def save(self, path: Path, meta: dict[str, Any] | None = None) -> Path:
        """Every policy's weights, optimiser, counters and last observations, the RNGs and (at the start of
        the copies' episodes) the copies' states, atomically."""
        assert self.built is not None
        tensors: dict[str, torch.Tensor] = {}
        policies: dict[str, Any] = {}
        for m in self.members:
            model = m.model
            tensors.update({f"policy/{m.name}/{k}": v for k, v in model.policy.state_dict().items()})
            optimizer = offpolicy.save_optimizer(model.policy.optimizer, f"optim/{m.name}/", tensors)
            tensors[f"loop/{m.name}/last_obs"] = torch.as_tensor(np.asarray(model._last_obs))
            tensors[f"loop/{m.name}/last_episode_starts"] = torch.as_tensor(
                np.asarray(model._last_episode_starts))
            venv = model.get_env()
            norm = None  # its statistics under norm/<name>/, as a single policy's under norm/
            if isinstance(venv, VecNormalize):
                norm = save_vecnormalize(venv, tensors, f"norm/{m.name}/")
            policies[m.name] = {"agents": list(m.agents), "num_timesteps": int(model.num_timesteps),
                                "n_updates": int(model._n_updates), "optimizer": optimizer, "normalize": norm,
                                "ep_info_buffer": list(model.ep_info_buffer or []),
                                "episodes": [m.stats.get_state(i) for i in range(m.stats.num_envs)]}
        rng_t, rng_m = checkpoint.rng_state()
        tensors.update(rng_t)
        body = {
            **checkpoint.base_meta("sb3", self.cfg.agent.algo, self.num_timesteps, self.seed,
                                   (self.observation_space, self.action_space),
                                   self.cfg.model_dump(mode="json")),
            "n_updates": sum(p["n_updates"] for p in policies.values()), "optimizer": None, "rng": rng_m,
            "normalize": None, "policies": policies, "env_states": self.built.groups.fresh_states(),
            **(meta or {}),
        }
        return checkpoint.save(path, tensors, body)

    @classmethod
    def load(cls, ckpt: checkpoint.Checkpoint, cfg: RunConfig, env: ResolvedEnv, *,
             for_training: bool = False, seed: int = 0) -> MultiPolicyBackend:
        """Restore a checkpoint: every policy alone for evaluation, or the whole training state."""
        tensorcheck.check_sb3(ckpt)
        header, path = ckpt.header, ckpt.path
        obs_space, act_space = header.spaces()
        saved = header.extra.get("policies")
        if not (isinstance(obs_space, gym.spaces.Dict) and isinstance(act_space, gym.spaces.Dict)
                and isinstance(saved, dict) and set(saved) == set(cfg.policies) == set(obs_space.spaces)):
            raise CheckpointError(f"checkpoint {str(path)!r} does not hold the policies "
                                  f"{sorted(cfg.policies)} of this run's policies: map; evaluate it with the "
                                  "config it was trained with")
        if for_training:
            backend = cls.create(cfg, seed, env)
            checkpoint.check_spaces(header, backend.observation_space, backend.action_space,
                                    f"resume from {path}")
            backend._restore(ckpt)
            return backend
        torchstart.start_torch(cfg.train.threads)
        policies = {name: _policy(cfg, name, header.algo, obs_space[name], act_space[name], ckpt)
                    for name in cfg.policies}
        norms = {name: norm for name in cfg.policies
                 if (norm := saved_norm(ckpt.tensors, saved[name].get("normalize"),
                                        f"checkpoint {str(path)!r} (policy {name!r})", f"norm/{name}/"))}
        backend = cls(cfg, header.seed if header.seed is not None else seed, [], policies,
                      (obs_space, act_space), norms=norms)
        backend._step = header.num_timesteps
        return backend

    def _restore(self, ckpt: checkpoint.Checkpoint) -> None:
        tensors, meta, path = ckpt.tensors, ckpt.header.extra, ckpt.path
        assert self.built is not None
        for m in self.members:
            saved = meta["policies"][m.name]
            own = f"policy/{m.name}/"
            tensorcheck.load_policy_state(m.model.policy, _prefixed(tensors, own), path, own)
            offpolicy.load_optimizer(m.model.policy.optimizer, f"optim/{m.name}/", tensors,
                                     saved["optimizer"], path)
            venv = m.model.get_env()
            if isinstance(venv, VecNormalize) and saved.get("normalize"):
                load_vecnormalize(venv, tensors, saved["normalize"], f"norm/{m.name}/")
            m.model.num_timesteps = int(saved["num_timesteps"])
            m.model._n_updates = int(saved["n_updates"])
            m.model.ep_info_buffer = deque(saved["ep_info_buffer"], maxlen=m.model._stats_window_size)
            m.model.ep_success_buffer = deque(maxlen=m.model._stats_window_size)
        states = meta.get("env_states")
        if states and self.built.groups.set_fresh_states(states):
            for m in self.members:
                m.model._last_obs = tensors[f"loop/{m.name}/last_obs"].numpy()
                m.model._last_episode_starts = tensors[f"loop/{m.name}/last_episode_starts"].numpy()
                for i, state in enumerate(meta["policies"][m.name]["episodes"]):
                    m.stats.set_state(i, state)
        else:
            log.warning("the checkpoint was taken in the middle of the copies' episodes (or the env keeps no "
                        "NumPy np_random); resuming from fresh episodes")
        checkpoint.set_rng_state(tensors, meta["rng"])

    def close(self) -> None:
        """Close the copies."""
        if self.built is not None:
            self.built.groups.close()


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _policy(cfg: RunConfig, name: str, algo: str, obs_space: gym.Space, act_space: gym.Space,
            ckpt: checkpoint.Checkpoint) -> Any:
    """Policy ``name``'s network for inference, its weights loaded."""
    pcfg = policy_config(cfg, name)
    alias, extra = select_policy(pcfg, obs_space)
    kwargs = {**hyperparameters(pcfg)["policy_kwargs"], **extra}
    if algo == "a2c":
        kwargs.update(optimizer_class=torch.optim.RMSprop,
                      optimizer_kwargs={"alpha": 0.99, "eps": 1e-5, "weight_decay": 0})
    policy = ALGOS[algo].policy_aliases[alias](obs_space, act_space, lambda _: 0.0, **kwargs)
    prefix = f"policy/{name}/"
    tensorcheck.load_policy_state(policy, _prefixed(ckpt.tensors, prefix), ckpt.path, prefix)
    return policy.eval()
