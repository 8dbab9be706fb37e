"""Run directories and checkpoint headers in-process: links refused, pruning safe, temps cleaned, lock
held."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from gymnasium import spaces

from agents.config import RunConfig
from agents.run import checkpoint, trust
from agents.run.header import FORMAT, CheckpointHeader
from agents.run.rundir import RunDir
from envs.errors import CheckpointError, UserError


def _meta(step=7, **over):
    meta = checkpoint.base_meta("test", "ppo", step, 0, (spaces.Box(-1, 1, (3,)), spaces.Discrete(2)), {})
    return {"format": FORMAT, **meta, **over}


def _write(path, meta):
    """A safetensors file whose nondiff metadata is ``meta`` exactly (no validation on the way out)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.zeros(3)}, str(path), metadata={"nondiff": json.dumps(meta)})
    return path


# -- the typed header --------------------------------------------------------------------------------------
def test_header_round_trip_is_typed(tmp_path):
    path = checkpoint.save(tmp_path / "c.safetensors", {"w": torch.ones(2)}, _meta(42))
    header = checkpoint.read_header(path)
    assert isinstance(header, CheckpointHeader)
    assert header.num_timesteps == 42 and header.backend == "test" and header.tensor_aliases == {}
    assert checkpoint.load(path).header == header


BAD_FIELDS = [
    ({"num_timesteps": None}, "field 'num_timesteps' should be a non-negative integer, got NoneType"),
    ({"num_timesteps": "12"}, "field 'num_timesteps' should be a non-negative integer, got str"),
    ({"num_timesteps": True}, "field 'num_timesteps' should be"),
    ({"seed": 1.5}, "field 'seed' should be an integer or null"),
    ({"observation_space": {"type": "Box"}}, "field 'observation_space' is not a space description"),
    ({"action_space": []}, "field 'action_space' should be a space description"),
    ({"config": "x"}, "field 'config' should be an object"),
    ({"backend": "sb3"}, "field 'n_updates' is missing"),
    ({"backend": "sb3", "n_updates": 1, "optimizer": None, "rng": {"python": [1], "numpy": []}},
     "field 'rng'"),
    ({"tensor_aliases": {"a": 3}}, "field 'tensor_aliases'"),
]


@pytest.mark.parametrize("over, message", BAD_FIELDS, ids=[m.split(" should")[0] for _, m in BAD_FIELDS])
def test_wrong_or_missing_field_is_a_corrupted_checkpoint_not_a_keyerror(tmp_path, over, message):
    path = _write(tmp_path / "c.safetensors", _meta(**over))
    for read in (checkpoint.read_header, checkpoint.load):
        with pytest.raises(CheckpointError, match="is corrupted: " + message.replace("(", r"\(")):
            read(path)


def test_missing_field_and_foreign_metadata(tmp_path):
    meta = _meta()
    del meta["num_timesteps"]
    with pytest.raises(CheckpointError, match="field 'num_timesteps' is missing"):
        checkpoint.read_header(_write(tmp_path / "a.safetensors", meta))
    with pytest.raises(CheckpointError, match="metadata is list"):
        checkpoint.read_header(_write(tmp_path / "b.safetensors", [1, 2]))
    with pytest.raises(CheckpointError, match="has format 'other/1'"):
        checkpoint.read_header(_write(tmp_path / "c.safetensors", {**_meta(), "format": "other/1"}))


def test_huge_header_length_is_refused_without_reading_the_file(tmp_path):
    path = tmp_path / "c.safetensors"
    path.write_bytes((2**40).to_bytes(8, "little") + b"{" + b" " * 100)
    with pytest.raises(CheckpointError, match="header length"):
        checkpoint.read_header(path)
    with pytest.raises(CheckpointError, match="header length"):
        checkpoint.load(path)


def test_header_is_read_without_the_tensors(tmp_path, monkeypatch):
    path = checkpoint.save(tmp_path / "c.safetensors", {"w": torch.zeros(2_000_000)}, _meta(5))
    monkeypatch.setattr(type(path), "read_bytes", lambda self: pytest.fail("the whole file was read"))
    assert checkpoint.read_header(path).num_timesteps == 5


# -- links, pruning, temps ---------------------------------------------------------------------------------
def _run(tmp_path, name="run"):
    run = RunDir.create("CartPole-v1", 0, explicit=tmp_path / name)
    run.config.write_text("env: {id: CartPole-v1}\n")
    return run


def test_linked_entries_are_refused_on_open_and_write(tmp_path):
    other = _run(tmp_path, "other")
    for step in (1, 2):
        checkpoint.save(other.checkpoint_path(step), {"w": torch.zeros(1)}, _meta(step))
    before = sorted(p.name for p in other.checkpoints.iterdir())
    run = _run(tmp_path)
    for name in ("checkpoints", "final", "crash", "command.txt", "lock", "config.yaml"):
        target = run.path / name
        if target.is_dir():
            target.rmdir()
        elif target.exists():
            target.unlink()
        target.symlink_to(other.path / name)
        with pytest.raises(UserError, match=f"'{name}' is a symbolic link"):
            RunDir.open(run.path)
        target.unlink()
        if name in ("checkpoints", "final"):
            target.mkdir()
    run.config.write_text("env: {id: CartPole-v1}\n")
    opened = RunDir.open(run.path)
    opened.checkpoints.rmdir()
    opened.checkpoints.symlink_to(other.checkpoints)  # swapped after open: writes and pruning still refuse
    with pytest.raises(UserError, match="symbolic link"):
        opened.checkpoint_path(3)
    with pytest.raises(UserError, match="symbolic link"):
        opened.rotate(1)
    assert sorted(p.name for p in other.checkpoints.iterdir()) == before


def test_a_league_that_is_a_link_is_refused(tmp_path):
    """A self-play run whose league/ links to another run's: its resume wrote its snapshots and league states
    there (two runs writing one league); the run's league path refuses it (selfplay/plumbing.py uses it)."""
    other = _run(tmp_path, "other")
    (other.path / "league").mkdir()
    run = _run(tmp_path)
    assert run.league == run.path / "league"  # none yet: a league is made by the first snapshot
    (run.path / "league").symlink_to(other.path / "league")
    with pytest.raises(UserError, match="'league' is a symbolic link to .*; nondiff never writes or deletes "
                                        "through a link"):
        run.league  # noqa: B018


def test_rotate_keeps_the_newest_and_unlinks_links_not_targets(tmp_path):
    run = _run(tmp_path)
    outside = tmp_path / "outside.safetensors"
    outside.write_text("precious")
    for step in (1, 2, 3):
        checkpoint.save(run.checkpoint_path(step), {"w": torch.zeros(1)}, _meta(step))
    run.checkpoint_path(0).symlink_to(outside)
    run.rotate(2)
    assert [s for s, _ in run.step_checkpoints()] == [2, 3]
    assert outside.read_text() == "precious"


def test_stale_temps_removed_only_inside_and_never_through_links(tmp_path):
    run = _run(tmp_path)
    stale = [run.path / ".config.yaml.abc123xy.tmp", run.final.parent / ".model.safetensors.k2j3h4g5.tmp",
             run.checkpoints / ".step_0000000064.safetensors.zzzzzzzz.tmp"]
    for p in stale:
        p.write_bytes(b"x" * 1000)
    keep = [run.path / "notes.tmp", run.checkpoints / "step_0000000064.safetensors"]
    for p in keep:
        p.write_bytes(b"keep")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    foreign = elsewhere / ".model.safetensors.abcdefgh.tmp"
    foreign.write_bytes(b"not ours")
    # a link named like a temp: the link goes, not its target
    (run.best.parent / ".x.abcdefgh.tmp").symlink_to(foreign)
    removed = run.remove_stale_temps()
    assert sorted(removed) == sorted(stale) and not any(p.exists() for p in stale)
    assert all(p.exists() for p in keep) and foreign.read_bytes() == b"not ours"


def test_latest_prefers_the_newest_step_and_reads_headers(tmp_path):
    run = _run(tmp_path)
    assert run.latest() is None
    checkpoint.save(run.checkpoint_path(64), {"w": torch.zeros(1)}, _meta(64))
    checkpoint.save(run.crash, {"w": torch.zeros(1)}, _meta(64))
    assert run.latest() == run.checkpoint_path(64)  # a tie goes to the exact resume point
    checkpoint.save(run.crash, {"w": torch.zeros(1)}, _meta(100))
    assert run.latest() == run.crash
    checkpoint.save(run.final, {"w": torch.zeros(1)}, _meta(128))
    assert run.latest() == run.final
    _write(run.final, _meta(num_timesteps="many"))
    with pytest.raises(CheckpointError, match="field 'num_timesteps'"):
        run.latest()


def test_lock_refuses_a_second_holder_and_dies_with_the_process(tmp_path):
    run = _run(tmp_path)
    code = ("import sys, time; from agents.run.rundir import RunDir\n"
            "with RunDir.open(sys.argv[1]).lock():\n    print('locked', flush=True); time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code, str(run.path)], stdout=subprocess.PIPE, text=True,
                             cwd=ROOT)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=f"being trained right now by pid {child.pid} on host"), \
                run.lock():
            pass
    finally:
        child.kill()
        child.wait()
    with run.lock():  # SIGKILL released it
        assert json.loads((run.path / "lock").read_text())["pid"] == os.getpid()


def test_write_command_redacts_when_config_offers_it(tmp_path, monkeypatch):
    from agents import config

    run = _run(tmp_path)
    monkeypatch.setattr(config, "redact_argv", lambda argv: [a.replace("s3cret", "***") for a in argv],
                        raising=False)
    run.write_command(["train.py", "--set", "env.token=s3cret"])
    text = (run.path / "command.txt").read_text()
    assert "s3cret" not in text and "env.token=***" in text


# -- signatures -------------------------------------------------------------------------------------------
def test_signature_gates_only_configs_that_run_code(tmp_path, monkeypatch):
    monkeypatch.setenv("NONDIFF_KEY_FILE", str(tmp_path / "key"))
    run = _run(tmp_path)
    plain = b"env: {id: CartPole-v1}\n"
    code = b"env: {id: process, command: ./evil}\n"
    run.config.write_bytes(plain)
    trust.load_run_config(run, trust=False, action="evaluate")  # unsigned, but runs no foreign code
    run.config.write_bytes(code)
    with pytest.raises(UserError,
                       match="is not signed .* start the program env.command='./evil'.*--trust-run-dir"):
        trust.load_run_config(run, trust=False, action="evaluate")
    trust.sign(run, code)
    assert oct((tmp_path / "key").stat().st_mode & 0o777) == "0o600"
    cfg, _ = trust.load_run_config(run, trust=False, action="evaluate")
    assert isinstance(cfg, RunConfig)
    monkeypatch.setenv("NONDIFF_KEY_FILE", str(tmp_path / "someone_else"))
    trust.sign(_run(tmp_path, "theirs"), b"")  # another user's key exists
    with pytest.raises(UserError, match="does not match its signature"):
        trust.load_run_config(run, trust=False, action="resume")
    trust.load_run_config(run, trust=True, action="resume")
    for text, what in ((b"env: {id: 'evil_mod:Env'}\n", "import the module of env.id='evil_mod:Env'"),
                       (b"env: {id: CartPole-v1, packages: [evil]}\n", "import env.packages"),
                       (b"env: {id: CartPole-v1}\nrllib: {extra: {callbacks: x}}\n",
                        "hand Ray, as they are, the settings rllib.extra")):
        run.config.write_bytes(text)
        with pytest.raises(UserError, match=what):
            trust.load_run_config(run, trust=False, action="evaluate")


@pytest.mark.parametrize("sig", [b"\xc3\xa9" * 32, bytes(range(256)), b""])
def test_a_signature_file_of_other_bytes_does_not_match(tmp_path, monkeypatch, sig):
    monkeypatch.setenv("NONDIFF_KEY_FILE", str(tmp_path / "key"))
    run = _run(tmp_path)
    code = b"env: {id: 'evil_mod:Env'}\n"
    run.config.write_bytes(code)
    trust.sign(run, code)
    assert trust.verify(run, code) is None
    run.signature.write_bytes(sig)  # was exit 1: "unexpected TypeError: comparing strings with non-ASCII"
    with pytest.raises(UserError, match="does not match its signature"):
        trust.load_run_config(run, trust=False, action="evaluate")


def test_a_key_readable_by_others_is_refused(tmp_path, monkeypatch):
    key = tmp_path / "key"
    key.write_text("a" * 64)
    key.chmod(0o644)
    monkeypatch.setenv("NONDIFF_KEY_FILE", str(key))
    run = _run(tmp_path)
    with pytest.raises(UserError, match="chmod 600"):
        trust.sign(run, b"x")


def test_a_file_or_a_study_dir_given_as_run_dir_is_named_as_such(tmp_path):
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"x")  # was: "run directory '.../model.safetensors' does not exist"
    with pytest.raises(UserError, match=r"model\.safetensors' is a file, not a directory; pass a directory"):
        RunDir.open(ckpt)
    with pytest.raises(UserError, match="'.*gone' does not exist; pass a directory"):
        RunDir.open(tmp_path / "gone")
    (tmp_path / "study.yaml").write_text("search: {}\n")  # train.py --optimize's dir
    with pytest.raises(UserError, match=r"\(no config\.yaml, but a study dir of train\.py --optimize: its "
                                        r"runs are its trial-NNNN/seed-S\)"):
        RunDir.open(tmp_path)


@pytest.mark.parametrize(("name", "folder"), [("tensorboard", True), ("league", True), ("checkpoints", True),
                                              ("command.txt", False), ("lock", False)])
def test_a_file_where_a_folder_belongs_or_the_other_way_round_is_refused_on_open(tmp_path, name, folder):
    run = _run(tmp_path)
    RunDir.open(run.path)
    entry = run.path / name
    shutil.rmtree(entry) if entry.is_dir() else entry.unlink(missing_ok=True)
    entry.write_text("x") if folder else entry.mkdir()
    what = "no directory" if folder else "a directory, not a file"  # was: a resume's FileExistsError, exit 1
    with pytest.raises(UserError, match=f"'{re.escape(name)}' is {what}, where nondiff keeps its "):
        RunDir.open(run.path)
