"""Every error nondiff raises on purpose, in one tree; the scripts turn them into one line and an exit code.

Tree::

    NondiffError                  root: anything nondiff raises on purpose
    ├── UserError                 bad input: CLI flag, config, run directory, env name, a program's spec
    │                             (exit 2)
    │   ├── CheckpointError       a checkpoint that is missing, corrupted, incompatible or untrusted
    │   ├── UnknownEnvError       ``--env`` names nothing nondiff, a plugin or Gymnasium knows (a ValueError)
    │   ├── PluginError           a plugin that clashes with another or fails to import (a ValueError)
    │   └── StartupError          a program cannot start as configured; retrying cannot help (a ValueError,
    │       │                     and a BridgeError)
    │       ├── VersionError      incompatible protocol major version (also a ProtocolError)
    │       ├── SpecError         a malformed or oversized space description (also a ProtocolError)
    │       ├── AuthError         wrong or missing bridge token
    │       ├── LaunchError       the program does not exist, is not executable, or its cwd is missing
    │       └── ConnectTimeout    connect mode: not enough programs completed a handshake in time
    ├── EnvFailure                the env failed beyond repair, whatever the env: training stops after a
    │   │                         checkpoint (exit 1)
    │   ├── EnvGaveUp             the Guard: ``reset`` failed too often in a row
    │   ├── InvalidOutputError    the Guard: an invalid observation or reward under ``nan_policy: raise``
    │   ├── MemoryExhausted       the memory watch: the machine nearly out of memory while the trainer's
    │   │                         processes grew, or ``train.max_memory_gb`` passed (agents/run/memwatch.py)
    │   └── RestartBudgetExhausted  the bridge: a program failed more often than its restart budget (also a
    │                             BridgeError)
    └── BridgeError               talking to a third-party program went wrong; the watchdog heals these
        ├── ProtocolError         malformed, truncated or oversized frames; unexpected or invalid messages
        ├── PeerClosed            the program closed the connection or exited
        ├── BridgeTimeout         no complete reply before the deadline
        └── RemoteError           the program answered with an ``error`` message
    StopRequested                 a KeyboardInterrupt, outside the root so that no ``except Exception``
                                  swallows it: the trainer asked every wait to end (:mod:`envs.stop`)

Errors from other libraries are translated where they cross into nondiff (the env builder turns an adapter
constructor's ``ValueError`` into a :class:`UserError`, a vector env a dead worker into an
:class:`EnvFailure`), so that the scripts catch these types only.
"""

from __future__ import annotations

__all__ = ["AuthError", "BridgeError", "BridgeTimeout", "CheckpointError", "ConnectTimeout", "EnvFailure",
           "EnvGaveUp", "InvalidOutputError", "LaunchError", "MemoryExhausted", "NondiffError", "PeerClosed",
           "PluginError", "ProtocolError", "RemoteError", "RestartBudgetExhausted", "SpecError",
           "StartupError", "StopRequested", "UnknownEnvError", "UserError", "VersionError"]


class NondiffError(Exception):
    """The root of every error nondiff raises on purpose."""


class UserError(NondiffError):
    """Bad input. The message says what was expected, what came and how to fix it (exit code 2)."""


class CheckpointError(UserError):
    """A checkpoint cannot be loaded safely."""


class UnknownEnvError(UserError, ValueError):
    """``--env`` names nothing nondiff or Gymnasium knows."""


class PluginError(UserError, ValueError):
    """A plugin that cannot be used: it clashes with another, or it fails to import."""


class EnvFailure(NondiffError):
    """The env failed beyond what the watchdog may repair. Not a user error: exit 1 after a checkpoint."""


class EnvGaveUp(EnvFailure):
    """The Guard gave up on an env whose ``reset`` or ``step`` kept failing."""


class InvalidOutputError(EnvFailure):
    """An adapter returned an invalid observation or reward and the policy is ``raise``."""


class MemoryExhausted(EnvFailure):
    """The trainer's processes grew until the machine was nearly out of memory, or past
    ``train.max_memory_gb``: the run stops with a checkpoint before the kernel kills it."""


class BridgeError(NondiffError):
    """Base of every failure talking to a third-party program."""


class ProtocolError(BridgeError):
    """The peer broke the framing or the message grammar."""


class StartupError(BridgeError, UserError, ValueError):
    """The program cannot be started as configured; retrying cannot heal it (bad input: exit code 2)."""


class VersionError(ProtocolError, StartupError):
    """The peer speaks an incompatible major version."""


class SpecError(ProtocolError, StartupError):
    """A space description that is malformed or larger than allowed; the message names the field."""


class AuthError(StartupError):
    """The shared token did not match."""


class LaunchError(StartupError):
    """The program does not exist or is not executable, or its working directory is missing."""


class ConnectTimeout(StartupError):
    """Connect mode: the programs the run needs did not complete a handshake before
    ``env.connect_timeout``."""


class PeerClosed(BridgeError):
    """End of stream: the peer closed the connection or its process exited."""


class BridgeTimeout(BridgeError):
    """The deadline passed before a complete message arrived."""


class RemoteError(BridgeError):
    """The peer reported an error of its own."""


class RestartBudgetExhausted(EnvFailure, BridgeError):
    """A program failed more often than its restart budget allows."""


class StopRequested(KeyboardInterrupt):
    """The trainer asked to stop (:func:`envs.stop.request_stop`); raised out of any wait within about a
    second."""
