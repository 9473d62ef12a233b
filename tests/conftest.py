from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.emulator_proc import EmulatorProc, start_emulator


@pytest.fixture
def emulator_factory(tmp_path: Path) -> Iterator[Callable[..., EmulatorProc]]:
    """Start emulators with any flags; every one is stopped by pid at teardown."""
    started: list[EmulatorProc] = []

    def start(*args: str, data_dir: Path | None = None) -> EmulatorProc:
        emu = start_emulator(
            data_dir or tmp_path / f"emu{len(started)}",
            *args,
            log=tmp_path / f"emulator{len(started)}.log",
        )
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()


@pytest.fixture
def demo_emulator(emulator_factory: Callable[..., EmulatorProc]) -> EmulatorProc:
    """An emulator with the --demo data set (users admin, itil, hr)."""
    return emulator_factory("--demo")


@pytest.fixture
def emulator(emulator_factory: Callable[..., EmulatorProc]) -> EmulatorProc:
    """An empty emulator (user admin:admin only)."""
    return emulator_factory()


from tests.mount_proc import MountProc, start_mount  # noqa: E402


@pytest.fixture
def mount_factory(tmp_path: Path) -> Iterator[Callable[..., MountProc]]:
    """Mount an emulator with any options; every mount is unmounted and its daemon stopped."""
    mounts: list[MountProc] = []

    def mount(emu: EmulatorProc, *args: str, name: str = "mnt", **kw) -> MountProc:
        m = start_mount(emu.url, tmp_path / name, tmp_path / f"{name}-work", *args, **kw)
        mounts.append(m)
        return m

    yield mount
    for m in mounts:
        m.stop()


@pytest.fixture(scope="module")
def module_emulator_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., EmulatorProc]]:
    """Like emulator_factory, but the emulators live for the whole test module (faster suites)."""
    base = tmp_path_factory.mktemp("emu")
    started: list[EmulatorProc] = []

    def start(*args: str, data_dir: Path | None = None) -> EmulatorProc:
        emu = start_emulator(
            data_dir or base / f"emu{len(started)}", *args, log=base / f"emulator{len(started)}.log"
        )
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()


@pytest.fixture(scope="module")
def mnt(emu: EmulatorProc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MountProc]:
    """One mount for a whole module, of the module's own `emu` fixture."""
    tmp = tmp_path_factory.mktemp("mnt")
    m = start_mount(emu.url, tmp / "mnt", tmp / "work")
    yield m
    m.stop()
