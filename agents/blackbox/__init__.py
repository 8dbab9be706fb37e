"""Black-box strategies for inverse problems (``--backend blackbox --algo cma|amortised|surrogate|chain``).

One file per strategy (:mod:`.cma`, :mod:`.amortised`, :mod:`.surrogate` with its trust region, the chain
stage :mod:`.permute`, and :mod:`.chain`, which runs the others in series) behind :class:`.common.Strategy`;
:mod:`.backend` puts them under the one training loop. They act on an :class:`envs.inverse.InverseProblem`,
reached through the env that ``agents/run/envfactory.py`` builds, never through a concrete adapter.
"""

from __future__ import annotations

STAGES: dict[str, str] = {
    "cma": "agents.blackbox.cma:CMAStrategy",
    "amortised": "agents.blackbox.amortised:AmortisedStrategy",
    "surrogate": "agents.blackbox.surrogate:SurrogateStrategy",
    "permute": "agents.blackbox.permute:PermuteStrategy",
}
"""The strategies a ``blackbox.chain`` may list: name -> ``module:Class``, imported lazily."""
STRATEGIES: dict[str, str] = {**{k: v for k, v in STAGES.items() if k != "permute"},
                              "chain": "agents.blackbox.chain:ChainStrategy"}
"""``agent.algo`` -> ``module:Class`` of the strategy, imported lazily."""
