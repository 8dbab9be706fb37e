"""The run-config schema (YAML → pydantic), dotted ``--set`` overrides and friendly validation errors."""

from __future__ import annotations

import difflib
import logging
import re
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from agents.errors import UserError
from agents.run.tokens import DEFAULT_ENV_VAR, REDACTED, TokenSource
from envs.registry import parse_assignment

log = logging.getLogger(__name__)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EnvConfig(BaseModel):
    """The env section: ``id`` plus any keyword argument of the adapter (checked against its signature)."""

    model_config = ConfigDict(extra="allow")

    id: str | None = None
    """Short name, Gymnasium id or ``module:Class``; ``--env`` overrides it."""
    packages: list[str] = Field(default_factory=list)
    """Modules imported before the env is made (``--env-package``); their import registers adapters."""
    max_episode_steps: int | None = Field(default=None, gt=0)
    """Override the env's time limit."""
    eval_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Adapter keyword arguments that replace the training ones in evaluation envs (periodic eval and
    evaluate.py), e.g. ``{clip_rewards: false}`` so that reported returns are the raw score."""
    nan_policy: Literal["truncate", "clip", "raise"] = "truncate"
    """What to do with an invalid observation or reward (NaN, inf, wrong dtype/shape, out of bounds):
    end the episode, repair the values, or stop. Every case is recorded as ``env/faults_by_kind``."""
    wrappers: list[Any] = Field(default_factory=list)
    """Gymnasium wrappers applied in order around the env in every worker, on both backends: a built-in name
    (``resize``, ``grayscale``, ``frame_stack``, ``frame_skip``) or an import path (``module:Class``), alone
    or as ``{name: {kwarg: value}}``, e.g. ``[{resize: {shape: [84, 84]}}, grayscale]``. The image
    built-ins also transform every image inside a Dict observation."""
    drop_keys: list[str] = Field(default_factory=list)
    """Observation keys left out of a Dict (or Tuple, by index) observation. Non-numeric ones (``Text``) are
    dropped anyway, with one line saying so; list them here to silence it."""
    token: str | None = None
    """The bridge token as a literal (``--set env.token=…``). Discouraged: ``ps`` shows command lines. It is
    written everywhere as ``'***'``; a config holding ``'***'`` takes the token from ``NONDIFF_TOKEN`` (or
    ``token_env``) again."""
    token_file: str | None = None
    """Path of a file holding the bridge token, readable by its owner only (``chmod 600``); read where the env
    is built, so it must exist on every machine that runs env workers. The path is kept, the token is not."""
    token_env: str | None = None
    """Name of the env var holding the bridge token; unset: ``NONDIFF_TOKEN``, passed to any adapter that
    takes a ``token`` when it is set. Workers inherit it."""

    @field_validator("token", mode="before")
    @classmethod
    def _token_text(cls, v: Any) -> Any:
        return None if v is None or v == "" else str(v)  # a number given with --set is a token too

    @field_validator("wrappers")
    @classmethod
    def _wrapper_items(cls, v: list[Any]) -> list[Any]:
        from envs.wrappers import parse_wrappers

        parse_wrappers(v)  # the shape of each item; imports happen where the env is built
        return v

    @field_validator("eval_kwargs")
    @classmethod
    def _no_token_in_eval_kwargs(cls, v: dict[str, Any]) -> dict[str, Any]:
        if "token" in v:
            raise ValueError("the bridge token is not an eval_kwargs key: env.token_env or env.token_file applies "
                             "to evaluation envs too")
        return v

    @model_validator(mode="after")
    def _one_token_source(self) -> EnvConfig:
        given = [n for n in ("token", "token_file", "token_env") if getattr(self, n)]
        if len(given) > 1:
            raise ValueError(f"give the bridge token one way, not {' and '.join('env.' + n for n in given)}: "
                             f"an env var (env.token_env, default {DEFAULT_ENV_VAR}) or env.token_file")
        return self

    @field_serializer("token")
    def _redact(self, v: str | None) -> str | None:
        return REDACTED if v else None

    def adapter_kwargs(self) -> dict[str, Any]:
        """Every key that is not a framework field: the adapter's keyword arguments (never the token)."""
        return dict(self.model_extra or {})

    def token_source(self) -> TokenSource:
        """Where this env's bridge token comes from; :func:`agents.run.tokens.resolve` reads it."""
        return TokenSource(literal=self.token, file=self.token_file, env_var=self.token_env)


class AgentConfig(_Section):
    """Backend-neutral hyperparameters; both backends map these names onto their own.

    Each algorithm accepts the shared keys plus its own (:data:`ALGO_KEYS`); :func:`check_algorithm` refuses
    another algorithm's key given for a new run, and an algorithm that does not fit the action space.
    """

    backend: Literal["sb3", "rllib", "blackbox"] = "sb3"
    """Which backend trains: ``sb3`` on one machine, ``rllib`` on a Ray cluster, ``blackbox`` the inverse-problem
    strategies (``--algo cma|amortised|surrogate``, settings in ``blackbox:``)."""
    algo: Literal["ppo", "a2c", "sac", "td3", "cma", "amortised", "surrogate"] = "ppo"
    """Algorithm: on-policy ``ppo``, ``a2c`` (any action space); off-policy ``sac``, ``td3`` (Box actions only,
    SB3 backend). A config's ``algos:`` map gives each algorithm its own hyperparameters."""
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
    """Minibatch size of PPO, SAC and TD3 updates; None takes the algorithm's default (PPO 64, SAC/TD3 256)."""
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
    buffer_size: int = Field(default=1_000_000, gt=0)
    """SAC/TD3: replay buffer capacity in transitions (memory: capacity × (2 × observation + action) floats)."""
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

    @model_validator(mode="after")
    def _blackbox_algo(self) -> AgentConfig:
        strategies = ("cma", "amortised", "surrogate")
        if (self.backend == "blackbox") != (self.algo in strategies):
            raise ValueError(f"--backend blackbox runs --algo {'|'.join(strategies)}, and only it does; got backend "
                             f"{self.backend!r} with algo {self.algo!r}")
        return self

    @field_validator("net_arch")
    @classmethod
    def _positive_layers(cls, v: list[int]) -> list[int]:
        if not v or any(n <= 0 for n in v):
            raise ValueError("net_arch must be a non-empty list of positive layer sizes, e.g. [64, 64]")
        return v


class TrainConfig(_Section):
    """Budget, hardware and bookkeeping."""

    timesteps: int = Field(default=100_000, gt=0)
    """Total env steps to train for (``--timesteps``)."""
    seed: int | None = None
    """Seed for Python, NumPy, torch and the envs; drawn and recorded when absent."""
    num_envs: int = Field(default=8, gt=0)
    """Parallel training envs (``--num-envs``)."""
    vec_env: Literal["dummy", "subproc", "thread"] = "dummy"
    """``dummy`` steps envs in-process, one after another; ``subproc`` runs one worker process per env, and a
    worker that dies or hangs is respawned (agents/sb3/vecenv.py) instead of ending training; ``thread`` steps
    in-process envs concurrently, one thread each, for envs whose step mostly waits (a remote robot, a
    network service): N such envs then take about one wait per step instead of N (docs/benchmarks.md, P4)."""
    worker_timeout: float = Field(default=60.0, gt=0)
    """Seconds a subprocess worker may take for one step before it is replaced as hung."""
    max_worker_restarts: int = Field(default=100, ge=0)
    """Subprocess worker respawns allowed over the whole run."""
    start_method: Literal["forkserver", "spawn", "fork"] = "forkserver"
    """How subprocess workers start."""
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
    checkpoint_replay: bool = True
    """SAC/TD3: store the replay buffer in every checkpoint (as tensors), so a resume is exact. ``false`` keeps
    checkpoints small for very large buffers; a resume then starts with an empty buffer and is not exact."""


class EvalConfig(_Section):
    """Periodic deterministic evaluation on separate envs during training."""

    every: int = Field(default=25_000, ge=0)
    """Evaluate every this many env steps; 0 disables periodic evaluation."""
    episodes: int = Field(default=20, gt=0)
    """Episodes per evaluation."""
    deterministic: bool = True
    """Use the policy's mean/argmax action."""


class RLlibSection(_Section):
    """RLlib-only settings (``--backend rllib``); the shared hyperparameters come from ``agent``."""

    address: str | None = None
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
    extra: dict[str, Any] = Field(default_factory=dict)
    """Passed to ``AlgorithmConfig.update_from_dict`` as is."""


class BlackBoxSection(_Section):
    """Settings of the black-box strategies (``--backend blackbox``); ``train.timesteps`` counts forward calls."""

    calls_per_instance: int = Field(default=200, gt=0)
    """``cma``: forward-call budget of CMA-ES per instance."""
    sigma0: float = Field(default=0.2, gt=0)
    """``cma``: initial CMA-ES step size, in normalised parameter units."""
    popsize: int | None = Field(default=None, gt=1)
    """``cma``: CMA-ES population size; None takes the ``cma`` package's default (4 + 3 ln n)."""
    refine_calls: int = Field(default=0, ge=0)
    """``amortised``/``surrogate``: CMA-ES calls that refine the answer on the real black box (0: none)."""
    refine_sigma: float = Field(default=0.05, gt=0)
    """Initial step size of that refinement."""
    batch: int = Field(default=256, gt=0)
    """``amortised``/``surrogate``: prior draws (one forward call each) added per training round."""
    epochs: int = Field(default=20, gt=0)
    """``amortised``/``surrogate``: epochs over the whole bank of pairs per training round."""
    minibatch: int = Field(default=128, gt=0)
    """Minibatch size of the network updates."""
    hidden: list[int] = Field(default_factory=lambda: [256, 256])
    """Hidden layer sizes of the inverse network or the surrogate."""
    learning_rate: float = Field(default=1e-3, gt=0)
    """Adam step size of the network updates."""
    starts: int = Field(default=8, gt=0)
    """``surrogate``: starting points of the descent (the first guess and prior draws); one real call each."""
    gd_steps: int = Field(default=200, ge=0)
    """``surrogate``: Adam steps on the misfit through the frozen surrogate (0 disables the gradient step)."""
    gd_lr: float = Field(default=0.02, gt=0)
    """``surrogate``: step size of that descent, in normalised parameter units."""
    grad_checks: int = Field(default=4, ge=0)
    """``surrogate``: prior points per round where the surrogate's gradient is checked against finite
    differences of the real black box (3 calls each)."""

    @field_validator("hidden")
    @classmethod
    def _positive_hidden(cls, v: list[int]) -> list[int]:
        if not v or any(n <= 0 for n in v):
            raise ValueError("blackbox.hidden must be a non-empty list of positive layer sizes, e.g. [256, 256]")
        return v


class RunConfig(_Section):
    """A whole run: what ``configs/<env>.yaml`` holds and what the run directory stores resolved."""

    env: EnvConfig = Field(default_factory=EnvConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    rllib: RLlibSection = Field(default_factory=RLlibSection)
    blackbox: BlackBoxSection = Field(default_factory=BlackBoxSection)
    meta: dict[str, Any] = Field(default_factory=dict)
    """Written by nondiff: package versions, the seed (drawn when none was given), the config file and the step
    the run started from; the command lines are in command.txt. Ignored on input."""


SECTIONS: dict[str, type[BaseModel]] = {"env": EnvConfig, "agent": AgentConfig, "train": TrainConfig,
                                        "eval": EvalConfig, "rllib": RLlibSection, "blackbox": BlackBoxSection}


SHARED_AGENT_KEYS = ("backend", "algo", "learning_rate", "lr_schedule", "gamma", "net_arch", "activation",
                     "normalize_obs", "normalize_reward", "policy")
"""``agent:`` keys every algorithm accepts."""
_ON_POLICY = ("n_steps", "batch_size", "n_epochs", "clip_range", "gae_lambda", "ent_coef", "vf_coef", "max_grad_norm",
              "log_std_init", "ortho_init")
_OFF_POLICY = ("batch_size", "buffer_size", "learning_starts", "train_freq", "gradient_steps", "tau", "action_noise",
               "action_noise_std")
ALGO_KEYS: dict[str, tuple[str, ...]] = {
    "ppo": _ON_POLICY,
    "a2c": _ON_POLICY,  # A2C ignores batch_size, n_epochs and clip_range, as it always has
    "sac": (*_OFF_POLICY, "ent_coef", "target_update_interval", "target_entropy"),
    "td3": (*_OFF_POLICY, "policy_delay", "target_policy_noise", "target_noise_clip"),
}
"""The ``agent:`` keys each algorithm accepts beyond :data:`SHARED_AGENT_KEYS`."""
CONTINUOUS_ONLY = ("sac", "td3")
"""Algorithms that need a Box action space."""


def select_algo(raw: dict[str, Any], algo: str | None, source: str) -> None:
    """Merge the chosen algorithm's entry of a config's ``algos:`` map over its sections, in place.

    ``algos: {sac: {agent: {...}, train: {...}}}`` gives each algorithm its own tuned settings in one file;
    the entry of ``algo`` (the ``--algo`` flag, else ``agent.algo``, else ppo) wins over the file's sections,
    and the command line wins over both. The map itself is removed: a resolved config holds no ``algos``.
    """
    algos = raw.pop("algos", None)
    if algos is None:
        return
    if not isinstance(algos, dict):
        raise UserError(f"{source}: 'algos' must map an algorithm to its sections, e.g. algos: {{sac: {{agent: "
                        f"{{tau: 0.01}}}}}}, got {type(algos).__name__}")
    names = list(get_args(AgentConfig.model_fields["algo"].annotation))
    for name, entry in algos.items():
        if name not in names:
            raise UserError(f"{source}: unknown algorithm 'algos.{name}'; {_suggest(str(name), names)}"
                            f"expected one of {', '.join(names)}")
        if not isinstance(entry, dict) or not all(isinstance(v, dict) for v in entry.values()):
            raise UserError(f"{source}: 'algos.{name}' must map sections to settings, e.g. {{agent: {{tau: 0.01}}}}")
    agent: dict[str, Any] = raw["agent"] if isinstance(raw.get("agent"), dict) else {}
    chosen = algos.get(algo or agent.get("algo") or "ppo") or {}
    for section, values in chosen.items():
        if not isinstance(raw.get(section, {}), dict):
            raise UserError(f"{source}: section {section!r} must be a mapping of settings")
        raw.setdefault(section, {}).update(values)


def check_algorithm(cfg: RunConfig, action_space: Any) -> None:
    """Refuse, for a new run, an algorithm that does not fit the action space or a key it does not take.

    Only keys that were given (YAML, ``algos:`` entry, command line) count; defaults never do.

    Raises:
        UserError: one line that names the algorithm and the keys it accepts, or the fix for the action space.
    """
    import gymnasium as gym

    a = cfg.agent
    name = a.algo.upper()
    if a.algo in CONTINUOUS_ONLY and not isinstance(action_space, gym.spaces.Box):
        raise UserError(f"{name} needs a continuous (Box) action space; `--env {cfg.env.id}` has {action_space}: "
                        "use `--algo ppo`")
    if a.ent_coef == "auto" and a.algo != "sac":
        raise UserError(f"agent.ent_coef: auto is SAC's learned entropy coefficient; {name} takes a number "
                        "(the entropy bonus weight, e.g. 0.01)")
    if a.backend != "sb3" or a.algo not in ALGO_KEYS:
        return  # the other backends refuse what they cannot map themselves
    accepted = ALGO_KEYS[a.algo]
    foreign = sorted(k for k in a.model_fields_set if k not in SHARED_AGENT_KEYS and k not in accepted)
    if foreign:
        owners = sorted({o.upper() for o, keys in ALGO_KEYS.items() for k in foreign if k in keys})
        raise UserError(f"--algo {a.algo} does not take {', '.join('agent.' + k for k in foreign)} "
                        f"(a key of {'/'.join(owners)}); remove it or use that algorithm. {name} accepts: "
                        f"{', '.join(SHARED_AGENT_KEYS + accepted)}")
    if "target_entropy" in a.model_fields_set and isinstance(a.ent_coef, float):
        raise UserError("agent.target_entropy applies only with agent.ent_coef: auto (a learned α); remove one")


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}? " if close else ""


def _check_keys(raw: dict[str, Any], source: str) -> None:
    """Reject unknown section and field names with a did-you-mean before pydantic sees them."""
    top = list(RunConfig.model_fields)
    for key, value in raw.items():
        if key not in top:
            raise UserError(f"{source}: unknown section {key!r}; {_suggest(key, top)}expected one of {', '.join(top)}")
        model = SECTIONS.get(key)
        if model is None or model is EnvConfig:
            continue
        if not isinstance(value, dict):
            raise UserError(f"{source}: section {key!r} must be a mapping of settings, got {type(value).__name__}")
        fields = list(model.model_fields)
        for sub in value:
            if sub not in fields:
                raise UserError(f"{source}: unknown key '{key}.{sub}'; {_suggest(str(sub), fields)}"
                                f"valid keys in {key!r}: {', '.join(fields)}")


def validate(raw: dict[str, Any], source: str) -> RunConfig:
    """Build a :class:`RunConfig` from a plain mapping, turning errors into one-line :class:`UserError`."""
    _check_keys(raw, source)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        path = ".".join(str(p) for p in err["loc"])
        got = REDACTED if path.endswith("token") else _redact_input(err.get("input"))
        msg = err["msg"][:1].lower() + err["msg"][1:]
        raise UserError(f"{source}: '{path}' {msg} (got {got!r}); fix the value in the YAML "
                        f"or with --set {path}=VALUE") from e


def _redact_input(value: Any) -> Any:
    """A copy of an invalid input for an error message, with any ``token`` value replaced by ``***``."""
    if isinstance(value, dict):
        return {k: REDACTED if k == "token" and v else _redact_input(v) for k, v in value.items()}
    return value


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping safely, or raise a one-line :class:`UserError`."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {str(p)!r} does not exist; pass --config PATH to a YAML file")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"config file {str(p)!r} is not valid YAML{where}: {getattr(e, 'problem', e)}; "
                        "fix the syntax") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {str(p)!r} must hold a mapping (env:, agent:, train:, eval:), "
                        f"got {type(data).__name__}")
    return data


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one ``--set section.key=value`` in place; the value is parsed as YAML and typed by the schema."""
    key, _, text = assignment.partition("=")
    shown = f"{key}=…" if "token" in text.lower() or "token" in key.lower() else assignment  # never echo a token
    try:  # the one --set parser (envs.registry); a token is taken as typed
        key, value = parse_assignment(assignment)
    except ValueError as e:
        if "=" not in assignment:
            raise UserError(f"--set {shown!r}: expected SECTION.KEY=VALUE, e.g. --set agent.learning_rate=1e-3") from e
        raise UserError(f"--set {shown!r}: {e}") from e
    parts = key.split(".")
    if len(parts) != 2 or not all(parts):
        raise UserError(f"--set {shown!r}: expected SECTION.KEY=VALUE, e.g. --set agent.learning_rate=1e-3")
    section, field = parts
    if section in SECTIONS and SECTIONS[section] is not EnvConfig:
        fields = SECTIONS[section].model_fields
        if field not in fields:
            raise UserError(f"--set {shown!r}: unknown key '{section}.{field}'; "
                            f"{_suggest(field, list(fields))}valid keys in {section!r}: {', '.join(fields)}")
    raw.setdefault(section, {})
    if not isinstance(raw[section], dict):
        raise UserError(f"--set {section}.{field}=…: section {section!r} is not a mapping")
    if (section, field) == ("env", "token") and value not in (None, "", REDACTED):
        log.warning("--set env.token=… shows the token to every user of this machine in `ps`; export "
                    "%s=… instead, or set env.token_file: PATH (chmod 600)", DEFAULT_ENV_VAR)
    raw[section][field] = value


_TOKEN_ARG = re.compile(r"^(?P<keep>(?:-[\w-]*=)?\s*env\s*\.\s*token\s*=).*$", re.DOTALL)


def redact_argv(argv: list[str]) -> list[str]:
    """The command line with every bridge token replaced by ``***``, for command.txt and logs.

    ``--set env.token=X`` and ``--set=env.token=X`` (and argparse's abbreviations such as ``--se=``) become
    ``env.token=***``; ``env.token_file`` and ``env.token_env`` are kept, they hold no secret.
    """
    return [_TOKEN_ARG.sub(lambda m: m.group("keep") + REDACTED, arg) for arg in argv]


def dump(cfg: RunConfig) -> str:
    """The resolved config as YAML, in schema order."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
