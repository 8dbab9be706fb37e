"""Where a study is kept: its own journal file in the study dir, or a database server its workers on several
machines share (``search.storage``)."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from envs.errors import UserError

JOURNAL = "study.journal"
"""The study's own journal file, in the study dir (the default storage)."""

log = logging.getLogger(__name__)


def check_journal(path: Path) -> None:
    """Check the study's own journal before Optuna replays it (``--optimize --resume``; the caller holds the
    study's lock, so nothing else writes it): every line one JSON record with an ``op_code``.

    A last line without its newline that begins as a record does is one the study was killed while writing:
    Optuna skips it when it reads, but would write the next record onto the same line and so break the journal
    for every later read. It is cut off (with a warning), as Optuna reads the journal anyway.

    Raises:
        UserError: not a regular file, or a line that is no journal record (another file, a damaged one).
    """
    fix = "restore it from a copy, or start a new study with another --study-dir"
    if not path.is_file():
        raise UserError(f"{path}: expected the study's Optuna journal, got no regular file; {fix}")
    data = path.read_bytes()
    *lines, tail = data.split(b"\n")
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
            raise UserError(f"{path}: line {number} is no Optuna journal record ({type(e).__name__}: "
                            f"{str(e)[:80]}); the journal is damaged or another file: {fix}") from e
        if not isinstance(record, dict) or not isinstance(record.get("op_code"), int):
            raise UserError(f"{path}: line {number} is no Optuna journal record (no op_code); the journal is "
                            f"damaged or another file: {fix}")
    if tail and not tail.startswith(b'{"op_code":'):
        raise UserError(f"{path}: its last line is no Optuna journal record ({tail[:20]!r}...); the journal "
                        f"is damaged or another file: {fix}")
    if tail:
        with open(path, "r+b") as f:
            f.truncate(len(data) - len(tail))
        log.warning("%s: its last record (%d bytes) was cut short, the study killed while writing it; it is "
                    "dropped, as Optuna skips it", path, len(tail))


def storage_at(journal: Path, url: str | None) -> Any:
    """Optuna's storage: the journal file ``journal`` (file-locked, append-only) when ``url`` is None, else
    the RDB storage at ``url``.

    Raises:
        UserError: a journal record that :func:`check_journal` passes (JSON with an op_code) but Optuna cannot
            apply (an unknown op_code, a missing field).
    """
    if url is not None:
        return _shared(url)
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    try:  # Optuna replays the journal here: a record it cannot apply fails inside it
        return JournalStorage(JournalFileBackend(str(journal)))
    except (AssertionError, LookupError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{journal}: Optuna cannot replay a record of the study's journal "
                        f"({type(e).__name__}: {str(e)[:80]}); the journal is damaged or another file: "
                        "restore it from a copy, or start a new study with another --study-dir") from e


def _shared(url: str, attempts: int = 5) -> Any:
    """Optuna's RDB storage at ``url``. Workers that start together all create its tables and enum types,
    and all but one fail: on PostgreSQL a unique violation, or a type or table that "already exists". They
    find the schema made on the next attempt."""
    import optuna
    import sqlalchemy.exc

    for attempt in range(attempts):
        with opening(url):
            try:
                return optuna.storages.RDBStorage(url)
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as e:
                if attempt == attempts - 1 or not _lost_schema_race(e):
                    raise
                time.sleep(0.2 + random.random())
    raise AssertionError("unreachable")


_ALREADY_EXISTS = {"42710", "42P07"}  # PostgreSQL's duplicate_object (an enum type), duplicate_table


def _lost_schema_race(e: Exception) -> bool:
    """Whether ``e`` is another worker having created the same schema object first."""
    import sqlalchemy.exc

    if isinstance(e, sqlalchemy.exc.IntegrityError):
        return True
    orig = getattr(e, "orig", None)
    return (getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)) in _ALREADY_EXISTS


@contextlib.contextmanager
def opening(url: str | None) -> Iterator[None]:
    """Turn a shared storage that cannot be opened (no driver, no server, refused) into one line."""
    if url is None:  # the study's own journal: nothing of a server to explain
        yield
        return
    try:
        yield
    except ImportError as e:  # SQLAlchemy imports the URL's driver when the storage opens
        raise UserError(f"search.storage: the driver for {url.split(':', 1)[0]}:// is not installed ({e}); "
                        "for PostgreSQL: pip install 'nondiff[postgres]'") from e
    except Exception as e:
        if type(e).__module__.split(".")[0] not in ("sqlalchemy", "psycopg", "optuna"):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"search.storage: cannot open the study storage ({first}); check that the server "
                        "runs and accepts this user (its password from PGPASSWORD or ~/.pgpass)") from e
