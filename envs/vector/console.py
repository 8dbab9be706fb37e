"""What env worker processes print, relayed to the trainer's console at a bounded rate (subproc, threadproc).

A worker's stdout and stderr (file descriptors 1 and 2, so C code's writes too) are pipes that one thread of
the trainer reads as fast as they fill, so a worker never blocks on a full pipe. Each line goes on to the
trainer's own stdout or stderr while the :class:`~envs.console.Budget` lasts (64 kB a second, bursts up to
256 kB: :mod:`envs.console`); a line longer than ``LINE_MAX`` bytes (a flood without newlines) is cut there.
What does not fit is dropped and counted, and one line per 10 seconds of dropping says how much.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import threading
import time
from dataclasses import dataclass, field

from envs.console import LINE_MAX, Budget

CHUNK = 1 << 20


@dataclass
class _Source:
    name: str
    target: int
    partial: bytearray = field(default_factory=bytearray)
    cutting: bool = False
    """The line under way passed LINE_MAX: its bytes are dropped until its newline."""


class ConsoleRelay:
    """Pipes for worker processes' stdout and stderr, relayed to this process's by one thread, bounded.

    Args:
        what: who writes, for the line about dropped output (e.g. ``env workers``).
        out, err: this process's file descriptors the workers' stdout and stderr go to.
    """

    def __init__(self, what: str = "env workers", out: int = 1, err: int = 2) -> None:
        self.what, self.out, self.err = what, out, err
        self._sel = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._pending: list[tuple[int, _Source]] = []
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self.budget = Budget(what)
        self._closed = False
        self._thread = threading.Thread(target=self._run, daemon=True, name="nondiff-worker-output")
        self._thread.start()

    def pipes(self, name: str) -> tuple[int, int]:
        """Two fresh pipes for one worker, ``name`` in reports: the write ends of its stdout and stderr, which
        the caller passes on and closes (the read ends belong to the relay until their end of file)."""
        ends = []
        for target in (self.out, self.err):
            r, w = os.pipe()
            os.set_blocking(r, False)
            with self._lock:
                self._pending.append((r, _Source(name, target)))
            ends.append(w)
        os.write(self._wake_w, b"x")
        return ends[0], ends[1]

    def _run(self) -> None:
        while not self._closed:
            for key, _ in self._sel.select(1.0):
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    with self._lock:
                        for fd, source in self._pending:
                            self._sel.register(fd, selectors.EVENT_READ, source)
                        self._pending.clear()
                    continue
                self._read(key.fd, key.data)
            self._report(final=False)

    def _read(self, fd: int, source: _Source) -> None:
        try:
            chunk = os.read(fd, CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:  # the worker and everything that shared its pipe have exited
            self._sel.unregister(fd)
            os.close(fd)
            if source.partial:
                self._emit(source, bytes(source.partial) + b"\n")
            return
        self._feed(source, chunk)

    def _feed(self, source: _Source, chunk: bytes) -> None:
        out = bytearray()
        start = 0
        while (nl := chunk.find(b"\n", start)) >= 0:
            if self.budget.left() < LINE_MAX:  # little goes out: every whole line left in the chunk at once
                last = chunk.rfind(b"\n")
                self.budget.drop(0 if source.cutting else len(source.partial))
                self.budget.drop(last + 1 - start)
                source.partial.clear()
                source.cutting, start = False, last + 1
                break
            line, start = chunk[start:nl], nl + 1
            if source.cutting:  # the end of a line already cut
                self.budget.drop(len(line) + 1)
                source.cutting = False
                continue
            whole = bytes(source.partial) + line
            source.partial.clear()
            if len(whole) > LINE_MAX:
                self.budget.drop(len(whole) - LINE_MAX)
                whole = whole[:LINE_MAX]
            self._admit(whole + b"\n", out)
        rest = chunk[start:]
        if source.cutting:
            self.budget.drop(len(rest))
        else:
            source.partial += rest
            if len(source.partial) > LINE_MAX:  # a flood without newlines: its first LINE_MAX bytes, then cut
                self.budget.drop(len(source.partial) - LINE_MAX)
                self._admit(bytes(source.partial[:LINE_MAX]) + b"\n", out)
                source.partial.clear()
                source.cutting = True
        if out:
            self._write(source.target, bytes(out))

    def _admit(self, data: bytes, out: bytearray) -> None:
        """Add ``data`` to ``out`` if the budget takes it (else it is counted dropped)."""
        if self.budget.take(len(data)):
            out += data

    def _emit(self, source: _Source, data: bytes) -> None:
        out = bytearray()
        self._admit(data, out)
        if out:
            self._write(source.target, bytes(out))

    def _write(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        with contextlib.suppress(OSError):  # a closed console: the output has nowhere to go
            while view:
                view = view[os.write(fd, view):]

    def _report(self, final: bool) -> None:
        line = self.budget.report(final)
        if line:
            self._write(self.err, line.encode())

    def close(self) -> None:
        """Relay what is left in the pipes for up to half a second, report any drop, and stop."""
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline and len(self._sel.get_map()) > 1 and self._thread.is_alive():
            time.sleep(0.02)
        self._closed = True
        os.write(self._wake_w, b"x")
        self._thread.join(2.0)
        if self._thread.is_alive():
            return  # stuck writing to the console: leave it, a daemon thread
        for key in list(self._sel.get_map().values()):
            if key.fd != self._wake_r:
                os.close(key.fd)
        with self._lock:
            for fd, _ in self._pending:
                os.close(fd)
            self._pending.clear()
        self._sel.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._report(final=True)
