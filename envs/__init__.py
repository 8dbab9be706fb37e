"""nondiff envs: the registry of adapters, the Guard, typed faults, spaces, ``python -m envs check``.

Layout: ``registry`` (names, plugins, :func:`make`), ``guard`` and ``faults`` (validation and fault
records), ``spaces`` (spaces as JSON), ``check``; ``adapters/`` holds one file per built-in adapter and
``bridge/`` the any-language bridge. This package never imports an RL library.

``import envs`` registers the built-in adapters with Gymnasium. A bridge program that has NumPy but not
Gymnasium can still ``from envs.bridge.sdk import serve``: the registry is then absent.
Modules that moved into ``adapters/`` and ``bridge/`` keep their old names (``envs.robot:RobotEnv``,
``envs.sdk``) for configs, plugins and programs written before the move.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

MOVED = {f"envs.{name}": f"envs.adapters.{name}" for name in ("robot", "game", "renderer", "seismic")} | {
    f"envs.{name}": f"envs.bridge.{name}" for name in ("protocol", "messages", "process", "sdk", "reaper", "spawn")}
"""Old module name -> its home since the layout change (docs/architecture.md)."""


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module name as the module at its new home (the same module object)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED else None

    def create_module(self, spec: Any) -> Any:
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module: Any) -> None:
        """Nothing to run: the new module already ran."""


if not any(isinstance(f, _Alias) for f in sys.meta_path):
    sys.meta_path.insert(0, _Alias())

try:
    import gymnasium  # noqa: F401
except ImportError:  # a bridge program with NumPy alone: the SDK works, the registry does not
    pass
else:
    from envs.registry import (
        BUILTIN,
        EnvSpec,
        PluginError,
        UnknownEnvError,
        known_names,
        make,
        register,
        resolve,
    )

    __all__ = ["BUILTIN", "EnvSpec", "PluginError", "UnknownEnvError", "known_names", "make", "register", "resolve"]
