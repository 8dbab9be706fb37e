"""The study's own journal checked before Optuna replays it (agents/search/storage.py ``check_journal``): a
record cut short by a kill is dropped (else the next record is written onto its line and every later read
fails), a damaged or foreign file is one line, exit 2."""

from __future__ import annotations

import re
import sqlite3

import optuna
import pytest
from conftest import run_cli
from measure import one_line

from agents.search.storage import check_journal, storage_at
from envs.errors import UserError


def _journal(tmp_path, trials: int = 2):
    path = tmp_path / "study.journal"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="nondiff", storage=storage_at(path, None), direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=trials)
    return path


def test_a_record_cut_short_by_a_kill_is_dropped_so_that_the_journal_stays_readable(tmp_path, caplog):
    path = _journal(tmp_path)
    whole = path.read_bytes()
    path.write_bytes(whole[:-40])  # the last record half written
    check_journal(path)
    assert path.read_bytes() == whole[:whole.rindex(b"\n", 0, len(whole) - 1) + 1]
    assert "was cut short" in caplog.text
    study = optuna.load_study(study_name="nondiff", storage=storage_at(path, None))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)  # appends after the cut
    again = optuna.load_study(study_name="nondiff", storage=storage_at(path, None))
    assert len(again.trials) == 3  # without the cut: JSONDecodeError on every read from now on
    check_journal(path)  # whole again: left as it is
    assert path.read_bytes().endswith(b"\n")


@pytest.mark.parametrize("damage, says", [
    (lambda p, b: p.write_bytes(b[:60] + b"\n" + b[60:]), "line 1 is no Optuna journal record (JSONDecode"),
    (lambda p, b: p.write_bytes(b"\xc3\x28" + b), "line 1 is no Optuna journal record (UnicodeDecodeError"),
    (lambda p, b: p.write_bytes(b"[1, 2]\n" + b), "line 1 is no Optuna journal record (no op_code)"),
    (lambda p, b: p.write_bytes(b"SQLite format 3\x00" * 10), "its last line is no Optuna journal record"),
])
def test_a_damaged_or_foreign_journal_is_one_line_and_left_as_it_is(tmp_path, damage, says):
    path = _journal(tmp_path, trials=1)
    damage(path, path.read_bytes())
    before = path.read_bytes()
    with pytest.raises(UserError, match=re.escape(says)) as e:
        check_journal(path)
    assert str(e.value).startswith(f"{path}: ")
    assert str(e.value).endswith("restore it from a copy, or start a new study with another --study-dir")
    assert path.read_bytes() == before


def test_resuming_a_study_whose_journal_is_a_sqlite_file_is_one_line(tmp_path):
    study = tmp_path / "study"
    run_cli("train.py", "--env", "CartPole-v1", "--optimize", "--trials", "1", "--seeds-per-trial", "1",
            "--evaluations", "1", "--timesteps", "256", "--seed", "0", "--study-dir", str(study), "--quiet",
            "--set", "agent.n_steps=64", "--num-envs", "2", check=True)
    journal = study / "study.journal"
    journal.unlink()
    with sqlite3.connect(journal) as db:  # another tool's study database under the journal's name
        db.execute("create table trials (id integer)")
    proc = run_cli("train.py", "--optimize", "--resume", str(study), "--trials", "2", "--quiet")
    line = one_line(proc.stderr)
    assert proc.returncode == 2  # was exit 1: "unexpected KeyError: 'Record does not exist.'"
    assert line.startswith(f"error: {journal}: its last line is no Optuna journal record")
    assert line.endswith("start a new study with another --study-dir")


@pytest.mark.parametrize("record, says", [
    ('{"op_code": 99, "worker_id": "w"}', "(AssertionError: Should not reach.)"),
    ('{"op_code": 5, "worker_id": "w"}', "(KeyError: 'trial_id')"),
    ('{"op_code": 4, "worker_id": "w", "study_id": 0, "datetime_start": "yesterday"}',
     "(ValueError: Invalid isoformat string: 'yesterday')"),
])
def test_a_well_formed_record_optuna_cannot_replay_is_one_line(tmp_path, record, says):
    path = _journal(tmp_path, trials=1)
    with open(path, "a") as f:  # a record with an op_code: check_journal passes it
        f.write(record + "\n")
    check_journal(path)
    before = path.read_bytes()
    with pytest.raises(UserError, match=re.escape(says)) as e:  # was that error, exit 1 ("unexpected ...")
        storage_at(path, None)
    assert str(e.value).startswith(f"{path}: Optuna cannot replay a record of the study's journal (")
    assert str(e.value).endswith("restore it from a copy, or start a new study with another --study-dir")
    assert path.read_bytes() == before
