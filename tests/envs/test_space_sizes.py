"""Issue 25 §3: every declared size is bounded before it is allocated (K instances × a space of any type).

Unit tests of the spec parser for each space type, then the issue's cases through train.py as real
processes: exit code 2, one line, no traceback, and the child's peak RSS measured.
"""

from __future__ import annotations

import json
import shlex
import sys
import time

import pytest
from conftest import ROOT
from measure import one_line, run_measured

from envs.bridge import messages as M
from envs.errors import SpecError
from envs.spaces import space_from_json

HOSTILE = ROOT / "tests" / "fixtures" / "bridge" / "hostile.py"
ACT = {"type": "Box", "low": 0, "high": 1, "shape": [1], "dtype": "float32"}
BOX = {"type": "Box", "low": -1, "high": 1, "shape": [1000], "dtype": "float32"}
SPACES = {  # one instance's elements: 1000 each
    "Box": BOX,
    "Discrete": {"type": "Tuple", "spaces": [{"type": "Discrete", "n": 3}] * 1000},
    "MultiDiscrete": {"type": "MultiDiscrete", "nvec": [[2] * 100] * 10},
    "MultiBinary": {"type": "MultiBinary", "n": [10, 100]},
    "Dict": {"type": "Dict", "spaces": {"a": {**BOX, "shape": [600]},
                                        "b": {"type": "MultiBinary", "n": 400}}},
    "Tuple": {"type": "Tuple", "spaces": [{**BOX, "shape": [999]}, {"type": "Discrete", "n": 2}]},
}


def spec(obs: dict, k: int | None = None, act: dict = ACT) -> dict:
    msg = {"type": "spec", "env": "s", "version": "1.1", "observation_space": obs, "action_space": act}
    return msg if k is None else {**msg, "num_instances": k}


@pytest.mark.parametrize("kind", sorted(SPACES))
def test_k_instances_times_elements_is_bounded_for_every_space_type(kind):
    obs = SPACES[kind]
    assert M.parse_spec(spec(obs, 16), max_elements=16_000).num_instances == 16  # exactly at the cap
    t = time.monotonic()
    with pytest.raises(SpecError, match=r"^spec\.observation_space.*: 17 instances × [\d,]+ or more elements "
                                          r"each = [\d,]+, over the limit of 16,000 "
                                          r"\(env\.max_space_elements\); "
                                          "declare fewer num_instances or a smaller space$"):
        M.parse_spec(spec(obs, 17), max_elements=16_000)
    assert time.monotonic() - t < 1


def test_the_issues_k_times_box_case_is_refused_by_the_default_cap():
    with pytest.raises(SpecError, match="4,096 instances × 65,536 or more elements each = 268,435,456"):
        M.parse_spec(spec({**BOX, "shape": [65536]}, 4096))


def test_multibinary_is_charged_the_product_of_its_shape():
    t = time.monotonic()
    with pytest.raises(SpecError, match=r"10,000,000,000 or more elements, over the limit of 16,777,216"):
        space_from_json({"type": "MultiBinary", "n": [100000, 100000]})
    assert time.monotonic() - t < 1
    assert space_from_json({"type": "MultiBinary", "n": [4096, 4096]}).shape == (4096, 4096)  # 2^24: the cap
    with pytest.raises(SpecError, match="over the limit"):
        space_from_json({"type": "MultiBinary", "n": [4097, 4096]})


def test_multidiscrete_over_the_cap_names_the_cap_not_the_shape():
    with pytest.raises(SpecError,
                       match=r"^space: the space declares 11 or more elements, over the limit of 10"):
        space_from_json({"type": "MultiDiscrete", "nvec": [2] * 50}, 10)


@pytest.mark.parametrize(("k", "obs", "act", "what"), [
    (64, {**BOX, "shape": [65536]}, ACT, "step_result"),  # 64 × (256 KiB + 10) > 16 MiB
    (2, {**BOX, "shape": [2**21], "dtype": "float64"}, ACT, "step_result"),
    (4096, {"type": "Discrete", "n": 2}, {**ACT, "shape": [1024], "dtype": "float64"}, "step request"),
])
def test_a_spec_whose_every_frame_is_over_max_message_is_refused(k, obs, act, what):
    limit = 16 * 2**20
    with pytest.raises(SpecError, match=rf"^spec: every {what} of this program would carry at least .* bytes "
                                          rf"\({k:,} instance\(s\) × .*\), over the {limit:,}-byte limit "
                                          r"\(env\.max_message\); declare fewer num_instances"):
        M.parse_spec(spec(obs, k, act), max_message=limit)
    assert M.parse_spec(spec(obs, k, act)).num_instances == k  # without a frame limit it is only counted


def test_wire_bytes_counts_every_space_type():
    spaces = {kind: space_from_json(d) for kind, d in SPACES.items()}
    assert M.wire_bytes(spaces["Box"]) == 4000
    assert M.wire_bytes(spaces["Discrete"]) == 8000  # each Discrete travels as an int64
    assert M.wire_bytes(spaces["MultiDiscrete"]) == 8000
    assert M.wire_bytes(spaces["MultiBinary"]) == 1000
    assert M.wire_bytes(spaces["Dict"]) == 2400 + 400
    assert M.wire_bytes(spaces["Tuple"]) == 3996 + 8
    M.check_message_size(spaces["Box"], spaces["Box"], 4, True, 4 * (4000 + 10))  # exactly at the limit


# -- through train.py ---------------------------------------------------------------------------------------
def program_config(tmp_path, msg: dict) -> str:
    cmd = " ".join([sys.executable, str(HOSTILE), "normal", "--spec", shlex.quote(json.dumps(msg))])
    path = tmp_path / "program.yaml"
    path.write_text(f"env:\n  id: process\n  command: {json.dumps(cmd)}\n")
    return str(path)


@pytest.mark.parametrize(("obs", "k", "message"), [
    ({**BOX, "shape": [65536]}, 4096, "4,096 instances × 65,536 or more elements each = 268,435,456, "
                                      "over the limit of 16,777,216 (env.max_space_elements)"),
    ({"type": "MultiBinary", "n": [100000, 100000]}, None,
     "the space declares 10,000,000,000 or more elements, over the limit of 16,777,216"),
], ids=["k4096-box65536", "multibinary-1e10"])
def test_train_refuses_the_issues_sizes_in_one_line_without_allocating(tmp_path, obs, k, message):
    run = tmp_path / "run"
    res = run_measured("train.py", "--config", program_config(tmp_path, spec(obs, k)), "--timesteps", "64",
                       "--run-dir", str(run), "--quiet")
    assert res.returncode == 2, res.stderr
    line = one_line(res.stderr)
    assert "sent a bad spec" in line and message in line, line
    # the issue saw 2 GB in 5 s, and 37 GiB
    assert res.max_rss_mib < 1024, f"peak RSS {res.max_rss_mib:.0f} MiB"
    assert res.seconds < 60
