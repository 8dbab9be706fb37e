"""Torch's per-process set-up, shared by every backend: the thread count, and TorchDynamo imported only
when something compiles.

Torch's optimisers import ``torch._dynamo`` (about 1,000 modules, 1 CPU-second) the first time one is built
or stepped: ``Optimizer.add_param_group`` is wrapped in ``torch._disable_dynamo``, and ``step`` calls
``torch._dynamo.graph_break()``. Both only matter while TorchDynamo traces, which needs ``torch._dynamo``
imported first (``torch.compile``). In a process that never compiles, the import is a third of the CPU
time of a short run (``train.py --env CartPole-v1 --timesteps 512``: 3.7 CPU-s) and of every
``evaluate.py``.

:func:`start_torch` puts a placeholder for ``torch._dynamo`` in ``sys.modules``, which answers the two
names the optimisers use as TorchDynamo itself does outside tracing: ``graph_break()`` does nothing, and
``disable(fn)`` runs ``fn`` as it is. Any other name (``torch.compile`` asks for many) imports the real
``torch._dynamo`` at once, puts it in the placeholder's place, and answers from it; a function passed to
``disable`` before then switches to the real ``disable`` on its next call. So a process that compiles
behaves as it would have, and one that does not never pays for the import.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

import torch

_NAME = "torch._dynamo"
_lock = threading.RLock()  # the real import may ask the placeholder for a name


def start_torch(threads: int) -> None:
    """``torch.set_num_threads(threads)``, and the ``torch._dynamo`` placeholder where it is not imported."""
    torch.set_num_threads(threads)
    with _lock:
        if _NAME not in sys.modules:
            placeholder = _Placeholder(_NAME)
            placeholder.__spec__ = importlib.util.find_spec(_NAME)  # finds it without running it
            sys.modules[_NAME] = placeholder
            torch._dynamo = placeholder  # type: ignore[attr-defined]


def _real() -> types.ModuleType:
    """The real ``torch._dynamo``, imported in the placeholder's place if it is still there."""
    with _lock:
        module = sys.modules.get(_NAME)
        if isinstance(module, _Placeholder):
            del sys.modules[_NAME]
            module = importlib.import_module(_NAME)  # also sets torch._dynamo to the real module
    assert module is not None
    return module


def _graph_break(msg: str = "") -> None:
    """TorchDynamo's ``graph_break`` outside tracing: nothing."""


def _disable(fn: Callable[..., Any] | None = None, recursive: bool = True,
             **kwargs: Any) -> Callable[..., Any]:
    """``torch._dynamo.disable`` before anything compiles: ``fn`` runs as it is until the real module is
    imported, then through the real ``disable``."""
    if fn is None:
        return lambda f: _disable(f, recursive, **kwargs)
    real: list[Callable[..., Any]] = []

    def call(*args: Any, **kw: Any) -> Any:
        if real:
            return real[0](*args, **kw)
        if isinstance(sys.modules.get(_NAME), _Placeholder):
            return fn(*args, **kw)
        real.append(_real().disable(fn, recursive, **kwargs))
        return real[0](*args, **kw)

    return call


class _Placeholder(types.ModuleType):
    """Stands in ``sys.modules`` for ``torch._dynamo`` until a name other than the two above is asked for."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name != "__path__":
            # what scans of sys.modules ask every module (inspect.getmodule: __file__); answering from the
            # real module would import it in the middle of whatever import is scanning
            raise AttributeError(name)
        if name == "graph_break" and isinstance(sys.modules.get(_NAME), _Placeholder):
            return _graph_break
        if name == "disable" and isinstance(sys.modules.get(_NAME), _Placeholder):
            return _disable
        return getattr(_real(), name)
