"""nondiff envs: the registry of adapters, the Guard, typed faults, spaces, ``python -m envs check``.

Layout: ``registry`` (names, plugins, :func:`make`), ``guard`` and ``faults`` (validation and fault
records), ``errors`` (the one error tree), ``stop`` (the stop switch), ``spaces`` (spaces as JSON),
``check``; ``adapters/`` holds one file per built-in adapter and ``bridge/`` the any-language bridge. This
package never imports an RL library.

``import envs`` registers the built-in adapters with Gymnasium. A bridge program that has NumPy but not
Gymnasium can still ``from envs.bridge.sdk import serve``: the registry is then absent.
"""

from __future__ import annotations

try:
    import gymnasium  # noqa: F401
except ImportError:  # a bridge program with NumPy alone: the SDK works, the registry does not
    pass
else:
    from envs.registry import (
        BUILTIN,
        EnvSpec,
        known_names,
        make,
        register,
        resolve,
    )

    __all__ = ["BUILTIN", "EnvSpec", "known_names", "make", "register", "resolve"]
