"""Reading configs: YAML files, validation into one-line errors, ``--set`` overrides, dumps and redaction."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from agents.config.schema import SECTIONS, EnvConfig, RunConfig, suggest
from agents.config.section import is_mapping
from agents.config.tokens import DEFAULT_ENV_VAR, REDACTED
from envs import yaml12
from envs.errors import UserError
from envs.registry import parse_assignment

log = logging.getLogger(__name__)


def _check_keys(raw: dict[str, Any], source: str) -> None:
    """Reject unknown section and field names with a did-you-mean before pydantic sees them."""
    top = list(RunConfig.model_fields)
    for key, value in raw.items():
        if key not in top:
            raise UserError(f"{source}: unknown section {key!r}; {suggest(key, top)}expected one of "
                            f"{', '.join(top)}")
        model = SECTIONS.get(key)
        if model is None or model is EnvConfig:
            continue
        if not isinstance(value, dict):
            raise UserError(f"{source}: section {key!r} must be a mapping of settings, got "
                            f"{type(value).__name__}")
        fields = list(model.model_fields)
        for sub in value:
            if sub not in fields:
                raise UserError(f"{source}: unknown key '{key}.{sub}'; {suggest(str(sub), fields)}"
                                f"valid keys in {key!r}: {', '.join(fields)}")


def validate(raw: dict[str, Any], source: str) -> RunConfig:
    """Build a :class:`RunConfig` from a plain mapping, turning errors into one-line :class:`UserError`."""
    _check_keys(raw, source)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        path = ".".join(str(p) for p in _input_loc(raw, err["loc"]))
        got = REDACTED if path.endswith("token") else _redact_input(err.get("input"))
        msg = (err["msg"][:1].lower() + err["msg"][1:]).removeprefix("value error, ")
        if not path or (len(err["loc"]) == 1 and err["type"] == "value_error"):
            # a check across sections (RunConfig's own validator) or across one section's keys: its message
            # names the keys and the fix; the whole section's mapping would only bury it
            raise UserError(f"{source}: {msg}") from e
        key = ".".join(str(p) for p in err["loc"][:2])  # what --set takes: SECTION.KEY
        raise UserError(f"{source}: '{path}' {msg} (got {got!r}); fix the value in the YAML "
                        f"or with --set {key}=VALUE") from e


def _input_loc(raw: Any, loc: tuple[int | str, ...]) -> list[int | str]:
    """``loc`` (pydantic's) without the parts that name no place in the input ``raw``: a union's member tag
    (``selfplay.temperature.float`` is ``selfplay.temperature``)."""
    out: list[int | str] = []
    for part in loc:
        inside = part in raw if isinstance(raw, dict) else (
            isinstance(raw, list) and isinstance(part, int) and 0 <= part < len(raw))
        if inside:
            out.append(part)
            raw = raw[part]
        elif len(out) < 2:  # a section or key the input lacks (a missing field): named as it is
            out.append(part)
            raw = None
    return out


def _redact_input(value: Any) -> Any:
    """A copy of an invalid input for an error message, with any ``token`` value replaced by ``***``."""
    if isinstance(value, dict):
        return {k: REDACTED if k == "token" and v else _redact_input(v) for k, v in value.items()}
    return value


MAX_CONFIG_BYTES = 4 * 2**20
"""The largest config file read (bytes): the shipped ones are under 4 KB, PyYAML parses about 0.1 MB/s, and
the config.yaml that train.py writes for :data:`MAX_CONFIG_NODES` values (one a line) is about 1.2 MB."""
MAX_CONFIG_NODES = 100_000
"""The most values (mappings, lists, scalars) a config may hold, each alias counted as often as it is used:
a few lines of nested aliases ("billion laughs") would otherwise expand to billions when the config is
validated, dumped or hashed."""
MAX_CONFIG_DEPTH = 64
"""The deepest nesting of mappings and lists a config may have."""


def read_config_bytes(path: Path) -> bytes:
    """The bytes of a config file: a regular file (not a FIFO or a device) of at most
    :data:`MAX_CONFIG_BYTES`.

    Raises:
        UserError: missing, no regular file, or larger.
    """
    if not path.is_file():
        raise UserError(f"config file {str(path)!r} does not exist or is no regular file; pass --config PATH "
                        "to a YAML file")
    with open(path, "rb") as f:
        data = f.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise UserError(f"config file {str(path)!r} is larger than {MAX_CONFIG_BYTES // 2**20} MiB, the most "
                        "a config may be; keep large data in files the env reads, not in the config")
    return data


def parse_yaml(data: bytes, path: Path) -> Any:
    """``data`` (the bytes of ``path``) read as YAML (envs/yaml12.py: 1.1 with 1.2's floats), its size checked
    (:data:`MAX_CONFIG_NODES`, :data:`MAX_CONFIG_DEPTH`).

    Raises:
        UserError: invalid YAML, or a config too large or too deep once its aliases are expanded.
    """
    try:
        doc = yaml12.load(data)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())  # one line
        raise UserError(f"config file {str(path)!r} is not valid YAML{where}: {problem}; fix the "
                        "syntax") from e
    except RecursionError as e:
        raise UserError(f"config file {str(path)!r} is nested too deeply for YAML to read; a config nests "
                        f"mappings and lists at most {MAX_CONFIG_DEPTH} deep") from e
    what = _oversize(doc)
    if what is not None:
        raise UserError(f"config file {str(path)!r} holds {what}, beyond what a config may hold; write it "
                        "out without nested aliases, and keep large data in files the env reads")
    return doc


def _oversize(doc: Any) -> str | None:
    """What makes ``doc`` (parsed YAML) larger than a config may be (a phrase), or None."""
    stack: list[tuple[Any, int]] = [(doc, 0)]
    count = 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_CONFIG_NODES:
            return f"more than {MAX_CONFIG_NODES:,} values (YAML aliases count each time they are used)"
        if depth > MAX_CONFIG_DEPTH:
            return f"mappings or lists nested over {MAX_CONFIG_DEPTH} deep"
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for kv in node.items() for v in kv)
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return None


def check_writable(cfg: RunConfig, source: str) -> None:
    """Refuse a config whose config.yaml (what train.py writes in the run dir: defaults filled in, aliases
    written out) could not be read back by :func:`parse_yaml`, before any run dir is made.

    Raises:
        UserError: its YAML would be larger than :data:`MAX_CONFIG_BYTES` or :func:`_oversize`.
    """
    doc = cfg.model_dump(mode="json")
    what = _oversize(doc)
    if what is None and len(dump(cfg).encode()) > MAX_CONFIG_BYTES:
        what = f"more than {MAX_CONFIG_BYTES // 2**20} MiB of YAML"
    if what is not None:
        raise UserError(f"{source}: the resolved config (defaults filled in, aliases written out) holds "
                        f"{what}, more than a run dir's config.yaml may hold; keep large data in files the "
                        "env reads")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping safely (:func:`read_config_bytes`, :func:`parse_yaml`), or raise a one-line
    :class:`UserError`."""
    return load_yaml_bytes(path)[0]


def load_yaml_bytes(path: str | Path) -> tuple[dict[str, Any], bytes]:
    """:func:`load_yaml`, and the exact bytes it parsed (to check a signature over what is read, once)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"config file {str(p)!r} does not exist; pass --config PATH to a YAML file")
    raw = read_config_bytes(p)
    data = parse_yaml(raw, p)
    if data is None:
        return {}, raw
    if not isinstance(data, dict):
        raise UserError(f"config file {str(p)!r} must hold a mapping (env:, agent:, train:, eval:), "
                        f"got {type(data).__name__}")
    return data, raw


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one ``--set section.key=value`` in place; the value is parsed as YAML and typed by the schema."""
    key, _, text = assignment.partition("=")
    # never echo a token
    shown = f"{key}=…" if "token" in text.lower() or "token" in key.lower() else assignment
    try:  # the one --set parser (envs.registry); a token is taken as typed
        key, value = parse_assignment(assignment)
    except ValueError as e:
        if "=" not in assignment:
            raise UserError(f"--set {shown!r}: expected SECTION.KEY=VALUE, e.g. "
                            "--set agent.learning_rate=1e-3") from e
        raise UserError(f"--set {shown!r}: {e}") from e
    parts = key.split(".")
    if len(parts) < 2 or not all(parts):
        raise UserError(f"--set {shown!r}: expected SECTION.KEY=VALUE, e.g. --set agent.learning_rate=1e-3")
    section, field, sub = parts[0], parts[1], ".".join(parts[2:])  # sub: one entry of a mapping setting
    if section in SECTIONS and SECTIONS[section] is not EnvConfig:
        fields = SECTIONS[section].model_fields
        if field not in fields:
            raise UserError(f"--set {shown!r}: unknown key '{section}.{field}'; "
                            f"{suggest(field, list(fields))}valid keys in {section!r}: {', '.join(fields)}")
        if sub and not is_mapping(fields[field].annotation):
            raise UserError(f"--set {shown!r}: '{section}.{field}' is not a mapping, so it has no entry "
                            f"{sub!r}; expected SECTION.KEY=VALUE, e.g. --set {section}.{field}=VALUE")
    raw.setdefault(section, {})
    if not isinstance(raw[section], dict):
        raise UserError(f"--set {section}.{field}=…: section {section!r} is not a mapping")
    if (section, field) == ("env", "token") and value not in (None, "", REDACTED):
        log.warning("--set env.token=… shows the token to every user of this machine in `ps`; export "
                    "%s=… instead, or set env.token_file: PATH (chmod 600)", DEFAULT_ENV_VAR)
    if not sub:
        raw[section][field] = value
        return
    entries = raw[section].get(field)  # rllib.extra.vf_clip_param=10: one entry, the others kept
    if entries is None:
        entries = raw[section][field] = {}
    if not isinstance(entries, dict):
        raise UserError(f"--set {shown!r}: '{section}.{field}' is {type(entries).__name__} here, not a "
                        f"mapping of entries; set it whole: --set {section}.{field}=VALUE")
    entries[sub] = value


_TOKEN_ARG = re.compile(r"^(?P<keep>(?:-[\w-]*=)?\s*env\s*\.\s*token\s*=).*$", re.DOTALL)


def redact_argv(argv: list[str]) -> list[str]:
    """The command line with every bridge token replaced by ``***``, for command.txt and logs.

    ``--set env.token=X`` and ``--set=env.token=X`` (and argparse's abbreviations such as ``--se=``) become
    ``env.token=***``; ``env.token_file`` and ``env.token_env`` are kept, they hold no secret.
    """
    return [_TOKEN_ARG.sub(lambda m: m.group("keep") + REDACTED, arg) for arg in argv]


def dump(cfg: RunConfig) -> str:
    """The resolved config as YAML, in schema order."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
