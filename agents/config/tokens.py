"""The bridge token: where it comes from (env var, token file, command line) and how it is kept out of files.

A token is resolved in exactly one place, :func:`resolve`, which runs where the env is built (the trainer,
a subprocess worker or a Ray env runner). An env var is inherited by every worker; a token file is read
by the worker itself. The resolved config only ever shows :data:`REDACTED` for a literal token, so
config.yaml, command.txt, checkpoint headers and TensorBoard text never hold it.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from envs.errors import UserError

DEFAULT_ENV_VAR = "NONDIFF_TOKEN"
"""The env var that holds the bridge token when ``env.token_env`` names no other."""
REDACTED = "***"
"""What a literal token is written as; a config holding it means "a token was used, get it again"."""
MAX_TOKEN_BYTES = 4096


@dataclass(frozen=True)
class TokenSource:
    """Where one env's token comes from; plain data, so it pickles into subprocess and Ray workers.

    Attributes:
        literal: a token given in the config or with ``--set env.token=`` (:data:`REDACTED` after a dump).
        file: path of a token file readable by its owner only.
        env_var: the env var to read; None means :data:`DEFAULT_ENV_VAR`, used only when it is set.
    """

    literal: str | None = None
    file: str | None = None
    env_var: str | None = None

    @property
    def explicit(self) -> bool:
        """True when the config asks for a token (then a missing one is an error)."""
        return bool(self.literal or self.file or self.env_var)


def read_token_file(path: str | Path) -> str:
    """Read a token file, refusing one that is missing, not a regular file, empty or readable by others.

    Raises:
        UserError: with one line naming the path and the fix.
    """
    p = Path(path).expanduser()
    try:
        st = p.stat()
    except OSError as e:
        raise UserError(f"env.token_file {str(p)!r} cannot be read ({e.strerror or e}); write the token into "
                        "it and `chmod 600` it") from e
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"env.token_file {str(p)!r} is not a regular file; point env.token_file at a file "
                        "that holds the token")
    if st.st_mode & 0o077:
        raise UserError(f"env.token_file {str(p)!r} is accessible to group or others (mode "
                        f"{stat.S_IMODE(st.st_mode):03o}); run `chmod 600 {p}`")
    if st.st_size > MAX_TOKEN_BYTES:
        raise UserError(f"env.token_file {str(p)!r} holds {st.st_size} bytes; a token is one line of at most "
                        f"{MAX_TOKEN_BYTES} bytes")
    try:
        token = p.read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"env.token_file {str(p)!r} cannot be read as text ({e}); write the token as one "
                        "line") from e
    if not token:
        raise UserError(f"env.token_file {str(p)!r} is empty; write the token into it")
    return token


def resolve(source: TokenSource) -> str | None:
    """The token for one env: a literal, else the token file, else the env var; None when none applies.

    Raises:
        UserError: a token file is unusable, a named env var is unset, or the config holds a redacted token
            (a resumed or evaluated run) and the env var that would supply it again is unset.
    """
    if source.literal and source.literal != REDACTED:
        return source.literal
    if source.file:
        return read_token_file(source.file)
    var = source.env_var or DEFAULT_ENV_VAR
    value = os.environ.get(var, "").strip()
    if value:
        return value
    if source.literal == REDACTED:
        raise UserError(f"this run used a bridge token, which is never stored (config.yaml has env.token: "
                        f"'{REDACTED}'); set it again in the environment: {var}=… (or env.token_file: PATH)")
    if source.env_var:
        raise UserError(f"env.token_env names {var!r}, but that environment variable is not set; "
                        f"export {var}=… before starting")
    return None


def export_literal(source: TokenSource) -> None:
    """Put a literal token into this process's environment, so that workers started later inherit it.

    Used before a private local Ray starts: its env runners rebuild the env from the redacted config and
    find the token in the env var instead.
    """
    if source.literal and source.literal != REDACTED:
        os.environ[source.env_var or DEFAULT_ENV_VAR] = source.literal
