"""Errors that the scripts turn into a one-line message and exit code 2.

Tree::

    UserError                 bad input from the user: CLI flag, config, run directory
    └── CheckpointError       a checkpoint that is missing, corrupted, incompatible or untrusted
    EnvFailure                the env failed past its restart budget: training stops after a checkpoint

Exit codes: a :class:`UserError` is 2; :class:`EnvFailure`, a full disk and any other exception out of
training are 1, each after a checkpoint attempt (``final/`` or ``crash/``) and one line
(:mod:`agents.run.failure`).
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input. The message says what was expected, what came and how to fix it."""


class CheckpointError(UserError):
    """A checkpoint cannot be loaded safely."""


class EnvFailure(Exception):
    """The env failed beyond what the watchdog may repair (restart budget spent). Not a user error."""
