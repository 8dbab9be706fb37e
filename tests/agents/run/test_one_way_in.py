"""Issue 26: the house's rules, held by tests.

- Imports run one way: scripts → backends → agents/run → agents/config → envs; envs/ never imports agents/
  or an RL library, and agents/run never imports a backend (read from the code, every import statement).
- One way in: a new run resolves ``--env`` once and builds ``num_envs`` envs plus the probe, which serves as
  the evaluation env; a resume resolves once, builds no probe, and reads its checkpoint once.
"""

from __future__ import annotations

import ast
import collections
from pathlib import Path

import pytest
from conftest import ROOT

import envs
import envs.registry as registry
import train
from agents.run import checkpoint

RL_LIBRARIES = ("stable_baselines3", "ray", "torch", "sb3_contrib")
BACKENDS = ("agents.sb3", "agents.rllib", "agents.blackbox")


def imported_modules(path: Path) -> set[str]:
    """Every module an import statement in ``path`` names (relative imports resolved to absolute names)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def imports_of(folder: str) -> dict[str, set[str]]:
    return {str(p.relative_to(ROOT)): imported_modules(p) for p in sorted((ROOT / folder).rglob("*.py"))}


def _under(name: str, roots: tuple[str, ...]) -> bool:
    return any(name == r or name.startswith(r + ".") for r in roots)


@pytest.mark.parametrize(("folder", "forbidden"), [
    ("envs", ("agents", *RL_LIBRARIES)),
    ("agents/run", (*BACKENDS, "agents.search")),
    ("agents/config", ("agents.run", "agents.search", *BACKENDS)),
    ("agents/search", BACKENDS),
], ids=["envs", "agents-run", "agents-config", "agents-search"])
def test_imports_run_one_way(folder, forbidden):
    wrong = {f: sorted(m for m in mods if _under(m, forbidden)) for f, mods in imports_of(folder).items()}
    assert not {f: m for f, m in wrong.items() if m}, "imports that run back up"


def test_backends_never_import_each_other():
    for own in BACKENDS:
        others = tuple(b for b in BACKENDS if b != own)
        wrong = {f: sorted(m for m in mods if _under(m, others))
                 for f, mods in imports_of(own.replace(".", "/")).items()}
        assert not {f: m for f, m in wrong.items() if m}, f"{own} imports another backend"


@pytest.fixture
def counted(monkeypatch):
    """Counts of env resolutions, RobotEnv constructions and checkpoint reads in this process."""
    calls: collections.Counter[str] = collections.Counter()
    resolve, load = registry.resolve, checkpoint.load

    def counting_resolve(name):
        calls["resolve"] += 1
        return resolve(name)

    def counting_load(*args, **kwargs):
        calls["checkpoint.load"] += 1
        return load(*args, **kwargs)

    monkeypatch.setattr(registry, "resolve", counting_resolve)
    monkeypatch.setattr(envs, "resolve", counting_resolve)
    monkeypatch.setattr(checkpoint, "load", counting_load)
    from envs.adapters.robot import RobotEnv

    init = RobotEnv.__init__

    def counting_init(self, *args, **kwargs):
        calls["built"] += 1
        init(self, *args, **kwargs)

    monkeypatch.setattr(RobotEnv, "__init__", counting_init)
    return calls


SMALL = ["--num-envs", "3", "--quiet", "--seed", "0", "--set", "agent.n_steps=32", "--set",
         "agent.batch_size=32", "--set", "agent.n_epochs=1", "--set", "eval.every=96", "--set",
         "eval.episodes=1", "--set", "train.checkpoint_every=96"]


def test_env_resolved_once_and_built_num_envs_plus_one(tmp_path, counted):
    run = tmp_path / "run"
    assert train.main(["--env", "robot", "--timesteps", "192", "--run-dir", str(run), *SMALL]) == 0
    # 3 training envs + the probe, which the periodic evaluation used (it ran: evaluations.jsonl)
    assert dict(counted) == {"resolve": 1, "built": 4}
    assert (run / "evaluations.jsonl").read_text().count("\n") >= 2

    counted.clear()
    assert train.main(["--resume", str(run), "--timesteps", "96", "--quiet"]) == 0
    # no probe: the spaces come from the header; the checkpoint is read once; the evaluation builds its env
    assert dict(counted) == {"resolve": 1, "built": 4, "checkpoint.load": 1}
