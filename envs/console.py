"""What in-process envs print through Python's ``sys.stdout`` and ``sys.stderr``, bounded (train.py).

:func:`bounded` puts a :class:`BoundedText` in front of both streams for a run. A write from nondiff's own
code (a module of ``agents``, ``envs``, the scripts) passes as it is; any other (an env's ``print``, a
library's warning) goes out while the :class:`Budget` lasts (:data:`RATE` characters a second, bursts up to
:data:`BURST`), cut at :data:`LINE_MAX` characters, and is otherwise dropped and counted, with one line per
:data:`REPORT_EVERY` seconds of dropping, and one at the end, saying how much. Nothing runs per env step: the
cost is one frame lookup per write.

On a terminal, rich's progress bar replaces ``sys.stdout`` and ``sys.stderr`` with proxies that re-print
what others print from rich's own frames (a 10 MB line took it minutes to lay out: training stalled at step
0); so the trainer bounds the streams again once the bar runs, in front of its proxies, and rich's writes
pass. Not bounded here: C code writing to file descriptors 1 and 2 (in a worker process,
:mod:`envs.vector.console` bounds that), ``sys.stdout.buffer``, and an env that prints with rich itself.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

RATE = 64_000
"""Characters (bytes, for worker pipes) a second others' output may take on the console, in the long run."""
BURST = 256_000
"""What others' output may take on the console at once, after a quiet spell."""
LINE_MAX = 4096
"""The most of one line (or one write) that reaches the console; the rest is dropped."""
REPORT_EVERY = 10.0
"""Seconds between two lines about dropped output, while output is being dropped."""
OWN_PACKAGES = ("agents.", "envs.", "rich.")
OWN = frozenset({"__main__", "train", "evaluate", "traceback"})
"""Modules whose writes pass unbounded, with those of :data:`OWN_PACKAGES`: nondiff's own, the tracebacks
``--debug`` prints, and rich's progress bar (bounded in front of it, see :func:`bounded`)."""


def size(n: int) -> str:
    """``n`` bytes for a person: ``1.3 MB``, ``4.1 kB``, ``12 bytes``."""
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB" if n >= 1e3 else f"{n} bytes"


class Budget:
    """A token bucket of console output, and the count of what it turned away.

    Args:
        what: who writes, for the report (``the env``, ``env workers``).
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.tokens, self.refilled = float(BURST), time.monotonic()
        self.dropped, self.first_drop = 0, 0.0

    def left(self) -> float:
        """What may go out now (refilled at :data:`RATE` since the last look, up to :data:`BURST`)."""
        now = time.monotonic()
        self.tokens = min(float(BURST), self.tokens + (now - self.refilled) * RATE)
        self.refilled = now
        return self.tokens

    def take(self, n: int) -> bool:
        """Whether ``n`` more may go out now (then spent); else they are counted dropped."""
        if n > self.left():
            self.drop(n)
            return False
        self.tokens -= n
        return True

    def drop(self, n: int) -> None:
        """Count ``n`` dropped."""
        if n > 0:
            if not self.dropped:
                self.first_drop = time.monotonic()
            self.dropped += n

    def report(self, final: bool = False) -> str | None:
        """The line about what was dropped, once per :data:`REPORT_EVERY` seconds of dropping (or at the end,
        ``final``); None when there is nothing to say yet."""
        if not self.dropped or not (final or time.monotonic() - self.first_drop >= REPORT_EVERY):
            return None
        spell, dropped = time.monotonic() - self.first_drop, self.dropped
        self.dropped = 0
        return (f"warning: {self.what} printed more than the console takes ({size(RATE)}/s, lines up to "
                f"{LINE_MAX:,} bytes): {size(dropped)} dropped in the last {spell:.1f} s; training goes on\n")


class BoundedText:
    """A text stream in front of ``stream`` that lets others' writes through only while ``budget`` lasts.

    Args:
        stream: the stream written to (``sys.stdout`` or ``sys.stderr`` as they were).
        budget: shared by the streams of one run.
        err: where the report line goes.
    """

    def __init__(self, stream: TextIO, budget: Budget, err: TextIO) -> None:
        self.stream, self.budget, self.err = stream, budget, err
        self._cut = False  # the last write was dropped: print()'s newline after it goes too
        self._column = 0  # characters out on the current line
        self._cutting = False  # the current line passed LINE_MAX: dropped up to its newline

    def write(self, text: str) -> int:
        """Write ``text`` if it is nondiff's or fits the budget; returns its length either way."""
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if caller in OWN or caller.startswith(OWN_PACKAGES):
            return self.stream.write(text)
        if text == "\n" and self._cut:
            self._cut = False
            return 1
        kept = self._line_cut(text)
        self._cut = not self.budget.take(len(kept))
        if not self._cut and kept:
            self.stream.write(kept)
            newline = kept.rfind("\n")
            self._column = len(kept) - newline - 1 if newline >= 0 else self._column + len(kept)
        line = self.budget.report()
        if line:
            self.err.write(line)
        return len(text)

    def _line_cut(self, text: str) -> str:
        """What of ``text`` is within :data:`LINE_MAX` (the rest counted dropped): a line that passes it is
        cut there, with a newline, and dropped up to its own newline; a write of several lines is cut after
        its first LINE_MAX characters."""
        total = len(text)
        if self._cutting:
            newline = text.find("\n")
            if newline < 0:
                self.budget.drop(total)
                return ""
            self._cutting, text = False, text[newline + 1:]
        if "\n" not in text and self._column + len(text) > LINE_MAX:
            kept, self._cutting = text[:max(0, LINE_MAX - self._column)], True
        else:
            kept = text[:LINE_MAX]
        self.budget.drop(total - len(kept))
        return kept + "\n" if len(kept) < len(text) and not kept.endswith("\n") else kept

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding, buffer...
        return getattr(self.stream, name)


@contextlib.contextmanager
def bounded(what: str = "the env") -> Iterator[Budget]:
    """Bound what others print through ``sys.stdout`` and ``sys.stderr`` while the block runs (streams
    someone else replaced meanwhile are left as they are); the last report line at the end. Streams that are
    bounded already are left as they are: nesting is free."""
    out, err = sys.stdout, sys.stderr
    budget = Budget(what)
    if isinstance(out, BoundedText) and isinstance(err, BoundedText):
        yield out.budget
        return
    sys.stdout, sys.stderr = BoundedText(out, budget, err), BoundedText(err, budget, err)  # type: ignore[assignment]
    try:
        yield budget
    finally:
        if isinstance(sys.stdout, BoundedText) and sys.stdout.stream is out:
            sys.stdout = out
        if isinstance(sys.stderr, BoundedText) and sys.stderr.stream is err:
            sys.stderr = err
        line = budget.report(final=True)
        if line:
            with contextlib.suppress(OSError, ValueError):
                err.write(line)
                err.flush()
