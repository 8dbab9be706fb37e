"""Other people's envs that flood the console: what they print (in-process, or in worker processes, C-level
writes too) passes at a bounded rate, with a line saying how much was dropped, and training goes on
(envs/console.py, envs/vector/console.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from conftest import FIXTURES, ROOT, run_cli

FAST = ["--set", "agent.n_steps=64", "--set", "agent.batch_size=64", "--set", "agent.n_epochs=1",
        "--num-envs", "2", "--quiet", "--set", "eval.every=0", "--timesteps", "128"]

FLOODING = '''
import os
import sys
from stub_env import Stub

BIG = "x" * (1 << 20)


class Env(Stub):
    def step(self, action):
        if os.environ["FLOOD"] == "print":
            print(BIG)  # 1 MB lines
        elif os.environ["FLOOD"] == "stderr":
            sys.stderr.write(BIG)  # never a newline
        else:
            os.write(1, BIG.encode())  # C-level writes, never a newline
        return super().step(action)
'''


@pytest.mark.parametrize(("vec", "how"), [("subproc", "print"), ("threadproc", "fd"), ("dummy", "print"),
                                          ("thread", "stderr")])
def test_an_env_that_floods_the_console_is_bounded_and_training_goes_on(tmp_path, monkeypatch, vec, how):
    # before: 128 MB on the console for 128 steps (10 MB a step made 1.3 GB); workers' output is relayed
    # (envs/vector/console.py), in-process envs' Python writes pass a bounded sys.stdout (envs/console.py)
    (tmp_path / "flooding_env.py").write_text(FLOODING)
    monkeypatch.setenv("NONDIFF_KEY_FILE", str(tmp_path / "key" / "nondiff.key"))
    proc = run_cli("train.py", "--env", "flooding_env:Env", "--run-dir", str(tmp_path / "run"), *FAST,
                   "--set", f"train.vec_env={vec}", timeout=60,
                   env={"PYTHONPATH": f"{tmp_path}:{FIXTURES}", "FLOOD": how})
    assert proc.returncode == 0 and "done: 128 steps" in proc.stdout, proc.stderr[-2000:]
    assert len(proc.stdout) + len(proc.stderr) < 2_000_000
    who = "env workers" if vec in ("subproc", "threadproc") else "the env"
    said = [x for x in proc.stderr.splitlines() if x.startswith(f"warning: {who} printed more than")]
    assert said and "(64.0 kB/s, lines up to 4,096 bytes)" in said[0] and "MB dropped in the last" in said[0]


def test_the_relay_cuts_long_lines_and_says_how_much_it_dropped(monkeypatch):
    import envs.console
    from envs.vector import console

    monkeypatch.setattr(envs.console, "BURST", 20_000)
    monkeypatch.setattr(envs.console, "RATE", 100)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    relay = console.ConsoleRelay("env workers", out=out_w, err=err_w)
    w_out, w_err = relay.pipes("env worker 0")
    os.write(w_out, b"hello\n" + b"z" * 5000 + b"\nafter\n")  # a line past LINE_MAX is cut to it
    os.write(w_err, b"n" * 100_000)  # a flood without a newline: its first LINE_MAX bytes
    os.write(w_err, b"\n" + b"m" * 99 + b"\n")  # the next line passes again...
    os.write(w_err, (b"k" * 99 + b"\n") * 200)  # ...until the budget (20,000 bytes, 100 a second) runs low
    os.close(w_out)
    os.close(w_err)
    relay.close()
    os.close(out_w)
    os.close(err_w)
    with os.fdopen(out_r, "rb") as f:
        out = f.read()
    with os.fdopen(err_r, "rb") as f:
        err = f.read().split(b"\n")
    assert out == b"hello\n" + b"z" * 4096 + b"\nafter\n"
    assert err[:2] == [b"n" * 4096, b"m" * 99]
    kept = [line for line in err[2:] if line == b"k" * 99]
    assert 0 < len(kept) < 200 and err[2:2 + len(kept)] == kept  # the rest dropped, as whole lines
    report = err[2 + len(kept)].decode()
    assert report.startswith("warning: env workers printed more than the console takes (100 bytes/s, "
                             "lines up to 4,096 bytes): ") and "kB dropped in the last" in report


def test_a_bounded_stdout_passes_nondiffs_own_lines_and_cuts_the_envs(monkeypatch):
    import io

    import envs.console
    from envs.console import bounded

    monkeypatch.setattr(envs.console, "BURST", 10_000)
    monkeypatch.setattr(envs.console, "RATE", 100)
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    own = "print('own ' + 'b' * 20_000)\nprint('warning: mine', file=sys.stderr)"
    with bounded():
        print("a" * 5000)  # this test module is not nondiff's: cut at LINE_MAX, print's newline once
        exec(own, {"__name__": "agents.run.fake", "sys": sys})  # nondiff's: whole, past the budget
        for _ in range(100):
            print("c" * 99)  # 5,903 left in the budget: some lines pass, the rest are dropped whole
    assert sys.stdout is out and sys.stderr is err
    lines = out.getvalue().split("\n")
    assert lines[:2] == ["a" * 4096, "own " + "b" * 20_000]
    kept = lines[2:-1]
    assert 0 < len(kept) < 100 and set(kept) == {"c" * 99}
    assert err.getvalue().startswith("warning: mine\nwarning: the env printed more than the console takes ")


def test_an_env_that_floods_a_terminal_does_not_stall_the_progress_bar(tmp_path, monkeypatch):
    # before: on a terminal rich's progress bar re-printed each 1 MB line itself and training sat at step 0
    import pty

    (tmp_path / "flooding_env.py").write_text(FLOODING)
    monkeypatch.setenv("NONDIFF_KEY_FILE", str(tmp_path / "key" / "nondiff.key"))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{FIXTURES}", "FLOOD": "print"}
    main, tty = pty.openpty()
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--env", "flooding_env:Env", "--run-dir",
                             str(tmp_path / "run"), *[a for a in FAST if a != "--quiet"]], cwd=ROOT, env=env,
                            stdin=tty, stdout=tty, stderr=tty)
    os.close(tty)
    out = bytearray()
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(main, 1 << 16)
            except OSError:  # the terminal closed: the trainer has exited
                break
            if not chunk:
                break
            out += chunk
    finally:
        proc.kill()
        proc.wait()
        os.close(main)
    text = out.decode(errors="replace")
    assert "done: 128 steps" in text and "warning: the env printed more than the console takes" in text
    assert len(out) < 2_000_000
