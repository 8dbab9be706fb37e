"""A self-play run whose snapshots play at a temperature drawn per game (``selfplay.temperature: [1.0, 0.1]``)
resumes exactly: the draw's generator is the league's, saved with each checkpoint, and a game in progress
keeps its drawn temperature by its opponent's tagged name."""

from __future__ import annotations

import json

import pytest
import torch
from test_cli_selfplay import COMMON
from test_resume_exact import straight_and_resumed


@pytest.mark.slow
def test_kill_and_resume_with_a_drawn_temperature_is_exact(tmp_path):
    common = [*COMMON, "--timesteps", "4096", "--seed", "7", "--set", "train.checkpoint_every=2048",
              "--set", "eval.every=0", "--set", "selfplay.snapshot_every=1024",
              "--set", "selfplay.latest=0.6", "--set", "selfplay.temperature=[1.0, 0.1]"]
    a, b = straight_and_resumed(tmp_path, common, 2048)
    params = [k for k in a if k.startswith(("policy/", "optim/"))]
    assert len(params) > 10
    assert not [k for k in params if not torch.equal(a[k], b[k])], "the resumed self-play run diverged"
    final = {d: json.loads((tmp_path / d / "league" / "state_000004096.json").read_text())
             for d in ("straight", "broken")}
    assert final["straight"] == final["broken"]  # ratings, members and the generator of both draws
    members = {m["name"]: m for m in final["straight"]["members"]}
    assert len(members) == 1 + 4 and all("@" not in name for name in members)  # games count for members
    assert sum(m["games"] for m in members.values() if m["step"] is not None) > 50
