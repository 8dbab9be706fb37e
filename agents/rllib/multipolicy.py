"""A PettingZoo parallel env on the RLlib backend: one shared RLModule, or one per policy of ``policies:``,
trained by RLlib's multi-agent API (agents/rllib/multiagent.py builds the env, mapping and config).

The same TensorBoard names as SB3's: a shared module logs ``train/…`` and ``rollout/…``; each policy of a map
logs ``policy/<name>/train/…``, ``policy/<name>/rollout/ep_rew_mean`` (the mean return of its agents) and
``policy/<name>/rollout/ep_len_mean``, ``rollout/ep_rew_mean`` being the mean over all agents. ``--timesteps``
counts agent-steps. Checkpoints hold every module's weights (``module/<name>/…``) and the learner's optimiser
state as tensors plus JSON; the header's spaces are one agent's (shared) or Dicts keyed by policy, as
evaluation's ``TeamEnv`` gives them.
:meth:`RLlibAgentsBackend.predict` answers from bare RLModules without Ray, one per module.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.config import RunConfig
from agents.rllib import algos as rllib_algos
from agents.rllib import multiagent as ma
from agents.rllib import state as rllib_state
from agents.rllib.backend import RLlibBackend, _connect, _health, _health_callback_class
from agents.rllib.runners import check_runner_envs
from agents.run import checkpoint, tensorcheck, torchstart
from agents.run.backend import Iteration
from agents.run.memory import check_rollouts
from agents.run.resolved import ResolvedEnv
from agents.run.session import Session
from envs.errors import CheckpointError
from envs.multiagent import AgentGroup


class RLlibAgentsBackend(RLlibBackend):
    """RLlib PPO on a PettingZoo parallel env: one RLModule per policy (see the module docstring).

    Args:
        cfg: the run config.
        seed: the run's seed.
        algo: the RLlib algorithm (None: loaded for evaluation).
        team: the agents and their modules.
        views: one single-module backend per module, answering :meth:`predict` for its agents.
        start_step: where a resume begins.
    """

    def __init__(self, cfg: RunConfig, seed: int, algo: Any, team: ma.Team, views: dict[str, RLlibBackend],
                 start_step: int = 0) -> None:
        super().__init__(cfg, seed, algo, None, team.spaces(), start_step)
        self.team, self.views = team, views

    @classmethod
    def create(cls, cfg: RunConfig, seed: int, env: ResolvedEnv, start_step: int = 0) -> RLlibAgentsBackend:
        """Group the agents, build the multi-agent config (bad input fails before Ray starts), start or join
        Ray and build the algorithm."""
        from ray.tune.registry import register_env

        ma.check_config(cfg)
        team = ma.team_of(cfg, env)
        check_rollouts([(g.observation_space, g.action_space, cfg.train.num_envs * len(g.agents))
                        for g in team.groups], rllib_algos.rollout_steps(cfg))  # PPO's train batch
        config = ma.build_config(cfg, seed, env, team, start_step, ma.agents_health_class(
            _health_callback_class()))
        check_runner_envs(cfg, env, functools.partial(ma.create_env, {"cfg": cfg.model_dump(mode="json"),
                                                                      "env": env}))
        _connect(cfg)
        register_env(ma.MA_ENV_NAME, ma.create_env)
        torchstart.start_torch(cfg.train.threads)
        algo = config.build_algo()
        views = {g.name: _view(cfg, seed, g, algo.get_module(g.name)) for g in team.groups}
        backend = cls(cfg, seed, algo, team, views, start_step)
        if backend.spec.sb3_init and not start_step:  # a resume loads weights instead
            weights = algo.get_weights()
            backend._set_modules({g.name: rllib_state.sb3_init(
                weights[g.name], ma.policy_config(cfg, g.name).agent.log_std_init, seed)
                for g in team.groups if ma.policy_config(cfg, g.name).agent.ortho_init})
        return backend

    # -- training ---------------------------------------------------------------------------------------
    def advance(self, until: int, session: Session) -> Iteration:
        """One ``algo.train()``; agent-steps, and each module's metrics under the SB3 names."""
        t = time.monotonic()
        result = self.algo.train()
        runners = result.get("env_runners", {})
        before = self.num_timesteps
        self.num_timesteps = self._offset + _agent_steps(result)
        n = self.team.num_agents
        ret = runners.get("episode_return_mean")
        mean = float(ret) / n if ret is not None and np.isfinite(ret) else None
        scalars: dict[str, Any] = {"rollout/ep_rew_mean": mean, "rollout/ep_len_mean": runners.get(
            "episode_len_mean"), "time/fps": (self.num_timesteps - before) / max(time.monotonic() - t, 1e-9)}
        modules = runners.get("module_episode_returns_mean") or {}
        lengths = runners.get("agent_steps") or {}  # each agent's episode length
        learners = result.get("learners", {})
        for g in self.team.groups:
            prefix = "" if self.team.shared else f"policy/{g.name}/"
            learner = learners.get(g.name, {})
            scalars.update(rllib_algos.learner_scalars(self.spec, learner, prefix))
            if prefix:
                got = modules.get(g.name)
                scalars[f"{prefix}rollout/ep_rew_mean"] = None if got is None else float(got) / len(g.agents)
                mine = [float(lengths[a]) for a in g.agents if a in lengths]
                scalars[f"{prefix}rollout/ep_len_mean"] = float(np.mean(mine)) if mine else None
        scalars["env/runner_restarts"] = self._runner_restarts(result, session)  # bounded, said (backend.py)
        scalars.update(_health(runners.get("nondiff", {}), session, self.algo.env_runner_group, self._faults))
        return Iteration(self.num_timesteps, mean, scalars)

    def bind_env(self, env: Any) -> None:
        """Before an evaluation: bring each module on the driver up to the learner's weights."""
        if self.algo is not None:
            weights = self.algo.get_weights()
            for name, view in self.views.items():
                own = view.module.get_state()
                view.module.set_state({k: v for k, v in weights[name].items() if k in own})

    def predict(self, obs: Any, deterministic: bool = True) -> Any:
        """Each module's actions for its agents' observations: an array for the shared module, a Dict keyed
        by policy for a map (as evaluation's ``TeamEnv`` gives them)."""
        if self.team.shared:
            return self.views[ma.SHARED].predict(obs, deterministic)
        return {name: view.predict(obs[name], deterministic) for name, view in self.views.items()}

    # -- checkpoints ------------------------------------------------------------------------------------
    def save(self, path: Path, meta: dict[str, Any] | None = None) -> Path:
        """Every module's weights and the learner's optimiser state as tensors plus JSON, atomically."""
        if self.algo is not None:
            weights = self.algo.get_weights()
        else:
            weights = {name: view.module.get_state() for name, view in self.views.items()}
        tensors = {f"module/{name}/{k}": torch.as_tensor(np.asarray(v))
                   for name in self.views for k, v in weights[name].items()}
        optimizer = rllib_state.save_optimizer(self.algo, tensors) if self.algo is not None else None
        body = {**checkpoint.base_meta("rllib", self.cfg.agent.algo, self.num_timesteps, self.seed,
                                       (self.observation_space, self.action_space),
                                       self.cfg.model_dump(mode="json")),
                "normalize": None, "optimizer": optimizer, "replay_buffer": False,
                "modules": {g.name: list(g.agents) for g in self.team.groups}, **(meta or {})}
        return checkpoint.save(path, tensors, body)

    @classmethod
    def load(cls, ckpt: checkpoint.Checkpoint, cfg: RunConfig, env: ResolvedEnv, *,
             for_training: bool = False, seed: int = 0) -> RLlibAgentsBackend:
        """Restore every module: bare RLModules for evaluation (no Ray), or a new algorithm to resume."""
        tensorcheck.check_rllib(ckpt)
        header, meta, path = ckpt.header, ckpt.header.extra, ckpt.path
        team = ma.team_of(cfg, env)
        saved, mine = meta.get("modules"), {g.name: list(g.agents) for g in team.groups}
        if saved != mine:
            raise CheckpointError(f"checkpoint {str(path)!r} holds the modules {saved}, but this run's "
                                  f"config maps its agents to {mine}; use the run's own config.yaml")
        if header.algo != cfg.agent.algo:
            raise CheckpointError(f"checkpoint {str(path)!r} holds RLlib {header.algo.upper()} modules, but "
                                  f"the config asks for --algo {cfg.agent.algo}; use the run's own "
                                  "config.yaml")
        weights = {g.name: {k[len(f"module/{g.name}/"):]: v.numpy() for k, v in ckpt.tensors.items()
                            if k.startswith(f"module/{g.name}/")} for g in team.groups}
        if for_training:
            backend = cls.create(cfg, seed, env, start_step=header.num_timesteps)
            checkpoint.check_spaces(header, backend.observation_space, backend.action_space,
                                    f"resume from {path}")
            backend._set_modules(weights)
            if meta.get("optimizer"):
                rllib_state.load_optimizer(backend.algo, ckpt.tensors, meta["optimizer"])
            backend.num_timesteps = backend._offset = header.num_timesteps
            return backend
        views = {}
        for g in team.groups:
            module = rllib_algos.build_module(ma.policy_config(cfg, g.name), header.algo,
                                              (g.observation_space, g.action_space))
            try:
                module.set_state(weights[g.name])
            except (RuntimeError, KeyError) as e:
                raise CheckpointError(f"checkpoint {str(path)!r} does not fit module {g.name!r} ({e})") from e
            views[g.name] = _view(cfg, seed, g, module)
        return cls(cfg, header.seed if header.seed is not None else seed, None, team, views,
                   header.num_timesteps)

    def _set_modules(self, weights: dict[str, dict[str, np.ndarray]]) -> None:
        """Load modules' weights into the learners, then into every env runner's modules."""
        from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, COMPONENT_RL_MODULE

        if not weights:
            return
        self.algo.set_state({COMPONENT_LEARNER_GROUP: {COMPONENT_LEARNER: {COMPONENT_RL_MODULE: weights}}})

        def _load(runner: Any) -> None:
            for name, w in weights.items():
                own = runner.module[name].get_state()
                runner.module[name].set_state({k: v for k, v in w.items() if k in own})

        self.algo.env_runner_group.foreach_env_runner(_load, local_env_runner=True)


def _view(cfg: RunConfig, seed: int, group: AgentGroup, module: Any) -> RLlibBackend:
    """A single-module backend for one group's agents: what :meth:`RLlibBackend.predict` acts with."""
    return RLlibBackend(ma.policy_config(cfg, group.name), seed, None, module,
                        (group.observation_space, group.action_space))


def _agent_steps(result: dict[str, Any]) -> int:
    """Agent-steps sampled so far (RLlib reports them per agent)."""
    runners = result.get("env_runners", {})
    steps = runners.get("num_agent_steps_sampled_lifetime", result.get("num_agent_steps_sampled_lifetime"))
    if isinstance(steps, dict):
        return int(sum(float(v) for v in steps.values()))
    return int(steps or 0)
