"""How training ends on an error: a checkpoint first where one can be written, then one line and an exit code.

Exit codes: 1 when the env, the disk or the code failed; 2 for bad input (:class:`~envs.errors.UserError`).
The line says what happened, where the checkpoint is (or why none could be written and which earlier one
is the last good one) and the command that resumes. Tracebacks are for ``--debug`` only.
"""

from __future__ import annotations

import errno
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from envs.errors import EnvFailure, UserError

if TYPE_CHECKING:
    from agents.run.backend import Backend
    from agents.run.rundir import RunDir

log = logging.getLogger(__name__)
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})
"""A full disk, a spent quota, a read-only file system, a file-size limit (RLIMIT_FSIZE)."""


def is_disk_error(exc: BaseException) -> bool:
    """True for an OSError that more disk space (or a writable disk) would have avoided."""
    return isinstance(exc, OSError) and exc.errno in DISK_ERRNOS


def _free_space(path: str | None) -> str:
    """Free space on the file system holding ``path`` (its nearest existing ancestor), human-readable."""
    p = Path(path or ".").absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        free = float(shutil.disk_usage(p).free)
    except OSError:
        return "free space unknown"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if free < 1024 or unit == "TiB":
            return f"{free:.0f} {unit} free" if unit == "B" else f"{free:.1f} {unit} free"
        free /= 1024
    return "free space unknown"


def describe(exc: BaseException, *, hint: bool = True) -> str:
    """One line for an exception: the message for nondiff's own errors, type and first line otherwise.

    Args:
        exc: the exception.
        hint: add "rerun with --debug for the traceback" to an unexpected exception.
    """
    if isinstance(exc, UserError | EnvFailure):
        return str(exc)
    from envs.errors import BridgeError  # the bridge's own errors already say what the program did

    if isinstance(exc, BridgeError):
        return f"the env failed: {exc}"
    if is_disk_error(exc):
        assert isinstance(exc, OSError)
        return f"cannot write {exc.filename or 'a file'}: {exc.strerror} ({_free_space(exc.filename)} there)"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    where = " (rerun with --debug for the traceback)" if hint else ""
    return f"unexpected {type(exc).__name__}{': ' + text[:300] if text else ''}{where}"


def last_good(run: RunDir) -> str:
    """The newest readable checkpoint of ``run`` as ``PATH (step N)``, or a phrase saying there is none."""
    from agents.run.checkpoint import read_header

    try:
        latest = run.latest()
        if latest is None:
            return "none yet (the run has to start over)"
        return f"{latest} (step {read_header(latest).num_timesteps:,})"
    except (UserError, OSError) as e:
        return f"unknown ({e})"


def resume_hint(run: RunDir) -> str:
    """The command that continues ``run``."""
    return f"resume with:  python train.py --resume {run.path}"


def kept_config(run: RunDir) -> dict[Path, bytes]:
    """config.yaml and config.sig as they are now, before a resume rewrites them (for :func:`stop_on_error`
    to put back)."""
    return {p: p.read_bytes() for p in (run.config, run.signature) if p.is_file()}


def refused_before_start(exc: BaseException, backend: Backend, start: int) -> bool:
    """Bad input (a :class:`UserError`) found before the first step after ``start``: nothing was trained."""
    return isinstance(exc, UserError) and backend.num_timesteps <= start


def stop_on_error(exc: BaseException, run: RunDir, backend: Backend, start: int,
                  kept: dict[Path, bytes] | None = None) -> tuple[int, str]:
    """Write ``crash/`` for an exception out of training, and return the exit code and the one line.

    Bad input (a :class:`UserError`) found before the first step after ``start`` (the step the run started
    or resumed at), while training was being set up (e.g. a resumed league's state), is its own line and
    exit code 2, with no checkpoint and no resume hint: nothing was trained, and a resume would meet the
    same input again; a resume's config.yaml and config.sig are put back as they were (``kept``: from
    :func:`kept_config`), so the run dir resumes as before once the input is fixed (a new run's directory
    is removed instead: :meth:`~agents.run.rundir.RunDir.discard_unstarted`, by the runner). A disk error
    is not answered with another write to the same disk: the line names the file, the free space and the
    last good checkpoint instead.
    """
    if refused_before_start(exc, backend, start):
        from agents.run.checkpoint import atomic_write_bytes

        for path, data in (kept or {}).items():
            atomic_write_bytes(path, data)
        return 2, f"error: {describe(exc)}"
    code = 2 if isinstance(exc, UserError) else 1
    what = "training stopped: " + describe(exc)
    if is_disk_error(exc):
        return 1, (f"error: {what}; last good checkpoint: {last_good(run)}; free some space, then "
                   f"{resume_hint(run)}")
    try:
        # env_states: None, because the envs may be in the state that raised; the resume starts fresh episodes
        path = backend.save(run.crash, {"env_states": None, "stopped_by": what})
    except Exception as save_exc:  # noqa: BLE001 - reported in the line, with the last good checkpoint
        log.debug("writing the crash checkpoint failed", exc_info=True)
        return code, (f"error: {what}; writing a checkpoint failed too ({describe(save_exc, hint=False)}); "
                      f"last good checkpoint: {last_good(run)}; {resume_hint(run)}")
    return code, f"error: {what}; checkpoint written to {path}; {resume_hint(run)}"


def save_failed(exc: BaseException, run: RunDir, target: Path) -> str:
    """The line for a checkpoint (``target``) that could not be written after training itself went well."""
    return (f"error: writing the checkpoint {target} failed: {describe(exc, hint=False)}; last good "
            f"checkpoint: {last_good(run)}; "
            f"{'free some space, then ' if is_disk_error(exc) else ''}{resume_hint(run)}")


def stopped_at_once(run: RunDir, backend: Backend, signal_name: str | None) -> tuple[int, str]:
    """Write ``crash/`` for a KeyboardInterrupt out of training, and return exit code 130 and the one line.

    It comes from a second Ctrl-C (or SIGTERM) while the first one waited for the current step, e.g. an env's
    ``step`` that never returns, or from an env that raised KeyboardInterrupt itself (``signal_name`` None).
    The model between two of its updates is sound; the envs' states are not saved (the resume starts fresh
    episodes).
    """
    what = (f"a second {signal_name} stopped training without waiting for the current step"
            if signal_name else "the env raised KeyboardInterrupt (no Ctrl-C came)")
    try:
        path = backend.save(run.crash, {"env_states": None, "stopped_by": what})
    except BaseException as save_exc:  # noqa: BLE001 - a third Ctrl-C or a full disk: reported in the line
        log.debug("writing the checkpoint after a second signal failed", exc_info=True)
        return 130, (f"error: {what}; writing a checkpoint failed too ({describe(save_exc, hint=False)}); "
                     f"last good checkpoint: {last_good(run)}; {resume_hint(run)}")
    return 130, f"error: {what}; checkpoint written to {path}; {resume_hint(run)}"
