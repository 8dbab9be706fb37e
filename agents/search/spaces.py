"""The typed spaces of :mod:`agents.config.search` as Optuna distributions, and sampled values as configs."""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

from agents.config.search import Choice, Dimension, IntRange, Space

if TYPE_CHECKING:
    import optuna


def _encoded(d: Choice) -> list[Any]:
    """Optuna's categorical choices are scalars: a list (layer sizes) becomes its JSON text."""
    return [json.dumps(c) if isinstance(c, list | dict) else c for c in d.choices]


def distribution(d: Dimension) -> optuna.distributions.BaseDistribution:
    """The Optuna distribution of one dimension."""
    from optuna import distributions as dist

    if isinstance(d, Choice):
        return dist.CategoricalDistribution(_encoded(d))
    if isinstance(d, IntRange):
        return dist.IntDistribution(d.low, d.high, log=d.log, step=d.step)
    return dist.FloatDistribution(d.low, d.high, log=d.log)


def suggest(trial: optuna.Trial, space: Space) -> dict[str, Any]:
    """Sample one value per key of ``space`` (or read the ones a resumed trial already holds)."""
    out: dict[str, Any] = {}
    for key, d in space.items():
        if isinstance(d, Choice):
            value = trial.suggest_categorical(key, _encoded(d))
            out[key] = d.choices[_encoded(d).index(value)]
        elif isinstance(d, IntRange):
            out[key] = trial.suggest_int(key, d.low, d.high, log=d.log, step=d.step)
        else:
            out[key] = trial.suggest_float(key, d.low, d.high, log=d.log)
    return out


def decode(params: dict[str, Any], space: Space) -> dict[str, Any]:
    """The config values of a stored trial's Optuna params (JSON-encoded choices back to lists)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        d = space.get(key)
        out[key] = d.choices[_encoded(d).index(value)] if isinstance(d, Choice) else value
    return out


def apply(raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of the config mapping ``raw`` with each ``section.key`` of ``values`` set."""
    out = copy.deepcopy(raw)
    for key, value in values.items():
        section, _, field = key.partition(".")
        out.setdefault(section, {})[field] = copy.deepcopy(value)
    return out
