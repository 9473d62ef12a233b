"""The backend registry and the option schema: one module adds a system, one entry an option.

No emulator and no mount here: these check how options and systems are wired (the mounts of
each system are tested in test_mount_backends.py and test_cccif.py)."""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import snfs.backends
from snfs import attrs, mount_helper, registry
from snfs.arguments import add_arguments, backend_options, from_args
from snfs.backend import RemoteFile
from snfs.backends.easyvista import EasyVistaBackend
from snfs.backends.huawei import HuaweiBackend
from snfs.backends.router import Router
from snfs.backends.servicenow.backend import ServiceNowBackend
from snfs.backends.servicenow.cccif import CccifBackend
from snfs.config import load_profile, profile_defaults
from snfs.errors import ConfigError
from snfs.options import KERNEL_FLAGS, MOUNT8_ONLY, MountOptions, apply_fuse_options, core_options

TOY = """
from snfs.backend import Capabilities
from snfs.option_schema import INT, Option
from snfs.registry import System


def build(o, url):
    raise RuntimeError(f"toy {url} depth={o.backend_options['toy_depth']}")


SYSTEM = System(
    name="toy",
    summary="a system added by one module",
    url="toy+https://HOST",
    capabilities=Capabilities(rename=False),
    build=build,
    options=(Option("toy_depth", INT, 3, "how deep the toy goes"),),
)
"""


@pytest.fixture
def toy_system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A system that exists only as one module in a directory of the backends package."""
    (tmp_path / "toy.py").write_text(TOY)
    monkeypatch.setattr(snfs.backends, "__path__", [*snfs.backends.__path__, str(tmp_path)])
    registry.systems.cache_clear()
    yield
    registry.systems.cache_clear()
    sys.modules.pop("snfs.backends.toy", None)


def parse(argv: list[str]) -> MountOptions:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return from_args(p.parse_args(argv))


def test_registered_systems() -> None:
    assert registry.names() == ("servicenow", "easyvista", "huawei")
    assert registry.split_url("huawei+https://osm.example") == ("huawei", "https://osm.example")
    assert registry.split_url("bogus+https://x.example") == (None, "bogus+https://x.example")
    with pytest.raises(ConfigError, match="unknown backend 'bogus'"):
        registry.get("bogus")


def test_make_backend_by_prefix_and_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNFS_PASSWORD", "pw")
    monkeypatch.setenv("SNFS_TOKEN", "tok")
    sn = registry.make_backend(parse(["dev12345", "/m", "--user", "u"]))
    assert isinstance(sn, Router) and isinstance(sn.default, ServiceNowBackend)
    assert sn.base_url == "https://dev12345.service-now.com" and sn.name == "servicenow"
    assert sn.instance_key == sn.base_url  # where ServiceNow spools always lived
    ev = registry.make_backend(
        parse(["easyvista+https://ev.example/api/v1/50004", "/m", "--user", "u"])
    )
    assert isinstance(ev, EasyVistaBackend) and ev.account == "50004"
    assert ev.instance_key == "easyvista+https://ev.example"
    hw = registry.make_backend(parse(["https://osm.example", "/m", "--backend", "huawei"]))
    assert isinstance(hw, HuaweiBackend) and hw.instance_key == "huawei+https://osm.example"
    with pytest.raises(ConfigError, match="api/v1/<account>"):
        registry.make_backend(parse(["easyvista+https://ev.example/x", "/m", "--user", "u"]))


def test_router_sends_cccif_to_its_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNFS_PASSWORD", "pw")
    r = registry.make_backend(parse(["dev12345", "/m", "--user", "u"]))
    assert isinstance(r, Router) and isinstance(r.routes[".cccif"], CccifBackend)
    assert r.capabilities(".cccif").list is False and r.capabilities("incident").list is True
    assert r.valid_table_name(".cccif") and not r.default.valid_table_name(".cccif")
    assert r.valid_record_name(".cccif", "user@example.com")
    assert not r.valid_record_name("incident", "user@example.com")


def test_a_new_system_is_one_module(toy_system: None) -> None:
    assert "toy" in registry.names()
    p = argparse.ArgumentParser()
    add_arguments(p)
    backend = next(a for a in p._actions if a.dest == "backend")
    assert backend.choices is not None and "toy" in backend.choices
    o = from_args(p.parse_args(["toy+https://h.example", "/m", "--toy-depth", "7"]))
    assert o.backend_options["toy_depth"] == 7  # other systems add their own keys
    with pytest.raises(RuntimeError, match="toy https://h.example depth=7"):
        registry.make_backend(o)
    # its option is a config key and a mount(8) option too
    assert mount_helper.translate(["h", "/m", "-o", "toy_depth=5"])[-2:] == ["--toy-depth", "5"]


def test_a_new_systems_option_in_a_profile(toy_system: None, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[instance.t]\nurl = "toy+https://h.example"\ntoy_depth = 9\n')
    prof = load_profile("t", path)
    assert prof is not None and profile_defaults(prof)["toy_depth"] == 9
    path.write_text('[instance.t]\nurl = "x"\ntoy_depth = "deep"\n')
    with pytest.raises(ConfigError, match="toy_depth: must be a whole number"):
        load_profile("t", path)


def test_every_option_is_settable_from_a_profile(tmp_path: Path) -> None:
    """Was not the case for `backend` and `read_ahead_kb`; only how the process runs is not."""
    not_in_profiles = {o.name for o in core_options() if not o.config}
    assert not_in_profiles == {"daemon", "ready_fd"}
    path = tmp_path / "config.toml"
    path.write_text(
        '[instance.p]\nurl = "https://osm.example"\nbackend = "huawei"\nread_ahead_kb = 512\n'
        'token_env = "OSM_TOKEN"\nmountpoint = "/mnt/p"\n'
    )
    prof = load_profile("p", path)
    assert prof is not None
    p = argparse.ArgumentParser()
    add_arguments(p)
    p.set_defaults(**profile_defaults(prof))
    o = from_args(p.parse_args(["p"]))
    assert (o.backend, o.read_ahead_kb, o.token_env) == ("huawei", 512, "OSM_TOKEN")
    path.write_text('[instance.p]\nurl = "x"\nbackend = "sharepoint"\n')
    with pytest.raises(ConfigError, match="backend: must be 'servicenow' or"):
        load_profile("p", path)


def test_one_drop_list_for_mount8_words() -> None:
    """What mount.snfs drops, `snfs mount -o` ignores too (they were two lists that differed)."""
    for word in sorted(MOUNT8_ONLY | KERNEL_FLAGS) + ["x-systemd.automount", "comment=x"]:
        o = parse(["dev1", "/m", "-o", word])
        assert o.extra_fuse_options == [], word
        out = mount_helper.translate(["dev1", "/m", "-o", word])
        assert word not in MOUNT8_ONLY or "-o" not in out, word
    o = MountOptions("dev1", Path("/m"))
    apply_fuse_options(o, "ro,uid=7,umask=027,max_read=4096")
    assert (o.read_only, o.uid, o.umask, o.extra_fuse_options) == (True, 7, 0o27, ["max_read=4096"])
    with pytest.raises(ConfigError, match="bad mount option 'uid=x'"):
        apply_fuse_options(o, "uid=x")


def test_mount8_names_are_schema_names() -> None:
    assert mount_helper.translate(["p", "/m", "-o", "read_ahead=256"])[-2:] == [
        "--read-ahead",
        "256",
    ]
    assert mount_helper.translate(["p", "/m", "-o", "backend=huawei"])[-2:] == [
        "--backend",
        "huawei",
    ]
    with pytest.raises(mount_helper.UsageError, match="needs a value"):
        mount_helper.translate(["p", "/m", "-o", "token_env"])


def _file() -> RemoteFile:
    t = datetime(2024, 1, 2, tzinfo=UTC)
    return RemoteFile("F1", "tbl", "R1", "a.txt", 3, "text/plain", t, t, "me", "", "", "")


def test_xattr_names_come_from_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNFS_PASSWORD", "pw")
    sn = registry.make_backend(parse(["dev12345", "/m", "--user", "u"]))
    ev = registry.make_backend(
        parse(["easyvista+https://ev.example/api/v1/50004", "/m", "--user", "u"])
    )
    assert attrs.xattrs(_file(), sn)["user.servicenow.sys_id"] == b"F1"
    assert attrs.xattrs(_file(), sn)["user.servicenow.table_sys_id"] == b"R1"
    assert attrs.xattrs(_file(), ev)["user.easyvista.id"] == b"F1"
    assert attrs.xattrs(_file(), ev)["user.easyvista.record"] == b"R1"


CORE = (
    "tree",
    "index",
    "attrs",
    "fs",
    "writes",
    "mount",
    "content_cache",
    "spool",
    "names",
    "inodes",
)


@pytest.mark.parametrize("module", CORE)
def test_the_core_never_names_a_system(module: str) -> None:
    text = (Path(snfs.backends.__file__).parent.parent / f"{module}.py").read_text().lower()
    for name in (*registry.names(), "cccif", "snfs.client"):
        assert name not in text, f"snfs/{module}.py names {name!r}"


# -- the import graph: layers hold ------------------------------------------------------------

PACKAGE = Path(snfs.backends.__file__).parent.parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path) -> Iterator[tuple[str, str | None]]:
    """(module, imported name or None) for every import of `name`, wherever it is (module
    level, TYPE_CHECKING, inside a function): a lazy import is still a dependency."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, *([node.module] if node.module else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield (sub, None) if sub in MODULES else (base, alias.name)


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        deps = graph.setdefault(name, set())
        for module, _ in _imports(name, path):
            while module and module not in MODULES:
                module = module.rpartition(".")[0]
            if module and module != name:
                deps.add(module)
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted([v, *component]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles() -> None:
    """Every snfs module can be understood from the ones below it: no two import each other,
    directly or around a ring (lazy and TYPE_CHECKING imports count)."""
    assert _circles(_graph()) == []


def test_the_circle_check_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(graph) == [["a", "b", "c"]]


def test_no_top_level_module_imports_a_backend() -> None:
    """The core and the tools around it reach a system only through the registry (which finds
    the backends by name, not by import) and the `Backend` protocol."""
    for name, path in MODULES.items():
        if name.count(".") != 1:
            continue
        for module, _ in _imports(name, path):
            assert not module.startswith("snfs.backends."), f"{name} imports {module}"


def test_only_the_demo_imports_the_emulator() -> None:
    """A mount never depends on the emulator (an extra, with its own web stack): among the
    top-level modules only `snfs demo`, which starts one, imports it."""
    for name, path in MODULES.items():
        if name.count(".") != 1 or name == "snfs.demo":
            continue
        for module, _ in _imports(name, path):
            assert not module.startswith("snfs.emulator"), f"{name} imports {module}"


def test_no_module_imports_another_modules_private_names() -> None:
    """What a module shares is public: a private name (`_x`) imported from another module is
    a shared helper hiding in the wrong place (as `snfs.client._multipart_quote` was)."""
    for name, path in MODULES.items():
        for module, imported in _imports(name, path):
            if module.startswith("snfs") and imported and imported.startswith("_"):
                assert imported.startswith("__"), f"{name} imports {module}.{imported}"


def test_every_optional_feature_has_a_default_and_the_router_passes_it_on() -> None:
    """The seam declares each optional feature once, with a default; the router and
    ServiceNow (which has them all) take exactly the declared arguments."""
    import inspect

    from snfs.backend import OptionalFeatures

    features = [
        n for n, v in vars(OptionalFeatures).items() if inspect.isfunction(v) and n[0] != "_"
    ]
    assert {"groups_by_record", "can_scope", "list_scoped", "numbers", "list_changed"} <= set(
        features
    )
    for feature in features:
        declared = inspect.signature(getattr(OptionalFeatures, feature))
        for cls in (Router, ServiceNowBackend):
            assert feature in vars(cls), f"{cls.__name__} does not define {feature}"
            got = inspect.signature(getattr(cls, feature))
            assert list(got.parameters) == list(declared.parameters), (cls, feature)


INTERNAL_FIELDS = {
    "instance",
    "mountpoint",
    "extra_fuse_options",
    "profile",
    "backend_options",
    "password",
    "token",
    "client_secret",
}


def test_every_option_is_one_schema_entry() -> None:
    """An option added as a bare field or a hand-written add_argument would miss the config
    file and mount(8): every field is a schema entry, every long option comes from one."""
    from dataclasses import fields

    schema = {o.name for o in core_options()}
    assert {f.name for f in fields(MountOptions)} - schema == INTERNAL_FIELDS
    p = argparse.ArgumentParser()
    add_arguments(p)
    dests = {a.dest for a in p._actions} - {"help", "instance", "mountpoint", "fuse_options"}
    systems = {o.name for o in backend_options()}  # a system's own options (e.g. --scope)
    assert dests == {o.name for o in core_options() if not o.fuse} | systems
