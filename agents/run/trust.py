"""Signed run directories: a config.yaml that would run code loads only when this user signed it.

A run directory is code: its ``config.yaml`` can name a program to start (``env.command``), modules to
import (``env.packages``, ``env.wrappers`` by import path, an ``env.id`` of the form ``module:Class``), hosts
to contact (``env.address``/``env.listen`` beyond loopback, ``rllib.address``) and settings handed to Ray
(``rllib.extra``). Which settings do is not listed here: they carry a mark (:mod:`envs.reach`) in the schema
or in the adapter's signature, and :func:`runs_code` reads the marks. train.py therefore signs every
config.yaml it writes with an HMAC-SHA256 under a per-user key kept outside any run directory, and
evaluate.py and ``train.py --resume`` refuse a config that would run code unless the signature verifies or
the user passes ``--trust-run-dir``.

The key is ``$NONDIFF_KEY_FILE``, else ``$XDG_CONFIG_HOME/nondiff/key``, else ``~/.config/nondiff/key``:
32 random bytes as hex, mode 0600, created on first use. The signature, in ``<run>/config.sig``, is
``hmac-sha256:<hex>`` over ``b"nondiff-run-config/1\\0"`` followed by the exact bytes of config.yaml.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import logging
import os
import secrets
import stat
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

import envs
from agents.config import RunConfig, validate
from agents.config.loading import parse_yaml, read_config_bytes
from envs.errors import UserError
from envs.reach import Mark, Reach

if TYPE_CHECKING:
    from agents.run.rundir import RunDir

log = logging.getLogger(__name__)
KEY_ENV = "NONDIFF_KEY_FILE"
SIG_PREFIX = "hmac-sha256:"
DOMAIN = b"nondiff-run-config/1\0"


def key_path() -> Path:
    """Where this user's signing key lives (never inside a run directory)."""
    if os.environ.get(KEY_ENV):
        return Path(os.environ[KEY_ENV])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "nondiff" / "key"


def _key(create: bool) -> bytes | None:
    """This user's key; created (mode 0600) when ``create`` and absent; None when absent and not created.

    Raises:
        UserError: the key file is readable by other users, or is not a key.
    """
    path = key_path()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        if not create:
            return None
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:  # another nondiff process created it just now
            return _key(create=False)
        key = secrets.token_hex(32).encode()
        with os.fdopen(fd, "wb") as f:
            f.write(key + b"\n")
        log.info("created the run-directory signing key %s", path)
        return key
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        data = f.read(4096).strip()
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UserError(f"the nondiff signing key {str(path)!r} is accessible to other users (mode "
                        f"{stat.filemode(mode)}); anyone who reads it can make run directories you trust. "
                        f"Fix it with: chmod 600 {path}")
    if len(data) < 32:
        raise UserError(f"the nondiff signing key {str(path)!r} holds {len(data)} bytes, expected 64 hex "
                        "digits; delete it and nondiff makes a new one (run dirs signed with the old key "
                        "then need --trust-run-dir once)")
    return data


STUDY_DOMAIN = b"nondiff-study/1\0"
"""The domain of a study's ``study.sig`` (agents/search/study.py): a signed config.yaml is no signed study."""


def signature(data: bytes, key: bytes, domain: bytes = DOMAIN) -> str:
    """The ``config.sig`` content for config.yaml bytes ``data`` (``study.sig``'s: ``STUDY_DOMAIN``)."""
    return SIG_PREFIX + hmac.new(key, domain + data, hashlib.sha256).hexdigest()


def sign(run: RunDir, data: bytes) -> None:
    """Record this user's signature of config.yaml (``data``, the bytes just written) in the run directory.

    A key that cannot be created (read-only home) leaves the run unsigned, with a warning: training goes on,
    and loading it later asks for ``--trust-run-dir`` if it would run code.
    """
    sign_file(run.signature, data)


def sign_file(sig_path: Path, data: bytes, domain: bytes = DOMAIN) -> None:
    """Write this user's signature of ``data`` to ``sig_path`` (see :func:`sign`)."""
    from agents.run.checkpoint import atomic_write_bytes

    try:
        key = _key(create=True)
    except OSError as e:
        log.warning("%s not signed: cannot create the signing key %s (%s)", sig_path.parent, key_path(),
                    e.strerror)
        return
    assert key is not None
    atomic_write_bytes(sig_path, (signature(data, key, domain) + "\n").encode())


def verify(run: RunDir, data: bytes) -> str | None:
    """None when this user signed exactly ``data``; otherwise why not, as a phrase for a message."""
    return verify_file(run.signature, data)


def verify_file(sig_path: Path, data: bytes, domain: bytes = DOMAIN) -> str | None:
    """:func:`verify` for the signature file ``sig_path`` of the file whose bytes are ``data``."""
    if not sig_path.is_file():
        return (f"is not signed (no {sig_path.name}: written by a nondiff older than signing, or copied from "
                "elsewhere)")
    try:
        key = _key(create=False)
    except OSError:
        key = None
    if key is None:
        return f"is signed, but not with your key ({key_path()} does not exist)"
    # as bytes: compare_digest refuses str with non-ASCII characters (a TypeError, exit 1)
    if not hmac.compare_digest(sig_path.read_bytes().strip(), signature(data, key, domain).encode()):
        return (f"does not match its signature ({sig_path.name}): it was edited after train.py wrote it, or "
                "it was signed by another user")
    return None


def adapter_marks(env_id: str | None, target: Any = None) -> dict[str, Mark]:
    """The marked keyword arguments of the adapter ``env_id`` names (:mod:`envs.reach`), by name.

    ``target``: the adapter's entry point, already imported (the runner's :mod:`agents.run.resolved`);
    otherwise only what is installed is imported to find it: a nondiff adapter, a plugin, a Gymnasium entry
    point. An id of the form ``module:Class`` is not imported (it is marked code itself), and an id that only
    resolves after ``env.packages`` are imported has no marks known here (``env.packages`` is marked code
    itself).
    """
    if target is None and (not env_id or ":" in env_id):
        return {}
    try:
        if target is None:
            entry = envs.resolve(str(env_id)).entry_point
            module, _, attr = str(entry).partition(":")
            target = getattr(importlib.import_module(module), attr)
        init = target.__init__ if isinstance(target, type) else target  # type: ignore[misc]
        hints = typing.get_type_hints(init, include_extras=True)
    except Exception:
        # an id that does not resolve or import fails later, in one line, where the env is built
        return {}
    return {name: m for name, hint in hints.items() for m in getattr(hint, "__metadata__", ())
            if isinstance(m, Mark)}


def _phrases(model: BaseModel, prefix: str, adapter: dict[str, Mark]) -> list[str]:
    out = []
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        for mark in (m for m in info.metadata if isinstance(m, Mark)):
            if mark.reach is Reach.ADAPTER:
                out += [p for k, v in dict(value or {}).items() if k in adapter
                        and (p := adapter[k].phrase(f"{prefix}{name}.{k}", v))]
            elif phrase := mark.phrase(prefix + name, value):
                out.append(phrase)
        if isinstance(value, BaseModel):
            out += _phrases(value, f"{prefix}{name}.", adapter)
    return out


def runs_code(cfg: RunConfig, target: Any = None) -> list[str]:
    """What loading this config would import, run or contact beyond installed packages and loopback.

    Derived from the marks (:mod:`envs.reach`) on the schema's fields and on the adapter's keyword arguments
    (``target``: its entry point, when already imported): one phrase per marked setting whose value reaches
    out, e.g. ``start the program env.command='./x'``.
    """
    adapter = adapter_marks(cfg.env.id, target)
    out = _phrases(cfg, "", adapter)
    out += [p for k, v in cfg.env.adapter_kwargs().items()
            if k in adapter and (p := adapter[k].phrase(f"env.{k}", v))]
    return out


def load_run_config(run: RunDir, *, trust: bool, action: str) -> tuple[RunConfig, bytes]:
    """Read, validate and check a run directory's config.yaml before anything in it runs.

    Args:
        run: the run directory.
        trust: ``--trust-run-dir`` was given.
        action: what the caller is about to do, for the message (``evaluate``, ``resume``).

    Returns:
        The config and the exact bytes it was parsed from.

    Raises:
        UserError: invalid YAML or schema, or a config that would run code and is not signed by this user.
    """
    path = run.config
    data = read_config_bytes(path)
    raw = parse_yaml(data, path)
    if not isinstance(raw, dict):
        raise UserError(f"config file {str(path)!r} must hold a mapping (env:, agent:, ...), got "
                        f"{type(raw).__name__}")
    cfg = validate(raw, str(path))
    why = None if trust else verify(run, data)
    if why is not None:  # a signed config is this user's own: what it runs is not looked up
        code = runs_code(cfg)
        if code:
            raise UserError(f"{action} {str(run.path)!r}: its config.yaml {why}, and loading it would "
                            f"{'; '.join(code)}. Refused; pass --trust-run-dir only if you trust where this "
                            "run directory came from")
    return cfg, data


def check_study(study: Path, sig_path: Path, data: bytes, cfg: RunConfig, *, trusted: bool) -> None:
    """Refuse to resume a study whose ``study.yaml`` (bytes ``data``, parsed as ``cfg``) would run code in its
    trials, unless this user signed it (``sig_path``, under :data:`STUDY_DOMAIN`) or ``trusted``
    (``--trust-run-dir``): the same rule as :func:`load_run_config` for a run directory.

    Raises:
        UserError: one line naming what its trials would run.
    """
    why = None if trusted else verify_file(sig_path, data, STUDY_DOMAIN)
    code = runs_code(cfg) if why is not None else []
    if code:
        raise UserError(f"resume {str(study.parent)!r}: its {study.name} {why}, and its trials would "
                        f"{'; '.join(code)}. Refused; pass --trust-run-dir only if you trust where this "
                        "study dir came from")
