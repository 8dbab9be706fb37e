"""Config schema: unknown keys with suggestions, typed overrides, wrong types with their path."""

from __future__ import annotations

import pytest

from agents.config import apply_override, load_yaml, validate
from envs.errors import UserError


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(UserError, match=r"unknown key 'agent.learning_rat'; did you mean 'learning_rate'"):
        validate({"agent": {"learning_rat": 1e-3}}, "x.yaml")


def test_unknown_section_suggests():
    with pytest.raises(UserError, match="did you mean 'train'"):
        validate({"trian": {}}, "x.yaml")


def test_wrong_type_names_the_field_path():
    with pytest.raises(UserError, match=r"'agent.n_epochs'.*got 'many'"):
        validate({"agent": {"n_epochs": "many"}}, "x.yaml")


def test_override_is_typed_by_the_schema():
    raw: dict = {}
    apply_override(raw, "agent.learning_rate=1e-3")
    apply_override(raw, "agent.net_arch=[32, 32]")
    apply_override(raw, "train.vec_env=subproc")
    cfg = validate(raw, "cli")
    assert cfg.agent.learning_rate == pytest.approx(1e-3) and isinstance(cfg.agent.learning_rate, float)
    assert cfg.agent.net_arch == [32, 32] and cfg.train.vec_env == "subproc"


def test_override_rejects_unknown_and_malformed():
    with pytest.raises(UserError, match="did you mean 'gamma'"):
        apply_override({}, "agent.gama=0.9")
    with pytest.raises(UserError, match="expected SECTION.KEY=VALUE"):
        apply_override({}, "gamma0.9")


def test_env_section_passes_adapter_kwargs():
    cfg = validate({"env": {"id": "robot", "frame_skip": 3}}, "x")
    assert cfg.env.adapter_kwargs() == {"frame_skip": 3}


def test_invalid_yaml_reports_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent:\n  gamma: [0.9\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_yaml(bad)
    with pytest.raises(UserError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")
