"""The RLlib algorithms nondiff maps its ``agent:`` section onto: PPO, APPO and SAC on the new API stack.

Each :class:`RLlibAlgo` says which ``AlgorithmConfig`` to build, how the shared hyperparameters map onto it,
which RLModule class evaluates its checkpoints without Ray, and which of RLlib's learner metrics become
which TensorBoard names. The keys each algorithm honours are listed in
:data:`agents.config.algos.RLLIB_ALGO_KEYS` (docs/distributed.md has the table);
:func:`agents.config.algos.check_algorithm` refuses the others.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any

import gymnasium as gym

from agents.config import RunConfig
from agents.rllib import board as rllib_board
from agents.rllib import masking
from agents.rllib import state as rllib_state
from agents.rllib.runners import RESTART_DELAY_S, env_counts
from agents.run.masks import masked
from agents.run.resolved import ResolvedEnv, is_image_space
from envs.errors import UserError

ENV_NAME = "nondiff-env"
APPO_ITERATION_STEPS = 2000
"""Env steps APPO samples per ``algo.train()`` (one loop iteration);
``rllib.extra.min_sample_timesteps_per_iteration`` overrides it."""
SAC_ITERATION_STEPS = 1000
"""Env steps SAC samples per ``algo.train()``; RLlib's own default is one vector step per iteration."""
VECTORIZE_MODE = {"dummy": "sync", "subproc": "sync", "thread": "vector_entry_point"}
"""``train.vec_env`` → RLlib's ``gym_env_vectorize_mode``. ``thread``: the env creator builds envs/vector's
``ThreadVectorEnv`` (``NEXT_STEP`` auto-reset, as RLlib's env runners expect), so a runner's waiting envs step
concurrently; ``subproc`` stays ``sync``: the env runners are processes already, and ``rllib.num_env_runners``
is how RLlib spreads envs over processes."""


@dataclass(frozen=True)
class RLlibAlgo:
    """How one RLlib algorithm is built, evaluated and reported.

    Attributes:
        config_class: ``module:Class`` of its ``AlgorithmConfig``.
        module_class: ``module:Class`` of its torch RLModule, built without Ray by ``evaluate.py``.
        training: sets the algorithm's own ``.training(...)`` (and related) settings from the run config.
        metrics: (RLlib learner metric, TensorBoard name) pairs logged after each iteration: SB3's names for
            the same quantities, so that a run reads the same on either backend (:func:`learner_scalars`).
        sb3_init: whether ``agent.ortho_init`` applies SB3's orthogonal initialisation to the module.
        squashed: actions are ``tanh``-squashed Gaussians (SAC), not plain Gaussians (PPO, APPO).
    """

    config_class: str
    module_class: str
    training: Callable[[Any, RunConfig, Any], Any]
    metrics: tuple[tuple[str, str], ...]
    sb3_init: bool = False
    squashed: bool = False


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(import_module(module), name)


def rollout_steps(cfg: RunConfig) -> int:
    """Steps per env that PPO gathers into one train batch, and APPO into one rollout fragment:
    ``agent.n_steps``, else RLlib's default as nondiff sets it."""
    return int(cfg.agent.n_steps or (50 if cfg.agent.algo == "appo" else 2048))


def _ppo(config: Any, cfg: RunConfig, lr: Any) -> Any:
    """SB3's PPO: no KL penalty and no value-loss clipping (``rllib.extra`` can turn them back on)."""
    a = cfg.agent
    return config.training(lr=lr, gamma=a.gamma, lambda_=a.gae_lambda,
                           train_batch_size_per_learner=rollout_steps(cfg) * cfg.train.num_envs,
                           minibatch_size=a.batch_size or 64, num_epochs=a.n_epochs, clip_param=a.clip_range,
                           entropy_coeff=float(a.ent_coef or 0.0), vf_loss_coeff=a.vf_coef,
                           grad_clip=a.max_grad_norm, use_kl_loss=False, vf_clip_param=float("inf"))


def _appo(config: Any, cfg: RunConfig, lr: Any) -> Any:
    """APPO (asynchronous PPO with V-trace): env runners keep sampling while the learner updates.

    ``n_steps`` is the rollout fragment each env runner sends per env, ``batch_size`` the learner's batch,
    ``n_epochs`` the passes over each batch (RLlib's circular buffer). A new ``--algo appo`` run starts from
    RLlib's APPO defaults (:data:`agents.config.algos.ALGO_DEFAULTS`), not PPO's.
    """
    a = cfg.agent
    batch = a.batch_size or 500
    config = config.env_runners(rollout_fragment_length=rollout_steps(cfg))
    config = config.training(lr=lr, gamma=a.gamma, train_batch_size_per_learner=batch,
                             circular_buffer_iterations_per_batch=a.n_epochs, clip_param=a.clip_range,
                             grad_clip=a.max_grad_norm, entropy_coeff=float(a.ent_coef or 0.0),
                             vf_loss_coeff=a.vf_coef, use_kl_loss=False)
    return config.reporting(min_time_s_per_iteration=0,
                            min_sample_timesteps_per_iteration=max(APPO_ITERATION_STEPS, batch))


def _sac(config: Any, cfg: RunConfig, lr: Any) -> Any:
    """SAC with SB3's semantics: uniform replay, twin Q, α learned towards ``target_entropy`` (or fixed).

    SB3 takes ``gradient_steps`` updates of ``batch_size`` every ``train_freq`` vector steps; RLlib's
    ``training_intensity`` (trained / sampled steps) is set to the same replay ratio.
    """
    a = cfg.agent
    batch = a.batch_size or 256
    sampled = a.train_freq * cfg.train.num_envs
    updates = sampled if a.gradient_steps == -1 else a.gradient_steps
    fixed_alpha = isinstance(a.ent_coef, float)
    alpha = a.ent_coef if isinstance(a.ent_coef, float) else 1.0  # SB3's SAC starts a learned α at 1.0
    config = config.env_runners(rollout_fragment_length=a.train_freq)
    config = config.training(actor_lr=lr, critic_lr=lr, alpha_lr=0.0 if fixed_alpha else lr, gamma=a.gamma,
                             tau=a.tau, initial_alpha=alpha,
                             target_entropy=a.target_entropy, twin_q=True, n_step=1,
                             train_batch_size_per_learner=batch, training_intensity=updates * batch / sampled,
                             num_steps_sampled_before_learning_starts=a.learning_starts,
                             replay_buffer_config={"type": "EpisodeReplayBuffer", "capacity": a.buffer_size})
    return config.reporting(min_time_s_per_iteration=0,
                            min_sample_timesteps_per_iteration=SAC_ITERATION_STEPS)


_ON_POLICY_METRICS = (("policy_loss", "train/policy_gradient_loss"), ("vf_loss", "train/value_loss"),
                      ("entropy", "train/entropy_loss"), ("mean_kl_loss", "train/approx_kl"),
                      ("total_loss", "train/loss"), ("vf_explained_var", "train/explained_variance"),
                      ("default_optimizer_learning_rate", "train/learning_rate"))
NEGATED = frozenset({"train/entropy_loss"})
"""TensorBoard names whose value is minus RLlib's: SB3's entropy loss is the negative mean entropy."""


def learner_scalars(algo: RLlibAlgo, learner: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """One module's learner metrics under SB3's TensorBoard names (``prefix``: ``policy/<name>/``); a
    metric RLlib did not report is None."""
    out: dict[str, Any] = {}
    for src, dst in algo.metrics:
        v = learner.get(src)
        out[prefix + dst] = -v if dst in NEGATED and isinstance(v, int | float) else v
    return out
ALGOS: dict[str, RLlibAlgo] = {
    "ppo": RLlibAlgo("ray.rllib.algorithms.ppo:PPOConfig",
                     "ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module:DefaultPPOTorchRLModule",
                     _ppo, _ON_POLICY_METRICS, sb3_init=True),
    "appo": RLlibAlgo("ray.rllib.algorithms.appo:APPOConfig",
                      "ray.rllib.algorithms.appo.torch.default_appo_torch_rl_module:DefaultAPPOTorchRLModule",
                      _appo, _ON_POLICY_METRICS, sb3_init=True),
    "sac": RLlibAlgo("ray.rllib.algorithms.sac:SACConfig",
                     "ray.rllib.algorithms.sac.torch.default_sac_torch_rl_module:DefaultSACTorchRLModule",
                     _sac, (("policy_loss", "train/actor_loss"), ("qf_loss", "train/critic_loss"),
                            ("alpha_value", "train/ent_coef"), ("alpha_loss", "train/ent_coef_loss"),
                            ("policy_learning_rate", "train/learning_rate")), squashed=True),
}
"""The algorithms ``--backend rllib`` runs."""


def spec(cfg: RunConfig) -> RLlibAlgo:
    """The :class:`RLlibAlgo` of ``cfg.agent.algo``, or a :class:`UserError` naming the ones there are."""
    algo = ALGOS.get(cfg.agent.algo)
    if algo is None:
        raise UserError(f"--backend rllib runs --algo {'|'.join(ALGOS)}, got {cfg.agent.algo!r}; use "
                        "--backend sb3 for A2C or TD3")
    return algo


def model_config(cfg: RunConfig, action_space: gym.Space) -> dict[str, Any]:
    """The RLModule's network: ``agent.net_arch`` hidden layers of ``agent.activation``.

    PPO/APPO: SB3's MLP policy, separate pi and vf networks, Gaussian actions with a state-independent log
    std. SAC: pi and each Q network are ``net_arch`` MLPs with a linear output (RLlib fuses the Q network's
    observation and action inputs through its default fusion layers).
    """
    hidden = {"fcnet_hiddens": list(cfg.agent.net_arch), "fcnet_activation": cfg.agent.activation}
    if cfg.agent.algo == "sac":
        return {**hidden, "head_fcnet_hiddens": []}
    return {**hidden, "vf_share_layers": False, "free_log_std": isinstance(action_space, gym.spaces.Box)}


def build_module(cfg: RunConfig, algo: str, spaces: tuple[gym.Space, gym.Space],
                 weights: dict[str, Any] | None = None) -> Any:
    """A bare torch RLModule of ``algo`` (no Ray): what ``evaluate.py`` loads ``weights`` into (a board
    network's layout comes from them: agents/rllib/board.py).

    Raises:
        KeyError: ``agent.extractor: board_cnn`` and ``weights`` hold no board layout.
    """
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    extra: dict[str, Any] = {"twin_q": True} if algo == "sac" else {}  # what SACConfig adds itself
    module_class = _load(ALGOS[algo].module_class)
    if cfg.agent.extractor == "board_cnn":
        extra.update(rllib_board.model_config(rllib_board.layout_from_weights(weights or {})))
        module_class = rllib_board.module_class(module_class)
    return RLModuleSpec(module_class=module_class, observation_space=spaces[0],
                        action_space=spaces[1], model_config={**model_config(cfg, spaces[1]), **extra},
                        inference_only=False).build()


def _board(cfg: RunConfig, env: ResolvedEnv) -> dict[str, Any]:
    """``agent.extractor: board_cnn``: the board's layout in the flat observation (from one env built
    here), for the module's model config; else nothing."""
    if cfg.agent.extractor != "board_cnn":
        return {}
    if cfg.agent.algo not in ("ppo", "appo") or env.multi_agent:
        raise UserError(f"agent.extractor board_cnn on --backend rllib builds PPO's or APPO's network for a "
                        f"single-agent or turn-based env, not --algo {cfg.agent.algo}"
                        f"{' with a shared policy' if env.multi_agent else ''}; use --backend sb3")
    from agents.run.envfactory import env_factory

    made = env_factory(cfg, env)()
    try:
        return rllib_board.model_config(rllib_board.layout_of(made))
    finally:
        made.close()


def _normalizes_obs(cfg: RunConfig, obs_space: gym.Space) -> bool:
    import logging

    if not cfg.agent.normalize_obs:
        return False
    if isinstance(obs_space, gym.spaces.Box) and not is_image_space(obs_space):
        return True
    logging.getLogger(__name__).warning("normalize_obs ignored on rllib: observation space %s is not a flat "
                                        "Box", obs_space)
    return False


def _check_extra(config: Any, extra: dict[str, Any]) -> None:
    """``update_from_dict`` silently sets unknown attributes; refuse keys the algorithm's config does
    not have."""
    known = sorted({k for k in (*config.to_dict(), *vars(config)) if not k.startswith("_")})
    name = type(config).__name__
    for key in extra:
        if config._translate_special_keys(str(key), warn_deprecated=False) not in known:
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = f"did you mean 'rllib.extra.{close[0]}'? " if close else ""
            raise UserError(f"unknown key 'rllib.extra.{key}': RLlib's {name} has no such setting; {hint}use "
                            f"a {name} attribute name (e.g. rllib.extra.vf_clip_param) or drop it")


def build_algo_config(cfg: RunConfig, seed: int, env: ResolvedEnv, start_step: int = 0,
                      callbacks: Any = None) -> Any:
    """Map the backend-neutral hyperparameters onto the algorithm's RLlib config.

    ``env``: the env as the runner resolved it (its spaces; the env runners build it from the record).
    RLlib counts steps from 0 again after a resume, so a linear learning-rate schedule is shifted by
    ``start_step``.
    """
    algo = spec(cfg)
    spaces = env.spaces
    a, r = cfg.agent, cfg.rllib
    runners, per_runner = env_counts(cfg)
    lr = a.learning_rate or (5e-4 if a.algo == "appo" else 3e-4)
    left = max(cfg.train.timesteps - start_step, 1)
    schedule = [[0, lr * left / (left + start_step)], [left, 0.0]]
    config = (
        _load(algo.config_class)()
        .api_stack(enable_rl_module_and_learner=True, enable_env_runner_and_connector_v2=True)
        .environment(ENV_NAME, env_config={"cfg": cfg.model_dump(mode="json"), "env": env})
        .env_runners(num_env_runners=runners, num_envs_per_env_runner=per_runner,
                     gym_env_vectorize_mode=("vector_entry_point" if env.batched(cfg)  # K-instance programs
                                             else VECTORIZE_MODE[cfg.train.vec_env]))
        .learners(num_learners=r.num_learners, num_gpus_per_learner=1 if cfg.train.device == "cuda" else 0)
        .rl_module(model_config={**model_config(cfg, spaces[1]), **_board(cfg, env)})
        .fault_tolerance(restart_failed_env_runners=True,  # bounded run-wide by agents/rllib/runners.py
                         max_num_env_runner_restarts=r.max_runner_restarts,
                         delay_between_env_runner_restarts_s=RESTART_DELAY_S)
        .debugging(seed=seed)
    )
    config = algo.training(config, cfg, schedule if a.lr_schedule == "linear" else lr)
    module_class = None
    if masked(cfg):  # the env runners' observations carry the mask; the module masks the logits
        masking.check(cfg)
        module_class = masking.module_class(algo.module_class)
    if cfg.agent.extractor == "board_cnn":  # the board network as the encoder (agents/rllib/board.py)
        module_class = rllib_board.module_class(module_class or _load(algo.module_class))
    if module_class is not None:
        from ray.rllib.core.rl_module.rl_module import RLModuleSpec

        config = config.rl_module(rl_module_spec=RLModuleSpec(module_class=module_class))
    if callbacks is not None:
        config = config.callbacks(callbacks)
    if _normalizes_obs(cfg, spaces[0]):
        config = config.env_runners(env_to_module_connector=rllib_state.obs_filter)
    if r.extra:
        _check_extra(config, r.extra)
        config = config.update_from_dict(r.extra)
    from ray.util.debug import log_once

    for name in ("PPO", "APPO", "SAC"):  # RLlib warns on every run that the new API stack is the default
        log_once(f"{name}_on_new_api_stack")
    return validated(config, "configuration", "the agent: or rllib: values (--set SECTION.KEY=VALUE)")


def validated(config: Any, what: str, fix: str) -> Any:
    """``config`` once RLlib's own ``validate()`` accepts it; its refusal as one line naming ``fix``."""
    try:
        config.validate()
    except (ValueError, TypeError) as e:
        raise UserError(f"RLlib rejected the {what}: {str(e).splitlines()[0]} Fix {fix}") from e
    return config
