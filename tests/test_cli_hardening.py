"""train.py and evaluate.py against hostile run dirs and failures: one line, the right exit code,
nothing lost.

Real subprocesses, real files, real locks and a real file-size limit (issue 12 §5 and "checkpoint before
any exit").
"""

from __future__ import annotations

import json
import re
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, run_cli

from agents.run import checkpoint

FAST = ["--set", "agent.n_steps=64", "--set", "agent.batch_size=64", "--set", "agent.n_epochs=1",
        "--num-envs", "2", "--quiet", "--set", "eval.every=0", "--set", "train.checkpoint_every=64"]

# Imported by training through --env-package. It makes stable-baselines3's rollout buffer raise at its Nth
# add() when CRASH_AT is set: an exception from the learner's own code path, mid-rollout, which no env
# Guard can see or absorb (the Guard wraps env step/reset only). Without CRASH_AT it does nothing, so the
# same run resumes cleanly.
CRASH_PLUGIN = '''
import os
from stable_baselines3.common.buffers import RolloutBuffer

if os.environ.get("CRASH_AT"):
    _at, _orig, _calls = int(os.environ["CRASH_AT"]), RolloutBuffer.add, [0]
    _kind = {"RuntimeError": RuntimeError,
             "MemoryError": MemoryError}[os.environ.get("CRASH_KIND", "RuntimeError")]

    def add(self, *args, **kwargs):
        _calls[0] += 1
        if _calls[0] == _at:
            raise _kind("rollout buffer exploded")
        return _orig(self, *args, **kwargs)

    RolloutBuffer.add = add
'''


@pytest.fixture(autouse=True)
def _own_key(tmp_path, monkeypatch):
    """A signing key of this test's own user, so that tests never touch ~/.config."""
    monkeypatch.setenv("NONDIFF_KEY_FILE", str(tmp_path / "key" / "nondiff.key"))


def one_line(proc, *also: str):
    """The one error line (log warnings such as SB3's "resuming from fresh episodes" aside, and lines
    starting with any of ``also``)."""
    lines = [line for line in proc.stderr.strip().splitlines()
             if not line.startswith(("WARNING ", *also))]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def train_cartpole(run, *extra, timesteps="256"):
    return run_cli("train.py", "--env", "CartPole-v1", "--timesteps", timesteps, "--seed", "0",
                   "--run-dir", str(run), *FAST, *extra, check=True)


# -- 1 and 8: checkpoint before any exit; the crash checkpoint resumes -------------------------------------
@pytest.mark.parametrize("kind", ["RuntimeError", "MemoryError"])
def test_unexpected_error_mid_rollout_writes_crash_checkpoint_then_resumes(tmp_path, monkeypatch, kind):
    (tmp_path / "crash_plugin.py").write_text(CRASH_PLUGIN)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("CRASH_KIND", kind)
    monkeypatch.setenv("CRASH_AT", "80")  # vector step 80 of 2 envs: step 160, mid-rollout
    run = tmp_path / "run"
    proc = run_cli("train.py", "--env", "CartPole-v1", "--timesteps", "512", "--seed", "0",
                   "--run-dir", str(run), "--env-package", "crash_plugin", *FAST)
    assert proc.returncode == 1, proc.stderr
    line = one_line(proc)
    crash = run / "crash" / "model.safetensors"
    assert line.startswith(f"error: training stopped: unexpected {kind}: rollout buffer exploded")
    assert f"checkpoint written to {crash}; resume with:  python train.py --resume {run}" in line
    header = checkpoint.read_header(crash)
    assert header.num_timesteps == 160 and header.extra["stopped_by"].startswith("training stopped")
    monkeypatch.delenv("CRASH_AT")
    done = run_cli("train.py", "--resume", str(run), "--quiet", check=True)  # signed, so its package may load
    assert f"resuming {run} from model.safetensors at step 160" in done.stdout
    assert checkpoint.read_header(run / "final" / "model.safetensors").num_timesteps >= 512  # whole rollouts


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    (tmp_path / "crash_plugin.py").write_text(CRASH_PLUGIN)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("CRASH_AT", "3")
    proc = run_cli("train.py", "--env", "CartPole-v1", "--timesteps", "256",
                   "--run-dir", str(tmp_path / "run"), "--env-package", "crash_plugin", "--debug", *FAST)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "rollout buffer exploded" in proc.stderr
    assert "checkpoint written to" in proc.stderr.strip().splitlines()[-1]


def test_failed_crash_save_names_the_last_good_checkpoint(tmp_path, monkeypatch):
    (tmp_path / "crash_plugin.py").write_text(CRASH_PLUGIN)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    run = tmp_path / "run"
    train_cartpole(run, "--env-package", "crash_plugin")
    (run / "crash").write_text("a file where crash/ should be: the crash checkpoint cannot be written")
    monkeypatch.setenv("CRASH_AT", "5")
    proc = run_cli("train.py", "--resume", str(run), "--timesteps", "256", "--quiet")
    assert proc.returncode == 1
    line = one_line(proc)
    assert "writing a checkpoint failed too" in line
    assert f"last good checkpoint: {run / 'final' / 'model.safetensors'} (step 256)" in line
    assert checkpoint.read_header(run / "final" / "model.safetensors").num_timesteps == 256


# -- 5: a full disk (a real file-size limit: EFBIG) -------------------------------------------------------
def _limit_file_size():
    # write() then fails with EFBIG instead of killing the process
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, 400_000))


def test_checkpoint_write_hitting_a_file_size_limit_is_one_line_and_keeps_the_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    train_cartpole(run, "--set", "agent.net_arch=[256,256]")  # checkpoints of about 1.6 MB
    final = run / "final" / "model.safetensors"
    before = final.read_bytes()
    assert len(before) > 400_000
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--resume", str(run), "--timesteps", "256",
                           "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          preexec_fn=_limit_file_size)
    assert proc.returncode == 1, proc.stderr
    line = one_line(proc)
    assert line.startswith(f"error: training stopped: cannot write "
                           f"{run / 'checkpoints'}/step_0000000384.safetensors: File too large (")
    assert (" free there); last good checkpoint: "
            + f"{final} (step 256); free some space, then resume with:" in line)
    assert final.read_bytes() == before
    assert not [p for p in run.rglob("*.tmp")], "the failed write left a temp file"


# -- 2: the lock ------------------------------------------------------------------------------------------
def test_second_trainer_is_refused_and_a_killed_run_resumes(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--env", "CartPole-v1", "--timesteps",
                             "10000000", "--run-dir", str(run), *FAST], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not list((run / "checkpoints").glob("step_*.safetensors")):
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.05)
        config = (run / "config.yaml").read_bytes()
        second = run_cli("train.py", "--resume", str(run), "--timesteps", "64", "--quiet")
        assert second.returncode == 2
        assert f"is being trained right now by pid {proc.pid} on host" in one_line(second)
        assert (run / "config.yaml").read_bytes() == config
        assert len((run / "command.txt").read_text().splitlines()) == 1
    finally:
        proc.kill()
        proc.wait()
    json.loads((run / "lock").read_text())  # the dead holder's record stays; its flock is gone
    done = run_cli("train.py", "--resume", str(run), "--timesteps", "64", "--quiet", check=True)
    assert "done:" in done.stdout
    run_cli("evaluate.py", str(run), "--episodes", "1", check=True)  # reading needs no lock


# -- 3 and 4: links and stale temps -----------------------------------------------------------------------
def test_resume_through_a_linked_checkpoints_dir_is_refused_and_the_other_run_is_intact(tmp_path):
    other = tmp_path / "other"
    train_cartpole(other)
    files = {p: p.read_bytes() for p in other.rglob("*") if p.is_file() and p.name != "lock"}
    run = tmp_path / "run"
    shutil.copytree(other, run)
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").symlink_to(other / "checkpoints")
    for script, args in (("train.py", ["--resume", str(run), "--timesteps", "512", "--quiet"]),
                         ("evaluate.py", [str(run), "--episodes", "1"])):
        proc = run_cli(script, *args)
        assert proc.returncode == 2
        assert f"'checkpoints' is a symbolic link to '{other / 'checkpoints'}'" in one_line(proc)
    assert {p: p.read_bytes() for p in other.rglob("*") if p.is_file() and p.name != "lock"} == files


def test_resume_removes_stale_temp_files(tmp_path):
    run = tmp_path / "run"
    train_cartpole(run)
    stale = [run / "final" / ".model.safetensors.a1b2c3d4.tmp",
             run / "checkpoints" / ".step_1.safetensors.x9y8z7w6.tmp"]
    for p in stale:
        p.write_bytes(b"\0" * 100_000)
    run_cli("train.py", "--resume", str(run), "--timesteps", "64", "--quiet", check=True)
    assert not any(p.exists() for p in stale)


# -- 6: corrupted metadata --------------------------------------------------------------------------------
def test_mistyped_checkpoint_field_is_exit_2_for_evaluate_and_resume(tmp_path):
    from safetensors.torch import load, save_file

    run = tmp_path / "run"
    train_cartpole(run)
    final = run / "final" / "model.safetensors"
    data = final.read_bytes()
    meta = json.loads(json.loads(data[8:8 + int.from_bytes(data[:8], "little")])["__metadata__"]["nondiff"])
    meta["num_timesteps"] = "256"
    save_file(load(data), str(final), metadata={"nondiff": json.dumps(meta)})
    for script, args in (("evaluate.py", [str(run)]), ("train.py", ["--resume", str(run), "--quiet"])):
        proc = run_cli(script, *args)
        assert proc.returncode == 2
        assert (f"checkpoint '{final}' is corrupted: field 'num_timesteps' should be a non-negative integer, "
                "got str" in one_line(proc))


# -- 7: a run dir from elsewhere runs no code silently ----------------------------------------------------
def test_edited_config_command_is_refused_without_trust_run_dir(tmp_path):
    run = tmp_path / "run"
    train_cartpole(run)
    marker = tmp_path / "MARKER"
    cfg = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(cfg.replace("id: CartPole-v1",
                                                 f"id: process\n  command: sh -c 'touch {marker}'", 1))
    for script, args in (("evaluate.py", [str(run), "--episodes", "1"]),
                         ("train.py", ["--resume", str(run), "--timesteps", "64", "--quiet"])):
        proc = run_cli(script, *args)
        assert proc.returncode == 2
        line = one_line(proc)
        assert "does not match its signature" in line and f"env.command=\"sh -c 'touch {marker}'\"" in line
        assert "--trust-run-dir" in line
    assert not marker.exists()
    proc = run_cli("evaluate.py", str(run), "--episodes", "1", "--trust-run-dir", timeout=120)
    # trusted: the program was started (it is no env, so evaluate then fails)
    assert marker.exists(), proc.stderr
    assert proc.returncode != 0 and "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def signed_run(tmp_path_factory):
    """A run signed with a key of its own; the tests that copy it use the same key (the same user)."""
    base = tmp_path_factory.mktemp("signed")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NONDIFF_KEY_FILE", str(base / "nondiff.key"))
        train_cartpole(base / "run")
    return base


MODULE = "import pathlib, os\npathlib.Path(os.environ['MARKER']).touch()\nEnv = None\n"
ID = "  id: CartPole-v1"
EDITS = {  # issue 25 §1: each edit of config.yaml (old line -> new lines), and the phrase that names it
    "wrapper": ({"  wrappers: []": "  wrappers: [{'pydoc:pipepager': {'cmd': 'touch $MARKER'}}]"},
                "import and call env.wrappers="),
    "packages": ({"  packages: []": "  packages: [marker_mod]"}, "import env.packages=['marker_mod']"),
    "id": ({ID: "  id: 'marker_mod:Env'"}, "import the module of env.id='marker_mod:Env'"),
    "eval_kwargs": ({ID: "  id: process\n  listen: 127.0.0.1:0",
                     "  eval_kwargs: {}": "  eval_kwargs: {command: "
                     "'touch $MARKER'}"}, "start the program env.eval_kwargs.command='touch $MARKER'"),
    "address": ({ID: "  id: process\n  address: 10.255.255.1:9\n  allow_remote: true"},
                "connect to env.address='10.255.255.1:9'"),
    "listen": ({ID: "  id: process\n  listen: 0.0.0.0:0"}, "listen for programs on env.listen='0.0.0.0:0'"),
    "rllib.address": ({"  address: null": "  address: 10.255.255.1:6379"},
                      "join the Ray cluster at rllib.address='10.255.255.1:6379'"),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_every_setting_that_reaches_out_is_refused_before_anything_runs(signed_run, tmp_path, monkeypatch,
                                                                         edit):
    run, marker = tmp_path / "run", tmp_path / "MARKER"
    shutil.copytree(signed_run / "run", run)
    monkeypatch.setenv("NONDIFF_KEY_FILE", str(signed_run / "nondiff.key"))
    (tmp_path / "marker_mod.py").write_text(MODULE)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("MARKER", str(marker))
    lines, phrase = EDITS[edit]
    phrase = phrase.replace("$MARKER", str(marker))
    cfg = (run / "config.yaml").read_text()
    for old, new in lines.items():
        assert cfg.count(old) == 1, old
        cfg = cfg.replace(old, new.replace("$MARKER", str(marker)))
    (run / "config.yaml").write_text(cfg)
    for script, args in (("evaluate.py", [str(run), "--episodes", "1"]),
                         ("train.py", ["--resume", str(run), "--timesteps", "64", "--quiet"])):
        proc = run_cli(script, *args, timeout=60)
        assert proc.returncode == 2, proc.stderr
        text = one_line(proc)
        assert "does not match its signature" in text and phrase in text and "--trust-run-dir" in text, text
    assert not marker.exists()


def test_a_trusted_wrapper_that_fails_is_exit_2_on_resume(signed_run, tmp_path, monkeypatch):
    run, marker = tmp_path / "run", tmp_path / "MARKER"
    shutil.copytree(signed_run / "run", run)
    monkeypatch.setenv("NONDIFF_KEY_FILE", str(signed_run / "nondiff.key"))
    cfg = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(cfg.replace(
        "  wrappers: []", f"  wrappers: [{{'pydoc:pipepager': {{'cmd': 'touch {marker}'}}}}]", 1))
    proc = run_cli("train.py", "--resume", str(run), "--timesteps", "64", "--quiet", "--trust-run-dir",
                   timeout=60)
    # the wrapper's shell may still be running when train.py ends: the end-of-run sweep stops it and says so
    left = "warning: the env left 1 process running"
    line = one_line(proc, left)
    assert proc.returncode == 2 and "env 'CartPole-v1' rejected its settings" in line
    assert "pydoc:pipepager" in line and "failed on observation space" in line  # trusted: the wrapper ran
    assert marker.exists() or left in proc.stderr  # and its shell touched the marker, unless stopped first


def test_unsigned_run_dirs_load_when_they_run_no_code(tmp_path, monkeypatch):
    run = tmp_path / "run"
    train_cartpole(run)
    (run / "config.sig").unlink()  # as written before signing existed
    run_cli("evaluate.py", str(run), "--episodes", "1", check=True)
    monkeypatch.setenv("NONDIFF_KEY_FILE", str(tmp_path / "another_user.key"))
    run_cli("evaluate.py", str(run), "--episodes", "1", check=True)  # nothing foreign to run: no key needed
    # ... but what it asks to build is bounded by what the checkpoint holds: huge layers are not allocated
    cfg = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(re.sub(r"net_arch:.*(\n\s+- .*)*", "net_arch: [100000, 100000]", cfg))
    huge = run_cli("evaluate.py", str(run), "--episodes", "1")
    assert huge.returncode == 2 and "does not fit its config: agent.net_arch [100000, 100000] needs at " \
        "least 10,000,100,000 weights, its tensors hold" in one_line(huge), huge.stderr


def test_evaluate_refuses_a_negative_seed_in_one_line(capsys):
    import evaluate

    assert evaluate.main(["/no/such/run", "--seed", "-5"]) == 2  # not exit 1 after three failed resets
    err = capsys.readouterr().err.strip()
    assert err == "error: --seed must be 0 or more (episode i is seeded seed + i), got -5"


def test_resume_refuses_flags_it_would_not_apply(capsys):
    """--resume used to ignore --algo, --num-envs, --env, --set... silently: the run went on as before."""
    import train

    assert train.main(["--resume", "/no/such/run", "--algo", "a2c", "--num-envs", "3", "--set", "x.y=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --resume continues '/no/such/run' with its own settings (its config.yaml); "
                          "--algo, --num-envs, --set would change them and cannot be applied: drop them")
    assert "\n" not in err
    assert train.main(["--resume", "/no/such/run", "--timesteps", "5", "--device", "cpu", "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err  # the flags --resume takes pass: the next check speaks


def test_evaluate_refuses_an_output_path_it_cannot_write_before_playing(capsys, tmp_path):
    """--video/--json into a missing directory: exit 1 'unexpected FileNotFoundError' after the episodes."""
    import evaluate

    for flag, path in (("--video", "/no/such/dir/v.mp4"), ("--json", "/no/such/dir/e.json"),
                       ("--figure", str(tmp_path))):
        assert evaluate.main(["/no/such/run", flag, path]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {flag} {path!r} ")
        assert err.endswith("give a file path in an existing directory")


def test_evaluate_closes_the_backend_even_when_the_env_fails_to_close(tmp_path, monkeypatch, capsys):
    """An env stack whose close() raises left the loaded backend (a blackbox problem's program) unclosed. (An
    adapter's own close() error stops at its Guard, a warning; this one comes from the stack's top.)"""
    import evaluate
    from agents.sb3.backend import SB3Backend
    from envs.guard import Guard

    run = tmp_path / "run"
    train_cartpole(run)
    closed = []
    real_close = SB3Backend.close
    monkeypatch.setattr(SB3Backend, "close", lambda self: (closed.append(True), real_close(self))[1])
    monkeypatch.setattr(Guard, "close", lambda self: (_ for _ in ()).throw(RuntimeError("env close")))
    assert evaluate.main([str(run), "--episodes", "1"]) == 1
    assert closed == [True]
    assert "env close" in capsys.readouterr().err
