"""The stable-baselines3 backend: PPO, A2C, SAC and TD3 on one machine, with exact checkpoints and resume.

The off-policy parts (SAC/TD3 hyperparameters, chunked advance, replay buffer and optimisers as tensors)
live in :mod:`agents.sb3.offpolicy`.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger, TensorBoardOutputFormat
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from agents.config import RunConfig
from agents.run import checkpoint, tensorcheck, torchstart
from agents.run.backend import Backend, Iteration, resolve_device
from agents.run.header import CheckpointHeader
from agents.run.masks import masked
from agents.run.memory import check_rollout
from agents.run.resolved import ResolvedEnv
from agents.run.session import Session
from agents.sb3 import her, masking, offpolicy
from agents.sb3.policies import load_obs_stats, normalize, save_obs_stats, saved_norm, select_policy
from agents.sb3.vector import SB3VecEnv, make_vec_env
from envs.vector.resume import env_states, set_env_states

log = logging.getLogger(__name__)

ALGOS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C, **offpolicy.ALGOS}
ACTIVATIONS = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}


def hyperparameters(cfg: RunConfig, action_space: gym.Space | None = None) -> dict[str, Any]:
    """The SB3 constructor's keyword arguments for ``cfg.agent`` (``policy_kwargs`` included)."""
    a = cfg.agent
    lr: Any = a.learning_rate
    if lr is not None and a.lr_schedule == "linear":
        lr = LinearLR(lr)
    if a.algo in offpolicy.ALGOS:
        return offpolicy.hyperparameters(cfg, action_space, ACTIVATIONS[a.activation], lr)
    hp: dict[str, Any] = {"gamma": a.gamma, "gae_lambda": a.gae_lambda, "ent_coef": float(a.ent_coef or 0.0),
                          "vf_coef": a.vf_coef, "max_grad_norm": a.max_grad_norm}
    if lr is not None:
        hp["learning_rate"] = lr
    if a.n_steps is not None:
        hp["n_steps"] = a.n_steps
    if a.algo == "ppo":
        hp.update(n_epochs=a.n_epochs, clip_range=a.clip_range)
        if a.batch_size is not None:
            hp["batch_size"] = a.batch_size
    hp["policy_kwargs"] = masking.policy_kwargs(cfg, {
        "net_arch": list(a.net_arch), "activation_fn": ACTIVATIONS[a.activation], "ortho_init": a.ortho_init,
        "log_std_init": a.log_std_init})
    return hp


def n_steps(cfg: RunConfig, hp: dict[str, Any]) -> int:
    """The rollout length PPO or A2C will use: ``agent.n_steps``, else SB3's default for the algorithm."""
    if "n_steps" in hp:
        return int(hp["n_steps"])
    return int(inspect.signature(ALGOS[cfg.agent.algo].__init__).parameters["n_steps"].default)


class LinearLR:
    """A learning rate annealed linearly to 0 over the run's whole budget.

    SB3 measures progress against the ``total_timesteps`` of each ``learn`` call, and the loop calls
    ``learn`` once per iteration, so the backend sets :attr:`remaining` itself (same values as one long call).
    """

    def __init__(self, lr: float) -> None:
        self.lr, self.remaining = lr, 1.0

    def __call__(self, _progress: float) -> float:
        return self.lr * self.remaining


class _Tick(BaseCallback):
    """Inside SB3's collection: each vector step goes to ``session.tick`` (health, progress, stop
    requests)."""

    def __init__(self, backend: SB3Backend, session: Session) -> None:
        super().__init__()
        self.backend, self.session = backend, session
        self._newest: Any = None  # the newest episode in SB3's buffer when the mean return was last taken
        self._ret: float | None = None

    def _on_step(self) -> bool:
        buf = self.model.ep_info_buffer
        if buf and buf[-1] is not self._newest:  # the mean changes only when an episode ends
            self._newest, self._ret = buf[-1], float(np.mean([e["r"] for e in buf]))
        return self.session.tick(self.model.num_timesteps, self.locals.get("infos", ()), self._ret)

    def _on_rollout_end(self) -> None:  # the update that follows sees the whole run's progress
        lr = self.model.learning_rate  # what nondiff passed; SB3 wraps it into lr_schedule
        if isinstance(lr, LinearLR):
            lr.remaining = max(0.0, 1.0 - self.model.num_timesteps / max(self.session.total_steps, 1))


class SB3Backend(Backend):
    """PPO, A2C, SAC or TD3 from stable-baselines3 behind the nondiff :class:`~agents.run.backend.Backend`
    interface."""

    channels_first = True  # SB3's CNNs take (C, H, W)
    batches_programs = True  # K-instance programs: one batched vector env
    takes_connections = True  # connect mode: programs that connect to the run are its envs
    masking_algos = ("ppo",)  # sb3-contrib's MaskablePPO (agents/sb3/masking.py)
    pettingzoo = ("parallel", "aec")  # one shared policy over the agents; a turn-based game by self-play

    def __init__(self, cfg: RunConfig, seed: int, model: BaseAlgorithm | None, policy: Any,
                 norm: dict[str, Any] | None, spaces: tuple[gym.Space, gym.Space]) -> None:
        self.cfg, self.seed, self.model, self.policy = cfg, seed, model, policy
        self._step = 0  # the checkpoint's step when there is no model (evaluation)
        self._norm = norm  # saved observation statistics, used when there is no live VecNormalize
        self.observation_space, self.action_space = spaces
        self._masks: masking.MaskFn | None = None  # the evaluation env's legal actions (bind_env)

    # -- construction -----------------------------------------------------------------------------------
    @classmethod
    def create(cls, cfg: RunConfig, seed: int, env: ResolvedEnv) -> SB3Backend:
        """Build the vectorised envs and a fresh model."""
        torchstart.start_torch(cfg.train.threads)
        set_random_seed(seed)
        device = resolve_device(cfg.train.device)
        hp = hyperparameters(cfg, env.action_space)
        venv = make_vec_env(cfg, env)
        try:  # the buffers are allocated whole: bound them first, by the vector env's rows (one per agent)
            if cfg.agent.algo in offpolicy.ALGOS:
                offpolicy.check_memory(cfg, *env.spaces, venv.num_envs,
                                       optimize_memory_usage=bool(hp.get("optimize_memory_usage", False)))
            else:
                check_rollout(*env.spaces, n_steps(cfg, hp), venv.num_envs, masks=masked(cfg))
        except BaseException:
            venv.close()
            raise
        her.configure(cfg, env, venv, hp)  # HerReplayBuffer for SAC/TD3 on a goal-conditioned env
        name, extra = select_policy(cfg, venv.observation_space)
        hp["policy_kwargs"].update(extra)
        if cfg.agent.algo in offpolicy.ALGOS and not cfg.train.checkpoint_replay:
            log.warning("train.checkpoint_replay is false: checkpoints leave out the replay buffer, so a "
                        "resumed run will not be exact")
        masking.say_once(cfg)
        model = masking.algorithm(cfg, ALGOS[cfg.agent.algo])(name, venv, seed=seed, device=device, verbose=0,
                                                              **hp)
        return cls(cfg, seed, model, model.policy, None, (venv.observation_space, venv.action_space))

    # -- training ---------------------------------------------------------------------------------------
    @property
    def num_timesteps(self) -> int:  # type: ignore[override]
        """Global env steps so far (SB3's own counter, restored on resume)."""
        return int(self.model.num_timesteps) if self.model is not None else self._step

    def attach(self, session: Session) -> None:
        """Route SB3's logger (``rollout/``, ``train/``, ``time/``) into the run's TensorBoard writer."""
        assert self.model is not None
        fmt = TensorBoardOutputFormat(str(session.run.tensorboard))
        fmt.writer.close()
        fmt.writer = session.writer
        self.model.set_logger(Logger(str(session.run.tensorboard), [fmt]))
        self._tick = _Tick(self, session)

    def advance(self, until: int, session: Session) -> Iteration:
        """One rollout and one update (PPO, A2C), or SAC/TD3 up to ``until`` (:func:`offpolicy.advance`).

        The callback stops the collection early on a stop request.
        """
        assert self.model is not None
        if isinstance(self.model, OffPolicyAlgorithm):
            offpolicy.advance(self.model, until, self._tick)
        else:
            self.model.learn(1, callback=self._tick, reset_num_timesteps=False, log_interval=1,
                             progress_bar=False)
        buf = self.model.ep_info_buffer
        return Iteration(self.num_timesteps, float(np.mean([e["r"] for e in buf])) if buf else None)

    def predict(self, obs: Any, deterministic: bool = True) -> np.ndarray:
        """Actions for raw observations (single or batched); normalisation is applied here."""
        masks = masking.predict_kwargs(self._masks)  # MaskablePPO: the bound env's legal actions
        action, _ = self.policy.predict(self._normalized(obs), deterministic=deterministic, **masks)
        return action

    def action_probs(self, obs: Any, legal: np.ndarray) -> np.ndarray | None:
        """The policy's action probabilities for a batch of raw observations, legal moves only: one forward
        pass through the actor, without ``predict``'s checks and distribution objects (a third of its cost
        per move); None unless the action space is Discrete."""
        if not isinstance(self.action_space, gym.spaces.Discrete):
            return None
        obs = self._normalized(obs)
        p = self.policy
        with torch.no_grad():
            batch: Any = ({k: torch.as_tensor(np.asarray(v), device=p.device) for k, v in obs.items()}
                          if isinstance(obs, dict) else torch.as_tensor(np.asarray(obs), device=p.device))
            features = p.extract_features(batch, p.pi_features_extractor)  # SB3's preprocessing included
            logits = p.action_net(p.mlp_extractor.forward_actor(features)).double().cpu().numpy()
        logits = np.where(legal, logits, -np.inf)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        return probs / probs.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]

    def _normalized(self, obs: Any) -> Any:
        venv = self.model.get_env() if self.model is not None else None
        if isinstance(venv, VecNormalize):
            return venv.normalize_obs(obs)
        return obs if self._norm is None else normalize(obs, self._norm["stats"], self._norm)

    def train_envs(self) -> list[Any]:
        """The in-process training envs (``train.vec_env`` dummy or thread), else ``[]``."""
        venv = self.model.get_env() if self.model is not None else None
        base = getattr(getattr(venv, "unwrapped", None), "base", None)  # SB3VecEnv's vector env
        return list(getattr(base, "envs", []))

    def bind_env(self, env: Any) -> None:
        """Keep the evaluation env's ``action_masks`` when the run is masked (legal actions only)."""
        self._masks = masking.mask_fn(self.cfg, env)

    # -- checkpoints ------------------------------------------------------------------------------------
    def save(self, path: Path, meta: dict[str, Any] | None = None) -> Path:
        """Policy, optimiser, normaliser, counters, RNG and (where possible) env states, atomically."""
        assert self.model is not None
        m = self.model
        tensors: dict[str, torch.Tensor] = {f"policy/{k}": v for k, v in m.policy.state_dict().items()}
        if isinstance(m, OffPolicyAlgorithm):  # actor, critic and entropy optimisers, replay buffer
            off = offpolicy.save_state(m, tensors, replay=self.cfg.train.checkpoint_replay)
        else:
            off = {"optimizer": offpolicy.save_optimizer(m.policy.optimizer, "optim/", tensors)}
        rng_t, rng_m = checkpoint.rng_state()
        tensors.update(rng_t)
        venv = m.get_env()
        assert venv is not None
        norm_meta = None
        if isinstance(venv, VecNormalize):
            norm_meta = save_vecnormalize(venv, tensors)
        if m._last_obs is not None:  # a Dict observation key by key (loop/last_obs/<key>)
            tensors.update(_obs_tensors("loop/last_obs", m._last_obs))
            tensors["loop/last_episode_starts"] = torch.as_tensor(np.asarray(m._last_episode_starts))
            if isinstance(venv, VecNormalize) and m._last_original_obs is not None:
                tensors.update(_obs_tensors("loop/last_original_obs", m._last_original_obs))
        body = {
            **checkpoint.base_meta("sb3", self.cfg.agent.algo, m.num_timesteps, self.seed,
                                   (self.observation_space, self.action_space),
                                   self.cfg.model_dump(mode="json")),
            "n_updates": int(getattr(m, "_n_updates", 0)), **off, "rng": rng_m, "normalize": norm_meta,
            "env_states": _env_states(venv), "ep_info_buffer": list(m.ep_info_buffer or []),
            **(meta or {}),
        }
        return checkpoint.save(path, tensors, body)

    @classmethod
    def load(cls, ckpt: checkpoint.Checkpoint, cfg: RunConfig, env: ResolvedEnv, *,
             for_training: bool = False, seed: int = 0) -> SB3Backend:
        """Restore a checkpoint: the policy alone for evaluation, or the whole training state."""
        tensors, header, meta, path = ckpt.tensors, ckpt.header, ckpt.header.extra, ckpt.path
        tensorcheck.check_sb3(ckpt)  # every tensor, before anything is built from them
        spaces = header.spaces()
        policy_state = {k[len("policy/"):]: v for k, v in tensors.items() if k.startswith("policy/")}
        if not for_training:
            torchstart.start_torch(cfg.train.threads)
            algo = masking.algorithm(cfg, ALGOS[header.algo])
            name, extra = select_policy(cfg, spaces[0])
            policy_cls = algo.policy_aliases[name]
            kwargs = {**hyperparameters(cfg)["policy_kwargs"], **extra}
            if header.algo == "a2c":
                kwargs.update(optimizer_class=torch.optim.RMSprop,
                              optimizer_kwargs={"alpha": 0.99, "eps": 1e-5, "weight_decay": 0})
            policy = policy_cls(spaces[0], spaces[1], lambda _: 0.0, **kwargs)
            tensorcheck.load_policy_state(policy, policy_state, path)
            norm = saved_norm(tensors, meta.get("normalize"), f"checkpoint {str(path)!r}")
            own_seed = header.seed if header.seed is not None else seed
            backend = cls(cfg, own_seed, None, policy.eval(), norm, spaces)
            backend._step = header.num_timesteps
            return backend
        backend = cls.create(cfg, seed, env)
        checkpoint.check_spaces(header, backend.observation_space, backend.action_space,
                                f"resume from {path}")
        backend._restore(tensors, header, policy_state, path)
        return backend

    def _restore(self, tensors: dict[str, torch.Tensor], header: CheckpointHeader,
                 policy_state: dict[str, Any], path: Path) -> None:
        meta = header.extra  # the SB3 fields; the header checked their types
        m = self.model
        assert m is not None
        tensorcheck.load_policy_state(m.policy, policy_state, path)
        if isinstance(m, OffPolicyAlgorithm):
            offpolicy.load_state(m, tensors, meta, path)
        else:
            offpolicy.load_optimizer(m.policy.optimizer, "optim/", tensors, meta["optimizer"], path)
        m.num_timesteps = header.num_timesteps
        m._n_updates = meta["n_updates"]
        venv = m.get_env()
        assert venv is not None
        if isinstance(venv, VecNormalize) and meta.get("normalize"):
            load_vecnormalize(venv, tensors, meta["normalize"])
        from collections import deque

        m.ep_info_buffer = deque(meta.get("ep_info_buffer", []), maxlen=m._stats_window_size)
        m.ep_success_buffer = deque(maxlen=m._stats_window_size)
        restored = (bool(meta.get("env_states")) and masking.states_hold_masks(self.cfg)
                    and _env_states(venv, meta["env_states"]))
        if restored and "loop/last_episode_starts" in tensors:
            m._last_obs = _obs_from_tensors("loop/last_obs", tensors)
            m._last_episode_starts = tensors["loop/last_episode_starts"].numpy()
            if any(k.startswith("loop/last_original_obs") for k in tensors):
                m._last_original_obs = _obs_from_tensors("loop/last_original_obs", tensors)
        else:
            log.warning("the envs cannot restore their mid-episode state; resuming from fresh episodes")
            her.fresh_episodes(getattr(m, "replay_buffer", None))
        checkpoint.set_rng_state(tensors, meta["rng"])

    def close(self) -> None:
        """Close the training envs."""
        venv = self.model.get_env() if self.model is not None else None
        if venv is not None:
            venv.close()


def _obs_tensors(prefix: str, obs: Any) -> dict[str, torch.Tensor]:
    """A batch of observations as tensors: ``prefix``, or ``prefix/<key>`` for each key of a Dict batch."""
    if isinstance(obs, dict):
        return {f"{prefix}/{k}": torch.as_tensor(np.asarray(v)) for k, v in obs.items()}
    return {prefix: torch.as_tensor(np.asarray(obs))}


def _obs_from_tensors(prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """The batch :func:`_obs_tensors` saved."""
    if prefix in tensors:
        return tensors[prefix].numpy()
    return {k[len(prefix) + 1:]: v.numpy() for k, v in tensors.items() if k.startswith(prefix + "/")}


def save_vecnormalize(venv: VecNormalize, tensors: dict[str, torch.Tensor],
                      prefix: str = "norm/") -> dict[str, Any]:
    """``venv``'s statistics into ``tensors`` under ``prefix``; the checkpoint's ``normalize`` record."""
    meta: dict[str, Any] = {"norm_obs": bool(venv.norm_obs), "norm_reward": bool(venv.norm_reward),
                            "clip_obs": float(venv.clip_obs), "clip_reward": float(venv.clip_reward),
                            "epsilon": float(venv.epsilon), "gamma": float(venv.gamma)}
    save_obs_stats(venv, tensors, meta, prefix)
    tensors[f"{prefix}ret_mean"] = torch.as_tensor(venv.ret_rms.mean)
    tensors[f"{prefix}ret_var"] = torch.as_tensor(venv.ret_rms.var)
    tensors[f"{prefix}returns"] = torch.as_tensor(venv.returns)
    meta["ret_count"] = float(venv.ret_rms.count)
    return meta


def load_vecnormalize(venv: VecNormalize, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                      prefix: str = "norm/") -> None:
    """Restore what :func:`save_vecnormalize` saved under ``prefix`` into ``venv``."""
    stats = load_obs_stats(tensors, meta, prefix) if venv.norm_obs else None
    if stats is not None:
        venv.obs_rms = stats  # type: ignore[assignment]
    venv.ret_rms.mean = tensors[f"{prefix}ret_mean"].numpy().copy()
    venv.ret_rms.var = tensors[f"{prefix}ret_var"].numpy().copy()
    venv.ret_rms.count = meta["ret_count"]
    venv.returns = tensors[f"{prefix}returns"].numpy().copy()


def _env_states(venv: VecEnv, states: list[dict[str, Any]] | None = None) -> Any:
    """Mid-episode state of every in-process env whose adapter offers ``get_state()`` (None otherwise); with
    ``states``, restore them instead and return whether that worked."""
    inner = venv.venv if isinstance(venv, VecNormalize) else venv
    if states is not None:
        return isinstance(inner, SB3VecEnv) and set_env_states(inner.venv, states)
    return env_states(inner.venv) if isinstance(inner, SB3VecEnv) else None
