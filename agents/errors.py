"""The errors the scripts turn into one line and an exit code live in the one tree of :mod:`envs.errors`.

Kept while the backends move their imports there (issue 26); new code imports :mod:`envs.errors`.
"""

from __future__ import annotations

from envs.errors import CheckpointError, EnvFailure, UserError

__all__ = ["CheckpointError", "EnvFailure", "UserError"]
