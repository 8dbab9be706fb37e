"""The ``search:`` section of a config file and the typed default search spaces of ``train.py --optimize``.

A space maps a config key (``agent.learning_rate``) to a :class:`FloatRange`, an :class:`IntRange` or a
:class:`Choice`. Whether ``{low, high}`` is a float or an int range is read from the schema field the key
names, and every endpoint and choice is validated by that field, so a space can only propose configs the
schema accepts. Each algorithm has a default space (:data:`DEFAULT_SPACES`, :data:`STRATEGY_SPACES`); a
config's ``search.space`` narrows, widens or adds keys (a range or ``{choices: [...]}``) and fixes keys (a
plain value), e.g.::

    search:
      trials: 50
      space:
        agent.learning_rate: {low: 1.0e-4, high: 3.0e-3, log: true}
        agent.n_epochs: 10                      # fixed: no longer searched
        agent.net_arch: {choices: [[64, 64], [128, 128]]}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, Field, ValidationError, field_validator

from agents.config.algos import ALGO_KEYS, RLLIB_ALGO_KEYS, SHARED_AGENT_KEYS
from agents.config.schema import SECTIONS, suggest
from agents.config.section import Section
from envs.errors import UserError

AcrossSeeds = Literal["mean", "min", "mean_minus_std"]
"""How a trial's score follows from its seeds' scores (``search.across_seeds``)."""


class SearchSection(Section):
    """Settings of a hyperparameter study (``train.py --optimize``); the command line overrides them."""

    trials: int = Field(default=20, gt=0)
    """Trials in the whole study (``--trials``); a resumed study runs until this many have finished."""
    seeds_per_trial: int = Field(default=3, gt=0)
    """Training runs per trial, seeded ``seed, seed+1, …`` in every trial (``--seeds-per-trial``); they run
    at the same time and the trial's score combines theirs (``across_seeds``)."""
    across_seeds: AcrossSeeds = "mean"
    """How a trial's score follows from its seeds' (``--across-seeds``), at each evaluation the pruner sees
    and at the end: their mean; the worst seed's; or their mean less their standard deviation. ``min`` and
    ``mean_minus_std`` prefer settings that learn on every seed to settings that shine on one."""
    evaluations: int = Field(default=5, gt=0)
    """Periodic evaluations per run (``eval.every`` is ``train.timesteps // evaluations``); the seeds' scores
    of each, combined (``across_seeds``), are reported to the pruner, the last one is the trial's score."""
    sampler: Literal["tpe", "random", "cmaes"] = "tpe"
    """Optuna's sampler (``--sampler``): TPE, uniform random, or CMA-ES (categorical keys drawn at random)."""
    pruner: Literal["median", "halving", "none"] = "median"
    """Optuna's pruner (``--pruner``): median stopping, successive halving, or none."""
    jobs: int = Field(default=1, gt=0)
    """Trials run at once (``--jobs``); each runs ``seeds_per_trial`` training processes."""
    seed: int | None = Field(default=None, ge=0, lt=2**32)
    """The study's seed (``--seed``, 0 to 2**32 - 1): the trials' first run seed and the sampler's; drawn
    when absent."""
    storage: str | None = None
    """An Optuna storage URL (SQLAlchemy's form, ``postgresql://user@host:5432/db``) shared by the workers of
    one study on several machines: each runs ``train.py --optimize`` with a study dir of the same name. None:
    ``study.journal`` in the study dir. The URL holds no password, since study.yaml stores it: PostgreSQL's
    client reads ``PGPASSWORD`` or ``~/.pgpass``. PostgreSQL needs the ``postgres`` extra (psycopg)."""
    cpus_per_trial: float | None = Field(default=None, gt=0)
    """On Ray (``--ray-address``, or ``--backend rllib``): the CPUs each trial's Ray task reserves, so that
    Ray places a trial on a node with room for its runs. None: ``seeds_per_trial``, one core per seed's
    ``train.py`` process. Ignored without Ray."""

    @field_validator("storage")
    @classmethod
    def _storage_url(cls, v: str | None) -> str | None:
        return None if v is None else storage_url(v)

    defaults: bool = True
    """Start from the algorithm's default space (:data:`DEFAULT_SPACES`); false: only ``space``."""
    space: dict[str, Any] = Field(default_factory=dict)
    """Config key → ``{low, high[, log][, step]}``, ``{choices: [...]}`` or a fixed value, over the
    defaults."""


def storage_url(url: str) -> str:
    """``url`` when it is a storage URL without a password; else ValueError, saying how to give one."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError as e:
        raise ValueError(f"search.storage is no URL ({e})") from e
    if "://" not in url or not parts.scheme:
        raise ValueError("search.storage wants a storage URL such as postgresql://user@host:5432/db, got a "
                         "string without a scheme")
    if password:
        raise ValueError("search.storage holds a password, which study.yaml would keep on disk: drop it from "
                         "the URL and give it through PGPASSWORD or ~/.pgpass (PostgreSQL's client reads "
                         "both)")
    return url


@dataclass(frozen=True)
class FloatRange:
    """A float between ``low`` and ``high``, uniform or log-uniform."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class IntRange:
    """An int between ``low`` and ``high`` (inclusive), in ``step``s or log-uniform."""

    low: int
    high: int
    log: bool = False
    step: int = 1


@dataclass(frozen=True)
class Choice:
    """One of ``choices`` (any YAML value: numbers, strings, null, lists such as layer sizes)."""

    choices: tuple[Any, ...]


Dimension = FloatRange | IntRange | Choice
Space = dict[str, Dimension]

_LR = FloatRange(1e-5, 3e-3, log=True)
_GAMMA = Choice((0.9, 0.95, 0.98, 0.99, 0.995, 0.999))
_ARCH = Choice(([64, 64], [256, 256]))
_ON_POLICY: Space = {
    "agent.learning_rate": _LR, "agent.gamma": _GAMMA,
    "agent.n_steps": Choice((8, 16, 32, 64, 128, 256, 512, 1024, 2048)),
    "agent.gae_lambda": Choice((0.8, 0.9, 0.92, 0.95, 0.98, 0.99, 1.0)),
    "agent.ent_coef": FloatRange(1e-8, 0.1, log=True), "agent.vf_coef": FloatRange(0.0, 1.0),
    "agent.max_grad_norm": Choice((0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 2.0, 5.0)),
    "agent.net_arch": _ARCH, "agent.activation": Choice(("tanh", "relu")),
}
_OFF_POLICY: Space = {
    "agent.learning_rate": FloatRange(1e-5, 1e-2, log=True), "agent.gamma": _GAMMA,
    "agent.batch_size": Choice((64, 128, 256, 512)),
    "agent.buffer_size": Choice((10_000, 100_000, 1_000_000)),
    "agent.learning_starts": Choice((0, 100, 1_000, 10_000)), "agent.train_freq": Choice((1, 4, 8, 16)),
    "agent.tau": Choice((0.001, 0.005, 0.01, 0.02, 0.05)),
    "agent.net_arch": Choice(([64, 64], [256, 256], [400, 300])),
}
DEFAULT_SPACES: dict[str, Space] = {
    "ppo": {**_ON_POLICY, "agent.batch_size": Choice((32, 64, 128, 256, 512)),
            "agent.n_epochs": Choice((1, 5, 10, 20)), "agent.clip_range": Choice((0.1, 0.2, 0.3, 0.4))},
    "a2c": {**_ON_POLICY, "agent.ortho_init": Choice((True, False))},
    "sac": dict(_OFF_POLICY),
    "td3": {**_OFF_POLICY, "agent.action_noise": Choice(("normal", "ornstein_uhlenbeck")),
            "agent.action_noise_std": FloatRange(0.05, 0.8)},
}
"""The default space of each learning algorithm (after RL Baselines3 Zoo's ``hyperparams_opt.py``); on
``--backend rllib`` the keys it does not honour are left out, and APPO starts from PPO's."""
_NETWORK: Space = {"blackbox.learning_rate": FloatRange(1e-4, 1e-2, log=True),
                   "blackbox.batch": Choice((64, 128, 256, 512)), "blackbox.epochs": Choice((5, 10, 20, 40)),
                   "blackbox.minibatch": Choice((32, 64, 128, 256)),
                   "blackbox.hidden": Choice(([128, 128], [256, 256], [512, 512]))}
_CMA: Space = {"blackbox.sigma0": FloatRange(0.02, 1.0, log=True),
               "blackbox.popsize": Choice((None, 8, 16, 32))}
_SURROGATE: Space = {**_NETWORK, "blackbox.starts": Choice((2, 4, 8, 16)),
                     "blackbox.gd_steps": Choice((50, 100, 200, 400)),
                     "blackbox.gd_lr": FloatRange(0.005, 0.1, log=True)}
STRATEGY_SPACES: dict[str, Space] = {"cma": _CMA, "amortised": dict(_NETWORK), "surrogate": _SURROGATE,
                                     "chain": {**_SURROGATE, **_CMA}}
"""The default space of each black-box strategy's training settings (``--backend blackbox``)."""
_REFINE = ("refine_calls", "refine_sigma")
STRATEGY_KEYS: dict[str, tuple[str, ...]] = {
    "cma": ("calls_per_instance", "sigma0", "popsize"),
    "amortised": ("batch", "epochs", "minibatch", "hidden", "learning_rate", *_REFINE),
    "surrogate": ("batch", "epochs", "minibatch", "hidden", "learning_rate", "starts", "gd_steps", "gd_lr",
                  "grad_checks", "inverse_epochs", "trust_calls", "trust_radius", "local_steps", *_REFINE),
}
"""The ``blackbox:`` keys each strategy reads (``chain`` reads all of them)."""
MAX_CHOICES = 1000
"""The most ``choices`` one key may have (100,000 made a one-trial study of 256 steps take 172 s and a
study.yaml of 1.4 MB)."""
STUDY_KEYS = ("train.timesteps", "train.seed")
"""Keys the study itself sets: never searched."""


def default_space(backend: str, algo: str) -> Space:
    """The default space of ``algo`` on ``backend``, restricted to the keys that algorithm takes."""
    if backend == "blackbox":
        return dict(STRATEGY_SPACES.get(algo, {}))
    space = DEFAULT_SPACES.get("ppo" if algo == "appo" else algo, {})
    return {k: d for k, d in space.items() if check_key(k, backend, algo) is None}


def check_key(key: str, backend: str, algo: str) -> str | None:
    """Why ``key`` cannot be searched for ``algo`` on ``backend`` (a sentence), or None when it can."""
    section, _, field = key.partition(".")
    if section not in ("agent", "train", "blackbox") or not field or "." in field:
        return (f"expected SECTION.KEY with a section of agent, train, blackbox{_hint(key)} (env and eval "
                "stay fixed: the objective is measured the same way in every trial)")
    fields = list(SECTIONS[section].model_fields)
    if field not in fields:
        return f"unknown key; {suggest(field, fields)}valid keys in {section!r}: {', '.join(fields)}"
    if key in ("agent.backend", "agent.algo") or key in STUDY_KEYS:
        return "the study sets it (run one study per algorithm; --timesteps is the per-trial budget)"
    if section == "agent" and field not in SHARED_AGENT_KEYS:
        table = {"sb3": ALGO_KEYS, "rllib": RLLIB_ALGO_KEYS}.get(backend, {})
        if field not in table.get(algo, ()):
            owners = sorted(a.upper() for a, keys in table.items() if field in keys)
            whose = f" (a key of {'/'.join(owners)})" if owners else ""
            return f"--algo {algo} does not take it{whose}"
    if section == "blackbox" and (backend != "blackbox" or (
            algo != "chain" and field not in STRATEGY_KEYS.get(algo, ()))):
        return (f"--algo {algo} does not read it" if backend == "blackbox"
                else "the blackbox section applies to --backend blackbox only")
    return None


def _hint(key: str) -> str:
    close = suggest(key, list(DEFAULT_SPACES["ppo"]) + list(STRATEGY_SPACES["chain"]))
    return f"; {close}" if close else ""


def _check(key: str, value: Any, source: str) -> Any:
    """``value`` as the schema field ``key`` takes it, or a one-line UserError."""
    section, _, field = key.partition(".")
    model: type[BaseModel] = SECTIONS[section]
    try:
        return getattr(model.model_validate({field: value}), field)
    except ValidationError as e:
        err = e.errors()[0]
        raise UserError(f"{source}: search key {key!r}: {value!r} is not a valid value: {err['msg']}") from e


def _number_kind(key: str) -> type | None:
    """``float`` or ``int`` when the schema field takes numbers (float wins when it takes both), else None."""
    section, _, field = key.partition(".")
    annotation = SECTIONS[section].model_fields[field].annotation
    kinds = set(get_args(annotation)) if get_origin(annotation) is not None else {annotation}
    return float if float in kinds else int if int in kinds else None


def parse_dimension(key: str, spec: Any, source: str) -> Dimension | tuple[Any]:
    """A space entry: a :data:`Dimension`, or ``(value,)`` for a fixed value; bad input is a UserError."""
    if not isinstance(spec, dict):
        return (_check(key, spec, source),)
    where, keys = f"{source}: search key {key!r}", set(spec)
    if keys == {"choices"}:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{where}: choices must be a non-empty list, got {choices!r}")
        if len(choices) > MAX_CHOICES:  # each is validated, and written to the journal with every trial
            raise UserError(f"{where}: {len(choices):,} choices, more than the {MAX_CHOICES:,} a key may "
                            "have; give a range {low: A, high: B[, step: N]} instead")
        return Choice(tuple(_check(key, c, source) for c in choices))
    if not {"low", "high"} <= keys or not keys <= {"low", "high", "log", "step"}:
        raise UserError(f"{where}: expected {{low: A, high: B[, log: true][, step: N]}}, {{choices: [...]}} "
                        f"or a fixed value, got {spec!r}")
    kind = _number_kind(key)
    if kind is None:
        raise UserError(f"{where} takes no numeric range; give {{choices: [...]}}")
    low, high, log = spec["low"], spec["high"], bool(spec.get("log", False))
    for name, v in (("low", low), ("high", high)):
        number = isinstance(v, int | float) and not isinstance(v, bool)
        if not number or (kind is int and not float(v).is_integer()):
            raise UserError(f"{where}: {name} must be {'an int' if kind is int else 'a number'}, got {v!r}")
        _check(key, kind(v), source)
    if not low < high:
        raise UserError(f"{where}: the range is empty (low {low} is not below high {high}); give low < high, "
                        "or a fixed value")
    if log and low <= 0:
        raise UserError(f"{where}: a log range needs low > 0, got {low}")
    if kind is int:
        step = spec.get("step", 1)
        if not isinstance(step, int) or step < 1 or (log and step != 1):
            raise UserError(f"{where}: step must be a positive int (1 with log), got {step!r}")
        return IntRange(int(low), int(high), log, step)
    if "step" in spec:
        raise UserError(f"{where}: step applies to int keys only")
    return FloatRange(float(low), float(high), log)


def resolve_space(search: SearchSection, backend: str, algo: str, source: str, *,
                  fixed_keys: tuple[str, ...] = (),
                  budget: tuple[int, int] | None = None) -> tuple[Space, dict[str, Any]]:
    """The study's space and the values it fixes: the defaults (when ``search.defaults``, fitted to
    ``budget``, ``(timesteps, num_envs)``, by :func:`fit_budget`) under ``search.space``; ``fixed_keys``
    (given with ``--set``) are left out of the space.

    Raises:
        UserError: a key the algorithm does not take, a malformed or empty range, or an empty space.
    """
    space: Space = default_space(backend, algo) if search.defaults else {}
    if budget is not None:
        space = fit_budget(space, budget[0], search.evaluations, budget[1])
    fixed: dict[str, Any] = {}
    for key, spec in search.space.items():
        why = check_key(str(key), backend, algo)
        if why is not None:
            raise UserError(f"{source}: search key {key!r}: {why}")
        dim = parse_dimension(key, spec, source)
        if isinstance(dim, tuple):
            space.pop(key, None)
            fixed[key] = dim[0]
        else:
            space[key] = dim
    for key in fixed_keys:
        space.pop(key, None)
    if not space:
        raise UserError(f"{source}: the search space is empty (every key is fixed, or search.defaults is "
                        "false with no ranges in search.space); give at least one key a range or choices")
    return space, fixed


def fit_budget(space: Space, timesteps: int, evaluations: int, num_envs: int) -> Space:
    """The default space with the choices that cannot fit the budget dropped: an on-policy rollout
    (``n_steps × num_envs``) longer than the steps between evaluations, and ``learning_starts`` of half the
    budget or more. The smallest choice is always kept."""
    out = dict(space)
    limits = {"agent.n_steps": max(1, timesteps // evaluations // num_envs),
              "agent.learning_starts": timesteps // 2}
    for key, limit in limits.items():
        dim = out.get(key)
        if isinstance(dim, Choice):
            kept = tuple(c for c in dim.choices if c <= limit) or (min(dim.choices),)
            out[key] = Choice(kept)
    return out


def space_to_yaml(space: Space) -> dict[str, Any]:
    """The space in the ``search.space`` form it was read from (``study.yaml`` stores it that way)."""
    out: dict[str, Any] = {}
    for key, d in space.items():
        if isinstance(d, Choice):
            out[key] = {"choices": list(d.choices)}
        elif isinstance(d, IntRange):
            out[key] = {"low": d.low, "high": d.high, "log": d.log, "step": d.step}
        else:
            out[key] = {"low": d.low, "high": d.high, "log": d.log}
    return out
