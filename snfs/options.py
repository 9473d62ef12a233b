"""Mount options: one schema for the command line, the config file and mount(8).

Every option is one field of `MountOptions`, declared with `opt(...)`: its default, help, kind
(how a value is read from the command line and checked in a config file), and where it may be
set. From that one table come

- the command line of `snfs mount` (`add_arguments`, `from_args`),
- the config file's keys and checks (`snfs.config`: the key is the field name),
- mount(8)'s `-o name=value` (`snfs.mount_helper`: the field name or the long option's name),
- `-o ro,allow_other,uid=N,gid=N,umask=NNN` (options marked `fuse`).

A backend's own options are `Option`s in its `snfs.registry.System` entry; their values land
in `MountOptions.backend_options`. Adding an option = one `opt(...)` field here (or one
`Option` in a backend's entry); see docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snfs.errors import ConfigError
from snfs.secrets import Secret

if TYPE_CHECKING:
    from snfs.config import Profile

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?[bB])?\s*$")
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_size(text: str) -> int:
    """`256M`, `2G`, `512MiB`, `1048576` -> bytes (binary units)."""
    m = _SIZE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 256M or 2G)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def state_home() -> Path:
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "snfs"


def cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "snfs"


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


def _check_tables(v: Any, where: str) -> list[str]:
    if isinstance(v, str):
        v = v.split(",")
    if not isinstance(v, list) or not all(isinstance(t, str) for t in v):
        raise _bad(where, 'a list of table names such as ["incident", "problem"]')
    tables = [t.strip() for t in v if t.strip()]
    if not tables:
        raise _bad(where, "a non-empty list of table names")
    return tables


def check_fuse_words(v: Any, where: str) -> list[str]:
    if isinstance(v, str):
        v = v.split(",")
    if not isinstance(v, list) or not all(isinstance(o, str) for o in v):
        raise _bad(where, 'a string of mount options such as "ro,allow_other"')
    return [o.strip() for o in v if o.strip()]


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


_AUTH = "authentication (secrets never on the command line)"


def _backend_names() -> tuple[str, ...]:
    from snfs.registry import names

    return names()


@dataclass
class MountOptions:
    instance: str
    mountpoint: Path
    backend: str | None = opt(
        None,
        "the system behind INSTANCE (default: from a NAME+https:// prefix, else servicenow)",
        choices=_backend_names,
    )
    user: str | None = opt(
        None,
        "user name for Basic auth or the OAuth password grant",
        group=_AUTH,
        aliases=("username", "sn_user"),
    )
    password_file: Path | None = opt(
        None, "file whose first line is the password", kind=PATH, group=_AUTH
    )
    password_env: str = opt(
        "SNFS_PASSWORD",
        "environment variable holding the password (default SNFS_PASSWORD)",
        group=_AUTH,
    )
    # systemd LoadCredential= name
    credential: str | None = opt(
        None, "systemd credential name ($CREDENTIALS_DIRECTORY/NAME)", group=_AUTH
    )
    token_file: Path | None = opt(
        None, "file holding a static bearer token", kind=PATH, group=_AUTH
    )
    token_env: str = opt(
        "SNFS_TOKEN",
        "environment variable holding a bearer token (default SNFS_TOKEN)",
        group=_AUTH,
    )
    oauth_client_id: str | None = opt(
        None, "use OAuth 2 (/oauth_token.do) with this client", group=_AUTH
    )
    oauth_secret_file: Path | None = opt(
        None,
        "file holding the OAuth client secret (else $SNFS_OAUTH_CLIENT_SECRET)",
        kind=PATH,
        group=_AUTH,
    )
    oauth_secret_env: str = opt(
        "SNFS_OAUTH_CLIENT_SECRET",
        "environment variable holding the OAuth client secret",
        group=_AUTH,
    )
    oauth_grant: str = opt(
        "password", None, choices=("password", "client_credentials"), group=_AUTH
    )
    read_only: bool = opt(False, kind=BOOL, fuse=True, fuse_on="ro", fuse_off="rw")
    allow_other: bool = opt(False, kind=BOOL, fuse=True, fuse_on="allow_other")
    uid: int = opt(os.getuid, kind=INT, fuse=True)
    gid: int = opt(os.getgid, kind=INT, fuse=True)
    umask: int = opt(0o022, kind=UMASK, fuse=True)
    allow_non_empty: bool = opt(
        False,
        "mount over a directory that holds files (hidden while mounted; refused by default)",
        kind=BOOL,
        aliases=("nonempty",),
    )
    tables: list[str] | None = opt(None, "comma-separated tables to show at the root", kind=TABLES)
    dir_cache_time: float = opt(
        60.0, "seconds a directory listing is reused (default 60)", kind=SECONDS
    )
    cache_size: int = opt(256 * 2**20, "memory for small files' content (default 256M)", kind=SIZE)
    cache_dir: Path | None = opt(None, "on-disk cache for large files (mode 0700)", kind=PATH)
    disk_cache_size: int = opt(2 * 2**30, "on-disk cache size (default 2G)", kind=SIZE)
    no_index: bool = opt(
        False,
        "keep listings in memory only, without the on-disk metadata index in the cache"
        " directory (a walk of a large table then costs a request per 200 records)",
        kind=BOOL,
    )
    spool_dir: Path | None = opt(
        None,
        "where written files wait for upload (default $XDG_STATE_HOME/snfs/spool)",
        kind=PATH,
    )
    max_in_flight: int = opt(8, "concurrent HTTP requests", kind=POSITIVE_INT)
    write_back: bool = opt(
        False,
        "close returns once the bytes are safe in the spool; uploads run in the background"
        " (fsync and `snfs sync` wait for them)",
        kind=BOOL,
    )
    transfers: int = opt(
        8, "background uploads at once (default 8; files >= 1 MiB: half)", kind=POSITIVE_INT
    )
    local_only: list[str] = opt(
        list,
        "comma-separated name patterns kept local only, never uploaded, besides the desktop"
        " metadata .DS_Store, .directory, Thumbs.db, desktop.ini, ._* (docs/WRITES.md)",
        kind=PATTERNS,
    )
    prefetch: int = opt(
        8,
        "small files fetched ahead of a process reading a directory's files in turn (0: off)",
        kind=INT,
    )
    read_ahead_kb: int = opt(
        4096,
        "kernel read-ahead for sequential reads (default 4096; needs root)",
        kind=INT,
        flag="--read-ahead",
        metavar="KB",
        aliases=("read_ahead",),
    )
    timeout: float = opt(30.0, "per-request timeout, seconds", kind=SECONDS)
    allow_insecure_http: bool = opt(
        False, "allow http:// to a host that is not loopback", kind=BOOL
    )
    ca_bundle: Path | None = opt(None, "CA certificates to verify the instance with", kind=PATH)
    verbose: int = opt(0, "more log detail (repeat for more)", kind=COUNT, short="-v")
    log_file: Path | None = opt(None, "log here instead of stderr", kind=PATH)
    # How to run the process, not what to mount: never from a profile or fstab.
    daemon: bool = opt(
        False, "return once the mount is ready", kind=BOOL, config=False, mount8=False
    )
    ready_fd: int | None = opt(None, kind=FD, config=False, mount8=False, hidden=True)
    # Set by `-o` (unknown words go to FUSE), the profile, and a backend's own options.
    extra_fuse_options: list[str] = field(default_factory=list)
    profile: str | None = None
    backend_options: dict[str, Any] = field(default_factory=dict)
    # Secrets from a private config file (snfs.config); Secret hides them from repr and logs.
    password: Secret | None = field(default=None, repr=False)
    token: Secret | None = field(default=None, repr=False)
    client_secret: Secret | None = field(default=None, repr=False)


def _core_options() -> Iterator[Option]:
    for f in fields(MountOptions):
        if "option" not in f.metadata:
            continue
        kind, help_, kw = f.metadata["option"]
        default = f.default_factory() if callable(f.default_factory) else f.default
        yield Option(f.name, kind, default, help_, **kw)


@functools.cache
def core_options() -> tuple[Option, ...]:
    """The mount's own options, in --help order."""
    return tuple(_core_options())


def backend_options() -> list[Option]:
    """Options the registered backends declare (values in `MountOptions.backend_options`)."""
    from snfs.registry import systems

    return [o for s in systems() for o in s.options]


def all_options() -> list[Option]:
    return [*core_options(), *backend_options()]


# --- the command line -----------------------------------------------------------------------


def _add(p: argparse.ArgumentParser | argparse._ArgumentGroup, o: Option) -> None:
    names = [o.short, o.long] if o.short else [o.long]
    kw: dict[str, Any] = {"dest": o.name, "default": o.default}
    kw["help"] = argparse.SUPPRESS if o.hidden else o.help
    if o.kind.count:
        kw["action"] = "count"
    elif o.kind.flag:
        kw["action"] = "store_true"
    else:
        if o.kind.append:
            kw["action"], kw["default"] = "append", None
        if o.kind.parse is not None:
            kw["type"] = o.kind.parse
        if o.metavar:
            kw["metavar"] = o.metavar
        allowed = o.allowed()
        if allowed is not None:
            kw["choices"] = allowed
    p.add_argument(*names, **kw)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("instance", help="instance name (dev12345), URL, or config profile")
    p.add_argument(
        "mountpoint",
        type=Path,
        nargs="?",
        default=None,
        help="where to mount (default: the profile's mountpoint)",
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for o in core_options():
        if o.fuse:
            continue
        target = groups.setdefault(o.group, p.add_argument_group(o.group)) if o.group else p
        _add(target, o)
    p.add_argument(
        "-o",
        dest="fuse_options",
        action="append",
        default=[],
        help="ro, allow_other, uid=N, gid=N, umask=NNN (comma-separated)",
    )
    from snfs.registry import systems

    for system in systems():
        if system.options:
            group = p.add_argument_group(f"{system.name} ({system.summary})")
            for o in system.options:
                _add(group, o)


def from_args(a: argparse.Namespace, profile: Profile | None = None) -> MountOptions:
    o = MountOptions(instance=a.instance, mountpoint=a.mountpoint.absolute())
    o.profile = getattr(a, "profile", None)
    if profile is not None:
        for key in ("password", "token", "client_secret"):
            value = profile.secret(key)
            if value:
                setattr(o, key, Secret(value))
    for opt_ in core_options():
        if not opt_.fuse:
            setattr(o, opt_.name, opt_.kind.finish(getattr(a, opt_.name)))
    for opt_ in backend_options():
        o.backend_options[opt_.name] = opt_.kind.finish(getattr(a, opt_.name))
    apply_fuse_options(o, ",".join(a.fuse_options))
    if o.dir_cache_time <= 0:
        raise ConfigError("--dir-cache-time must be above 0 (listings change remotely)")
    return o


# --- `-o`: FUSE options and what mount(8) passes along ----------------------------------------

# Words for mount(8), fstab and systemd, never for FUSE: dropped wherever `-o` is read.
MOUNT8_ONLY = frozenset(
    {
        "_netdev",
        "auto",
        "noauto",
        "nofail",
        "defaults",
        "user",
        "nouser",
        "users",
        "nousers",
        "owner",
        "noowner",
        "group",
        "nogroup",
    }
)
MOUNT8_PREFIXES = ("x-", "X-", "comment=", "offset=", "sizelimit=")
# Generic kernel flags mount(8) passes on: FUSE mounts are always nosuid,nodev for a user
# (fusermount3), so they are accepted and ignored.
KERNEL_FLAGS = frozenset({"exec", "noexec", "suid", "nosuid", "dev", "nodev"})


def mount8_only(word: str) -> bool:
    """Is this `-o` word meant for mount(8)/fstab/systemd (`user=NAME` is snfs's option)?"""
    key, eq, _ = word.partition("=")
    return (not eq and key in MOUNT8_ONLY) or word.startswith(MOUNT8_PREFIXES)


def fuse_words(values: dict[str, Any]) -> list[str]:
    """The `-o` words for the fuse options in `values` (a profile's)."""
    words: list[str] = []
    for o in core_options():
        if not o.fuse or o.name not in values:
            continue
        v = values[o.name]
        if o.kind.flag:
            word = o.fuse_on if v else o.fuse_off
            if word:
                words.append(word)
        elif o.kind is UMASK:
            words.append(f"{o.name}={v:03o}")
        else:
            words.append(f"{o.name}={v}")
    return words


def apply_fuse_options(o: MountOptions, text: str) -> None:
    switches: dict[str, tuple[str, bool]] = {}
    valued: dict[str, Option] = {}
    for opt_ in core_options():
        if opt_.fuse and opt_.kind.flag:
            if opt_.fuse_on:
                switches[opt_.fuse_on] = (opt_.name, True)
            if opt_.fuse_off:
                switches[opt_.fuse_off] = (opt_.name, False)
        elif opt_.fuse:
            valued[opt_.name] = opt_
        elif opt_.kind.flag and opt_.mount8:  # `-o nonempty`: a switch of snfs's own
            for word in (opt_.name, *opt_.aliases):
                switches[word] = (opt_.name, True)
    for word in filter(None, (s.strip() for s in text.split(","))):
        key, _, value = word.partition("=")
        if word in switches:
            name, on = switches[word]
            setattr(o, name, on)
        elif key in valued:
            parse = valued[key].kind.parse or str
            try:
                setattr(o, key, parse(value))
            except ValueError:
                raise ConfigError(f"bad mount option {word!r}") from None
        elif mount8_only(word) or key in KERNEL_FLAGS:
            continue  # for mount(8)/systemd, not for FUSE
        else:
            o.extra_fuse_options.append(word)
