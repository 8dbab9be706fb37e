"""No descendant of a bridge program survives: not after close(), not after SIGKILL of the trainer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from envs.bridge import reaper
from envs.bridge.process import ProcessEnv

HOSTILE = ROOT / "tests" / "fixtures" / "bridge" / "hostile.py"


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def read_pid(path: Path, within: float = 10.0) -> int:
    """The pid the hostile program's grandchild writes; it may still be writing it when the reset returns."""
    deadline = time.monotonic() + within
    while not (text := path.read_text().strip() if path.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.02)
    return int(text)


def wait_gone(pids: list[int], within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def test_setsid_grandchild_that_ignores_sigterm_dies_with_close(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    env = ProcessEnv(command=f"{sys.executable} {HOSTILE} grandchild {pidfile}", term_grace=0.5)
    env.reset(seed=0)
    grandchild, program, supervisor = read_pid(pidfile), env.program_pid, env._proc.pid
    # a new session: killpg misses it
    assert alive(grandchild) and os.getsid(grandchild) != os.getsid(program)
    assert grandchild in reaper.descendants(supervisor)  # re-parented to the subreaper
    env.close()
    assert wait_gone([grandchild, program, supervisor], 3.0)


def test_nothing_survives_sigkill_of_the_trainer(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    trainer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from envs.bridge.process import ProcessEnv
        env = ProcessEnv(command="{sys.executable} {HOSTILE} grandchild {pidfile}")
        env.reset(seed=0)
        print(env.program_pid, env._proc.pid, flush=True)
        time.sleep(600)
    """)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    program, supervisor = (int(x) for x in trainer.stdout.readline().split())
    grandchild = read_pid(pidfile)
    assert all(alive(p) for p in (grandchild, program, supervisor))
    trainer.kill()
    trainer.wait()
    assert wait_gone([grandchild, program, supervisor], 5.0)


def test_env_made_in_a_thread_that_ends_keeps_its_program():
    """PR_SET_PDEATHSIG would kill the program when the spawning *thread* exits; the lifeline does not."""
    box = []
    t = threading.Thread(target=lambda: box.append(ProcessEnv(command=f"{sys.executable} {HOSTILE} normal")))
    t.start()
    t.join()
    time.sleep(0.3)
    env = box[0]
    env.reset(seed=0)
    *_, trunc, info = env.step(np.array([0.5], dtype=np.float32))
    assert not trunc and "nondiff_fault" not in info
    env.close()


@pytest.mark.parametrize("how, code", [("exit 3", 3), ("kill -ABRT $$", -signal.SIGABRT)])
def test_supervisor_exits_the_way_its_program_did(how, code):
    proc = subprocess.run(reaper.command(["sh", "-c", how], 1.0, -1), capture_output=True, timeout=10)
    assert proc.returncode == code


def test_supervisor_start_up_cost_is_small():
    def best(argv: list[str]) -> float:
        times = []
        for _ in range(5):
            t = time.perf_counter()
            subprocess.run(argv, check=True)
            times.append(time.perf_counter() - t)
        return min(times)

    bare = best(["true"])
    supervised = best(reaper.command(["true"], 1.0, -1))
    print(f"supervisor start-up cost: {(supervised - bare) * 1e3:.1f} ms")
    assert supervised - bare < 0.25


def test_the_program_runs_under_sched_batch():
    """A program woken by the trainer's request must not preempt the trainer before its other requests are
    out (envs/bridge/reaper.py): it runs under SCHED_BATCH, and so do the processes it starts."""
    probe = "import os, subprocess, sys; print(os.sched_getscheduler(0)); sys.stdout.flush(); " \
            "subprocess.run([sys.executable, '-c', 'import os; print(os.sched_getscheduler(0))'])"
    proc = subprocess.run(reaper.command([sys.executable, "-c", probe], 1.0, -1), capture_output=True,
                          text=True, timeout=10)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(os.SCHED_BATCH)] * 2


def test_a_system_that_refuses_sched_batch_leaves_the_policy_as_it_is(monkeypatch):
    """Where the system lacks SCHED_BATCH, or refuses it (a container's seccomp, another OS), the supervisor
    starts the program under the policy it has instead of failing."""
    calls, batch = [], os.SCHED_BATCH

    def refuse(pid, policy, param):
        calls.append(policy)
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    reaper._batch_policy()  # refused: no exception
    assert calls == [batch]
    monkeypatch.delattr(os, "SCHED_BATCH")
    reaper._batch_policy()  # absent: not even asked
    assert calls == [batch]
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # this process's own policy never changed


def test_a_wrapper_sees_its_program_end_and_tidies_up_before_it_is_stopped(tmp_path):
    """Stopping a program under a wrapper (``xvfb-run``, a shell script): the innermost process gets SIGTERM
    first, so the wrapper's cleanup after its child runs. All at once, the wrapper died by the signal
    mid-wait: every Godot camera run left its X lock, socket and xvfb-run temp dir in /tmp."""
    marker = tmp_path / "tidied"
    script = 'sleep 1000 & echo started; wait $!; touch "$0"'
    proc = subprocess.Popen(reaper.command(["sh", "-c", script, str(marker)], 2.0, -1),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
    time.sleep(0.2)  # the wrapper is in its wait
    t = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    assert marker.exists() and time.monotonic() - t < 1.0


def test_a_program_stopped_before_its_cleanup_leaves_no_temp_files(tmp_path):
    """Every program gets a ``TMPDIR`` of its own, removed once it is gone: a Blender killed by the watchdog
    left its ``/tmp/blender_*`` session dir, since it never ran its cleanup."""
    script = 'mkdir "$TMPDIR/session" && echo x > "$TMPDIR/session/f" && echo "$TMPDIR"; sleep 1000'
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(reaper.command(["sh", "-c", script], 1.0, -1), stdout=subprocess.PIPE, text=True,
                            env=env)
    assert proc.stdout is not None
    private = Path(proc.stdout.readline().strip())
    assert private.parent == tmp_path and (private / "session" / "f").is_file()
    proc.send_signal(signal.SIGTERM)  # as close() and the watchdog stop it
    proc.wait(10)
    assert list(tmp_path.iterdir()) == []
    # a program that exits by itself leaves nothing either, and one that cannot start makes no dir
    run = {"env": env, "capture_output": True, "timeout": 10}
    assert subprocess.run(reaper.command(["sh", "-c", 'touch "$TMPDIR/x"'], 1.0, -1), **run).returncode == 0
    assert subprocess.run(reaper.command(["/nonexistent/program"], 1.0, -1), **run).returncode == 127
    assert list(tmp_path.iterdir()) == []


def test_an_unusable_trainer_temp_dir_still_gives_the_program_a_private_one(tmp_path):
    """The private dir falls back as Python's tempfile does (/tmp, ...), and is removed all the same."""
    missing = tmp_path / "gone"
    out = subprocess.run(reaper.command(["sh", "-c", 'echo "$TMPDIR"'], 1.0, -1), capture_output=True,
                         env={**os.environ, "TMPDIR": str(missing)}, text=True, timeout=10)
    private = Path(out.stdout.strip())
    assert out.returncode == 0 and private.name.startswith("nondiff-program-"), out.stderr
    assert private.parent != missing and not private.exists()


def test_a_supervisor_killed_with_its_program_leaves_no_temp_dir(tmp_path, monkeypatch):
    """``python -m envs check`` kills (or stops) the program's whole process group, the supervisor with it,
    which then cannot remove the program's temp dir: every check of a bridge env left two. The env removes
    it when it has waited for the supervisor."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    env = ProcessEnv(command=f"{sys.executable} {HOSTILE} normal", term_grace=0.3)
    env.reset(seed=0)
    supervisor = env._proc.pid
    assert [p.name for p in tmp_path.iterdir()][0].startswith(f"nondiff-program-{supervisor}-")
    os.killpg(supervisor, signal.SIGKILL)
    env.close()
    assert list(tmp_path.iterdir()) == []


def test_with_no_temp_dir_to_be_had_the_program_still_runs_with_the_trainers(tmp_path):
    """With no private dir to be had, the program runs as it would without nondiff: TMPDIR unchanged."""
    boot = ("import runpy, sys, tempfile\n"
            "def refuse(*a, **k):\n    raise OSError(28, 'No space left on device')\n"
            "tempfile.mkdtemp = refuse\n"
            "sys.argv = sys.argv[1:]\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    argv = reaper.command(["sh", "-c", 'echo "$TMPDIR"; echo x > "$TMPDIR/made"'], 1.0, -1)
    assert argv[3] == os.path.abspath(reaper.__file__)
    out = subprocess.run([argv[0], "-I", "-S", "-c", boot, *argv[3:]], capture_output=True, text=True,
                         env={**os.environ, "TMPDIR": str(tmp_path)}, timeout=10)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["made"]  # the program's file; nothing of the supervisor's
