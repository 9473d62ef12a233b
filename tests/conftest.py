from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.emulator_proc import EmulatorProc, start_emulator


@pytest.fixture
def emulator_factory(tmp_path: Path) -> Iterator[Callable[..., EmulatorProc]]:
    """Start emulators with any flags; every one is stopped by pid at teardown."""
    started: list[EmulatorProc] = []

    def start(*args: str, data_dir: Path | None = None) -> EmulatorProc:
        emu = start_emulator(data_dir or tmp_path / f"emu{len(started)}", *args,
                             log=tmp_path / f"emulator{len(started)}.log")
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
