"""What every section of the run config shares: unknown keys are refused and assignments validated."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """The base of a run-config section: it rejects unknown keys and validates assignments."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def layer_sizes(v: list[int], name: str, example: str) -> list[int]:
    """``v`` when it is a non-empty list of positive layer sizes; else a ValueError naming ``name``."""
    if not v or any(n <= 0 for n in v):
        raise ValueError(f"{name} must be a non-empty list of positive layer sizes, e.g. {example}")
    return v
