"""The ``env:`` section of the run config: which env, its adapter's keyword arguments, the Guard's policies,
wrappers, action masks and the bridge token, every field documented under it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from agents.config.section import refuse_bool_number
from agents.config.tokens import DEFAULT_ENV_VAR, REDACTED, TokenSource
from envs.reach import Reach
from envs.wrappers import names_code


class EnvConfig(BaseModel):
    """The env section: ``id`` plus any keyword argument of the adapter (checked against its signature)."""

    model_config = ConfigDict(extra="allow")

    id: Annotated[str | None, Reach.IMPORT.mark("import the module of", lambda v: ":" in str(v or ""))] = None
    """Short name, Gymnasium id or ``module:Class``; ``--env`` overrides it."""
    packages: Annotated[list[str], Reach.IMPORT.mark("import")] = Field(default_factory=list)
    """Modules imported before the env is made (``--env-package``); their import registers adapters."""
    max_episode_steps: int | None = Field(default=None, gt=0)
    """Override the env's time limit."""
    eval_kwargs: Annotated[dict[str, Any], Reach.ADAPTER.mark("pass the adapter")] = Field(
        default_factory=dict)
    """Adapter keyword arguments that replace the training ones in evaluation envs (periodic eval and
    evaluate.py), e.g. ``{clip_rewards: false}`` so that reported returns are the raw score."""
    nan_policy: Literal["truncate", "clip", "raise"] = "truncate"
    """What to do with an invalid observation or reward (NaN, inf, wrong dtype/shape):
    end the episode, repair the values, or stop. Every case is recorded as ``env/faults_by_kind``."""
    bounds_policy: Literal["clip", "truncate", "raise"] = "clip"
    """What to do with finite observation values past the declared Box bounds (by more than float rounding
    noise, which is snapped on silently): clip them onto the bounds and go on (default: third-party envs
    often declare bounds a little too tight), end the episode, or stop. Recorded as an ``invalid_output``
    fault either way, with a console warning when such faults pass 1% of steps."""
    wrappers: Annotated[list[Any], Reach.IMPORT.mark("import and call", names_code)] = Field(
        default_factory=list)
    """Gymnasium wrappers applied in order around the env in every worker, on both backends: a built-in name
    (``resize``, ``grayscale``, ``frame_stack``, ``frame_skip``) or an import path (``module:Class``), alone
    or as ``{name: {kwarg: value}}``, e.g. ``[{resize: {shape: [84, 84]}}, grayscale]``. The image
    built-ins also transform every image inside a Dict observation."""
    drop_keys: list[str] = Field(default_factory=list)
    """Observation keys left out of a Dict (or Tuple, by index) observation. Non-numeric ones (``Text``) are
    dropped anyway, with one line saying so; list them here to silence it."""
    action_mask: Literal["auto", "method", "info", "obs", "none"] = "auto"
    """Where the env's legal actions come from (Discrete and MultiDiscrete actions; envs/masks.py): ``auto``
    finds them when the run starts, in this order: an env method ``action_masks()`` (sb3-contrib's
    convention), ``info["action_mask"]`` or a Dict observation key ``action_mask`` (PettingZoo classic's), and
    the run's config.yaml records what it found; ``none`` (or ``off``) trains without. With a mask,
    ``--backend sb3 --algo ppo`` trains sb3-contrib's MaskablePPO and evaluation picks legal actions only;
    other algorithms and backends exit 2."""
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

    @field_validator("max_episode_steps", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, v: Any, info: ValidationInfo) -> Any:
        return refuse_bool_number(cls, v, info)

    @field_validator("token", mode="before")
    @classmethod
    def _token_text(cls, v: Any) -> Any:
        return None if v is None or v == "" else str(v)  # a number given with --set is a token too

    @field_validator("action_mask", mode="before")
    @classmethod
    def _mask_off(cls, v: Any) -> Any:
        return "none" if v is False or v == "off" else v  # YAML reads `off` and `no` as false

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
            raise ValueError("the bridge token is not an eval_kwargs key: env.token_env or env.token_file "
                             "applies to evaluation envs too")
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
        """Where this env's bridge token comes from; :func:`agents.config.tokens.resolve` reads it."""
        return TokenSource(literal=self.token, file=self.token_file, env_var=self.token_env)
