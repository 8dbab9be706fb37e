"""Errors that the scripts turn into a one-line message and exit code 2.

Tree::

    UserError                 bad input from the user: CLI flag, config, run directory
    └── CheckpointError       a checkpoint that is missing, corrupted, incompatible or untrusted
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input. The message says what was expected, what came and how to fix it."""


class CheckpointError(UserError):
    """A checkpoint cannot be loaded safely."""
