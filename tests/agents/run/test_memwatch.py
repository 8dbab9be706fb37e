"""The memory watch (agents/run/memwatch.py): a run whose env keeps memory stops with a checkpoint and one
line, before the kernel's OOM killer would take the trainer and everything since its last checkpoint."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import FIXTURES, run_cli, scalars

from agents.run import memwatch
from agents.run.memwatch import GREW, MemoryWatch
from envs.errors import EnvFailure, MemoryExhausted

LEAKY = '''
import time

import numpy as np
from stub_env import Stub

KEPT = []


class Env(Stub):
    """Keeps 2 MiB each step, written so that it is resident: a leak (of 800 MiB at most, so that without the
    watch the run ends, and the test fails, instead of exhausting the machine)."""

    def step(self, action):
        if len(KEPT) < 400:
            KEPT.append(np.ones(2 << 20, np.uint8))
        time.sleep(0.005)
        return super().step(action)
'''


def test_an_env_that_leaks_stops_the_run_at_max_memory_gb_with_final_and_one_line(tmp_path):
    (tmp_path / "leaky_env.py").write_text(LEAKY)
    run = tmp_path / "run"
    env = {"PYTHONPATH": f"{tmp_path}:{FIXTURES}", "NONDIFF_KEY_FILE": str(tmp_path / "key" / "nondiff.key")}
    out = run_cli("train.py", "--env", "leaky_env:Env", "--run-dir", str(run), "--num-envs", "2", "--quiet",
                  "--timesteps", "1000", "--set", "agent.n_steps=64", "--set", "agent.batch_size=64",
                  "--set", "agent.n_epochs=1", "--set", "eval.every=0", "--set", "train.max_memory_gb=0.6",
                  timeout=120, env=env)
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    line = lines[0]
    assert "over train.max_memory_gb=0.6" in line and "MiB per env step" in line, line
    per_step = float(line.split("(about ")[1].split(" MiB per env step")[0])
    assert 1.8 <= per_step <= 2.3, line  # the env keeps 2 MiB a step
    assert line.startswith("error: training stopped: memory: ")
    assert line.endswith(f"resume with:  python train.py --resume {run} (add --max-memory-gb N to change the "
                         "limit)")
    assert (run / "final" / "model.safetensors").is_file()
    stopped_at = int(line.split(" at step ")[2].split(" ")[0].replace(",", ""))
    assert stopped_at < 1_000
    free = scalars(run).Scalars("health/free_memory_gb")
    assert free and 0 < free[-1].value < 1 << 20
    # where the run goes on, it may take more: --resume takes the limit, as it takes --device
    out = run_cli("train.py", "--resume", str(run), "--max-memory-gb", "8", "--timesteps", "64", timeout=120,
                  env=env)
    assert out.returncode == 0, out.stderr
    assert "max_memory_gb: 8.0" in (run / "config.yaml").read_text()


class Fake:
    """The machine's free memory and the trainer's tree, set by the test; time advances 1 s per look."""

    def __init__(self, free: int, tree: int) -> None:
        self.free, self.tree, self.now = free, tree, 0.0

    def clock(self) -> float:
        self.now += memwatch.CHECK_EVERY_S
        return self.now


def _watch(fake: Fake, said: list[str], limit_gb: float | None = None) -> MemoryWatch:
    return MemoryWatch(limit_gb, said.append, free=lambda: fake.free, tree=lambda: fake.tree,
                       clock=fake.clock)


def test_the_floor_stops_the_run_only_when_the_trainers_processes_grew():
    fake, said = Fake(free=8 << 30, tree=1 << 30), []
    watch = _watch(fake, said)
    watch.look(0)  # the base: 1 GiB
    fake.free = watch.floor - 1  # other processes took the memory: a warning, training goes on
    watch.look(100)
    watch.look(200)  # warned once a minute, not at every look
    assert len(said) == 1 and "held by other processes" in said[0], said
    fake.tree += GREW  # now the trainer's processes grew by GREW
    with pytest.raises(MemoryExhausted) as e:
        watch.look(1_000)
    assert isinstance(e.value, EnvFailure)  # the runner writes final/ and one line, as for any env failure
    msg = str(e.value)
    assert "left (the floor is" in msg and "from 1 GiB at step 0 to 1.25 GiB at step 1,000" in msg, msg
    assert "262 KiB per env step" in msg, msg  # 256 MiB over 1,000 steps


def test_above_the_floor_and_under_the_limit_nothing_happens_and_looks_are_throttled():
    fake, said = Fake(free=8 << 30, tree=1 << 30), []
    watch = _watch(fake, said, limit_gb=2.0)
    for step in range(10):
        watch.look(step)
    assert said == [] and watch.metrics() == {"health/free_memory_gb": 8.0}
    fake.tree = 3 << 30
    with pytest.raises(MemoryExhausted, match=r"hold 3 GiB, over train.max_memory_gb=2"):
        for step in range(10, 20):  # the tree is summed every TREE_EVERY_S, not at each look
            watch.look(step)
    fake, said = Fake(free=8 << 30, tree=1 << 30), []
    watch = _watch(fake, said, limit_gb=0.5)  # too low for what the run holds from its start
    with pytest.raises(MemoryExhausted, match=r"hold 1 GiB at step 0, over train.max_memory_gb=0.5 since "
                                              r"training began; raise it above 1 GiB$"):
        watch.look(0)
    calls = []
    watch = MemoryWatch(None, said.append, free=lambda: calls.append(1) or fake.free, tree=lambda: 0,
                        clock=lambda: 5.0)
    for step in range(100):
        watch.look(step)  # the same instant: one read of the machine's memory
    assert len(calls) == 1


def test_the_floor_is_five_percent_of_the_machine_between_256_mib_and_2_gib():
    assert memwatch.floor(24 << 30) == int((24 << 30) * 0.05)
    assert memwatch.floor(1 << 30) == 256 << 20
    assert memwatch.floor(1 << 40) == 2 << 30


def test_the_real_readings_are_plausible_and_the_tree_counts_children():
    free = memwatch.available()
    assert free is not None and 0 < free < memwatch.machine_memory()[0] * 1.01
    alone = memwatch.tree_bytes()
    assert 10 << 20 < alone < 8 << 30  # this pytest process
    holds = "x = bytearray(200 << 20); print(1, flush=True); input()"
    child = subprocess.Popen([sys.executable, "-c", holds], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "1"  # its 200 MiB are written
        assert memwatch.tree_bytes() - alone > 180 << 20
    finally:
        child.kill()
        child.wait()
