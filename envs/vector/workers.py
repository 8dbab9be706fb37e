"""Worker processes that answer over pipes, supervised: a deadline on every answer, respawn under a budget.

Shared by :class:`~envs.vector.subproc.SubprocVectorEnv` (one env per worker) and
:class:`~envs.vector.threadproc.ThreadProcVectorEnv` (a group of threaded envs per worker). A worker answers
``(kind, data)``: ``ok`` with its data, ``error`` for an exception of its env (``RuntimeError`` here), or
``fatal`` for one that ends training (:class:`~envs.errors.EnvFailure`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from envs import children
from envs.errors import EnvFailure, EnvGaveUp, RestartBudgetExhausted
from envs.stop import check_stop
from envs.vector.console import ConsoleRelay

log = logging.getLogger(__name__)
DEAD = (EOFError, ConnectionResetError, BrokenPipeError, OSError, TimeoutError, RuntimeError)
"""What a dead, hung or raising worker gives :meth:`WorkerPool._answer`'s caller."""
BUILD_TRIES = 3
"""Workers started in a row whose envs raise as they are built, before the pool gives up."""


class Unbuilt(Exception):
    """A worker's envs raised as they were built (the text: the error); the worker has ended."""


def why(error: BaseException) -> str:
    """``hung``, ``raised`` or ``died``: what became of a worker that gave ``error``."""
    return ("hung" if isinstance(error, TimeoutError) else "raised" if isinstance(error, RuntimeError)
            else "died")


def how_it_went(error: BaseException, exit_code: int | None) -> str:
    """What became of a worker and why, for its fault: ``hung: ...``, ``raised: ...``, or for one that died,
    how it ended (``died: killed by SIGSEGV``, ``died: exit code 3``), not the EOFError its pipe gave."""
    text = str(error) or type(error).__name__
    if why(error) != "died" or exit_code is None:
        return f"{why(error)}: {text}"
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        return f"died: killed by {name}"
    return f"died: exit code {exit_code}"


class WorkerPool:
    """Mixin: ``procs[w]``/``remotes[w]`` of each worker, set by the subclass's :meth:`_spawn`."""

    procs: list[Any]
    remotes: list[Any]
    step_timeout: float
    max_restarts: int
    restarts: int
    threads: int
    console: ConsoleRelay
    """Where the workers' stdout and stderr go: the trainer's console, at a bounded rate."""

    def _spawn(self, w: int) -> None:
        """Start worker ``w`` and set ``procs[w]`` and ``remotes[w]``."""
        raise NotImplementedError

    def _streams(self, w: int) -> tuple[Any, Any]:
        """Worker ``w``'s stdout and stderr, the write ends of two pipes to :attr:`console`, as connections
        (so that every start method hands them over); the caller closes them once the worker has started."""
        from multiprocessing.connection import Connection

        out, err = self.console.pipes(f"env worker {w}")
        return Connection(out, readable=False), Connection(err, readable=False)

    def _kill(self, w: int) -> None:
        """Kill worker ``w``, then stop the processes its envs started (:mod:`envs.children`), which would
        otherwise run on, orphaned, until the run ends; one warning names them."""
        pid = self.procs[w].pid
        left = children.leftovers(pid, set(), children.table()) if pid else []
        self.procs[w].kill()
        self.procs[w].join(5)
        self.remotes[w].close()
        if left:
            stopped = children.stop(left)
            if stopped:
                log.warning("%s", children.report(stopped, f"env worker {w}").removeprefix("warning: "))

    def _started(self, w: int) -> Any:
        """The spaces worker ``w`` reports once its envs are built; a worker that dies meanwhile is
        replaced, and one whose envs raise as they are built is retried :data:`BUILD_TRIES` times in all."""
        tries = 0
        while True:
            try:
                return self._answer(w, time.monotonic() + self.step_timeout)
            except Unbuilt as e:
                tries += 1
                self._kill(w)
                if tries >= BUILD_TRIES or self.restarts >= self.max_restarts:
                    raise EnvFailure(f"env worker {w} could not build its env(s), {tries} times in a row: "
                                     f"{e}") from e
                self.restarts += 1
                self._spawn(w)
            except DEAD as e:
                self._kill(w)
                if self.restarts >= self.max_restarts:
                    raise EnvFailure(f"env worker {w} failed to start ({type(e).__name__}: {e}); "
                                     f"worker restart budget of {self.max_restarts} spent") from e
                self.restarts += 1
                self._spawn(w)

    def _answer(self, w: int, deadline: float) -> Any:
        """The next reply of worker ``w``; raises TimeoutError or EOFError when it is hung or gone."""
        remote = self.remotes[w]
        # slices: a stop acts in < 2 s
        while not remote.poll(min(0.25, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"worker {w} gave no answer within {self.step_timeout:g}s")
            check_stop()
        kind, data = remote.recv()
        if kind == "fatal":
            raise EnvFailure(data)
        if kind == "unbuilt":
            raise Unbuilt(data)
        if kind == "error":
            raise RuntimeError(data)
        return data

    def _respawn(self, w: int, error: BaseException) -> int | None:
        """Kill worker ``w`` after ``error`` and start a fresh one within the budget; the old one's exit
        code."""
        self._kill(w)
        exit_code = self.procs[w].exitcode
        if self.restarts >= self.max_restarts:
            raise EnvFailure(f"env worker {w} {why(error)} ({str(error) or type(error).__name__}); "
                             f"worker restart budget of {self.max_restarts} spent")
        self.restarts += 1
        self._spawn(w)
        self._started(w)
        return exit_code  # type: ignore[no-any-return]

    def _close_workers(self) -> None:
        """Ask every worker to close, give them 5 s in all (not 10 s each: 8 hung workers took 80 s), then
        kill the ones that did not answer; one that answered gets at least 1 s more to exit."""
        for remote in self.remotes:
            try:
                remote.send(("close", None))
            except (OSError, EOFError):
                pass
        deadline = time.monotonic() + 5.0
        for proc, remote in zip(self.procs, self.remotes):
            answered = False
            try:
                if remote.poll(max(0.0, deadline - time.monotonic())):
                    remote.recv()
                    answered = True
            except (OSError, EOFError):
                pass
            proc.join(max(1.0, deadline - time.monotonic()) if answered else 0.0)
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
        self.console.close()


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
"""The variables that size native thread pools loaded after a worker starts (Devito's, a user's C code)."""


def limit_threads(threads: int) -> None:
    """Size this process's native thread pools (BLAS, OpenMP) to ``threads``: those already loaded through
    threadpoolctl, and those loaded later through the environment variables.

    Env workers run one process per core. A BLAS pool of as many threads as cores in each of them spins
    between calls and takes the core of the worker beside it: two Devito workers on 2 cores delivered
    0.44× of twice one process until their pools were limited to one thread (0.93×; docs/results.md).
    """
    from threadpoolctl import threadpool_limits

    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    threadpool_limits(limits=threads)


class UnknownCommand(Exception):
    """A command a worker does not know: answered at once, or the parent would wait out its deadline."""


def serve(remote: Any, build: Callable[[], tuple[Any, Callable[[str, Any], Any]]], threads: int,
          streams: tuple[Any, Any] | None = None) -> None:
    """A worker process's main loop: build its envs, report their spaces, then answer ``(command, data)``
    messages with ``handle(command, data)`` until ``close`` (whose handler runs too) or a closed pipe.
    Native thread pools are limited to ``threads`` (:func:`limit_threads`) before and after the build, which
    may load libraries of its own. ``streams``: connections that become file descriptors 1 and 2 (stdout and
    stderr, for C code too), the pipes to the trainer's :class:`~envs.vector.console.ConsoleRelay`.

    ``build`` returns the spaces to report and the handler; what it raises is answered as ``unbuilt``, once,
    and the worker ends (the parent retries a few times). What the handler raises is answered, never
    fatal to the loop: a spent restart budget or an env that gave up as ``fatal``, anything else as ``error``
    (the parent then replaces this worker).
    """
    try:  # die with the trainer, so that nothing outlives a SIGKILLed run
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)
    except OSError:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for conn, fd in zip(streams or (), (1, 2)):
        os.dup2(conn.fileno(), fd)
        conn.close()
    limit_threads(threads)
    try:
        spaces, handle = build()
    except Exception as e:  # the env's constructor: said once to the parent, not a traceback per respawn
        remote.send(("unbuilt", f"{type(e).__name__}: {e}"))
        return
    limit_threads(threads)
    remote.send(("ok", spaces))
    while True:
        try:
            cmd, data = remote.recv()
        except (EOFError, KeyboardInterrupt):
            break
        try:
            remote.send(("ok", handle(cmd, data)))
            if cmd == "close":
                break
        except UnknownCommand:
            remote.send(("error", f"unknown command {cmd!r}"))
        except (RestartBudgetExhausted, EnvGaveUp) as e:
            remote.send(("fatal", str(e)))
        except Exception as e:  # an env failed beyond its Guard
            remote.send(("error", f"{type(e).__name__}: {e}"))
