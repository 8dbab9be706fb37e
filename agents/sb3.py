"""The stable-baselines3 backend: PPO and A2C on one machine, with exact checkpoints and resume."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger, TensorBoardOutputFormat
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize

from agents import Backend, checkpoint
from agents.config import RunConfig
from agents.envfactory import env_factory, is_image_space
from agents.errors import CheckpointError, EnvFailure
from agents.evaluation import eval_scalars, run_episodes, summarise
from agents.session import Session
from agents.vecenv import ResilientVecEnv, ThreadVecEnv

log = logging.getLogger(__name__)

ALGOS: dict[str, type[PPO] | type[A2C]] = {"ppo": PPO, "a2c": A2C}
ACTIVATIONS = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}


def resolve_device(device: str) -> str:
    """``auto`` → cuda when available, else cpu."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        from agents.errors import UserError

        raise UserError("--device cuda: this torch build sees no CUDA device; use --device cpu, or install a CUDA "
                        "torch (make TORCH=torch)")
    return device


def _policy_name(cfg: RunConfig, obs_space: gym.Space) -> str:
    kind = cfg.agent.policy
    if kind == "auto":
        kind = "multi" if isinstance(obs_space, gym.spaces.Dict) else "cnn" if is_image_space(obs_space) else "mlp"
    return {"mlp": "MlpPolicy", "cnn": "CnnPolicy", "multi": "MultiInputPolicy"}[kind]


def _hyperparameters(cfg: RunConfig) -> dict[str, Any]:
    a = cfg.agent
    hp: dict[str, Any] = {"gamma": a.gamma, "gae_lambda": a.gae_lambda, "ent_coef": a.ent_coef, "vf_coef": a.vf_coef,
                          "max_grad_norm": a.max_grad_norm}
    if a.learning_rate is not None:
        lr = a.learning_rate
        hp["learning_rate"] = (lambda p: p * lr) if a.lr_schedule == "linear" else lr
    if a.n_steps is not None:
        hp["n_steps"] = a.n_steps
    if a.algo == "ppo":
        hp.update(batch_size=a.batch_size, n_epochs=a.n_epochs, clip_range=a.clip_range)
    hp["policy_kwargs"] = {"net_arch": list(a.net_arch), "activation_fn": ACTIVATIONS[a.activation],
                           "ortho_init": a.ortho_init, "log_std_init": a.log_std_init}
    return hp


def _wrap_monitor(factory: Any) -> Any:
    return lambda: Monitor(factory())


class _Hooks(BaseCallback):
    """Connects SB3's training loop to the :class:`Session`: progress, checkpoints, evaluation, signals."""

    def __init__(self, backend: SB3Backend, session: Session) -> None:
        super().__init__()
        self.backend, self.session = backend, session
        self._last_progress = 0.0
        self._eval_env: gym.Env | None = None

    def _on_rollout_start(self) -> None:
        # Here the previous update is complete and nothing of the next rollout exists: an exact resume point.
        step = self.model.num_timesteps
        if step > self.session.start_step and self.session.checkpoint_due(step):
            self.backend.save(self.session.run.checkpoint_path(step))
            self.session.run.rotate(self.session.cfg.train.keep_checkpoints)

    def _on_rollout_end(self) -> None:
        for key, value in self.session.health.metrics().items():
            self.logger.record(key, value)

    def _on_step(self) -> bool:
        try:
            self.session.health.observe(self.locals.get("infos", ()))
        except EnvFailure:  # the run-wide restart budget is spent: record the final counts, then stop
            self._on_rollout_end()
            self.logger.dump(self.model.num_timesteps)
            raise
        step = self.model.num_timesteps
        now = time.monotonic()
        if now - self._last_progress > 0.25:
            self._last_progress = now
            buf = self.model.ep_info_buffer
            self.session.progress.update(step, float(np.mean([e["r"] for e in buf])) if buf else None)
        if self.session.eval_due(step):
            self._evaluate(step)
        return not self.session.should_stop

    def _evaluate(self, step: int) -> None:
        cfg = self.session.cfg
        if self._eval_env is None:
            self._eval_env = env_factory(cfg, for_eval=True)()
        result = run_episodes(self._eval_env, lambda o: self.backend.predict(o, deterministic=cfg.eval.deterministic),
                              cfg.eval.episodes, seed=self.backend.seed + 1_000_000)
        summary = summarise(result)
        for key, value in eval_scalars(summary).items():
            self.logger.record(key, value)
        if self.session.record_eval(step, summary):
            self.backend.save(self.session.run.best, {"eval": summary})

    def _on_training_end(self) -> None:
        if self._eval_env is not None:
            self._eval_env.close()


class SB3Backend(Backend):
    """PPO or A2C from stable-baselines3 behind the nondiff :class:`~agents.Backend` interface."""

    def __init__(self, cfg: RunConfig, seed: int, model: PPO | A2C | None, policy: Any, norm: dict[str, Any] | None,
                 spaces: tuple[gym.Space, gym.Space]) -> None:
        self.cfg, self.seed, self.model, self.policy = cfg, seed, model, policy
        self._norm = norm  # saved observation statistics, used when there is no live VecNormalize
        self.observation_space, self.action_space = spaces

    # -- construction -----------------------------------------------------------------------------------
    @classmethod
    def create(cls, cfg: RunConfig, seed: int) -> SB3Backend:
        """Build the vectorised envs and a fresh model."""
        torch.set_num_threads(cfg.train.threads)
        set_random_seed(seed)
        factory = _wrap_monitor(env_factory(cfg))
        fns = [factory for _ in range(cfg.train.num_envs)]
        venv: VecEnv
        if cfg.train.vec_env == "subproc":
            venv = ResilientVecEnv(fns, start_method=cfg.train.start_method, step_timeout=cfg.train.worker_timeout,
                                   max_restarts=cfg.train.max_worker_restarts)
        else:
            venv = ThreadVecEnv(fns) if cfg.train.vec_env == "thread" else DummyVecEnv(fns)
        obs_space = venv.observation_space
        if cfg.agent.normalize_obs or cfg.agent.normalize_reward:
            norm_obs = cfg.agent.normalize_obs and not is_image_space(obs_space)
            if cfg.agent.normalize_obs and not norm_obs:
                log.warning("normalize_obs ignored: image observations are scaled to [0, 1] by the CNN policy")
            venv = VecNormalize(venv, norm_obs=norm_obs, norm_reward=cfg.agent.normalize_reward, gamma=cfg.agent.gamma)
        device = resolve_device(cfg.train.device)
        model = ALGOS[cfg.agent.algo](_policy_name(cfg, obs_space), venv, seed=seed, device=device, verbose=0,
                                      **_hyperparameters(cfg))
        return cls(cfg, seed, model, model.policy, None, (venv.observation_space, venv.action_space))

    # -- training ---------------------------------------------------------------------------------------
    def learn(self, session: Session) -> int:
        """Train to ``session.total_steps``; stops early (cleanly) on SIGINT/SIGTERM."""
        assert self.model is not None
        fmt = TensorBoardOutputFormat(str(session.run.tensorboard))
        if session.start_step > 0:  # drop events a killed run wrote after this checkpoint
            from torch.utils.tensorboard import SummaryWriter

            fmt.writer.close()
            fmt.writer = SummaryWriter(log_dir=str(session.run.tensorboard), purge_step=session.start_step + 1)
        else:
            rows = "\n".join(f"|{k}|{v}|" for k, v in _flatten(self.cfg.model_dump(mode="json")).items())
            fmt.writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + rows, 0)
        self.model.set_logger(Logger(str(session.run.tensorboard), [fmt]))
        remaining = session.total_steps - self.model.num_timesteps
        try:
            if remaining > 0:
                self.model.learn(remaining, callback=_Hooks(self, session), reset_num_timesteps=False,
                                 progress_bar=False)
        finally:
            fmt.close()
        session.progress.update(self.model.num_timesteps, None)
        return self.model.num_timesteps

    def predict(self, obs: Any, deterministic: bool = True) -> np.ndarray:
        """Actions for raw observations (single or batched); normalisation is applied here."""
        venv = self.model.get_env() if self.model is not None else None
        if isinstance(venv, VecNormalize):
            obs = venv.normalize_obs(obs)
        elif self._norm is not None:
            obs = np.clip((obs - self._norm["mean"]) / np.sqrt(self._norm["var"] + self._norm["epsilon"]),
                          -self._norm["clip_obs"], self._norm["clip_obs"])
        action, _ = self.policy.predict(obs, deterministic=deterministic)
        return action

    # -- checkpoints ------------------------------------------------------------------------------------
    def save(self, path: Path, meta: dict[str, Any] | None = None) -> Path:
        """Policy, optimiser, normaliser, counters, RNG and (where possible) env states, atomically."""
        assert self.model is not None
        m = self.model
        tensors: dict[str, torch.Tensor] = {f"policy/{k}": v for k, v in m.policy.state_dict().items()}
        opt = m.policy.optimizer.state_dict()
        opt_meta: dict[str, Any] = {"param_groups": opt["param_groups"], "state": {}}
        for idx, st in opt["state"].items():
            opt_meta["state"][str(idx)] = {}
            for key, val in st.items():
                if torch.is_tensor(val):
                    tensors[f"optim/{idx}/{key}"] = val
                else:
                    opt_meta["state"][str(idx)][key] = val
        rng_t, rng_m = checkpoint.rng_state()
        tensors.update(rng_t)
        venv = m.get_env()
        assert venv is not None
        norm_meta = None
        if isinstance(venv, VecNormalize):
            norm_meta = _save_vecnormalize(venv, tensors)
        if m._last_obs is not None and not isinstance(m._last_obs, dict):
            tensors["loop/last_obs"] = torch.as_tensor(np.asarray(m._last_obs))
            tensors["loop/last_episode_starts"] = torch.as_tensor(np.asarray(m._last_episode_starts))
            if isinstance(venv, VecNormalize) and m._last_original_obs is not None:
                tensors["loop/last_original_obs"] = torch.as_tensor(np.asarray(m._last_original_obs))
        body = {
            **checkpoint.base_meta("sb3", self.cfg.agent.algo, m.num_timesteps, self.seed,
                                   (self.observation_space, self.action_space), self.cfg.model_dump(mode="json")),
            "n_updates": int(getattr(m, "_n_updates", 0)), "optimizer": opt_meta, "rng": rng_m,
            "normalize": norm_meta, "env_states": _env_states(venv), "ep_info_buffer": list(m.ep_info_buffer or []),
            **(meta or {}),
        }
        return checkpoint.save(path, tensors, body)

    @classmethod
    def load(cls, path: Path, cfg: RunConfig, *, trust: bool = False, for_training: bool = False,
             seed: int = 0) -> SB3Backend:
        """Restore a checkpoint: the policy alone for evaluation, or the whole training state."""
        tensors, meta = checkpoint.load(path, trust=trust)
        if meta.get("backend") != "sb3":
            raise CheckpointError(f"checkpoint {str(path)!r} was written by backend {meta.get('backend')!r}; "
                                  "evaluate it with that backend")
        spaces = (checkpoint.space_from_json(meta["observation_space"]), checkpoint.space_from_json(meta["action_space"]))
        policy_state = {k[len("policy/"):]: v for k, v in tensors.items() if k.startswith("policy/")}
        if not for_training:
            torch.set_num_threads(cfg.train.threads)
            algo = ALGOS[meta["algo"]]
            policy_cls = algo.policy_aliases[_policy_name(cfg, spaces[0])]
            kwargs = _hyperparameters(cfg)["policy_kwargs"]
            if meta["algo"] == "a2c":
                kwargs.update(optimizer_class=torch.optim.RMSprop, optimizer_kwargs={"alpha": 0.99, "eps": 1e-5,
                                                                                      "weight_decay": 0})
            policy = policy_cls(spaces[0], spaces[1], lambda _: 0.0, **kwargs)
            _load_state(policy, policy_state, path)
            norm = None
            if meta.get("normalize") and meta["normalize"]["norm_obs"]:
                norm = {**meta["normalize"], "mean": tensors["norm/obs_mean"].numpy(),
                        "var": tensors["norm/obs_var"].numpy()}
            return cls(cfg, meta.get("seed", seed), None, policy.eval(), norm, spaces)
        backend = cls.create(cfg, seed)
        checkpoint.check_spaces(meta, backend.observation_space, backend.action_space, f"resume from {path}")
        backend._restore(tensors, meta, policy_state, path)
        return backend

    def _restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], policy_state: dict[str, Any],
                 path: Path) -> None:
        m = self.model
        assert m is not None
        _load_state(m.policy, policy_state, path)
        opt_state: dict[str, Any] = {"param_groups": meta["optimizer"]["param_groups"], "state": {}}
        for idx, st in meta["optimizer"]["state"].items():
            opt_state["state"][int(idx)] = dict(st)
        for key, val in tensors.items():
            if key.startswith("optim/"):
                _, idx, name = key.split("/", 2)
                opt_state["state"].setdefault(int(idx), {})[name] = val
        m.policy.optimizer.load_state_dict(opt_state)
        m.num_timesteps = meta["num_timesteps"]
        m._n_updates = meta["n_updates"]
        venv = m.get_env()
        assert venv is not None
        if isinstance(venv, VecNormalize) and meta.get("normalize"):
            _load_vecnormalize(venv, tensors, meta["normalize"])
        from collections import deque

        m.ep_info_buffer = deque(meta.get("ep_info_buffer", []), maxlen=m._stats_window_size)
        m.ep_success_buffer = deque(maxlen=m._stats_window_size)
        if meta.get("env_states") and _set_env_states(venv, meta["env_states"]) and "loop/last_obs" in tensors:
            m._last_obs = tensors["loop/last_obs"].numpy()
            m._last_episode_starts = tensors["loop/last_episode_starts"].numpy()
            if "loop/last_original_obs" in tensors:
                m._last_original_obs = tensors["loop/last_original_obs"].numpy()
        else:
            log.warning("the envs cannot restore their mid-episode state; resuming from fresh episodes")
        checkpoint.set_rng_state(tensors, meta["rng"])

    def close(self) -> None:
        """Close the training envs."""
        venv = self.model.get_env() if self.model is not None else None
        if venv is not None:
            venv.close()


def _load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit this policy ({first}); evaluate it with the "
                              "config it was trained with") from e


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _save_vecnormalize(venv: VecNormalize, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    meta: dict[str, Any] = {"norm_obs": bool(venv.norm_obs), "norm_reward": bool(venv.norm_reward),
                            "clip_obs": float(venv.clip_obs), "clip_reward": float(venv.clip_reward),
                            "epsilon": float(venv.epsilon), "gamma": float(venv.gamma)}
    if venv.norm_obs and not isinstance(venv.obs_rms, dict):
        tensors["norm/obs_mean"] = torch.as_tensor(venv.obs_rms.mean)
        tensors["norm/obs_var"] = torch.as_tensor(venv.obs_rms.var)
        meta["obs_count"] = float(venv.obs_rms.count)
    tensors["norm/ret_mean"] = torch.as_tensor(venv.ret_rms.mean)
    tensors["norm/ret_var"] = torch.as_tensor(venv.ret_rms.var)
    tensors["norm/returns"] = torch.as_tensor(venv.returns)
    meta["ret_count"] = float(venv.ret_rms.count)
    return meta


def _load_vecnormalize(venv: VecNormalize, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    if "norm/obs_mean" in tensors and not isinstance(venv.obs_rms, dict):
        venv.obs_rms.mean = tensors["norm/obs_mean"].numpy().copy()
        venv.obs_rms.var = tensors["norm/obs_var"].numpy().copy()
        venv.obs_rms.count = meta["obs_count"]
    venv.ret_rms.mean = tensors["norm/ret_mean"].numpy().copy()
    venv.ret_rms.var = tensors["norm/ret_var"].numpy().copy()
    venv.ret_rms.count = meta["ret_count"]
    venv.returns = tensors["norm/returns"].numpy().copy()


def _env_states(venv: VecEnv) -> list[dict[str, Any]] | None:
    """Mid-episode state of every in-process env whose adapter offers ``get_state()``; None otherwise."""
    inner = venv.venv if isinstance(venv, VecNormalize) else venv
    if not isinstance(inner, DummyVecEnv):
        return None
    states = []
    for env in inner.envs:
        if not hasattr(env.unwrapped, "get_state"):
            return None
        state: dict[str, Any] = {"env": env.unwrapped.get_state()}
        e: Any = env
        while isinstance(e, gym.Wrapper):
            if isinstance(e, gym.wrappers.TimeLimit):
                state["elapsed"] = e._elapsed_steps
            if isinstance(e, Monitor):
                state["monitor"] = {"rewards": list(e.rewards), "needs_reset": e.needs_reset}
            e = e.env
        states.append(state)
    return states


def _set_env_states(venv: VecEnv, states: list[dict[str, Any]]) -> bool:
    inner = venv.venv if isinstance(venv, VecNormalize) else venv
    if not isinstance(inner, DummyVecEnv) or len(inner.envs) != len(states):
        return False
    for env, state in zip(inner.envs, states):
        env.reset()  # the wrappers' order enforcement and checkers expect a reset before a step
        env.unwrapped.set_state(state["env"])  # type: ignore[attr-defined]
        e: Any = env
        while isinstance(e, gym.Wrapper):
            if isinstance(e, gym.wrappers.TimeLimit):
                e._elapsed_steps = state.get("elapsed", 0)
            if isinstance(e, Monitor) and "monitor" in state:
                e.rewards, e.needs_reset = list(state["monitor"]["rewards"]), state["monitor"]["needs_reset"]
            e = e.env
    return True
