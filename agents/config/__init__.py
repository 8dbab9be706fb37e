"""The run config: the schema (``schema``, with the ``env`` section in ``env`` and the ``blackbox`` section
in ``blackbox``), per-algorithm keys (``algos``) and reading it (``loading``).

Every field is documented in agents/config/schema.py, agents/config/env.py and agents/config/blackbox.py.
Import from here: ``from agents.config import RunConfig``.
"""

from __future__ import annotations

from agents.config.algos import (
    ALGO_KEYS,
    CONTINUOUS_ONLY,
    SHARED_AGENT_KEYS,
    check_algorithm,
    select_algo,
)
from agents.config.blackbox import BlackBoxSection
from agents.config.loading import apply_override, dump, load_yaml, redact_argv, validate
from agents.config.schema import (
    SECTIONS,
    AgentConfig,
    EnvConfig,
    EvalConfig,
    RLlibSection,
    RunConfig,
    TrainConfig,
)

__all__ = ["ALGO_KEYS", "CONTINUOUS_ONLY", "SECTIONS", "SHARED_AGENT_KEYS", "AgentConfig", "BlackBoxSection",
           "EnvConfig", "EvalConfig", "RLlibSection", "RunConfig", "TrainConfig", "apply_override",
           "check_algorithm", "dump", "load_yaml", "redact_argv", "select_algo", "validate"]
