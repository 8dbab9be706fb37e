"""The RLlib backend: PPO, APPO and SAC on a local or remote Ray cluster with the same configs, run dirs
and checkpoints.

Ray is imported only here. Envs are registered with ``ray.tune.registry.register_env``; the creator
re-resolves the nondiff name inside every Ray worker (built-in, plugin or ``--env-package``) and wraps
the env in the same Guard as the SB3 backend. Checkpoints hold the RLModule weights as tensors plus JSON
(no pickle), so ``evaluate.py`` loads them without starting Ray. ``agent.normalize_obs`` runs RLlib's
MeanStdFilter env-to-module connector in every env runner; its merged statistics go into the checkpoint
as tensors and are applied by :meth:`RLlibBackend.predict`.
"""

from __future__ import annotations

import functools
import logging
import socket
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.config import RunConfig, tokens
from agents.rllib import actions as rllib_actions
from agents.rllib import algos as rllib_algos
from agents.rllib import faultnotes, masking
from agents.rllib import selfplay as rllib_selfplay
from agents.rllib import state as rllib_state
from agents.rllib.algos import ENV_NAME
from agents.rllib.league_remote import RemoteLeague
from agents.rllib.runners import RunnerRestarts, check_cpus, check_runner_envs, logs_dir, stop_algo
from agents.run import checkpoint, localray, tensorcheck, torchstart
from agents.run.backend import Backend, Iteration
from agents.run.envfactory import env_factory
from agents.run.memory import check_replay, check_rollout
from agents.run.resolved import ResolvedEnv
from agents.run.session import Session
from envs.errors import CheckpointError, EnvFailure, UserError

log = logging.getLogger(__name__)
MODULE = "default_policy"
CONNECT_TIMEOUT = 5.0
LATENCY_WINDOW = 1000
"""Step latencies each env runner keeps for ``env/step_latency_ms_p50``/``_p99``."""


def _create_env(env_config: dict[str, Any]) -> gym.Env | gym.vector.VectorEnv:
    """The Ray env creator: runs inside every env runner, so it rebuilds the env from plain data."""
    from agents.config import RunConfig as _RunConfig

    cfg = _RunConfig.model_validate(env_config["cfg"])
    if env_config["env"].batched(cfg):  # K-instance programs: one batched vector env per env runner
        return rllib_state.batched_programs(cfg, env_config["env"], int(env_config["num_envs"]))
    scale = (functools.partial(rllib_state.ScaleReward, gamma=cfg.agent.gamma) if cfg.agent.normalize_reward
             else None)
    make = env_factory(cfg, env_config["env"], outer=masking.outer(cfg, scale))  # masks: into the obs
    # train.vec_env: thread (gymnasium's vector_entry_point asks for all envs at once)
    if "num_envs" in env_config:
        from gymnasium.vector import AutoresetMode

        from envs.vector.threads import ThreadVectorEnv

        return ThreadVectorEnv([make] * int(env_config["num_envs"]), AutoresetMode.NEXT_STEP)
    return make()


def _health_callback_class() -> Any:
    """An RLlibCallback that turns the watchdog's ``info`` records into metrics inside each env runner."""
    from ray.rllib.callbacks.callbacks import RLlibCallback

    from envs.faults import LATENCY_KEY, faults_in

    class HealthCallback(RLlibCallback):  # type: ignore[misc]
        def on_episode_step(self, *, episode: Any, metrics_logger: Any = None, **kwargs: Any) -> None:
            info = episode.get_infos(-1) if metrics_logger is not None else None
            if not info:
                return
            rllib_selfplay.log_game(info, metrics_logger)  # a self-play game's result, for the league
            for fault in faults_in(info):
                metrics_logger.log_value(("nondiff", "faults", fault.kind.value), 1, reduce="sum")
                faultnotes.note(fault)  # its detail, for the driver's console line
                if fault.restart:
                    metrics_logger.log_value(("nondiff", "restarts"), 1, reduce="sum")
                if fault.restart and fault.budget is not None:  # the run-wide budget, enforced by the driver
                    metrics_logger.log_value(("nondiff", "budgeted_restarts"), 1, reduce="sum")
                    metrics_logger.log_value(("nondiff", "budget"), fault.budget, reduce="min")
            if "nondiff_raw_return" in info:  # reward scaling on: the env's own episode return
                metrics_logger.log_value(("nondiff", "raw_return"), float(info["nondiff_raw_return"]),
                                         reduce="mean", window=100)
            ms = info.get(LATENCY_KEY)
            if isinstance(ms, (int, float, np.number)) and not isinstance(ms, bool) and np.isfinite(ms):
                metrics_logger.log_value(("nondiff", "step_ms"), float(ms), reduce="percentiles",
                                         percentiles=[50, 99], window=LATENCY_WINDOW)

    return HealthCallback


def build_algo_config(cfg: RunConfig, seed: int, env: ResolvedEnv, start_step: int = 0) -> Any:
    """The algorithm's RLlib config (agents/rllib/algos.py) with the health callback of this backend."""
    return rllib_algos.build_algo_config(cfg, seed, env, start_step, callbacks=_health_callback_class())


def _check_reachable(address: str) -> None:
    """Fail in seconds, with one line, when ``--ray-address`` points at nothing (ray.init would
    retry first)."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    hint = ("start one with `ray start --head` (docs/distributed.md) or drop --ray-address to train on a "
            "private local Ray")
    if not host or not port.isdigit():
        raise UserError(f"--ray-address {address!r}: expected HOST:PORT (GCS, e.g. head:6379) or "
                        f"ray://HOST:PORT (Ray Client, e.g. ray://head:10001)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as e:
        raise UserError(f"--ray-address {address!r}: no Ray cluster is reachable there ({e.strerror or e}); "
                        f"{hint}") from e


def _connect(cfg: RunConfig) -> None:
    """Join the cluster at ``rllib.address``, or start a private local Ray (agents/run/localray.py)."""
    import ray

    if ray.is_initialized():
        return
    address = cfg.rllib.address
    token = cfg.env.token_source()
    if not address:
        # env runners rebuild the env from the redacted config: give them the token
        tokens.export_literal(token)
        localray.start(cfg.rllib.num_cpus, cfg.rllib.dashboard)
        return
    if token.literal and token.literal != tokens.REDACTED:
        raise UserError(f"--ray-address with env.token: env runners on other machines cannot get a token "
                        f"from this command line; export {token.env_var or tokens.DEFAULT_ENV_VAR}=… on "
                        "every node before `ray start`, or use env.token_file with the file on every node")
    _check_reachable(address)
    try:
        ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ray.exceptions.RayError) as e:
        raise UserError(f"--ray-address {address!r}: a port is open there but joining the Ray cluster failed "
                        f"({str(e).splitlines()[0]}); check that it is a Ray head of version "
                        f"{ray.__version__} and that RAY_AUTH_TOKEN holds the cluster's token "
                        "(docs/distributed.md)") from e


class RLlibBackend(Backend):
    """RLlib PPO, APPO or SAC (agents/rllib/algos.py) behind the nondiff :class:`~agents.run.backend.Backend`
    interface."""

    pettingzoo = ("parallel", "aec")  # RLlib's multi-agent API (multipolicy.py); a game by self-play
    batches_programs = True  # K-instance programs: each env runner starts its own (state.batched_programs)
    masking_algos = ("ppo", "appo")  # the RLModule masks illegal logits (agents/rllib/masking.py)

    def __init__(self, cfg: RunConfig, seed: int, algo: Any, module: Any,
                 spaces: tuple[gym.Space, gym.Space], start_step: int = 0,
                 obs_stats: rllib_state.ObsStats | None = None) -> None:
        self.cfg, self.seed, self.algo, self.module = cfg, seed, algo, module
        self.spec = rllib_algos.spec(cfg)
        self.obs_stats = obs_stats
        self.observation_space, self.action_space = spaces
        self.num_timesteps = start_step
        self._offset = start_step  # RLlib's own counter restarts at 0 after a resume
        self._masks: masking.MaskFn | None = None  # the evaluation env's legal actions (bind_env)
        self._runners = RunnerRestarts(cfg.rllib.max_runner_restarts)  # bounded, said on the console
        self._league: RemoteLeague | None = None  # self-play with remote env runners
        self._faults = faultnotes.FaultNotes()  # the runners' latest fault of each kind, for console lines
        if algo is not None:
            self._runners.attach()

    @classmethod
    def create(cls, cfg: RunConfig, seed: int, env: ResolvedEnv, start_step: int = 0) -> RLlibBackend:
        """Start (or join) Ray, register the env, build the algorithm (``start_step``: where
        a resume begins)."""
        from ray.tune.registry import register_env

        spaces = env.spaces
        if cfg.agent.algo == "sac":  # RLlib's episode buffer grows to agent.buffer_size steps: bound it now
            check_replay(spaces[0], spaces[1], cfg.agent.buffer_size, 1, next_observations=False)
        else:  # PPO's train batch (APPO's fragments) of n_steps per env, gathered before an update
            check_rollout(spaces[0], spaces[1], rllib_algos.rollout_steps(cfg), cfg.train.num_envs)
        config = build_algo_config(cfg, seed, env, start_step)  # bad settings fail before Ray starts
        check_runner_envs(cfg, env)
        masking.say_once(cfg)
        if not cfg.rllib.address:  # before the private Ray starts; a cluster's CPUs are known once joined
            check_cpus(cfg)
        _connect(cfg)
        if cfg.rllib.address:
            check_cpus(cfg)
        register_env(ENV_NAME, _create_env)
        torchstart.start_torch(cfg.train.threads)
        try:
            algo = config.build_algo()
        except IndexError as e:  # RLlib asks its env runners for the spaces: none answered, all died
            if cfg.rllib.num_env_runners == 0:  # no remote runner to die: RLlib's own error, as it is
                raise
            raise EnvFailure(f"RLlib's env runners died as they started, before any step ({e}); their own "
                             f"output is in {logs_dir()}; the env, or the model on its observations, failed "
                             "there") from e
        backend = cls(cfg, seed, algo, algo.get_module(MODULE), spaces)
        # a resume loads weights instead
        if backend.spec.sb3_init and cfg.agent.ortho_init and not start_step:
            backend._set_weights(rllib_state.sb3_init(algo.get_weights()[MODULE], cfg.agent.log_std_init,
                                                      seed))
        return backend

    # -- training ---------------------------------------------------------------------------------------
    def advance(self, until: int, session: Session) -> Iteration:
        """One ``algo.train()``: sampling on the env runners and the updates; the same metric names as SB3."""
        t = time.monotonic()
        if self._league is not None:  # the league as it stands (ratings, new snapshots) to remote runners
            self._league.push()
        result = self.algo.train()
        self.obs_stats = rllib_state.read_obs_filter(self.algo)
        before = self.num_timesteps
        runners = result.get("env_runners", {})
        self.num_timesteps = self._offset + int(result.get("num_env_steps_sampled_lifetime",
                                                           runners.get("num_env_steps_sampled_lifetime", 0)))
        ret = runners.get("nondiff", {}).get("raw_return", runners.get("episode_return_mean"))
        scalars = {"rollout/ep_rew_mean": ret, "rollout/ep_len_mean": runners.get("episode_len_mean"),
                   "time/fps": (self.num_timesteps - before) / max(time.monotonic() - t, 1e-9)}
        learner = result.get("learners", {}).get(MODULE, {})
        scalars.update(rllib_algos.learner_scalars(self.spec, learner))
        scalars["env/runner_restarts"] = self._runner_restarts(result, session)
        scalars.update(_health(runners.get("nondiff", {}), session, self.algo.env_runner_group, self._faults))
        session.record_games(rllib_selfplay.games_from_metrics(runners.get("nondiff", {})))
        ok = ret is not None and np.isfinite(ret)
        return Iteration(self.num_timesteps, float(ret) if ok else None, scalars)

    def _runner_restarts(self, result: dict[str, Any], session: Session) -> Any:
        """RLlib's run-wide env-runner restarts after one ``train()``, said on the console; past
        ``rllib.max_runner_restarts`` an :class:`~envs.errors.EnvFailure` (the run writes ``final/``)."""
        restarts = result.get("fault_tolerance", {}).get("num_remote_worker_restarts")
        group = self.algo.env_runner_group
        self._runners.observe(restarts, group.num_remote_workers() - group.num_healthy_remote_workers(),
                              session.say)
        return restarts

    def train_envs(self) -> list[Any]:
        """The local env runner's envs (``rllib.num_env_runners: 0``) as the env factory built them (the
        observations :meth:`predict` takes), else ``[]`` (agents/rllib/selfplay.py)."""
        return rllib_selfplay.local_envs(self.algo) if self.algo is not None else []

    def host_league(self, league: Any) -> bool:
        """Remote env runners step the envs: each gets a replica of the league, sent before every
        ``train()`` (agents/rllib/league_remote.py)."""
        self._league = RemoteLeague(self.algo.env_runner_group, league, self.seed)
        return True

    def bind_env(self, env: Any) -> None:
        """Before an evaluation: bring the driver's module up to the learner's weights (APPO broadcasts them
        to the remote env runners only), and keep the env's ``action_masks`` when the run is masked."""
        self._masks = masking.mask_fn(self.cfg, env)
        if self.algo is not None:
            weights, own = self.algo.get_weights()[MODULE], self.module.get_state()
            self.module.set_state({k: v for k, v in weights.items() if k in own})

    def _logits(self, x: np.ndarray) -> torch.Tensor:
        """The RLModule's action-distribution inputs for a batch of raw observations (one forward pass)."""
        if self.obs_stats is not None:
            x = rllib_state.normalize(x, self.obs_stats)
        with torch.no_grad():
            out = self.module.forward_inference({"obs": torch.as_tensor(x, dtype=torch.float32)})
        return out["action_dist_inputs"]  # type: ignore[no-any-return]

    def action_probs(self, obs: Any, legal: np.ndarray) -> np.ndarray | None:
        """Each legal action's probability under the policy for a batch of raw observations (one forward
        pass, illegal actions at 0); None unless the action space is Discrete."""
        if not isinstance(self.action_space, gym.spaces.Discrete):
            return None
        logits = self._logits(np.asarray(obs, dtype=np.float64)).double().numpy()
        logits = np.where(legal, logits, -np.inf)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        return probs / probs.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]

    def predict(self, obs: Any, deterministic: bool = True) -> np.ndarray:
        """Actions for raw observations (single or batched), computed by the RLModule on the CPU."""
        single = np.asarray(obs).shape == self.observation_space.shape
        x = np.asarray(obs, dtype=np.float64)
        inputs = self._logits(x[None] if single else x)
        if self._masks is not None:  # legal actions only (masked runs: the bound env's mask now)
            inputs = masking.mask_logits(inputs, self._masks())
        actions = rllib_actions.pick(self.action_space, inputs, deterministic, self.spec.squashed)
        return actions[0] if single else actions

    # -- checkpoints ------------------------------------------------------------------------------------
    def save(self, path: Path, meta: dict[str, Any] | None = None) -> Path:
        """RLModule weights, optimiser state, obs filter (and SAC's α) as tensors plus JSON,
        written atomically.

        SAC's replay buffer is not saved: a resume refills it (``agent.learning_starts``) and is not exact.
        """
        weights = self.algo.get_weights()[MODULE] if self.algo is not None else self.module.get_state()
        tensors = {f"module/{k}": torch.as_tensor(np.asarray(v)) for k, v in weights.items()}
        norm = (rllib_state.save_obs_stats(self.obs_stats, tensors, self.cfg.agent.normalize_reward)
                if self.obs_stats is not None else None)
        optimizer = rllib_state.save_optimizer(self.algo, tensors) if self.algo is not None else None
        if self.algo is not None and self.spec.squashed:
            tensors["sac/log_alpha"] = rllib_state.read_log_alpha(self.algo)
        body = {**checkpoint.base_meta("rllib", self.cfg.agent.algo, self.num_timesteps, self.seed,
                                       (self.observation_space, self.action_space),
                                       self.cfg.model_dump(mode="json")),
                "normalize": norm, "optimizer": optimizer, "replay_buffer": False, **(meta or {})}
        return checkpoint.save(path, tensors, body)

    @classmethod
    def load(cls, ckpt: checkpoint.Checkpoint, cfg: RunConfig, env: ResolvedEnv, *,
             for_training: bool = False, seed: int = 0) -> RLlibBackend:
        """Restore weights: into a bare RLModule for evaluation (no Ray), or into a new algorithm
        to resume."""
        tensors, header, meta, path = ckpt.tensors, ckpt.header, ckpt.header.extra, ckpt.path
        tensorcheck.check_rllib(ckpt)  # every tensor, before anything is built from them
        weights = {k[len("module/"):]: v.numpy() for k, v in tensors.items() if k.startswith("module/")}
        spaces = header.spaces()
        stats = rllib_state.load_obs_stats(tensors, meta)
        algo = header.algo
        if algo != cfg.agent.algo:
            raise CheckpointError(f"checkpoint {str(path)!r} holds an RLlib {algo.upper()} policy, but the "
                                  f"config asks for --algo {cfg.agent.algo}; use the run's own config.yaml")
        if for_training:
            backend = cls.create(cfg, seed, env, start_step=header.num_timesteps)
            checkpoint.check_spaces(header, backend.observation_space, backend.action_space,
                                    f"resume from {path}")
            backend._set_weights(weights)
            if meta.get("optimizer"):
                rllib_state.load_optimizer(backend.algo, tensors, meta["optimizer"])
            if "sac/log_alpha" in tensors:
                rllib_state.write_log_alpha(backend.algo, tensors["sac/log_alpha"])
            if stats is not None:
                rllib_state.write_obs_filter(backend.algo, stats)
                backend.obs_stats = stats
            if backend.spec.squashed:
                print(f"note: RLlib {algo.upper()} checkpoints hold no replay buffer; the resumed run "
                      f"refills it ({cfg.agent.learning_starts:,} steps before updates), so the resume is "
                      "not exact", flush=True)
            backend.num_timesteps = backend._offset = header.num_timesteps
            return backend
        try:
            module = rllib_algos.build_module(cfg, algo, spaces, weights)  # a board network: its layout
            module.set_state(weights)
        except (RuntimeError, KeyError, ValueError) as e:  # ValueError: a board layout that fits no board
            raise CheckpointError(f"checkpoint {str(path)!r} does not fit this policy ({e})") from e
        return cls(cfg, header.seed if header.seed is not None else seed, None, module, spaces,
                   header.num_timesteps, stats)

    def _set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Load weights into the learners, then push them to every env runner."""
        from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, COMPONENT_RL_MODULE

        self.algo.set_state(
            {COMPONENT_LEARNER_GROUP: {COMPONENT_LEARNER: {COMPONENT_RL_MODULE: {MODULE: weights}}}})
        def _load(runner: Any) -> None:
            own = runner.module.get_state()
            runner.module.set_state({k: v for k, v in weights.items() if k in own})

        self.algo.env_runner_group.foreach_env_runner(_load, local_env_runner=True)

    def close(self) -> None:
        """Stop the algorithm and the private local Ray."""
        self._runners.detach()
        if self.algo is not None:
            stop_algo(self.algo)  # bounded: a runner stuck in an env step is killed
            self.algo = None
            if not self.cfg.rllib.address:
                localray.shutdown()


def _health(nondiff: dict[str, Any], session: Session, group: Any, notes: faultnotes.FaultNotes
            ) -> dict[str, float]:
    """Feed one iteration's fault sums from the env runners, with an example of each kind (``notes``), to the
    session's health (console lines, the run-wide restart budget); the runners' step-latency percentiles."""
    def count(value: Any) -> int:  # RLlib reports a sum that saw no value in this iteration as NaN
        return int(value) if isinstance(value, int | float | np.number) and np.isfinite(value) else 0

    by_kind = {str(k): count(v) for k, v in (nondiff.get("faults") or {}).items()}
    budget = nondiff.get("budget")
    session.health.observe_counts(by_kind, restarts=count(nondiff.get("restarts")),
                                  budgeted_restarts=count(nondiff.get("budgeted_restarts")),
                                  budget=count(budget) if count(budget) > 0 else None,
                                  examples=notes.latest(group, any(by_kind.values())))
    out: dict[str, float] = {}
    latency = nondiff.get("step_ms")
    if isinstance(latency, dict):  # {50: ms, 99: ms} over the last LATENCY_WINDOW steps of every runner
        for q in (50, 99):
            value = latency.get(q, latency.get(str(q)))
            if value is not None:
                out[f"env/step_latency_ms_p{q}"] = float(value)
    return out
