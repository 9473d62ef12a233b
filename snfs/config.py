"""The config file: named profiles of mount options.

    # ~/.config/snfs/config.toml  ($XDG_CONFIG_HOME/snfs/config.toml)
    [instance.prod]
    url = "https://acme.service-now.com"
    user = "svc_snfs"
    password_file = "/etc/snfs/prod.password"
    tables = ["incident", "problem"]
    mountpoint = "/mnt/prod"
    options = "ro,allow_other"
    dir_cache_time = 30
    cache_size = "512M"

Every key but `url`, `mountpoint`, `options` and the secrets is an option of the schema in
`snfs.options` (a `MountOptions` field, or a backend's own option) with the meaning of the
command-line option of the same name; its value is checked by the option's kind (read_only,
allow_other, uid, gid and umask become `-o` words). `snfs mount prod` uses the profile; the
command line overrides it, and it overrides the built-in defaults.

A secret (`password`, `token`, `client_secret`, `oauth_secret`) may sit in the file only if
the file is private (`chmod 600`); otherwise the whole file is refused.
"""

from __future__ import annotations

import argparse
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from snfs.arguments import add_arguments, all_options
from snfs.errors import ConfigError
from snfs.option_schema import Option, check_fuse_words, check_str
from snfs.options import fuse_words
from snfs.secrets import Secret

__all__ = [
    "Profile",
    "config_path",
    "load_profile",
    "profile_defaults",
    "apply_profile",
    "SYSTEM_CONFIG",
]

SYSTEM_CONFIG = Path("/etc/snfs/config.toml")

# Secret keys as written in the file -> the values key they become.
SECRET_KEYS = {
    "password": "password",
    "token": "token",
    "client_secret": "client_secret",
    "oauth_secret": "client_secret",
}

_PROFILE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass
class Profile:
    name: str
    url: str
    # MountOptions field names (plus `mountpoint`, `fuse_options`, and the secrets `password`,
    # `token`, `client_secret` as snfs.secrets.Secret), already converted.
    values: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def secret(self, key: str) -> str | None:
        """`password`, `token` or `client_secret` from the file, revealed; None if absent."""
        value = self.values.get(key)
        return value.reveal() if isinstance(value, Secret) else None

    def __repr__(self) -> str:  # values may hold secrets: Secret reprs as '***' anyway
        return (
            f"Profile(name={self.name!r}, url={self.url!r}, path={str(self.path)!r}, "
            f"keys={sorted(self.values)!r})"
        )


def config_path() -> Path:
    """`$SNFS_CONFIG` if set; else `$XDG_CONFIG_HOME/snfs/config.toml` (default
    `~/.config/snfs/config.toml`); for root, `/etc/snfs/config.toml` when the per-user file
    does not exist (the system unit and mount(8) at boot run as root)."""
    explicit = os.environ.get("SNFS_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or ""
    user_file = (
        (Path(base) if os.path.isabs(base) else Path.home() / ".config") / "snfs" / "config.toml"
    )
    if os.geteuid() == 0 and not user_file.exists() and SYSTEM_CONFIG.exists():
        return SYSTEM_CONFIG
    return user_file


def _where(path: Path, profile: str, key: str) -> str:
    return f"{path}: [instance.{profile}] {key}"


def _options() -> dict[str, Option]:
    """Config key -> option, from the schema."""
    return {o.name: o for o in all_options() if o.config}


def known_keys() -> frozenset[str]:
    return frozenset({"url", "mountpoint", "options"} | set(_options()) | set(SECRET_KEYS))


def _convert_profile(name: str, table: Any, path: Path) -> Profile:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: instance.{name} must be a table ([instance.{name}])")
    values: dict[str, Any] = {}
    url: str | None = None
    seen: dict[str, str] = {}
    options = _options()
    for raw_key, v in table.items():
        key = raw_key.replace("-", "_")
        where = _where(path, name, raw_key)
        if key not in options and key not in ("url", "mountpoint", "options", *SECRET_KEYS):
            raise ConfigError(f"{path}: [instance.{name}]: unknown key {raw_key!r}")
        if key in seen:
            raise ConfigError(f"{path}: [instance.{name}]: {raw_key!r} repeats {seen[key]!r}")
        seen[key] = raw_key
        if key == "url":
            url = check_str(v, where)
        elif key in SECRET_KEYS:
            if not isinstance(v, str) or not v:
                raise ConfigError(f"{where}: must be a non-empty string")  # never echo it
            target = SECRET_KEYS[key]
            if target in values:
                raise ConfigError(
                    f"{path}: [instance.{name}]: both client_secret and oauth_secret given"
                )
            values[target] = Secret(v)
        elif key == "mountpoint" or (key in options and options[key].kind.path):
            p = Path(check_str(v, where)).expanduser()
            values[key] = p if p.is_absolute() else (path.parent / p)
        elif key == "options":
            values["fuse_options"] = check_fuse_words(v, where)
        else:
            values[key] = options[key].check(v, where)
    if url is None:
        raise ConfigError(
            f"{path}: [instance.{name}]: missing url "
            '(url = "https://acme.service-now.com" or an instance name)'
        )
    return Profile(name=name, url=url, values=values, path=path)


def _has_secret(doc: dict[str, Any]) -> bool:
    instances = doc.get("instance")
    if not isinstance(instances, dict):
        return False
    return any(
        isinstance(t, dict) and any(k.replace("-", "_") in SECRET_KEYS for k in t)
        for t in instances.values()
    )


def read_config(path: Path) -> dict[str, Any] | None:
    """The parsed file, checked (structure and permissions); None if it does not exist."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
    except FileNotFoundError:
        return None
    except PermissionError:
        raise ConfigError(f"config file {path}: permission denied") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path}: is a directory") from None
    except OSError as e:
        raise ConfigError(f"config file {path}: {e.strerror}") from None
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path}: not UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        # The message carries "(at line N, column M)" and never the text itself.
        raise ConfigError(f"config file {path}: invalid TOML: {e}") from None
    for key in doc:
        if key != "instance":
            raise ConfigError(
                f"config file {path}: unknown key {key!r} (profiles are [instance.NAME] tables)"
            )
    if not isinstance(doc.get("instance", {}), dict):
        raise ConfigError(f"config file {path}: 'instance' must hold [instance.NAME] tables")
    if _has_secret(doc) and stat.S_IMODE(st.st_mode) & 0o077:
        raise ConfigError(
            f"config file {path} holds a secret but is readable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path} "
            "(or move the secret to a password_file)"
        )
    return doc


def load_profile(name: str, path: Path | None = None) -> Profile | None:
    """Profile `name` from the config file; None when there is no file or no such profile.
    Any problem in the file (syntax, unknown key, bad value, a secret in a file others can
    read) is a ConfigError, even in another profile: the file is checked as a whole."""
    path = path if path is not None else config_path()
    doc = read_config(path)
    if doc is None:
        return None
    instances = doc.get("instance", {})
    profiles = {n: _convert_profile(n, t, path) for n, t in instances.items()}
    return profiles.get(name)


def profile_names(path: Path | None = None) -> list[str]:
    """The profiles of the config file (none when there is no file)."""
    path = path if path is not None else config_path()
    doc = read_config(path)
    return sorted(doc.get("instance", {})) if doc else []


def looks_like_profile_name(instance: str) -> bool:
    """A URL or anything with a slash or colon is never looked up as a profile."""
    return bool(_PROFILE_NAME.match(instance))


def profile_defaults(profile: Profile) -> dict[str, Any]:
    """Defaults for `argparse.ArgumentParser.set_defaults(**...)` on a parser built with
    `snfs.options.add_arguments`: keys are its dests. Secrets are never included.

    `-o` appends to its default, so the profile's mount options come first and the command
    line's after them: for one key (ro/rw, uid=...) the command line wins."""
    v = profile.values
    d: dict[str, Any] = {}
    if "mountpoint" in v:
        d["mountpoint"] = v["mountpoint"]
    for o in all_options():
        if o.config and not o.fuse and o.name in v:
            d[o.name] = o.kind.unparse(v[o.name])
    opts = list(v.get("fuse_options", [])) + fuse_words(v)
    if opts:
        d["fuse_options"] = opts
    return d


def apply_profile(
    parser: argparse.ArgumentParser, argv: list[str], path: Path | None = None
) -> tuple[argparse.Namespace, Profile | None]:
    """Parse `snfs mount` arguments with profile support: if INSTANCE names a profile, its
    values become the parser's defaults, `instance` becomes the profile's url, and a missing
    MOUNTPOINT comes from the profile (the parser's mountpoint must be `nargs="?"` for that).

    `parser` must be built with `snfs.options.add_arguments`."""
    instance = _first_positional(argv)
    profile = None
    if instance is not None and looks_like_profile_name(instance):
        try:
            profile = load_profile(instance, path)
        except ConfigError as e:
            parser.error(e.message)
    if profile is not None:
        parser.set_defaults(**profile_defaults(profile))
    args = parser.parse_args(argv)
    if profile is not None:
        args.instance = profile.url
        args.profile = profile.name
    else:
        args.profile = None
    if getattr(args, "mountpoint", None) is None:
        parser.error(
            f"no mount point: give MOUNTPOINT, or set mountpoint in the profile ({config_path()})"
        )
    return args, profile


class _QuietParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise argparse.ArgumentError(None, message)


def _first_positional(argv: list[str]) -> str | None:
    """INSTANCE as `add_arguments` would parse it, without failing or printing on anything
    else (the real parse reports problems)."""

    pre = _QuietParser(add_help=False, exit_on_error=False)
    add_arguments(pre)
    for action in pre._actions:  # a throwaway parser: make every positional optional
        if not action.option_strings:
            action.nargs, action.required, action.default, action.type = "?", False, None, None
    try:
        ns, _ = pre.parse_known_args(argv)
    except argparse.ArgumentError:
        return None
    return getattr(ns, "instance", None)
