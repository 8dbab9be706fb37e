"""Issue 30 §3: one study shared by two workers through a real PostgreSQL server (``search.storage``), and
the storage URL's refusals in one line.

The fixture starts Debian's PostgreSQL (installed by ``make``) on loopback and a free port, with
password authentication; the workers get the password from ``PGPASSWORD``, never from a file.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import ROOT, free_port

pytestmark = [pytest.mark.slow, pytest.mark.ci, pytest.mark.xdist_group("search-study")]

CONFIG = """\
env: {{id: CartPole-v1}}
agent: {{n_steps: 32, batch_size: 64}}
train: {{num_envs: 2, timesteps: 256}}
eval: {{episodes: 2}}
search:
  defaults: false
  seeds_per_trial: 1
  evaluations: 1
  sampler: random
  pruner: none
  storage: {url}
  space:
    agent.learning_rate: {{low: 1.0e-4, high: 3.0e-3, log: true}}
"""
TRIALS = 4


def _program(name: str) -> str:
    found = shutil.which(name) or max(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), default=None)
    assert found, f"PostgreSQL's {name} is missing: `make test` installs it (sudo apt-get install postgresql)"
    return found


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server on 127.0.0.1 with user ``nondiff`` and a random password: (url, password)."""
    password = secrets.token_hex(16)
    root = Path(tempfile.mkdtemp(prefix="nondiff-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb and postgres refuse root: run them as Debian's postgres user
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    pwfile = root / "pw"
    pwfile.write_text(password)
    if as_user:
        shutil.chown(pwfile, "postgres")
    data, port = root / "data", free_port()
    subprocess.run([*as_user, _program("initdb"), "-D", str(data), "-U", "nondiff", "--auth=scram-sha-256",
                    f"--pwfile={pwfile}"], check=True, capture_output=True, timeout=120)
    pwfile.unlink()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root}"
    subprocess.run([*as_user, _program("pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"),
                    "-w", "-t", "60", "start"], check=True, capture_output=True, timeout=120)
    try:
        yield f"postgresql://nondiff@127.0.0.1:{port}/postgres", password
    finally:
        subprocess.run([*as_user, _program("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def _worker(tmp_path: Path, where: str, url: str, password: str, seed: int) -> subprocess.Popen:
    config = tmp_path / where / "search.yaml"
    config.parent.mkdir()
    config.write_text(CONFIG.format(url=url))
    cmd = [sys.executable, str(ROOT / "train.py"), "--config", str(config), "--optimize", "--trials",
           str(TRIALS), "--seed", str(seed), "--study-dir", str(tmp_path / where / "shared")]
    env = {**os.environ, "PGPASSWORD": password}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def test_two_workers_share_one_study_through_postgresql(postgres, tmp_path):
    url, password = postgres
    workers = [_worker(tmp_path, "a", url, password, 1), _worker(tmp_path, "b", url, password, 100)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    os.environ["PGPASSWORD"] = password
    try:
        study = optuna.load_study(study_name="nondiff-shared", storage=url)
        trials = study.get_trials(deepcopy=False)
    finally:
        del os.environ["PGPASSWORD"]
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    # each worker checks the count before it asks: the two can each start the last one (Optuna's own
    # MaxTrialsCallback has the same race), so up to one trial more than asked
    assert TRIALS <= len(complete) == len(trials) <= TRIALS + 1
    ran = {w: {int(p.name.split("-")[1]) for p in (tmp_path / w / "shared").glob("trial-*")} for w in "ab"}
    assert ran["a"] and ran["b"] and not ran["a"] & ran["b"]  # both took trials, none twice
    assert ran["a"] | ran["b"] == {t.number for t in trials}
    # each worker's best.yaml is the shared study's best when it ended, wherever that trial ran: the last
    # one written names the best of all
    bests = sorted((tmp_path / w / "shared" / "best.yaml" for w in "ab"), key=lambda p: p.stat().st_mtime)
    best = max(complete, key=lambda t: t.value)
    assert f"trial {best.number}," in bests[-1].read_text()
    by_number = {t.number: t for t in complete}
    for path in bests:
        text = path.read_text()
        number = int(text.split(": trial ", 1)[1].split(",", 1)[0])
        lr = by_number[number].params["agent.learning_rate"]
        assert yaml.safe_load(text)["agent"]["learning_rate"] == lr
    for w in "ab":
        for path in (tmp_path / w).rglob("*"):  # no file holds the password
            assert not path.is_file() or password.encode() not in path.read_bytes(), path


def _refused(tmp_path: Path, url: str, env: dict[str, str] | None = None) -> str:
    config = tmp_path / "search.yaml"
    config.write_text(CONFIG.format(url=url))
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", str(config), "--optimize",
                          "--study-dir", str(tmp_path / "s")], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={**os.environ, **(env or {})})
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


def test_a_password_in_the_storage_url_is_refused(tmp_path):
    line = _refused(tmp_path, "postgresql://nondiff:hunter2@127.0.0.1:5/postgres")
    assert "holds a password" in line and "PGPASSWORD" in line and "hunter2" not in line


def test_a_storage_that_cannot_be_reached_is_one_line(postgres, tmp_path):
    url, _ = postgres
    line = _refused(tmp_path, url, {"PGPASSWORD": "wrong"})  # the server runs; the password is wrong
    assert "cannot open the study storage" in line and "password authentication failed" in line


def test_storage_errors_name_the_cause_and_only_for_a_shared_storage():
    from agents.config.search import storage_url
    from agents.search.storage import opening
    from envs.errors import UserError

    with pytest.raises(ValueError, match="without a scheme"):
        storage_url("nondiff:hunter2@127.0.0.1/postgres")
    driver = r"driver for mysql:// is not installed .*nondiff\[postgres\]"
    with pytest.raises(UserError, match=driver), opening("mysql://u@127.0.0.1/db"):
        raise ImportError("No module named 'MySQLdb'")
    # the study's own journal: an ImportError is no driver's, and passes as it came
    with pytest.raises(ImportError, match="cmaes"), opening(None):
        raise ImportError("No module named 'cmaes'")



def _open_after(barrier, url: str, errors) -> None:
    from agents.search.storage import _shared

    barrier.wait()
    try:
        _shared(url)
    except Exception as e:  # noqa: BLE001 - collected for the test's assertion
        errors.append(f"{type(e).__name__}: {str(e)[:200]}")


def test_workers_that_open_a_fresh_database_together_all_get_the_study_storage(postgres):
    """Optuna creates its tables and enum types on first open; workers that start together race on them
    (PostgreSQL: a unique violation, or 'type "studydirection" already exists'). Every one must get the
    storage: each of two rounds opens a fresh database from six processes at once."""
    import multiprocessing

    import psycopg

    url, password = postgres
    os.environ["PGPASSWORD"] = password
    ctx = multiprocessing.get_context("fork")
    try:
        with ctx.Manager() as manager:
            for round_ in range(2):
                name = f"race{round_}_{secrets.token_hex(4)}"
                with psycopg.connect(url, autocommit=True) as c:
                    c.execute(f"CREATE DATABASE {name}")
                errors, barrier = manager.list(), manager.Barrier(6)
                procs = [ctx.Process(target=_open_after, args=(barrier, url.rsplit("/", 1)[0] + "/" + name,
                                                               errors)) for _ in range(6)]
                for p in procs:
                    p.start()
                for p in procs:
                    p.join(timeout=120)
                assert not list(errors) and [p.exitcode for p in procs] == [0] * 6, (round_, list(errors))
    finally:
        del os.environ["PGPASSWORD"]


def test_a_type_or_table_that_another_worker_made_first_is_retried(postgres, monkeypatch):
    """The race above is by chance; here each of PostgreSQL's three answers to it, taken from the server,
    comes once before the real storage opens, and a different error is not retried."""
    import optuna
    import sqlalchemy
    import sqlalchemy.exc

    from agents.search import storage

    url, password = postgres
    monkeypatch.setenv("PGPASSWORD", password)
    engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    name, answers = f"t{secrets.token_hex(4)}", []
    with engine.connect() as c:
        statements = [(f"CREATE TYPE {name} AS ENUM ('a')", 2), (f"CREATE TABLE {name}_t (x int)", 2),
                      (f"CREATE UNIQUE INDEX ON {name}_t (x)", 1), (f"INSERT INTO {name}_t VALUES (1)", 2),
                      ("SELECT no_such_column FROM pg_type", 1)]
        for sql, times in statements:
            for _ in range(times):
                try:
                    c.execute(sqlalchemy.text(sql))
                    c.commit()
                except sqlalchemy.exc.DBAPIError as e:
                    c.rollback()
                    answers.append(e)
    engine.dispose()
    assert [type(e.orig).__name__ for e in answers] == ["DuplicateObject", "DuplicateTable",
                                                        "UniqueViolation", "UndefinedColumn"]
    real, calls = optuna.storages.RDBStorage, []

    def storage_after(errors):
        def open_(u):
            calls.append(u)
            if len(calls) <= len(errors):
                raise errors[len(calls) - 1]
            return real(u)
        return open_

    monkeypatch.setattr(storage.time, "sleep", lambda s: None)
    monkeypatch.setattr(optuna.storages, "RDBStorage", storage_after(answers[:3]))
    assert isinstance(storage._shared(url), real) and len(calls) == 4
    calls.clear()
    monkeypatch.setattr(optuna.storages, "RDBStorage", storage_after(answers[3:]))
    with pytest.raises(storage.UserError, match="cannot open the study storage.*no_such_column"):
        storage._shared(url)
    assert len(calls) == 1
