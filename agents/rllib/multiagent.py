"""A PettingZoo parallel env on RLlib's multi-agent API: the env adapter, the agent-to-module mapping and the
multi-agent algorithm config.

Without ``policies:`` every agent maps to one RLModule (``default_policy``: parameter sharing, as on SB3).
With ``policies:`` each policy is one RLModule, its agents chosen by :func:`envs.multiagent.group_agents`
(the same fnmatch patterns and first-match rule as SB3's), with the overrides RLlib takes per module
(:data:`MODULE_KEYS`, through ``multi_agent(algorithm_config_overrides_per_module=...)``); the others are the
learner's, for all modules at once, and are refused. The env runners build :class:`ParallelAgents`, which
applies the Guard's checks (``env.nan_policy``, ``env.bounds_policy``) to each agent's transition and
``env.max_episode_steps`` to the whole env.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from agents.config import RunConfig
from agents.rllib import algos as rllib_algos
from agents.run.envfactory import policy_patterns
from agents.run.resolved import ResolvedEnv, build_errors
from envs.errors import UserError
from envs.faults import add_fault
from envs.guard import judge_reset, judge_step
from envs.multiagent import AgentGroup, group_agents, make_parallel, shared_spaces
from envs.repair import placeholder

MA_ENV_NAME = "nondiff-agents-env"
SHARED = "shared"
"""The one RLModule every agent maps to without ``policies:`` (not RLlib's ``default_policy``, which would
make the config single-agent)."""
MODULE_KEYS = ("learning_rate", "lr_schedule", "ent_coef", "clip_range", "vf_coef", "max_grad_norm",
               "net_arch", "activation", "log_std_init", "ortho_init")
"""The ``policies:`` overrides RLlib 2.60 honours per module (PPO): the optimiser's rate, the loss's
coefficients and clip, gradient clipping (per-module config) and the network (per-module spec). ``gamma``,
``gae_lambda`` (one GAE connector), ``batch_size`` and ``n_epochs`` (one update loop) are the learner's."""
RLLIB_POLICY_ALGOS = ("ppo",)
"""The algorithms a ``policies:`` map (or a shared policy over agents) trains on ``--backend rllib``."""


def policy_config(cfg: RunConfig, name: str) -> RunConfig:
    """The run config as policy ``name`` sees it: ``agent:`` with the policy's overrides (none: shared)."""
    if name not in cfg.policies:
        return cfg
    return cfg.model_copy(update={"agent": cfg.agent.model_copy(update=cfg.policies[name].overrides())})


@dataclass(frozen=True)
class Team:
    """A PettingZoo parallel env's agents as RLlib modules.

    Attributes:
        groups: one per module (policy name, or :data:`SHARED`), its agents and their spaces.
        shared: no ``policies:`` map: one module for every agent.
    """

    groups: tuple[AgentGroup, ...]
    shared: bool

    @property
    def owner(self) -> dict[str, str]:
        """Agent id -> module id."""
        return {a: g.name for g in self.groups for a in g.agents}

    @property
    def num_agents(self) -> int:
        """How many agents the env declares."""
        return sum(len(g.agents) for g in self.groups)

    def spaces(self) -> tuple[gym.Space, gym.Space]:
        """What the checkpoint header records, as evaluation's ``TeamEnv`` gives it: one agent's spaces when
        shared, else Dicts keyed by policy."""
        if self.shared:
            return self.groups[0].observation_space, self.groups[0].action_space
        return (gym.spaces.Dict({g.name: g.observation_space for g in self.groups}),
                gym.spaces.Dict({g.name: g.action_space for g in self.groups}))


def team_of(cfg: RunConfig, env: ResolvedEnv) -> Team:
    """Build the env once and split its agents into modules.

    Raises:
        UserError: agents of one module whose spaces differ, an agent no pattern matches, a policy without
            agents (the same refusals as on SB3).
    """
    with build_errors(cfg):
        made = make_parallel(str(env.spec.entry_point), cfg.env.adapter_kwargs())
    try:
        patterns = policy_patterns(cfg)
        name = cfg.env.id or str(env.spec.entry_point)
        if patterns is None:
            obs, act = shared_spaces(made, name)
            return Team((AgentGroup(SHARED, tuple(made.possible_agents), obs, act),), True)
        return Team(group_agents(made, patterns, name), False)
    finally:
        made.close()


@dataclass(frozen=True)
class AgentMapping:
    """RLlib's ``policy_mapping_fn``: agent id -> module id (picklable, sent to every env runner).

    Attributes:
        owner: the module of each agent.
    """

    owner: dict[str, str]

    def __call__(self, agent_id: Any, episode: Any = None, **kwargs: Any) -> str:
        return self.owner[agent_id]


def check_config(cfg: RunConfig) -> None:
    """Refuse, before Ray starts, what the RLlib multi-agent path does not take.

    Raises:
        UserError: another algorithm than PPO, observation or reward normalisation, a policy override that
            RLlib sets for all modules at once.
    """
    a = cfg.agent
    if a.algo not in RLLIB_POLICY_ALGOS:
        raise UserError(f"a PettingZoo parallel env on --backend rllib trains --algo "
                        f"{'|'.join(RLLIB_POLICY_ALGOS)}, got {a.algo!r}; use --algo ppo")
    if a.normalize_obs or a.normalize_reward:
        raise UserError("a PettingZoo parallel env on --backend rllib does not normalise observations or "
                        "rewards yet; set agent.normalize_obs and agent.normalize_reward to false")
    for name, spec in cfg.policies.items():
        foreign = sorted(k for k in spec.overrides() if k not in MODULE_KEYS)
        if foreign:
            raise UserError(f"policies.{name} gives {', '.join(foreign)}, which RLlib sets for all modules "
                            f"at once; give it in agent: instead, or use --backend sb3. On --backend rllib a "
                            f"policy may override: {', '.join(MODULE_KEYS)}")


def _learning_rate(cfg: RunConfig, agents: int, start_step: int) -> Any:
    """``lr`` for one module: constant, or linear to 0 over the run's env steps left (RLlib schedules on
    env steps; ``--timesteps`` counts agent-steps)."""
    lr = cfg.agent.learning_rate or 3e-4
    if cfg.agent.lr_schedule != "linear":
        return lr
    left = max(cfg.train.timesteps - start_step, 1)
    return [[0, lr * left / (left + start_step)], [max(left // max(agents, 1), 1), 0.0]]


def module_overrides(cfg: RunConfig, team: Team, start_step: int) -> dict[str, dict[str, Any]]:
    """Each module's ``AlgorithmConfig`` overrides (its learning rate always, so a schedule counts env
    steps)."""
    out: dict[str, dict[str, Any]] = {}
    for g in team.groups:
        a = policy_config(cfg, g.name).agent
        out[g.name] = {"lr": _learning_rate(policy_config(cfg, g.name), team.num_agents, start_step),
                       "entropy_coeff": float(a.ent_coef or 0.0), "clip_param": a.clip_range,
                       "vf_loss_coeff": a.vf_coef, "grad_clip": a.max_grad_norm}
    return out


def build_config(cfg: RunConfig, seed: int, env: ResolvedEnv, team: Team, start_step: int,
                 callbacks: Any) -> Any:
    """The single-agent algorithm config (agents/rllib/algos.py) turned multi-agent: this module's env, one
    RLModule per group, the mapping and the per-module overrides; validated again."""
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    config = rllib_algos.build_algo_config(cfg, seed, env, start_step, callbacks=callbacks)
    specs = {g.name: RLModuleSpec(observation_space=g.observation_space, action_space=g.action_space,
                                  model_config=rllib_algos.model_config(policy_config(cfg, g.name),
                                                                        g.action_space))
             for g in team.groups}
    # RLlib's env check compares a step's replies with the agents left after it, so it refuses an agent that
    # finishes at its first step; nondiff's Guard checks every transition of every agent instead
    config = (config.environment(MA_ENV_NAME, disable_env_checking=True)
              .env_runners(gym_env_vectorize_mode="sync")  # RLlib vectorises multi-agent envs in sync only
              .multi_agent(policies=set(specs), policy_mapping_fn=AgentMapping(team.owner))
              .rl_module(rl_module_spec=MultiRLModuleSpec(rl_module_specs=specs),
                         algorithm_config_overrides_per_module=module_overrides(cfg, team, start_step)))
    return rllib_algos.validated(config, "multi-agent configuration",
                                 "the agent:, policies: or rllib: values")


class ParallelAgents(MultiAgentEnv):  # type: ignore[misc]
    """One PettingZoo parallel env as RLlib's ``MultiAgentEnv``, under the Guard's per-agent checks.

    ``agents`` follows the episode (agents that finish leave it, agents that appear join it). A transition
    the Guard cannot vouch for goes through :func:`envs.guard.judge_step` with ``nan_policy``: ``truncate``
    ends that agent's episode (its last valid observation, reward 0, the fault in its info) while the others
    play on, the agent acting with its space's first action; ``clip`` repairs it; ``raise`` raises.
    ``max_episode_steps`` truncates every agent together.

    When the episode is cut (``truncateds["__all__"]``), the agents it cuts carry no truncation flag of their
    own: RLlib 2.60's ``MultiAgentEpisode.add_env_step`` calls an episode whose agents are all done
    terminated, for every agent, even when each was truncated, so PPO would not bootstrap the value at a time
    limit (every MPE episode: its targets then depend on the steps left, which the observation does not show).
    With ``"__all__"`` alone it marks them truncated; an agent that terminates stays terminated.

    Args:
        env: the parallel env.
        max_episode_steps: the env-wide step limit (None: the env's own end).
        nan_policy: as ``env.nan_policy``.
        bounds_policy: as ``env.bounds_policy``.
    """

    def __init__(self, env: Any, max_episode_steps: int | None = None, nan_policy: str = "truncate",
                 bounds_policy: str = "clip") -> None:
        super().__init__()
        self.env = env
        self.possible_agents = list(env.possible_agents)
        self.agents: list[Any] = []
        self._obs_spaces: dict[Any, gym.Space] = {a: env.observation_space(a) for a in self.possible_agents}
        self._act_spaces: dict[Any, gym.Space] = {a: env.action_space(a) for a in self.possible_agents}
        self.observation_spaces, self.action_spaces = dict(self._obs_spaces), dict(self._act_spaces)
        self.observation_space = gym.spaces.Dict(dict(self._obs_spaces))
        self.action_space = gym.spaces.Dict(dict(self._act_spaces))
        self.max_episode_steps = max_episode_steps
        self.nan_policy, self.bounds_policy = nan_policy, bounds_policy
        self._steps = 0
        self._cut: set[Any] = set()
        self._last: dict[Any, Any] = {}

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[Any, Any], dict[Any, Any]]:
        """Start an episode: every present agent's checked observation."""
        obs, infos = self.env.reset(seed=seed, options=options)
        infos = {a: dict(infos.get(a, {})) for a in obs}
        self._steps, self._cut, self._last = 0, set(), {}
        for agent in list(obs):
            space = self._obs_spaces[agent]
            obs[agent], fault = judge_reset(space, obs[agent], placeholder(space), self.nan_policy,
                                            self.bounds_policy, str(agent))
            if fault is not None:
                add_fault(infos[agent], fault)
            self._last[agent] = obs[agent]
        self.agents = list(obs)
        return obs, infos

    def step(self, action_dict: dict[Any, Any]) -> Any:
        """Every agent still in the episode acts; the agents that were cut act with their first action."""
        live = list(self.env.agents)
        acts = {a: action_dict[a] if a in action_dict else placeholder(self._act_spaces[a]) for a in live}
        obs, rewards, terms, truncs, infos = self.env.step(acts)
        self._steps += 1
        limit = self.max_episode_steps is not None and self._steps >= self.max_episode_steps
        out: tuple[dict[Any, Any], ...] = ({}, {}, {}, {}, {})
        o, r, te, tr, inf = out
        for agent in (a for a in obs if a not in self._cut):
            space = self._obs_spaces[agent]
            fallback = self._last.get(agent, placeholder(space))
            verdict = judge_step(space, obs[agent], rewards.get(agent, 0.0), fallback, self.nan_policy,
                                 self.bounds_policy, str(agent))
            inf[agent] = dict(infos.get(agent, {}))
            for fault in verdict.faults:
                add_fault(inf[agent], fault)
            o[agent], r[agent] = verdict.obs, float(verdict.reward)
            te[agent] = bool(terms.get(agent, False)) and not verdict.cut
            tr[agent] = bool(truncs.get(agent, False)) or verdict.cut or (limit and not te[agent])
            self._last[agent] = verdict.obs
            if verdict.cut:
                self._cut.add(agent)
        self.agents = [a for a in o if not (te[a] or tr[a])]
        over = not self.agents or not self.env.agents
        te["__all__"] = over and all(te.values())
        tr["__all__"] = over and not te["__all__"]
        if tr["__all__"]:  # its agents' truncation goes by "__all__" alone (the class docstring says why)
            for agent in [a for a in o if tr[a] and not te[a]]:
                del tr[agent]
        return o, r, te, tr, inf

    def close(self) -> None:
        """Close the parallel env."""
        self.env.close()


def create_env(env_config: dict[str, Any]) -> ParallelAgents:
    """The Ray env creator: rebuilds the parallel env from plain data inside every env runner."""
    cfg = RunConfig.model_validate(env_config["cfg"])
    env: ResolvedEnv = env_config["env"]
    made = make_parallel(str(env.spec.entry_point), cfg.env.adapter_kwargs())
    return ParallelAgents(made, cfg.env.max_episode_steps, cfg.env.nan_policy, cfg.env.bounds_policy)


def agents_health_class(base: type) -> type:
    """The backend's health callback (``base``), fed each agent's info of a multi-agent episode in turn."""

    class _OneAgent:
        def __init__(self, info: Any) -> None:
            self.info = info

        def get_infos(self, index: int) -> Any:
            return self.info

    class AgentsHealthCallback(base):  # type: ignore[valid-type,misc]
        def on_episode_step(self, *, episode: Any, metrics_logger: Any = None, **kwargs: Any) -> None:
            infos = episode.get_infos(-1) if metrics_logger is not None else None
            for info in (infos or {}).values():
                if info:
                    super().on_episode_step(episode=_OneAgent(info), metrics_logger=metrics_logger, **kwargs)

    return AgentsHealthCallback


