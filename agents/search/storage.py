"""Where a study is kept: its own journal file in the study dir, or a database server its workers on several
machines share (``search.storage``)."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from envs.errors import UserError

JOURNAL = "study.journal"
"""The study's own journal file, in the study dir (the default storage)."""


def storage_at(journal: Path, url: str | None) -> Any:
    """Optuna's storage: the journal file ``journal`` (file-locked, append-only) when ``url`` is None, else
    the RDB storage at ``url``."""
    if url is not None:
        return _shared(url)
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(journal)))


def _shared(url: str, attempts: int = 5) -> Any:
    """Optuna's RDB storage at ``url``. Workers that start together all create its tables, and all but one
    fail on PostgreSQL's unique constraints; they find the tables made on the next attempt."""
    import optuna
    import sqlalchemy.exc

    for attempt in range(attempts):
        with opening(url):
            try:
                return optuna.storages.RDBStorage(url)
            except sqlalchemy.exc.IntegrityError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.2 + random.random())
    raise AssertionError("unreachable")


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
