"""Where passwords, client secrets and tokens come from.

`load_secret` tries the sources it is given, in this order: a file, a systemd credential
(`$CREDENTIALS_DIRECTORY/<name>`), an environment variable, `~/.netrc`. A file or credential
that was asked for but cannot be read is an error (the user named it); an unset environment
variable or a missing netrc entry just moves on. Errors name the source, never the secret.
"""

from __future__ import annotations

import logging
import netrc as _netrc
import os
import stat
from pathlib import Path

from snfs.errors import ConfigError

log = logging.getLogger("snfs.secrets")

__all__ = ["Secret", "load_secret"]


class Secret:
    """Holds a secret string; `str`, `repr` and formatting show `***`, `reveal()` the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str | Secret) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        if not isinstance(value, str):
            raise TypeError("Secret holds a str")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    __format__ = lambda self, spec: "***"  # noqa: E731

    def __reduce__(self):  # never pickle a secret by accident
        raise TypeError("a Secret cannot be pickled")


def _from_file(path: Path, what: str) -> str:
    try:
        st = path.stat()
        with open(path, encoding="utf-8") as f:
            first = f.readline()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path}: no such file") from None
    except PermissionError:
        raise ConfigError(f"{what} {path}: permission denied") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{what} {path}: cannot read ({type(e).__name__})") from None
    if stat.S_IMODE(st.st_mode) & 0o077 and what == "secret file":
        log.warning("secret file %s is readable by group or others; chmod 600 it", path)
    value = first.strip()
    if not value:
        raise ConfigError(f"{what} {path}: first line is empty")
    return value


def _from_netrc(host: str, login: str | None, path: Path | None) -> str | None:
    path = path or Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    if not path.exists():
        return None
    try:
        entries = _netrc.netrc(str(path))
    except (_netrc.NetrcParseError, OSError) as e:
        # NetrcParseError's message may quote a token of the file: don't repeat it.
        lineno = getattr(e, "lineno", None)
        where = f" (line {lineno})" if lineno else ""
        raise ConfigError(f"netrc file {path}: cannot parse{where}") from None
    auth = entries.authenticators(host)
    if auth is None:
        return None
    user, _account, password = auth
    if login is not None and user and user != login:
        return None
    return password or None


def load_secret(
    *,
    env: str | None = None,
    file: Path | None = None,
    netrc_host: str | None = None,
    netrc_login: str | None = None,
    credential: str | None = None,
    netrc_file: Path | None = None,
) -> str:
    """The secret from the first source that has one (file, credential, env, netrc)."""
    tried: list[str] = []
    if file is not None:
        return _from_file(Path(file).expanduser(), "secret file")
    if credential is not None:
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise ConfigError(
                f"systemd credential {credential!r}: $CREDENTIALS_DIRECTORY "
                "is not set (use LoadCredential= in the unit)"
            )
        if "/" in credential or credential in ("", ".", ".."):
            raise ConfigError(f"systemd credential {credential!r}: invalid name")
        return _from_file(Path(directory) / credential, "systemd credential")
    if env is not None:
        value = os.environ.get(env)
        if value:
            return value
        tried.append(f"${env}")
    if netrc_host is not None:
        value = _from_netrc(netrc_host, netrc_login, netrc_file)
        if value:
            return value
        tried.append(f"~/.netrc machine {netrc_host}")
    if not tried:
        raise ConfigError("no secret source given")
    raise ConfigError("no secret found in " + ", ".join(tried))
