"""Mount options: one schema for the command line, the config file and mount(8).

Every option is one field of `MountOptions`, declared with `opt(...)`: its default, help, kind
(how a value is read from the command line and checked in a config file), and where it may be
set. From that one table come

- the command line of `snfs mount` (`snfs.arguments`: `add_arguments`, `from_args`),
- the config file's keys and checks (`snfs.config`: the key is the field name),
- mount(8)'s `-o name=value` (`snfs.mount_helper`: the field name or the long option's name),
- `-o ro,allow_other,uid=N,gid=N,umask=NNN` (options marked `fuse`).

What an option is and the kinds of value live in the leaf `snfs.option_schema`. A backend's own
options are `Option`s in its `snfs.registry.System` entry; their values land in
`MountOptions.backend_options`; the full list of both is `snfs.arguments.all_options`. Adding
an option = one `opt(...)` field here (or one `Option` in a backend's entry); see
docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from snfs.errors import ConfigError
from snfs.option_schema import (
    BOOL,
    COUNT,
    FD,
    INT,
    PATH,
    PATTERNS,
    POSITIVE_INT,
    SECONDS,
    SIZE,
    STR,
    TABLES,
    UMASK,
    Kind,
    Option,
    check_fuse_words,
    check_str,
    opt,
    parse_size,
)
from snfs.secrets import Secret

# Re-exported: what users of the core's options read with them.
__all__ = [
    "BOOL",
    "COUNT",
    "FD",
    "INT",
    "PATH",
    "POSITIVE_INT",
    "SECONDS",
    "SIZE",
    "STR",
    "TABLES",
    "UMASK",
    "Kind",
    "MountOptions",
    "Option",
    "apply_fuse_options",
    "cache_home",
    "check_fuse_words",
    "check_str",
    "core_options",
    "fuse_words",
    "mount8_only",
    "opt",
    "parse_size",
    "state_home",
]


def state_home() -> Path:
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "snfs"


def cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "snfs"


_AUTH = "authentication (secrets never on the command line)"


@dataclass
class MountOptions:
    instance: str
    mountpoint: Path
    backend: str | None = opt(
        None,
        # Its choices, the registered systems' names, are filled in by snfs.arguments.
        "the system behind INSTANCE (default: from a NAME+https:// prefix, else servicenow)",
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
