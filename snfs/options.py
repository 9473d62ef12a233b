"""Mount options: the command line of `snfs mount`, parsed into one settings object."""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

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


@dataclass
class MountOptions:
    instance: str
    mountpoint: Path
    backend: str | None = None
    user: str | None = None
    password_file: Path | None = None
    password_env: str = "SNFS_PASSWORD"
    credential: str | None = None  # systemd LoadCredential= name
    token_file: Path | None = None
    token_env: str = "SNFS_TOKEN"
    oauth_client_id: str | None = None
    oauth_secret_file: Path | None = None
    oauth_secret_env: str = "SNFS_OAUTH_CLIENT_SECRET"
    oauth_grant: str = "password"
    read_only: bool = False
    allow_other: bool = False
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    umask: int = 0o022
    extra_fuse_options: list[str] = field(default_factory=list)
    tables: list[str] | None = None
    dir_cache_time: float = 60.0
    cache_size: int = 256 * 2**20
    cache_dir: Path | None = None
    disk_cache_size: int = 2 * 2**30
    spool_dir: Path | None = None
    max_in_flight: int = 8
    read_ahead_kb: int = 4096
    prefetch: int = 8
    timeout: float = 30.0
    allow_insecure_http: bool = False
    ca_bundle: Path | None = None
    verbose: int = 0
    log_file: Path | None = None
    daemon: bool = False
    ready_fd: int | None = None
    profile: str | None = None
    # Secrets from a private config file (snfs.config); Secret hides them from repr and logs.
    password: Secret | None = field(default=None, repr=False)
    token: Secret | None = field(default=None, repr=False)
    client_secret: Secret | None = field(default=None, repr=False)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("instance", help="instance name (dev12345), URL, or config profile")
    p.add_argument(
        "mountpoint",
        type=Path,
        nargs="?",
        default=None,
        help="where to mount (default: the profile's mountpoint)",
    )
    p.add_argument(
        "--backend",
        choices=("servicenow", "easyvista", "huawei"),
        help="the system behind INSTANCE (default: from a NAME+https:// prefix, else servicenow)",
    )
    auth = p.add_argument_group("authentication (secrets never on the command line)")
    auth.add_argument("--user", help="user name for Basic auth or the OAuth password grant")
    auth.add_argument("--password-file", type=Path, help="file whose first line is the password")
    auth.add_argument(
        "--password-env",
        default="SNFS_PASSWORD",
        help="environment variable holding the password (default SNFS_PASSWORD)",
    )
    auth.add_argument("--credential", help="systemd credential name ($CREDENTIALS_DIRECTORY/NAME)")
    auth.add_argument("--token-file", type=Path, help="file holding a static bearer token")
    auth.add_argument("--oauth-client-id", help="use OAuth 2 (/oauth_token.do) with this client")
    auth.add_argument(
        "--oauth-secret-file",
        type=Path,
        help="file holding the OAuth client secret (else $SNFS_OAUTH_CLIENT_SECRET)",
    )
    auth.add_argument(
        "--oauth-grant", choices=("password", "client_credentials"), default="password"
    )
    p.add_argument(
        "-o",
        dest="fuse_options",
        action="append",
        default=[],
        help="ro, allow_other, uid=N, gid=N, umask=NNN (comma-separated)",
    )
    p.add_argument("--tables", help="comma-separated tables to show at the root")
    p.add_argument(
        "--dir-cache-time",
        type=float,
        default=60.0,
        help="seconds a directory listing is reused (default 60)",
    )
    p.add_argument(
        "--cache-size",
        type=parse_size,
        default="256M",
        help="memory for small files' content (default 256M)",
    )
    p.add_argument("--cache-dir", type=Path, help="on-disk cache for large files (mode 0700)")
    p.add_argument("--disk-cache-size", type=parse_size, default="2G")
    p.add_argument(
        "--spool-dir",
        type=Path,
        help="where written files wait for upload (default $XDG_STATE_HOME/snfs/spool)",
    )
    p.add_argument("--max-in-flight", type=int, default=8, help="concurrent HTTP requests")
    p.add_argument(
        "--prefetch",
        type=int,
        default=8,
        help="small files fetched ahead of a process reading a directory's files in turn (0: off)",
    )
    p.add_argument(
        "--read-ahead",
        dest="read_ahead_kb",
        type=int,
        default=4096,
        metavar="KB",
        help="kernel read-ahead for sequential reads (default 4096; needs root)",
    )
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds")
    p.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow http:// to a host that is not loopback",
    )
    p.add_argument("--ca-bundle", type=Path, help="CA certificates to verify the instance with")
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.add_argument("--log-file", type=Path)
    p.add_argument("--daemon", action="store_true", help="return once the mount is ready")
    p.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)


def from_args(a: argparse.Namespace, profile: Profile | None = None) -> MountOptions:
    o = MountOptions(instance=a.instance, mountpoint=a.mountpoint.absolute())
    o.profile = getattr(a, "profile", None)
    for key in ("token_env", "oauth_secret_env"):  # settable in a profile only
        if getattr(a, key, None):
            setattr(o, key, getattr(a, key))
    if profile is not None:
        for key in ("password", "token", "client_secret"):
            value = profile.secret(key)
            if value:
                setattr(o, key, Secret(value))
    for name in (
        "backend",
        "user",
        "password_file",
        "password_env",
        "credential",
        "token_file",
        "oauth_client_id",
        "oauth_secret_file",
        "oauth_grant",
        "dir_cache_time",
        "cache_size",
        "cache_dir",
        "disk_cache_size",
        "spool_dir",
        "max_in_flight",
        "read_ahead_kb",
        "prefetch",
        "timeout",
        "allow_insecure_http",
        "ca_bundle",
        "verbose",
        "log_file",
        "daemon",
        "ready_fd",
    ):
        setattr(o, name, getattr(a, name))
    if a.tables:
        o.tables = [t.strip() for t in a.tables.split(",") if t.strip()]
    apply_fuse_options(o, ",".join(a.fuse_options))
    if o.dir_cache_time <= 0:
        raise ConfigError("--dir-cache-time must be above 0 (listings change remotely)")
    return o


def apply_fuse_options(o: MountOptions, text: str) -> None:
    for opt in filter(None, (s.strip() for s in text.split(","))):
        key, _, value = opt.partition("=")
        try:
            if key == "ro":
                o.read_only = True
            elif key == "rw":
                o.read_only = False
            elif key == "allow_other":
                o.allow_other = True
            elif key == "uid":
                o.uid = int(value)
            elif key == "gid":
                o.gid = int(value)
            elif key == "umask":
                o.umask = int(value, 8)
            elif key in (
                "_netdev",
                "noauto",
                "auto",
                "nofail",
                "user",
                "users",
                "defaults",
                "exec",
                "noexec",
                "suid",
                "nosuid",
                "dev",
                "nodev",
            ) or key.startswith("x-"):
                continue  # for mount(8)/systemd, not for FUSE
            else:
                o.extra_fuse_options.append(opt)
        except ValueError:
            raise ConfigError(f"bad mount option {opt!r}") from None
