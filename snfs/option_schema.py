"""The option schema: what an option is (`Option`), the kinds of value (`Kind`: how a value is
read from the command line and checked in a config file) and `opt(...)`, which declares a
`snfs.options.MountOptions` field as an option. A leaf: the core's options (`snfs.options`),
the systems' (`snfs.registry`), the command line (`snfs.arguments`) and the config file
(`snfs.config`) all build on it, and it imports none of them.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snfs.errors import ConfigError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?[bB])?\s*$")
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_size(text: str) -> int:
    """`256M`, `2G`, `512MiB`, `1048576` -> bytes (binary units)."""
    m = _SIZE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 256M or 2G)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


# --- kinds: how a value is read from the command line and checked in a config file ----------


def _bad(where: str, expected: str) -> ConfigError:
    return ConfigError(f"{where}: must be {expected}")


def check_str(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise _bad(where, "a non-empty string")
    return v.strip()


def _check_bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise _bad(where, "true or false")
    return v


def _check_int(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise _bad(where, "a whole number >= 0")
    return v


def _check_positive_int(v: Any, where: str) -> int:
    if _check_int(v, where) < 1:
        raise _bad(where, "a whole number >= 1")
    return int(v)


def _check_seconds(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
        raise _bad(where, "a number of seconds above 0")
    return float(v)


def _check_size(v: Any, where: str) -> int:
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    if isinstance(v, str):
        try:
            return parse_size(v)
        except argparse.ArgumentTypeError:
            pass
    raise _bad(where, 'a size such as "512M" or "2G", or a number of bytes')


def _check_umask(v: Any, where: str) -> int:
    if isinstance(v, str):
        try:
            n = int(v, 8)
        except ValueError:
            raise _bad(where, 'an octal string such as "022"') from None
    elif isinstance(v, int) and not isinstance(v, bool):
        n = v  # TOML 0o022
    else:
        raise _bad(where, 'an octal string such as "022"')
    if not 0 <= n <= 0o777:
        raise _bad(where, 'an octal string such as "022"')
    return n


def _strings(v: Any, where: str, expected: str) -> list[str]:
    """A comma-separated string or a list of strings, each stripped, empty ones dropped."""
    if isinstance(v, str):
        v = v.split(",")
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _bad(where, expected)
    return [x.strip() for x in v if x.strip()]


def _check_tables(v: Any, where: str) -> list[str]:
    tables = _strings(v, where, 'a list of table names such as ["incident", "problem"]')
    if not tables:
        raise _bad(where, "a non-empty list of table names")
    return tables


def check_fuse_words(v: Any, where: str) -> list[str]:
    return _strings(v, where, 'a string of mount options such as "ro,allow_other"')


def _split_tables(text: str | list[str] | None) -> list[str] | None:
    if isinstance(text, list):
        return text
    tables = [t.strip() for t in (text or "").split(",") if t.strip()]
    return tables or None


def _same(v: Any) -> Any:
    return v


def _no_check(v: Any, where: str) -> Any:
    raise ConfigError(f"{where}: not settable in a config file")


@dataclass(frozen=True)
class Kind:
    """One type of option value."""

    name: str
    check: Callable[[Any, str], Any]  # config value (TOML-typed), "where" -> value
    parse: Callable[[str], Any] | None = None  # argparse `type` (None: the string)
    flag: bool = False  # a switch: `--x` on the command line, `x` / `x=yes` in mount(8)
    count: bool = False  # `-v -v`
    path: bool = False  # a path: in a config file, relative to the file
    append: bool = False  # repeatable on the command line: the values collect into a list
    # The parsed command-line value -> the MountOptions value (tables: "a,b" -> ["a", "b"]).
    finish: Callable[[Any], Any] = _same
    # A config value -> the command line's default (the inverse of `finish`).
    unparse: Callable[[Any], Any] = _same
    # A mount(8) value -> the command line's (`tables=a:b`: `,` separates mount options).
    from_mount8: Callable[[str], str] = _same


STR = Kind("string", check_str)
PATH = Kind("path", check_str, parse=Path, path=True)
INT = Kind("int", _check_int, parse=int)
POSITIVE_INT = Kind("positive int", _check_positive_int, parse=int)
SECONDS = Kind("seconds", _check_seconds, parse=float)
SIZE = Kind("size", _check_size, parse=parse_size)
BOOL = Kind("bool", _check_bool, flag=True)
COUNT = Kind("count", _check_int, count=True)
UMASK = Kind("umask", _check_umask, parse=lambda v: int(v, 8))
FD = Kind("fd", _no_check, parse=int)


def _check_patterns(v: Any, where: str) -> list[str]:
    if isinstance(v, str):
        v = v.split(",")
    if not isinstance(v, list) or not all(isinstance(p, str) for p in v):
        raise _bad(where, 'a list of file name patterns such as ["*.bak", ".~*"]')
    return [p.strip() for p in v if p.strip()]


# File name patterns (fnmatch): `a,b` on the command line, `a:b` in mount(8).
PATTERNS = Kind(
    "patterns",
    _check_patterns,
    finish=lambda v: _split_tables(v) or [],
    unparse=lambda v: ",".join(v),
    from_mount8=lambda v: ",".join(p for p in v.split(":") if p),
)
TABLES = Kind(
    "tables",
    _check_tables,
    finish=_split_tables,
    unparse=lambda v: ",".join(v),
    from_mount8=lambda v: ",".join(t for t in v.split(":") if t),
)


@dataclass(frozen=True)
class Option:
    """One row of the schema. `name` is the MountOptions field, the argparse dest and the
    config key."""

    name: str
    kind: Kind
    default: Any
    help: str | None = None
    flag: str | None = None  # the long option; default `--name-with-dashes`
    short: str | None = None
    metavar: str | None = None
    group: str | None = None  # a --help section
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None
    config: bool = True  # settable in a profile
    mount8: bool = True  # settable as mount(8) `-o name=value`
    fuse: bool = False  # set with `-o` (ro, allow_other, uid=...), not with a long option
    fuse_on: str | None = None  # for a fuse switch: the `-o` word that sets it
    fuse_off: str | None = None  # ... and the one that clears it
    aliases: tuple[str, ...] = ()  # other mount(8) names
    hidden: bool = False  # internal: not in --help

    @property
    def long(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    def allowed(self) -> tuple[str, ...] | None:
        return self.choices() if callable(self.choices) else self.choices

    def check(self, value: Any, where: str) -> Any:
        """A config-file value, checked and converted (paths are left to the caller)."""
        allowed = self.allowed()
        if allowed is not None:
            if value not in allowed:
                raise _bad(where, " or ".join(repr(c) for c in allowed))
            return value
        return self.kind.check(value, where)


def opt(default: Any = None, help: str | None = None, *, kind: Kind = STR, **kw: Any) -> Any:
    """A MountOptions field that is an option (see `Option` for `kw`). A callable default is
    a factory (evaluated per instance)."""
    meta = {"option": (kind, help, kw)}
    if callable(default):
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)
