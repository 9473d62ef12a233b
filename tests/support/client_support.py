"""Shared helpers for the client tests (no tests here).

Module-scoped emulators keep the client suite fast: each test works on records it creates
itself, and faults/stats are reset after every test.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from snfs.auth import BasicAuth
from snfs.backends.servicenow.client import AttachmentClient, ClientConfig
from tests.support.emulator_proc import EmulatorProc


def config(emu: EmulatorProc, auth: Any = "admin", **kw: Any) -> ClientConfig:
    """A client config with quick retries (tests must not sleep for long)."""
    if auth == "admin":
        auth = BasicAuth("admin", "admin")
    kw.setdefault("timeout", 5.0)
    kw.setdefault("retry_base_delay", 0.05)
    kw.setdefault("retry_max_delay", 0.3)
    kw.setdefault("retry_total_seconds", 15.0)
    return ClientConfig(base_url=emu.url, auth=auth, **kw)


def client(emu: EmulatorProc, auth: Any = "admin", **kw: Any) -> AttachmentClient:
    return AttachmentClient(config(emu, auth, **kw))


def new_record(emu: EmulatorProc, table: str = "incident") -> str:
    return emu.json("POST", f"/api/now/table/{table}", {"short_description": "client test"})[
        "result"
    ]["sys_id"]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload(n: int, seed: int = 1) -> bytes:
    """Deterministic, not very compressible bytes."""
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def route_count(emu: EmulatorProc, route: str) -> int:
    return emu.stats()["by_route"].get(route, 0)


def shared_emulator(*args: str) -> Any:
    """A module-scoped fixture running one emulator with `args` for all tests of a module
    (`emu = shared_emulator("--demo")` at module level), from conftest's factory."""

    @pytest.fixture(scope="module")
    def fixture(module_emulator_factory: Callable[..., EmulatorProc]) -> EmulatorProc:
        return module_emulator_factory(*args)

    return fixture


@pytest.fixture
def fresh(request: pytest.FixtureRequest) -> Iterator[None]:
    """Reset faults and counters of the module's emulators after a test."""
    yield
    for name in ("emu", "emu_range", "emu_demo", "emu_norename"):
        if name in request.fixturenames:
            request.getfixturevalue(name).reset_stats()


def read_file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
