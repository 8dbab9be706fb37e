"""Which ``agent:`` keys each algorithm takes, and the per-algorithm entries (``algos:``) of a config file."""

from __future__ import annotations

from typing import Any, get_args

from agents.config.schema import AgentConfig, RunConfig, suggest
from envs.errors import UserError

SHARED_AGENT_KEYS = ("backend", "algo", "learning_rate", "lr_schedule", "gamma", "net_arch", "activation",
                     "normalize_obs", "normalize_reward", "policy", "cnn", "precision",
                     "extractor")
"""``agent:`` keys every algorithm accepts."""
_ON_POLICY = ("n_steps", "batch_size", "n_epochs", "clip_range", "gae_lambda", "ent_coef", "vf_coef",
              "max_grad_norm", "log_std_init", "ortho_init")
_OFF_POLICY = ("batch_size", "buffer_size", "learning_starts", "train_freq", "gradient_steps", "tau",
               "action_noise", "action_noise_std", "her", "her_n_sampled_goal", "her_goal_selection_strategy")
ALGO_KEYS: dict[str, tuple[str, ...]] = {
    "ppo": _ON_POLICY,
    # one pass, no clip
    "a2c": tuple(k for k in _ON_POLICY if k not in ("batch_size", "n_epochs", "clip_range")),
    "sac": (*_OFF_POLICY, "ent_coef", "target_update_interval", "target_entropy"),
    "td3": (*_OFF_POLICY, "policy_delay", "target_policy_noise", "target_noise_clip"),
}
"""The ``agent:`` keys each algorithm accepts beyond :data:`SHARED_AGENT_KEYS`."""
RLLIB_ALGO_KEYS: dict[str, tuple[str, ...]] = {
    "ppo": _ON_POLICY,
    "appo": ("n_steps", "batch_size", "n_epochs", "clip_range", "ent_coef", "vf_coef", "max_grad_norm",
             "log_std_init", "ortho_init"),  # V-trace, not GAE: no gae_lambda
    "sac": ("batch_size", "buffer_size", "learning_starts", "train_freq", "gradient_steps", "tau", "ent_coef",
            "target_entropy"),  # no action noise, targets updated every step (docs/distributed.md)
}
"""The ``agent:`` keys each ``--backend rllib`` algorithm honours beyond :data:`SHARED_AGENT_KEYS`
(agents/rllib/algos.py maps them; docs/distributed.md has the table)."""
ALGO_DEFAULTS: dict[str, dict[str, Any]] = {
    "appo": {"n_steps": 50, "batch_size": 500, "n_epochs": 2, "clip_range": 0.4, "max_grad_norm": 40.0,
             "ent_coef": 0.01, "learning_rate": 5e-4},
}
"""RLlib's own defaults for an algorithm whose shared ``agent:`` defaults (PPO's) would not suit it; a new run
starts from them, below its config file and command line, and stores them in its resolved config."""
CONTINUOUS_ONLY = ("sac", "td3")
"""Algorithms that need a Box action space."""
BACKEND_ALGOS = {"sb3": tuple(ALGO_KEYS), "rllib": tuple(RLLIB_ALGO_KEYS)}
"""The algorithms each learning backend runs."""


def select_algo(raw: dict[str, Any], algo: str | None, source: str) -> None:
    """Merge the chosen algorithm's entry of a config's ``algos:`` map over its sections, in place.

    ``algos: {sac: {agent: {...}, train: {...}}}`` gives each algorithm its own tuned settings in one file;
    the entry of ``algo`` (the ``--algo`` flag, else ``agent.algo``, else ppo) wins over the file's sections,
    and the command line wins over both. The map itself is removed: a resolved config holds no ``algos``.
    Keys of :data:`ALGO_DEFAULTS` that neither gives are then filled in.
    """
    algos = raw.pop("algos", None) or {}
    _select(raw, algos, algo, source)
    agent = raw.setdefault("agent", {})
    if isinstance(agent, dict):
        for key, value in ALGO_DEFAULTS.get(str(algo or agent.get("algo") or "ppo"), {}).items():
            agent.setdefault(key, value)


def _select(raw: dict[str, Any], algos: Any, algo: str | None, source: str) -> None:
    if not isinstance(algos, dict):
        raise UserError(f"{source}: 'algos' must map an algorithm to its sections, e.g. algos: "
                        f"{{sac: {{agent: {{tau: 0.01}}}}}}, got {type(algos).__name__}")
    names = list(get_args(AgentConfig.model_fields["algo"].annotation))
    for name, entry in algos.items():
        if name not in names:
            raise UserError(f"{source}: unknown algorithm 'algos.{name}'; {suggest(str(name), names)}"
                            f"expected one of {', '.join(names)}")
        if not isinstance(entry, dict) or not all(isinstance(v, dict) for v in entry.values()):
            raise UserError(f"{source}: 'algos.{name}' must map sections to settings, e.g. "
                            "{agent: {tau: 0.01}}")
    agent: dict[str, Any] = raw["agent"] if isinstance(raw.get("agent"), dict) else {}
    chosen = algos.get(algo or agent.get("algo") or "ppo") or {}
    for section, values in chosen.items():
        if not isinstance(raw.get(section, {}), dict):
            raise UserError(f"{source}: section {section!r} must be a mapping of settings")
        raw.setdefault(section, {}).update(values)


def check_algorithm(cfg: RunConfig, action_space: Any, source: str = "command line") -> None:
    """Refuse, for a new run, an algorithm that does not fit the action space or a key it does not take.

    Only keys that were given (YAML, ``algos:`` entry, command line) count; defaults never do. ``source``:
    the config file the keys may come from (a shipped ``configs/<id>.yaml`` that ``--env`` picked), named in
    the line.

    Raises:
        UserError: one line that names the algorithm and the keys it accepts, or the fix for the action space.
    """
    import gymnasium as gym
    import numpy as np

    a = cfg.agent
    name = a.algo.upper()
    if a.algo in CONTINUOUS_ONLY and not isinstance(action_space, gym.spaces.Box):
        raise UserError(f"{name} needs a continuous (Box) action space; `--env {cfg.env.id}` has "
                        f"{action_space}: use `--algo ppo`")
    if a.ent_coef == "auto" and a.algo != "sac":
        raise UserError(f"agent.ent_coef: auto is SAC's learned entropy coefficient; {name} takes a number "
                        "(the entropy bonus weight, e.g. 0.01)")
    if a.backend not in BACKEND_ALGOS:
        return  # the black-box backend refuses what it cannot map itself
    trains = {"sb3": (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary),
              "rllib": (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiDiscrete)}  # actions/predict
    if a.backend == "sb3" and isinstance(action_space, gym.spaces.Box) and not (
            np.isfinite(action_space.low).all() and np.isfinite(action_space.high).all()):
        raise UserError(f"--backend sb3 needs finite bounds on a Box action space; `--env {cfg.env.id}` has "
                        f"{action_space}: give it bounds with a wrapper (env.wrappers, e.g. Gymnasium's "
                        "TransformAction with a bounded action_space), or use `--backend rllib`")
    policies = cfg.policies and isinstance(action_space, gym.spaces.Dict)  # one action space per policy
    for space in action_space.spaces.values() if policies else [action_space]:
        if not isinstance(space, trains[a.backend]):
            names = ", ".join(k.__name__ for k in trains[a.backend])
            other = next(b for b in trains if b != a.backend)
            fix = (f"use `--backend {other}`" if isinstance(space, trains[other]) else
                   "wrap the env (env.wrappers) so that its actions are one of those")
            raise UserError(f"--backend {a.backend} trains {names} actions; `--env {cfg.env.id}` has "
                            f"{space}: {fix}")
    if a.algo not in BACKEND_ALGOS[a.backend]:
        other = next(b for b, algos in BACKEND_ALGOS.items() if b != a.backend)
        fix = f"use `--backend {other}`" if a.algo in BACKEND_ALGOS[other] else "choose another --algo"
        raise UserError(f"--backend {a.backend} runs --algo {'|'.join(BACKEND_ALGOS[a.backend])}, "
                        f"got {a.algo!r}; {fix}")
    table = ALGO_KEYS if a.backend == "sb3" else RLLIB_ALGO_KEYS
    accepted = table[a.algo]
    # a key set to its default changes nothing: a run's own config.yaml lists every key at its value, and
    # `train.py --config RUN/config.yaml` starts a new run from it
    foreign = sorted(k for k in a.model_fields_set if k not in SHARED_AGENT_KEYS and k not in accepted
                     and getattr(a, k) != type(a).model_fields[k].get_default(call_default_factory=True))
    if foreign:
        owners = sorted({o.upper() for o, keys in table.items() for k in foreign if k in keys})
        whose = f"a key of {'/'.join(owners)}" if owners else f"no --backend {a.backend} algorithm honours it"
        where = "" if a.backend == "sb3" else f" on --backend {a.backend}"
        given = "" if source == "command line" else f" (from {source} or the command line)"
        raise UserError(f"--algo {a.algo} does not take {', '.join('agent.' + k for k in foreign)}{where} "
                        f"({whose}); remove it{given} or use that algorithm. {name} accepts: "
                        f"{', '.join(SHARED_AGENT_KEYS + accepted)}")
    for policy, spec in cfg.policies.items():
        foreign = sorted(k for k in spec.overrides() if k not in SHARED_AGENT_KEYS and k not in accepted)
        if foreign:
            raise UserError(f"policies.{policy} gives {', '.join(foreign)}, which --algo {a.algo} does not "
                            f"take; remove it. {name} accepts: {', '.join(SHARED_AGENT_KEYS + accepted)}")
    if a.backend == "rllib" and a.algo == "appo" and a.lr_schedule == "linear":
        raise UserError("agent.lr_schedule: linear is not honoured by RLlib's APPO (its learner thread keeps "
                        "the initial rate: train/learning_rate stays constant); use lr_schedule: constant "
                        "with --algo appo")
    if a.target_entropy != "auto" and isinstance(a.ent_coef, float):
        raise UserError("agent.target_entropy applies only with agent.ent_coef: auto (a learned α); "
                        "remove one")
