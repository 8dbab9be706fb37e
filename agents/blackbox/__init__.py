"""Black-box strategies for inverse problems (``--backend blackbox --algo cma|amortised|surrogate``).

One file per strategy (:mod:`.cma`, :mod:`.amortised`, :mod:`.surrogate`) behind :class:`.common.Strategy`;
:mod:`.backend` puts them under the one training loop. They act on an :class:`envs.inverse.InverseProblem`,
reached through the env that ``agents/run/envfactory.py`` builds, never through a concrete adapter.
"""

from __future__ import annotations

STRATEGIES: dict[str, str] = {
    "cma": "agents.blackbox.cma:CMAStrategy",
    "amortised": "agents.blackbox.amortised:AmortisedStrategy",
    "surrogate": "agents.blackbox.surrogate:SurrogateStrategy",
}
"""``agent.algo`` -> ``module:Class`` of the strategy, imported lazily."""
