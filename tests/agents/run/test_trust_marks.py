"""Which settings make a run directory code: derived from the marks (envs/reach.py), never a hand list.

The first test is the guard rail of issue 25: every schema field and every built-in adapter argument that
can hold text must either carry a mark or be listed in REVIEWED with the reason it reaches nothing. A new
field of that kind without either fails here.
"""

from __future__ import annotations

import importlib
import types
import typing

import pytest
from pydantic import BaseModel

from agents.config import validate
from agents.config.schema import SECTIONS
from agents.run.trust import runs_code
from envs.reach import Mark, beyond_loopback
from envs.registry import BUILTIN

REVIEWED = {
    "env.token": "the bridge token itself: a secret, never a place",
    "env.token_file": "a file read for the token (owner-only), never run or imported",
    "env.token_env": "the name of an environment variable to read the token from",
    "env.drop_keys": "observation keys to leave out",
    "meta": "written by nondiff, ignored on input",
    "robot.model": "an MJCF file parsed by MuJoCo (loading it runs no code and loads no plugin library)",
    "robot.ee_site": "a site name inside the model",
    "robot.target_body": "a body name inside the model",
    "game.game": "the name of a ROM that ale-py ships; an unknown name is refused by ale-py",
    "robot.action_mode": "a name from a fixed list",
    "renderer.shape_kinds": "shape names from a fixed list",
    "seismic.reward": "a name from a fixed list",
    "process.token": "the bridge token itself",
    "process.cwd": "the working directory of env.command, which is marked itself",
    "selfplay.fixed": "scripted opponents' names, or a checkpoint file loaded for inference (safetensors: "
                      "tensors and JSON, refused if it needs pickle; nothing is imported or run)",
    **{f"{name}.render_mode": "a Gymnasium render mode name" for name in BUILTIN},
}
"""Settings that can hold text but import, run and contact nothing, each with the reason."""


def _texty(hint: typing.Any) -> bool:
    """Whether a value of this type can hold a string (a path, a name, an address)."""
    if hint is typing.Any or hint is str or hint is object:
        return True
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return False
    if origin is typing.Annotated:
        return _texty(typing.get_args(hint)[0])
    if isinstance(hint, type) and not typing.get_args(hint):
        return (issubclass(hint, str | dict | list | tuple)
                or not issubclass(hint, int | float | bool | BaseModel))
    return any(_texty(a) for a in typing.get_args(hint) if a is not type(None) and a is not Ellipsis)


def _schema_fields(model: type[BaseModel], prefix: str):
    for name, info in model.model_fields.items():
        yield prefix + name, info.annotation, info.metadata


def _adapter_fields():
    for short, (_gym_id, entry, _limit) in BUILTIN.items():
        module, _, attr = entry.partition(":")
        target = getattr(importlib.import_module(module), attr)
        hints = typing.get_type_hints(target.__init__, include_extras=True)
        for name, hint in hints.items():
            if name != "return":
                yield f"{short}.{name}", hint, getattr(hint, "__metadata__", ())


def test_every_setting_that_can_name_code_is_marked_or_reviewed():
    fields = [f for section, model in SECTIONS.items() for f in _schema_fields(model, section + ".")]
    fields += [("meta", dict, ())] + list(_adapter_fields())
    assert len(fields) > 100  # the schema and five adapters were walked
    unclassified = [name for name, hint, metadata in fields
                    if _texty(hint) and not any(isinstance(m, Mark) for m in metadata)
                    and name not in REVIEWED]
    assert not unclassified, (f"{unclassified}: each can hold a name, path or address; mark it with "
                              "envs.reach (Reach.IMPORT/RUN/CONTACT) if it imports, runs or contacts "
                              "anything, else add it to REVIEWED with the reason it does not")
    marked = {name for name, _hint, metadata in fields if any(isinstance(m, Mark) for m in metadata)}
    assert not marked & set(REVIEWED), "a setting is both marked and reviewed as harmless"
    assert {"env.id", "env.packages", "env.wrappers", "env.eval_kwargs", "rllib.address", "rllib.extra",
            "process.command", "process.address", "process.listen"} <= marked


def test_the_guard_rail_catches_an_unmarked_text_field():
    assert _texty(str | None) and _texty(list[typing.Any]) and _texty(dict[str, typing.Any])
    assert not _texty(int) and not _texty(float | None) and not _texty(typing.Literal["a", "b"])


@pytest.mark.parametrize(("env", "extra", "phrase"), [
    ({"id": "process", "command": "./evil"}, {}, "start the program env.command='./evil'"),
    ({"id": "nondiff/Process-v0", "command": "./evil"}, {}, "start the program env.command='./evil'"),
    ({"id": "evil_mod:Env"}, {}, "import the module of env.id='evil_mod:Env'"),
    ({"id": "CartPole-v1", "packages": ["evil"]}, {}, "import env.packages=['evil']"),
    ({"id": "CartPole-v1", "wrappers": [{"pydoc:pipepager": {"cmd": "touch M"}}]}, {},
     "import and call env.wrappers=[{'pydoc:pipepager': {'cmd': 'touch M'}}]"),
    ({"id": "CartPole-v1", "wrappers": ["gymnasium.wrappers.ClipReward"]}, {},
     "import and call env.wrappers"),
    ({"id": "process", "listen": "127.0.0.1:0", "eval_kwargs": {"command": "./evil"}}, {},
     "start the program env.eval_kwargs.command='./evil'"),
    ({"id": "process", "address": "10.1.2.3:5555", "allow_remote": True}, {},
     "connect to env.address='10.1.2.3:5555'"),
    ({"id": "process", "listen": "0.0.0.0:5555"}, {}, "listen for programs on env.listen='0.0.0.0:5555'"),
    ({"id": "CartPole-v1"}, {"rllib": {"address": "ray://10.0.0.9:10001"}},
     "join the Ray cluster at rllib.address='ray://10.0.0.9:10001'"),
    ({"id": "CartPole-v1"}, {"rllib": {"extra": {"callbacks": "x"}}},
     "hand Ray, as they are, the settings rllib.extra"),
])
def test_each_setting_that_reaches_out_is_named(env, extra, phrase):
    code = runs_code(validate({"env": env, **extra}, "test"))
    assert any(phrase in p for p in code), code


@pytest.mark.parametrize("env", [
    {"id": "CartPole-v1", "wrappers": ["grayscale", {"resize": {"shape": [42, 42]}}]},
    {"id": "process", "address": "127.0.0.1:5555"},
    {"id": "process", "listen": "localhost:0", "eval_kwargs": {"connect_timeout": 5}},
    {"id": "robot", "eval_kwargs": {"model": "x.xml"}},
])
def test_plain_settings_are_not_code(env):
    assert runs_code(validate({"env": env}, "test")) == []


def test_loopback_is_decided_by_address():
    assert (not beyond_loopback("127.0.0.1:1") and not beyond_loopback("[::1]:1")
            and not beyond_loopback("localhost:1"))
    assert (beyond_loopback("0.0.0.0:1") and beyond_loopback("10.0.0.1:1")
            and beyond_loopback("no.such.host.invalid:1"))
    assert isinstance(beyond_loopback, types.FunctionType)
