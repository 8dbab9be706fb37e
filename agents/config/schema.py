"""The run-config schema: one pydantic model per section, every field documented under it (the ``env``
section is in :mod:`agents.config.env`, the ``blackbox`` section in :mod:`agents.config.blackbox`)."""

from __future__ import annotations

import difflib
import logging
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from agents.config.blackbox import BlackBoxSection
from agents.config.env import EnvConfig
from agents.config.policies import POLICY_ALGOS, PolicySpec
from agents.config.section import Section, layer_sizes
from agents.config.selfplay import SelfPlaySection
from envs.reach import Reach

log = logging.getLogger(__name__)


class AgentConfig(Section):
    """Backend-neutral hyperparameters; both backends map these names onto their own.

    Each algorithm accepts the shared keys plus its own (:data:`ALGO_KEYS`); :func:`check_algorithm` refuses
    another algorithm's key given for a new run, and an algorithm that does not fit the action space.
    """

    backend: Literal["sb3", "rllib", "blackbox"] = "sb3"
    """Which backend trains: ``sb3`` on one machine, ``rllib`` on a Ray cluster, ``blackbox`` the
    inverse-problem strategies (``--algo cma|amortised|surrogate|chain``, settings in ``blackbox:``)."""
    algo: Literal["ppo", "a2c", "appo", "sac", "td3", "cma", "amortised", "surrogate", "chain"] = "ppo"
    """Algorithm: on-policy ``ppo``, ``a2c`` (any action space); asynchronous ``appo`` (RLlib backend);
    off-policy ``sac`` (both backends), ``td3`` (SB3) for Box actions only. A config's ``algos:`` map gives
    each algorithm its own hyperparameters."""
    learning_rate: float | None = Field(default=None, gt=0)
    """Optimiser step size; None takes the algorithm's default (PPO 3e-4, A2C 7e-4, SAC 3e-4, TD3 1e-3)."""
    lr_schedule: Literal["constant", "linear"] = "constant"
    """``linear`` anneals the learning rate to 0 over the run."""
    gamma: float = Field(default=0.99, gt=0, le=1)
    """Discount factor."""
    gae_lambda: float = Field(default=0.95, ge=0, le=1)
    """GAE λ."""
    n_steps: int | None = Field(default=None, gt=0)
    """Steps collected per env before each update; None takes the algorithm's default (PPO 2048, A2C 5)."""
    batch_size: int | None = Field(default=None, gt=0)
    """Minibatch size of PPO, SAC and TD3 updates; None takes the algorithm's default (PPO 64, SAC/TD3
    256)."""
    n_epochs: int = Field(default=10, gt=0)
    """PPO epochs over each rollout."""
    clip_range: float = Field(default=0.2, gt=0)
    """PPO clipping range."""
    ent_coef: float | Literal["auto"] | None = None
    """PPO/A2C: entropy bonus weight (None: 0). SAC: entropy coefficient α, or ``auto`` to learn it towards
    ``target_entropy`` (None: ``auto``, starting at 1.0)."""
    vf_coef: float = Field(default=0.5, ge=0)
    """Value-loss weight."""
    max_grad_norm: float = Field(default=0.5, gt=0)
    """Gradient clipping norm."""
    net_arch: list[int] = Field(default_factory=lambda: [64, 64])
    """Hidden layer sizes, shared shape for policy and value networks."""
    activation: Literal["tanh", "relu"] = "tanh"
    """Hidden-layer activation."""
    log_std_init: float = 0.0
    """Initial log standard deviation of Gaussian policies."""
    ortho_init: bool = True
    """Orthogonal weight initialisation."""
    normalize_obs: bool = False
    """Keep running mean/std of observations and normalise them (stored in every checkpoint)."""
    normalize_reward: bool = False
    """Scale rewards by a running estimate of the return's std."""
    policy: Literal["auto", "mlp", "cnn", "multi"] = "auto"
    """Network family; ``auto`` picks cnn for images, multi for Dict spaces, mlp otherwise."""
    cnn: Literal["nature", "small"] = "nature"
    """The CNN of an image policy: ``nature`` (Mnih et al. 2015, 3 conv layers and 512 features, for 84×84) or
    ``small`` (2 conv layers and 256 features, for 42×42 frames; about 1/14 of the Nature CNN's FLOPs on
    42×42, docs/results.md)."""
    extractor: Literal["auto", "board_cnn"] = "auto"
    """The feature extractor: ``auto`` follows ``policy``; ``board_cnn`` is three 3×3 convolutions over a
    board game's small rank-3 observation (e.g. connect four's 6×7×2 planes, agents/boardnet.py; SB3's
    extractor, RLlib PPO/APPO's encoder)."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """The CNN's forward and backward passes in fp32 or under bf16 autocast (a CPU with AVX-512 bf16, or a
    GPU); heads, losses and weights stay fp32."""
    buffer_size: int = Field(default=1_000_000, gt=0)
    """SAC/TD3: replay buffer capacity in transitions (memory: capacity × (2 × observation + action)
    floats)."""
    learning_starts: int = Field(default=100, ge=0)
    """SAC/TD3: env steps of uniform-random actions before the first update."""
    train_freq: int = Field(default=1, gt=0)
    """SAC/TD3: vector-env steps between updates (each one is ``train.num_envs`` env steps)."""
    gradient_steps: int = Field(default=1, ge=-1)
    """SAC/TD3: gradient steps per update; -1 takes one per env step collected (``train_freq × num_envs``)."""
    tau: float = Field(default=0.005, gt=0, le=1)
    """SAC/TD3: Polyak coefficient of the target networks' soft update."""
    target_update_interval: int = Field(default=1, gt=0)
    """SAC: gradient steps between target-network updates."""
    target_entropy: float | Literal["auto"] = "auto"
    """SAC: the entropy ``ent_coef: auto`` aims for; ``auto`` is −(action dimensions)."""
    action_noise: Literal["none", "normal", "ornstein_uhlenbeck"] | None = None
    """SAC/TD3: exploration noise added to actions; None takes ``normal`` for TD3 and ``none`` for SAC."""
    action_noise_std: float = Field(default=0.1, gt=0)
    """SAC/TD3: standard deviation of ``action_noise``, in units of the [-1, 1]-scaled action."""
    policy_delay: int = Field(default=2, gt=0)
    """TD3: critic updates per actor (and target) update."""
    target_policy_noise: float = Field(default=0.2, ge=0)
    """TD3: std of the smoothing noise added to target actions."""
    target_noise_clip: float = Field(default=0.5, ge=0)
    """TD3: clip of the target smoothing noise."""
    her: Literal["auto", True, False] = "auto"
    """SAC/TD3: Hindsight Experience Replay (SB3's ``HerReplayBuffer``, agents/sb3/her.py). ``auto`` turns it
    on for a goal-conditioned env (a Dict observation with ``observation``, ``achieved_goal`` and
    ``desired_goal``, and an env ``compute_reward``), ``false`` keeps the plain replay buffer, ``true``
    requires such an env."""
    her_n_sampled_goal: int = Field(default=4, gt=0)
    """SAC/TD3 with HER: relabelled transitions per real one (a share of 1 − 1/(n + 1) of each batch)."""
    her_goal_selection_strategy: Literal["future", "final", "episode"] = "future"
    """SAC/TD3 with HER: where a relabelled goal comes from: a later step of the same episode, its last step,
    or any step of it."""

    @model_validator(mode="after")
    def _blackbox_algo(self) -> AgentConfig:
        strategies = ("cma", "amortised", "surrogate", "chain")
        if (self.backend == "blackbox") != (self.algo in strategies):
            fix = (f"add --algo {strategies[0]} (or {', '.join(strategies[1:])})"
                   if self.backend == "blackbox" else "add --backend blackbox, or choose another --algo")
            raise ValueError(f"--backend blackbox runs --algo {'|'.join(strategies)}, and only it does; "
                             f"got backend {self.backend!r} with algo {self.algo!r}: {fix}")
        return self

    @model_validator(mode="after")
    def _extractor_on_sb3(self) -> AgentConfig:
        if self.extractor == "auto" or self.backend == "sb3" or (self.backend == "rllib"
                                                                 and self.algo in ("ppo", "appo")):
            return self  # RLlib: the same network as its PPO/APPO module's encoder (agents/rllib/board.py)
        raise ValueError(f"agent.extractor {self.extractor} is built by --backend sb3, and by --backend "
                         f"rllib for --algo ppo or appo; got backend {self.backend!r} with algo "
                         f"{self.algo!r}: use one of those or agent.extractor auto")

    @field_validator("net_arch")
    @classmethod
    def _positive_layers(cls, v: list[int]) -> list[int]:
        return layer_sizes(v, "net_arch", "[64, 64]")


class TrainConfig(Section):
    """Budget, hardware and bookkeeping."""

    timesteps: int = Field(default=100_000, gt=0)
    """Total env steps to train for (``--timesteps``)."""
    seed: int | None = Field(default=None, ge=0, lt=2**32)
    """Seed for Python, NumPy, torch and the envs (0 to 2**32 - 1, NumPy's range); drawn and recorded when
    absent."""
    num_envs: int = Field(default=8, gt=0)
    """Parallel training envs (``--num-envs``)."""
    vec_env: Literal["dummy", "subproc", "thread", "threadproc", "ale"] = "dummy"
    """``dummy`` steps envs in-process, one after another; ``subproc`` runs one worker process per env, and a
    worker that dies or hangs is respawned (envs/vector/subproc.py) instead of ending training; ``thread``
    steps in-process envs concurrently, one thread each, for envs whose step mostly waits (a remote robot, a
    network service): N such envs then take about one wait per step instead of N (docs/benchmarks.md, P4);
    ``threadproc`` spreads such envs over ``train.env_workers`` worker processes (one GIL each), each stepping
    its envs with threads, with the ``subproc`` watchdog (envs/vector/threadproc.py); ``ale`` (``--env game``
    on sb3 only) steps the games in ALE's own C++ vector env, preprocessing included, with
    ``train.env_workers`` threads: the same observations at less CPU per step (envs/vector/ale.py,
    docs/results.md); it resizes the whole screen, so it refuses ``env.crop`` (``--set env.crop=null``)."""
    env_workers: int = Field(default=2, gt=0)
    """Worker processes of ``vec_env: threadproc`` (at most ``num_envs``; the envs are split evenly), or ALE's
    C++ threads with ``vec_env: ale``."""
    batch_guard: bool = True
    """Validate each vector step's observations and rewards in one batched pass (envs/vector/batch_guard.py)
    instead of once per env; the faults and policies are the same. False: the per-env checks (for
    comparison)."""
    worker_timeout: float = Field(default=60.0, gt=0)
    """Seconds a subprocess worker may take for one step before it is replaced as hung."""
    max_worker_restarts: int = Field(default=100, ge=0)
    """Subprocess worker respawns allowed over the whole run."""
    start_method: Literal["forkserver", "spawn", "fork"] = "forkserver"
    """How subprocess workers start."""
    worker_threads: int = Field(default=1, gt=0)
    """Native threads (BLAS, OpenMP) per env worker process of ``subproc`` and ``threadproc``. 1: workers run
    one per core, and pools that spin between calls take the cores of the workers beside them (two Devito
    workers: 0.44× → 0.93× of twice one process, docs/results.md)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Torch device for the learner (``--device``)."""
    threads: int = Field(default=1, gt=0)
    """torch intra-op threads. 1 is measured fastest for small MLPs on 2 cores (see docs/results.md)."""
    checkpoint_every: int = Field(default=50_000, gt=0)
    """Write a checkpoint every this many env steps."""
    keep_checkpoints: int = Field(default=3, gt=0)
    """How many periodic checkpoints to keep."""
    log_every: int = Field(default=10_000, gt=0)
    """Steps between log lines when the progress bar is off."""
    max_memory_gb: float | None = Field(default=None, gt=0)
    """The most memory (GiB) the trainer and its processes (env workers, programs, a local Ray) may hold
    together; past it the run writes ``final/`` and stops (exit 1), as it does anyway when the machine is
    nearly out of memory and the trainer's processes grew (agents/run/memwatch.py). Unset: the machine's floor
    alone."""
    checkpoint_replay: bool = True
    """SAC/TD3: store the replay buffer in every checkpoint (as tensors), so a resume is exact. ``false``
    keeps checkpoints small for very large buffers; a resume then starts with an empty buffer and is not
    exact."""


class EvalConfig(Section):
    """Periodic deterministic evaluation on separate envs during training."""

    every: int = Field(default=25_000, ge=0)
    """Evaluate every this many env steps; 0 disables periodic evaluation."""
    episodes: int = Field(default=20, gt=0)
    """Episodes per evaluation."""
    deterministic: bool = True
    """Use the policy's mean/argmax action."""
    max_episode_steps: int | None = Field(default=None, gt=0)
    """Cut an evaluation episode after this many steps (None: the env's time limit, else 27,000), with a line
    saying so: a policy stuck in an env without a time limit must not hang evaluation."""


class RLlibSection(Section):
    """RLlib-only settings (``--backend rllib``); the shared hyperparameters come from ``agent``."""

    address: Annotated[str | None, Reach.CONTACT.mark("join the Ray cluster at")] = None
    """Ray cluster address (``--ray-address``); None starts a private local Ray on loopback."""
    num_env_runners: int = Field(default=1, ge=0)
    """Remote env-runner actors (``--num-env-runners``); 0 samples in the driver."""
    envs_per_runner: int | None = Field(default=None, gt=0)
    """Envs per runner (``--envs-per-runner``); None splits ``train.num_envs`` across the runners."""
    num_learners: int = Field(default=0, ge=0)
    """Remote learner actors; 0 learns in the driver. ``--device cuda`` gives each learner a GPU."""
    num_cpus: int | None = Field(default=None, gt=0)
    """CPUs a private local Ray may use (None: all)."""
    dashboard: bool = False
    """Start the Ray dashboard with a private local Ray (off: it serves code execution on a port)."""
    max_runner_restarts: int = Field(default=10, ge=0)
    """Env-runner restarts allowed over the whole run (a runner whose process died or whose ``sample()``
    raised is restarted by Ray; each restart is said on the console). The next failure ends the run with a
    checkpoint and one line naming the runner's last error (agents/rllib/runners.py); 0: the first ends it."""
    extra: Annotated[dict[str, Any], Reach.RUN.mark("hand Ray, as they are, the settings")] = Field(
        default_factory=dict)
    """Passed to ``AlgorithmConfig.update_from_dict`` as is."""


ALE_ENV_IDS = ("game", "nondiff/Game-v0")
"""The env ids ``train.vec_env: ale`` serves (the ``game`` adapter)."""


class RunConfig(Section):
    """A whole run: what ``configs/<env>.yaml`` holds and what the run directory stores resolved."""

    env: EnvConfig = Field(default_factory=EnvConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    rllib: RLlibSection = Field(default_factory=RLlibSection)
    blackbox: BlackBoxSection = Field(default_factory=BlackBoxSection)
    selfplay: SelfPlaySection = Field(default_factory=SelfPlaySection)
    policies: dict[str, PolicySpec] = Field(default_factory=dict)
    """Several policies on a PettingZoo parallel env (``--backend sb3``: PPO or A2C; ``rllib``: PPO, one
    RLModule per policy): policy name -> its
    agent-id patterns and ``agent:`` overrides (agents/config/policies.py). Empty: one policy for all
    agents."""
    meta: dict[str, Any] = Field(default_factory=dict)
    """Written by nondiff: package versions, the seed (drawn when none was given), the config file and the
    step the run started from; the command lines are in command.txt. Ignored on input."""

    @model_validator(mode="after")
    def _threadproc_is_sb3(self) -> RunConfig:
        if self.train.vec_env == "threadproc" and self.agent.backend != "sb3":
            raise ValueError(f"train.vec_env: threadproc is for the sb3 backend, got agent.backend: "
                             f"{self.agent.backend}; on rllib the env runners are the processes: use "
                             "train.vec_env: thread with rllib.num_env_runners")
        if self.train.vec_env == "ale" and (self.env.id not in ALE_ENV_IDS or self.agent.backend != "sb3"):
            raise ValueError("train.vec_env: ale is ALE's own vector env, for --env game on the sb3 backend; "
                             f"got env {self.env.id!r} on {self.agent.backend}: use train.vec_env: dummy (or "
                             "another choice) for this run")
        if self.train.vec_env == "ale" and (self.env.wrappers or self.env.drop_keys):
            raise ValueError("train.vec_env: ale preprocesses inside ALE and applies no env.wrappers or "
                             "env.drop_keys; drop them or use train.vec_env: dummy")
        if self.train.vec_env == "ale" and (crop := self.env.adapter_kwargs().get("crop")) is not None:
            raise ValueError(f"train.vec_env: ale cannot crop frames (env.crop is {crop!r}):"
                             " ALE's vector env resizes the whole screen; set train.vec_env: dummy, or leave "
                             "env.crop out")
        return self._policy_map()

    def _policy_map(self) -> RunConfig:
        if not self.policies:
            return self
        if self.agent.backend not in ("sb3", "rllib"):
            raise ValueError(f"policies: (several policies) runs on --backend sb3 or rllib, not on "
                             f"{self.agent.backend}; use --backend sb3, or leave policies: out for one "
                             "policy shared by all agents")
        if self.agent.algo not in POLICY_ALGOS:
            raise ValueError(f"policies: (several policies) trains --algo {'|'.join(POLICY_ALGOS)}, got "
                             f"{self.agent.algo!r}; use --algo ppo or --algo a2c")
        if self.agent.backend == "rllib" and (self.agent.normalize_obs or self.agent.normalize_reward):
            raise ValueError("policies: (several policies) on --backend rllib does not normalise "
                             "observations or rewards yet; set agent.normalize_obs and "
                             "agent.normalize_reward to false, or train the map on --backend sb3 (each "
                             "policy keeps its own statistics)")
        return self


SECTIONS: dict[str, type[BaseModel]] = {"env": EnvConfig, "agent": AgentConfig, "train": TrainConfig,
                                        "eval": EvalConfig, "rllib": RLlibSection,
                                        "blackbox": BlackBoxSection, "selfplay": SelfPlaySection}


def suggest(word: str, options: list[str]) -> str:
    """``did you mean 'x'? `` for the closest option, or nothing."""
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}? " if close else ""
