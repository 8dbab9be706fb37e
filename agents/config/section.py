"""What every section of the run config shares: unknown keys are refused, assignments validated, and a YAML
boolean is no number."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


def _members(annotation: Any) -> tuple[Any, ...]:
    """A union's (or Annotated's) member types, else the type itself."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return tuple(m for a in typing.get_args(annotation) for m in _members(a))
    if typing.get_origin(annotation) is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    return (annotation,)


def _takes_bool(annotation: Any) -> bool:
    """``bool`` or ``Any`` among the type's members, or a Literal with a boolean value."""
    return any(m is bool or m is Any or (typing.get_origin(m) is typing.Literal
                                         and any(isinstance(a, bool) for a in typing.get_args(m)))
               for m in _members(annotation))


def is_mapping(annotation: Any) -> bool:
    """Whether a field of this type is a mapping (``dict[...]``), so that ``--set`` may set one entry."""
    return any(typing.get_origin(m) is dict for m in _members(annotation))


def bool_for_number(annotation: Any, v: Any) -> bool:
    """Whether ``v`` holds ``true``/``false`` where ``annotation`` wants a number, which pydantic's lax mode
    would read as 1 or 0 (``timesteps: true`` trained one rollout), in lists and mappings too."""
    if _takes_bool(annotation):
        return False
    members = _members(annotation)
    if isinstance(v, bool):
        return any(isinstance(m, type) and issubclass(m, int | float) for m in members)
    for m in members:
        origin, args = typing.get_origin(m), typing.get_args(m)
        if origin in (list, tuple, set) and isinstance(v, list | tuple) and args:
            fixed = origin is tuple and args[-1] is not ...  # tuple[int, str] against tuple[int, ...]
            return any(bool_for_number(args[min(i, len(args) - 1)] if fixed else args[0], x)
                       for i, x in enumerate(v))
        if origin is dict and isinstance(v, dict) and len(args) == 2:
            return any(bool_for_number(args[1], x) for x in v.values())
    return False


def refuse_bool_number(model: type[BaseModel], v: Any, info: ValidationInfo) -> Any:
    """``v``, unless it holds ``true``/``false`` where the field wants a number."""
    field = model.model_fields.get(info.field_name or "")
    if field is not None and bool_for_number(field.annotation, v):
        raise ValueError("expected a number, not a YAML boolean (true/false)")
    return v


class Section(BaseModel):
    """The base of a run-config section: it rejects unknown keys, validates assignments, and refuses a YAML
    boolean where a number belongs."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, v: Any, info: ValidationInfo) -> Any:
        return refuse_bool_number(cls, v, info)


def layer_sizes(v: list[int], name: str, example: str) -> list[int]:
    """``v`` when it is a non-empty list of positive layer sizes; else a ValueError naming ``name``."""
    if not v or any(n <= 0 for n in v):
        raise ValueError(f"{name} must be a non-empty list of positive layer sizes, e.g. {example}")
    return v
