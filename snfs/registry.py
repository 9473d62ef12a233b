"""The systems snfs can mount: one `System` entry per backend module.

Each module in `snfs.backends` that defines a module-level `SYSTEM = System(...)` is a system:
its name (`--backend NAME`, the `NAME+https://...` URL prefix, the xattr namespace), the URL
it expects, its capabilities, its own options, and how to build its backend from the mount
options. `snfs mount`, the config file and mount(8) read the list from here, so adding a
system is adding one module (and its tests): see docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from snfs.backend import Backend, Capabilities
from snfs.errors import ConfigError

if TYPE_CHECKING:
    from snfs.option_schema import Option
    from snfs.options import MountOptions

DEFAULT = "servicenow"


@dataclass(frozen=True)
class System:
    name: str  # lower case, [a-z0-9_]
    summary: str  # one line for --help
    url: str  # what INSTANCE looks like, e.g. "easyvista+https://HOST/api/v1/ACCOUNT"
    capabilities: Capabilities  # of its tables (a backend may answer per table)
    # Options and the URL (without the NAME+ prefix) -> the backend, not yet connected.
    build: Callable[[MountOptions, str], Backend]
    options: tuple[Option, ...] = ()  # its own options; values in o.backend_options


@functools.cache
def systems() -> tuple[System, ...]:
    """Every registered system, the default first, then by name."""
    import snfs.backends

    found: list[System] = []
    for info in pkgutil.iter_modules(snfs.backends.__path__):
        module = importlib.import_module(f"snfs.backends.{info.name}")
        system = getattr(module, "SYSTEM", None)
        if isinstance(system, System):
            found.append(system)
    return tuple(sorted(found, key=lambda s: (s.name != DEFAULT, s.name)))


def names() -> tuple[str, ...]:
    return tuple(s.name for s in systems())


def get(name: str) -> System:
    for s in systems():
        if s.name == name:
            return s
    raise ConfigError(f"unknown backend {name!r} (known: {', '.join(names())})")


def split_url(instance: str) -> tuple[str | None, str]:
    """`easyvista+https://host/api/v1/ACCOUNT` -> ("easyvista", "https://host/api/v1/ACCOUNT")."""
    head, sep, rest = instance.partition("+")
    if sep and head in names() and "://" in rest:
        return head, rest
    return None, instance


def make_backend(o: MountOptions) -> Backend:
    """The system to mount, by `--backend` or the URL's `NAME+` prefix; the default else."""
    prefix, url = split_url(o.instance)
    return get(o.backend or prefix or DEFAULT).build(o, url)
