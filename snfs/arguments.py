"""Every option of a mount, the core's (`snfs.options`) and the registered systems'
(`snfs.registry`), and the command line of `snfs mount` built from them (`add_arguments`,
`from_args`). It sits above both, so neither the option schema nor the registry imports the
other; `snfs.config` and mount(8) (`snfs.mount_helper`) read the full list from here.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from snfs import registry
from snfs.errors import ConfigError
from snfs.option_schema import Option
from snfs.options import MountOptions, apply_fuse_options, core_options
from snfs.secrets import Secret


class SecretSource(Protocol):
    """Where `from_args` finds secrets (a config profile, `snfs.config.Profile`)."""

    def secret(self, key: str) -> str | None: ...


def _with_systems(o: Option) -> Option:
    """`--backend` takes the registered systems' names (known only here, above the registry)."""
    return replace(o, choices=registry.names) if o.name == "backend" else o


def mount_options() -> tuple[Option, ...]:
    """The core's options, as the command line and the config file check them."""
    return tuple(map(_with_systems, core_options()))


def backend_options() -> list[Option]:
    """Options the registered backends declare (values in `MountOptions.backend_options`)."""
    return [o for s in registry.systems() for o in s.options]


def all_options() -> list[Option]:
    return [*mount_options(), *backend_options()]


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
    for o in mount_options():
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
    for system in registry.systems():
        if system.options:
            group = p.add_argument_group(f"{system.name} ({system.summary})")
            for o in system.options:
                _add(group, o)


def from_args(a: argparse.Namespace, profile: SecretSource | None = None) -> MountOptions:
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
