"""A self-play run whose snapshots play at a temperature drawn per game (``selfplay.temperature: [1.0, 0.1]``)
resumes exactly: the draw's generator is the league's, saved with each checkpoint, and a game in progress
keeps its drawn temperature by its opponent's tagged name. Random openings (``selfplay.opening_moves``) are
on too: their moves come from each env's generator, which a resumed run must draw on from where it was."""

from __future__ import annotations

import pytest
from test_cli_selfplay import resumed_league


@pytest.mark.slow
def test_kill_and_resume_with_a_drawn_temperature_and_random_openings_is_exact(tmp_path):
    state = resumed_league(tmp_path, "--set", "selfplay.temperature=[1.0, 0.1]",  # both draws' generator too
                           "--set", "selfplay.opening_moves=2")
    members = {m["name"]: m for m in state["members"]}
    assert len(members) == 1 + 4 and all("@" not in name for name in members)  # games count for members
    assert sum(m["games"] for m in members.values() if m["step"] is not None) > 50
