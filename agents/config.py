"""The run-config schema (YAML → pydantic), dotted ``--set`` overrides and friendly validation errors."""

from __future__ import annotations

import difflib
import logging
import re
from pathlib import Path
from typing import Any, Literal

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
    """Backend-neutral hyperparameters; both backends map these names onto their own."""

    backend: Literal["sb3", "rllib"] = "sb3"
    """Which backend trains: ``sb3`` on one machine, ``rllib`` on a Ray cluster."""
    algo: Literal["ppo", "a2c"] = "ppo"
    """Policy-gradient algorithm."""
    learning_rate: float | None = Field(default=None, gt=0)
    """Optimiser step size; None takes the algorithm's default (PPO 3e-4, A2C 7e-4)."""
    lr_schedule: Literal["constant", "linear"] = "constant"
    """``linear`` anneals the learning rate to 0 over the run."""
    gamma: float = Field(default=0.99, gt=0, le=1)
    """Discount factor."""
    gae_lambda: float = Field(default=0.95, ge=0, le=1)
    """GAE λ."""
    n_steps: int | None = Field(default=None, gt=0)
    """Steps collected per env before each update; None takes the algorithm's default (PPO 2048, A2C 5)."""
    batch_size: int = Field(default=64, gt=0)
    """Minibatch size for PPO updates."""
    n_epochs: int = Field(default=10, gt=0)
    """PPO epochs over each rollout."""
    clip_range: float = Field(default=0.2, gt=0)
    """PPO clipping range."""
    ent_coef: float = Field(default=0.0, ge=0)
    """Entropy bonus weight."""
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


class RunConfig(_Section):
    """A whole run: what ``configs/<env>.yaml`` holds and what the run directory stores resolved."""

    env: EnvConfig = Field(default_factory=EnvConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    rllib: RLlibSection = Field(default_factory=RLlibSection)
    meta: dict[str, Any] = Field(default_factory=dict)
    """Written by nondiff: versions, command line, the seed that was drawn. Ignored on input."""


SECTIONS: dict[str, type[BaseModel]] = {"env": EnvConfig, "agent": AgentConfig, "train": TrainConfig,
                                        "eval": EvalConfig, "rllib": RLlibSection}


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
