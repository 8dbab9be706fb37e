"""The env registry: the short-name table, plugins, registration and name resolution.

Importing this module (``import envs`` does) registers every built-in adapter with Gymnasium under
``nondiff/<Name>-v0`` using string entry points, so heavy imports (MuJoCo, ALE) happen only at
``gymnasium.make``. Spawned worker processes re-import ``envs`` when they unpickle an env factory that
refers to it, which is how registrations survive ``SubprocVecEnv`` with ``spawn``/``forkserver``.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from envs.errors import PluginError, UnknownEnvError

__all__ = ["BUILTIN", "EnvSpec", "known_names", "make", "register", "resolve"]


@dataclass(frozen=True)
class EnvSpec:
    """One adapter known to nondiff.

    Attributes:
        name: the short name used with ``--env``.
        gym_id: the Gymnasium id it is registered under.
        entry_point: ``"module:Class"``.
        max_episode_steps: the time limit Gymnasium wraps the env in.
        config: an optional default run config (a mapping shaped like ``configs/*.yaml``).
    """

    name: str
    gym_id: str
    entry_point: str
    max_episode_steps: int | None = None
    config: dict[str, Any] | None = None
    source: str = "nondiff"
    """Where it came from: ``nondiff``, ``plugin <distribution>``, ``register()`` or ``gymnasium``."""


# The one visible table of built-in adapters: short name -> (Gymnasium id, entry point, episode limit).
BUILTIN: dict[str, tuple[str, str, int | None]] = {
    "robot": ("nondiff/Robot-v0", "envs.adapters.robot:RobotEnv", 50),
    "process": ("nondiff/Process-v0", "envs.bridge.process:ProcessEnv", None),
    "game": ("nondiff/Game-v0", "envs.adapters.game:GameEnv", None),
    "seismic": ("nondiff/Seismic-v0", "envs.adapters.seismic:SeismicEnv", None),
    "renderer": ("nondiff/Renderer-v0", "envs.adapters.renderer:RendererEnv", None),
    "devito": ("nondiff/Devito-v0", "envs.adapters.devito:DevitoEnv", None),
    "godot": ("nondiff/Godot-v0", "envs.adapters.godot:GodotEnv", None),
    "blender": ("nondiff/Blender-v0", "envs.adapters.blender:BlenderEnv", None),
}

_SPECS: dict[str, EnvSpec] = {}






PLUGIN_GROUP = "nondiff.envs"
_PLUGINS: dict[str, list[tuple[str, str]]] = {}  # env name -> [(distribution, entry-point value)]
_plugins_scanned = False


def _scan_plugins() -> None:
    """Read the ``nondiff.envs`` entry points of every installed distribution (nothing is imported)."""
    global _plugins_scanned
    if _plugins_scanned:
        return
    _plugins_scanned = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=PLUGIN_GROUP):
        dist = ep.dist.name if ep.dist is not None else "<unknown distribution>"
        owners = _PLUGINS.setdefault(ep.name, [])
        if (dist, ep.value) not in owners:
            owners.append((dist, ep.value))


def _plugin_spec(name: str) -> EnvSpec | None:
    """Register and return the plugin adapter called ``name``, or None when no plugin declares it."""
    _scan_plugins()
    owners = _PLUGINS.get(name)
    if not owners:
        return None
    if len({d for d, _ in owners}) > 1:
        who = " and ".join(f"{d!r} ({v})" for d, v in owners)
        raise PluginError(f"env name {name!r} is claimed by two plugins: {who}; uninstall one of them, or "
                          "register one under another name")
    dist, value = owners[0]
    if ":" not in value:  # a module whose import calls envs.register(name, ...)
        try:
            importlib.import_module(value)
        except Exception as e:
            raise PluginError(f"plugin {dist!r} (env {name!r}) failed to import {value!r}: "
                              f"{type(e).__name__}: {e}") from e
        if name not in _SPECS:
            raise PluginError(f"plugin {dist!r} declares env {name!r}, but importing {value!r} did not "
                              f"register it; call envs.register({name!r}, ...) in that module")
        return _SPECS[name]
    spec = register(name, value)
    _SPECS[name] = spec = EnvSpec(spec.name, spec.gym_id, value, source=f"plugin {dist}")
    return spec


def register(
    name: str,
    entry_point: str,
    *,
    kwargs: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    max_episode_steps: int | None = None,
) -> EnvSpec:
    """Register an adapter under a short name usable as ``--env NAME``.

    Args:
        name: short name, e.g. ``"heater"``.
        entry_point: ``"package.module:EnvClass"``; imported only when the env is made.
        kwargs: default keyword arguments passed to the adapter.
        config: optional default run config for this env (same shape as ``configs/*.yaml``).
        max_episode_steps: optional time limit.

    Returns:
        The stored :class:`EnvSpec`.
    """
    if ":" not in entry_point:
        raise ValueError(f"entry_point must look like 'module:Class', got {entry_point!r}")
    gym_id = name if "/" in name or name.endswith(("-v0", "-v1")) else f"nondiff/{name}-v0"
    if name in BUILTIN:
        raise ValueError(f"env name {name!r} is a built-in nondiff adapter; register yours under another "
                         "name")
    spec = EnvSpec(name, gym_id, entry_point, max_episode_steps, config, "register()")
    _SPECS[name] = spec
    if gym_id not in gym.registry:
        gym.register(id=gym_id, entry_point=entry_point, kwargs=dict(kwargs or {}),
                     max_episode_steps=max_episode_steps)
    return spec


for _name, (_gym_id, _entry, _limit) in BUILTIN.items():
    _SPECS[_name] = EnvSpec(_name, _gym_id, _entry, _limit)
    if _gym_id not in gym.registry:
        gym.register(id=_gym_id, entry_point=_entry, max_episode_steps=_limit)


def known_names() -> list[str]:
    """Short names of every nondiff adapter registered in this process."""
    return sorted(_SPECS)


def resolve(name: str) -> EnvSpec:
    """Turn ``--env`` into an :class:`EnvSpec`.

    Accepts a nondiff short name (``robot``), any Gymnasium id (``CartPole-v1``) or ``module:Class``.

    Raises:
        UnknownEnvError: with close matches when nothing fits.
    """
    if name in _SPECS:
        return _SPECS[name]
    plugin = _plugin_spec(name)
    if plugin is not None:
        return plugin
    for spec in _SPECS.values():
        if name == spec.gym_id:
            return spec
    if ":" in name:
        module, _, cls = name.partition(":")
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            raise UnknownEnvError(f"--env {name!r}: cannot import module {module!r} ({e}); "
                                  "check the module path or pass --env-package") from e
        if not hasattr(mod, cls):
            raise UnknownEnvError(f"--env {name!r}: module {module!r} has no attribute {cls!r}")
        target = getattr(mod, cls)
        if isinstance(target, type) and issubclass(target, gym.Wrapper):
            raise UnknownEnvError(f"--env {name!r} is a gymnasium.Wrapper, not an env: give the env it wraps "
                                  f"as --env and list {name!r} under env.wrappers in the config")
        from envs.selfplay import is_turn_based_source, make_seat

        seat = functools.partial(make_seat, name) if is_turn_based_source(target) else None
        return EnvSpec(name, _gym_id_for(name, seat), name)
    if name in gym.registry or ("/" in name and _import_namespace(name)):
        env_spec = gym.registry[name]
        return EnvSpec(name, name, str(env_spec.entry_point), env_spec.max_episode_steps)
    found = registering_module(name)
    if found is not None:
        module, dist = found
        raise UnknownEnvError(f"unknown env {name!r}: the installed package {dist!r} registers it when "
                              f"module {module!r} is imported; pass --env-package {module} (or env.packages: "
                              f"[{module}] in the config)")
    candidates = known_names() + sorted(_PLUGINS) + [k for k in gym.registry if not k.startswith("nondiff/")]
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise UnknownEnvError(f"unknown env {name!r}: {hint}expected a nondiff name "
                          f"({', '.join(known_names())}), a Gymnasium id such as 'CartPole-v1', or "
                          "'module:Class'; an id from an installed package is found after --env-package "
                          "PACKAGE (the module that registers it, such as minigrid or gymnasium_robotics)")


def _import_namespace(name: str) -> bool:
    """For an id ``ns/Name``: import module ``ns``, then, when that registers nothing, the module inside
    package ``ns`` whose source registers the id (``tetris_gymnasium/Tetris`` → ``tetris_gymnasium.envs``).
    True when ``name`` is then registered."""
    import importlib.util

    ns = name.partition("/")[0]
    try:
        if not ns.isidentifier() or importlib.util.find_spec(ns) is None:
            return False
        importlib.import_module(ns)
        if name not in gym.registry:
            found = registering_module(name, roots=(ns,))
            if found is not None:
                importlib.import_module(found[0])
    except Exception as e:
        raise UnknownEnvError(f"--env {name!r}: importing its namespace's module {ns!r} failed: "
                              f"{type(e).__name__}: {e}") from e
    return name in gym.registry


_SKIP_DIRS = {"tests", "test", "__pycache__", "examples", "docs"}
_SKIP_ROOTS = {"envs", "agents", "gymnasium", "gym", "torch", "ray", "jax", "tensorflow", "numpy", "scipy",
               "pip", "setuptools", "pkg_resources", "_distutils_hack"}


def registering_module(gym_id: str, roots: tuple[str, ...] | None = None) -> tuple[str, str] | None:
    """``(module, distribution)`` of an installed package whose source registers ``gym_id``, or None.

    Nothing is imported: the ``__init__.py`` files and the files named ``*regist*`` of each top-level package
    (or of ``roots``), three folders deep, are read for ``gym``, a ``register`` call and the id as a string
    literal (for ``ns/Name``, any literal that starts with ``ns/``, as ale_py's ``f"ALE/{name}-v5"``). The
    module named is the package of that file (whose import runs it: ale_py for ale_py/registration.py).
    """
    import importlib.metadata
    import importlib.util
    import os
    from pathlib import Path

    ns, slash, _ = gym_id.rpartition("/")
    needles = [f'"{gym_id}"', f"'{gym_id}'", *([f'"{ns}/', f"'{ns}/"] if slash else [])]
    owners = importlib.metadata.packages_distributions()
    for root in roots or sorted(set(owners) - _SKIP_ROOTS):
        try:
            spec = importlib.util.find_spec(root)
        except (ImportError, ValueError):
            continue
        if spec is None or not spec.submodule_search_locations:
            continue
        for base in spec.submodule_search_locations:
            for folder, dirs, files in os.walk(base):
                depth = len(Path(folder).relative_to(base).parts)
                dirs[:] = [] if depth >= 2 else [d for d in dirs if d not in _SKIP_DIRS]
                for f in files:
                    if not f.endswith(".py") or (f != "__init__.py" and "regist" not in f):
                        continue
                    try:
                        text = (Path(folder) / f).read_text(errors="replace")
                    except OSError:
                        continue
                    if "register" in text and "gym" in text and (any(n in text for n in needles)
                                                                  or _templated(text, gym_id)):
                        package = Path(folder).relative_to(base).parts
                        return ".".join([root, *package]), (owners.get(root) or [root])[0]
    return None


_TEMPLATE = re.compile(r"""\bf(["'])([^"'\n]*\{[^"'\n]*)\1""")


def _templated(text: str, gym_id: str) -> bool:
    """Whether an f-string of ``text`` with at least 4 literal characters spells ``gym_id``
    (gymnasium-robotics registers ``f"FetchReach{suffix}-v4"``): each ``{...}`` stands for any run of
    characters but ``/``."""
    for _, literal in _TEMPLATE.findall(text):
        parts = re.split(r"\{[^{}]*\}", literal)
        if sum(map(len, parts)) >= 4 and re.fullmatch("[^/]*".join(map(re.escape, parts)), gym_id):
            return True
    return False


def _gym_id_for(entry_point: str, creator: Callable[..., gym.Env] | None = None) -> str:
    """Register a ``module:Class`` entry point (built by ``creator`` if given: a turn-based game's seat,
    envs/selfplay.py) under a derived Gymnasium id and return the id."""
    gym_id = "nondiff/" + entry_point.replace(":", ".").replace("/", ".") + "-v0"
    if gym_id not in gym.registry:
        # a seat alternates with every game, so a reset with the same seed need not replay the same game:
        # Gymnasium's checker (`python -m envs check`) then skips its same-seed determinism test
        gym.register(id=gym_id, entry_point=creator or entry_point, nondeterministic=creator is not None)
    return gym_id


def make(name: str | EnvSpec, *, packages: tuple[str, ...] = (), nan_policy: str | None = "truncate",
         bounds_policy: str = "clip", **kwargs: Any) -> gym.Env:
    """Create an env by any ``--env`` form through ``gymnasium.make`` (so the env checker applies).

    Module-level and keyword-only, so ``functools.partial(envs.make, name, ...)`` pickles by
    reference and works unchanged inside spawned or forkserver workers and Ray workers.

    Args:
        name: short name, Gymnasium id or ``module:Class``; or the :class:`EnvSpec` it already resolved to
            (resolved again only in a fresh process, where its Gymnasium id is not registered yet).
        packages: modules to import first (``--env-package``); their import registers adapters.
        nan_policy: wrap the env in :class:`envs.guard.Guard` with this policy (None: no guard).
        bounds_policy: the Guard's policy for finite observations past the declared bounds.
        **kwargs: keyword arguments for the adapter (``render_mode`` included).
    """
    for pkg in packages:
        importlib.import_module(pkg)
    spec = name if isinstance(name, EnvSpec) else resolve(name)
    if spec.gym_id not in gym.registry:  # a worker process: registration happens on resolution
        spec = resolve(spec.name)
    try:
        env = gym.make(spec.gym_id, **kwargs)
    except (ImportError, AttributeError) as e:
        if spec.source.startswith("plugin"):
            raise PluginError(f"{spec.source} (env {spec.name!r}) failed to load {spec.entry_point!r}: "
                              f"{type(e).__name__}: {e}") from e
        raise
    if nan_policy is None:
        return env
    from envs.guard import Guard

    return Guard(env, nan_policy, bounds_policy=bounds_policy)


RAW_KEYS = ("token",)
"""Keys whose ``--set`` value is taken exactly as typed (YAML would turn a token such as 0x1f into a
number)."""


def keyword_arguments(target: Any) -> tuple[str, ...] | None:
    """The keyword arguments an adapter class or factory takes by name; None when it takes ``**kwargs`` or
    its signature cannot be read (then any keyword may be right)."""
    return named_arguments(parameters(target))


def parameters(target: Any) -> Mapping[str, inspect.Parameter] | None:
    """``target``'s parameters by name; None when its signature cannot be read (a C extension, say)."""
    try:
        return inspect.signature(target).parameters
    except (TypeError, ValueError):
        return None


def named_arguments(params: Mapping[str, inspect.Parameter] | None) -> tuple[str, ...] | None:
    """:func:`keyword_arguments` from parameters already read (:func:`parameters`)."""
    if params is None or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    named = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return tuple(n for n, p in params.items() if p.kind in named and n != "self")


def parse_assignment(item: str) -> tuple[str, Any]:
    """Split one ``--set KEY=VALUE`` into the key and its value, parsed as YAML (the one ``--set`` parser).

    Used by train.py's ``--set SECTION.KEY=VALUE`` (agents/config/loading.py) and
    ``python -m envs check --set``.

    Raises:
        ValueError: no ``=``, or a value that is not YAML; the message never echoes a token.
    """
    import yaml

    from envs import yaml12

    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError("expected KEY=VALUE")
    if key.rpartition(".")[2] in RAW_KEYS:
        return key, text.strip()
    try:
        return key, yaml12.load(text) if text.strip() else ""
    except yaml.YAMLError as e:
        raise ValueError("the value is not valid YAML; quote it") from e
