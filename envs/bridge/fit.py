"""Which programs fit a connect-mode run (:mod:`envs.bridge.listen`): the spec (spaces and K) the run
trains on is the K given in the config (``env.num_instances``) and the spec of the run's first program
once the run has one; before that, the first spec that enough programs declare to fill
``train.num_envs``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

__all__ = ["decide", "describe", "misfit", "same_spec"]


def describe(spec: Any) -> str:
    """A spec's spaces and K in a few words, for refusal messages."""
    agents = f", agents {[d.id for d in spec.agents][:8]}" if spec.agents else ""
    return (f"observation {spec.observation_space}, action {spec.action_space}, num_instances "
            f"{spec.num_instances}{agents}")


def same_spec(a: Any, b: Any) -> bool:
    """True when two specs declare the same spaces, the same K and the same agents (protocol 1.3)."""
    return (a.observation_space == b.observation_space and a.action_space == b.action_space
            and a.num_instances == b.num_instances and a.agents == b.agents)


def misfit(spec: Any, instances: int | None, want: Any) -> str | None:
    """Why a program that declares ``spec`` does not fit a run that asks for ``instances`` (K, or None:
    any) and trains on ``want`` (None: not decided yet); None when it fits."""
    if instances is not None and spec.num_instances != instances:
        return (f"it declares num_instances {spec.num_instances}; this run wants {instances} "
                "(env.num_instances)")
    if want is not None and not same_spec(spec, want):
        return f"it declares {describe(spec)}; this run trains on {describe(want)}"
    return None


def decide(specs: Iterable[Any], instances: int | None, expected: int) -> Any:
    """The run's spec: the first one that enough of ``specs`` declare to fill ``expected`` envs; None
    while none does."""
    groups: list[list[Any]] = []
    for spec in specs:
        if instances is not None and spec.num_instances != instances:
            continue
        group = next((g for g in groups if same_spec(g[0], spec)), None)
        if group is None:
            group = [spec]
            groups.append(group)
        else:
            group.append(spec)
        if len(group) >= math.ceil(max(1, expected) / spec.num_instances):
            return spec
    return None
