"""Issue 30 §6: an id ``ns/Name`` imports its module by itself; an unknown id names the installed package
that registers it (found by reading sources, never by importing them)."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import pytest
from conftest import ROOT

import envs
from envs.errors import UnknownEnvError
from envs.registry import registering_module


def test_a_namespace_id_imports_its_module(tmp_path, monkeypatch):
    pkg = tmp_path / "nsfake_pkg"
    (pkg / "envs").mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""Registers nothing itself."""\n')
    (pkg / "envs" / "__init__.py").write_text(
        "import gymnasium\n"
        "gymnasium.register(id='nsfake_pkg/Thing-v0',\n"
        "                   entry_point='gymnasium.envs.classic_control:CartPoleEnv')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        spec = envs.resolve("nsfake_pkg/Thing-v0")
        assert spec.gym_id == "nsfake_pkg/Thing-v0" and spec.entry_point.endswith("CartPoleEnv")
    finally:
        gym.registry.pop("nsfake_pkg/Thing-v0", None)
        for name in [m for m in sys.modules if m.startswith("nsfake_pkg")]:
            del sys.modules[name]


def test_a_namespace_that_is_no_module_is_an_unknown_env():
    with pytest.raises(UnknownEnvError, match="unknown env 'nosuchns_xyz/Thing-v0'"):
        envs.resolve("nosuchns_xyz/Thing-v0")


def test_the_package_that_registers_an_id_is_found_without_importing_it():
    pytest.importorskip("minigrid")
    assert registering_module("MiniGrid-Empty-5x5-v0") == ("minigrid", "minigrid")
    assert registering_module("ALE/Pong-v5") == ("ale_py", "ale-py")  # f"ALE/{name}-v5" in registration.py
    # gymnasium-robotics spells its ids as f-strings, f"FetchReach{suffix}-v4"
    assert registering_module("FetchReach-v4") == ("gymnasium_robotics", "gymnasium-robotics")
    assert registering_module("NoSuchThing-v7") is None


def test_an_unknown_id_names_its_package():
    pytest.importorskip("minigrid")
    code = ("import envs\ntry:\n    envs.resolve('MiniGrid-Empty-5x5-v0')\nexcept Exception as e:\n"
            "    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "the installed package 'minigrid' registers it" in out.stdout
    assert "--env-package minigrid" in out.stdout
