"""`make test` runs on two pytest-xdist workers with ``--dist loadgroup``: the tests that join the shared Ray
must share one worker (tests/conftest.py), and the installed pytest and pytest-xdist must honour the group
(pytest 9.2 silently stopped it: pytest-xdist#1386, hence the pin in pyproject.toml)."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT

TESTS = '''
import pytest

@pytest.fixture
def shared_ray():  # stands in for the session's Ray: only the name matters to the grouping
    return None

@pytest.mark.parametrize("i", range(4))
def test_joins(shared_ray, i):
    pass

@pytest.mark.parametrize("i", range(4))
def test_alone(i):
    pass
'''


def test_tests_that_join_the_shared_ray_run_on_one_worker(tmp_path):
    (tmp_path / "test_groups.py").write_text(TESTS)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-n", "2", "--dist", "loadgroup",
                           "-v", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT / "tests"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    ran = re.findall(r"\[(gw\d)\] \[\s*\d+%\] PASSED \S+::(test_\w+)\[\d\](@shared-ray)?", proc.stdout)
    assert len(ran) == 8, proc.stdout[-2000:]
    joined = {(gw, group) for gw, name, group in ran if name == "test_joins"}
    assert len(joined) == 1 and next(iter(joined))[1] == "@shared-ray", joined  # one worker, the group's
    assert all(not group for _, name, group in ran if name == "test_alone")
