"""Fixtures shared by the test modules: emulators and mounts, always stopped by pid.

One factory starts emulators (`_Emulators`); the function-scoped `emulator_factory` and the
module-scoped `module_emulator_factory` (and `tests.support.client_support.shared_emulator`, built
on it) differ only
in how long their emulators live. Tests that mount get the `fuse` marker automatically, so
`pytest -m 'not fuse'` runs the rest in seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.emulator_proc import EmulatorProc, start_emulator
from tests.support.mount_proc import MountProc, start_mount

# A test is a FUSE test when it uses one of these fixtures or its module mounts by hand.
_MOUNT_FIXTURES = {"mnt", "mount_factory"}
_MOUNT_HELPERS = ("start_mount", "require_fuse")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = getattr(item, "module", None)
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & _MOUNT_FIXTURES or any(hasattr(module, h) for h in _MOUNT_HELPERS):
            item.add_marker(pytest.mark.fuse)


class _Emulators:
    """Starts emulators under `base`, each with its own data dir and log; stops them all."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.started: list[EmulatorProc] = []

    def __call__(self, *args: str, data_dir: Path | None = None) -> EmulatorProc:
        n = len(self.started)
        emu = start_emulator(
            data_dir or self.base / f"emu{n}", *args, log=self.base / f"emulator{n}.log"
        )
        self.started.append(emu)
        return emu

    def stop(self) -> None:
        for emu in self.started:
            emu.stop()


@pytest.fixture
def emulator_factory(tmp_path: Path) -> Iterator[Callable[..., EmulatorProc]]:
    """Start emulators with any flags; every one is stopped by pid at teardown."""
    emulators = _Emulators(tmp_path)
    yield emulators
    emulators.stop()


@pytest.fixture(scope="module")
def module_emulator_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., EmulatorProc]]:
    """Like emulator_factory, but the emulators live for the whole test module (faster suites)."""
    emulators = _Emulators(tmp_path_factory.mktemp("emu"))
    yield emulators
    emulators.stop()


@pytest.fixture
def demo_emulator(emulator_factory: Callable[..., EmulatorProc]) -> EmulatorProc:
    """An emulator with the --demo data set (users admin, itil, hr)."""
    return emulator_factory("--demo")


@pytest.fixture
def emulator(emulator_factory: Callable[..., EmulatorProc]) -> EmulatorProc:
    """An empty emulator (user admin:admin only)."""
    return emulator_factory()


@pytest.fixture
def mount_factory(tmp_path: Path) -> Iterator[Callable[..., MountProc]]:
    """Mount an emulator with any options; every mount is unmounted and its daemon stopped."""
    mounts: list[MountProc] = []

    def mount(emu: EmulatorProc, *args: str, name: str = "mnt", **kw: Any) -> MountProc:
        m = start_mount(emu.url, tmp_path / name, tmp_path / f"{name}-work", *args, **kw)
        mounts.append(m)
        return m

    yield mount
    for m in mounts:
        m.stop()


@pytest.fixture(scope="module")
def mnt(emu: EmulatorProc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MountProc]:
    """One mount for a whole module, of the module's own `emu` fixture."""
    tmp = tmp_path_factory.mktemp("mnt")
    m = start_mount(emu.url, tmp / "mnt", tmp / "work")
    yield m
    m.stop()
