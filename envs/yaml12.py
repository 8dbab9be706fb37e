"""YAML as nondiff reads configs and ``--set`` values: PyYAML's safe loader, plus YAML 1.2's floats.

PyYAML follows YAML 1.1, where a float needs a dot: ``1e6`` and ``3E-4`` are strings there, so
``timesteps: 1e6`` or ``--set agent.learning_rate=3e-4`` reached the schema as text ("unable to parse
string as an integer (got '1e6')"). YAML 1.2, and every other YAML reader a user is likely to know, reads
them as numbers; so does this loader. Nothing else changes (``yes``/``no`` stay booleans, as in 1.1).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_FLOAT_12 = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads YAML 1.2's exponent floats without a dot (``1e6``)."""


Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789"))


def load(text: str | bytes) -> Any:
    """``yaml.safe_load(text)``, with YAML 1.2's floats (see the module docstring)."""
    return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
