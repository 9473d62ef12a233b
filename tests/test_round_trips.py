"""Cold paths cost few round trips (issue: fast over a WAN): a file or record addressed directly
costs its record's attachment listing and the file, nothing else; existence checks are made
only when a listing comes back empty (a table the root listing shows needs none; the mount
lists the root in the background at start, here listed first so the count is deterministic).
Counted by the emulator (the instance's own view)."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

import pytest

from tests.emulator_proc import EmulatorProc
from tests.mount_proc import MountProc


def _record_with_file(emu: EmulatorProc, table: str = "incident") -> str:
    record = emu.json("POST", f"/api/now/table/{table}", {"short_description": "cold"})["result"][
        "sys_id"
    ]
    status, _, body = emu.request(
        "POST",
        f"/api/now/attachment/file?table_name={table}&table_sys_id={record}&file_name=a.txt",
        b"cold path\n",
        headers={"Content-Type": "text/plain"},
    )
    assert status == 201, body
    return record


def _routes(emu: EmulatorProc) -> dict[str, int]:
    return {k: v for k, v in emu.stats()["by_route"].items() if v}


def test_cat_of_a_file_never_listed_costs_two_requests(
    emulator: EmulatorProc, mount_factory: Callable[..., MountProc]
) -> None:
    record = _record_with_file(emulator)
    m = mount_factory(emulator)
    assert "incident" in os.listdir(m.mountpoint)  # the root listing (the mount warms it too)
    emulator.reset_stats()
    assert m.path("incident", record, "a.txt").read_bytes() == b"cold path\n"
    assert _routes(emulator) == {"GET /attachment": 1, "GET /attachment/{sys_id}/file": 1}


def test_ls_l_of_a_record_costs_one_request(
    emulator: EmulatorProc, mount_factory: Callable[..., MountProc]
) -> None:
    record = _record_with_file(emulator, "problem")
    m = mount_factory(emulator)
    assert "problem" in os.listdir(m.mountpoint)
    emulator.reset_stats()
    entries = [(e.name, e.stat().st_size) for e in os.scandir(m.path("problem", record))]
    assert entries == [("a.txt", 10)]
    assert _routes(emulator) == {"GET /attachment": 1}


def test_empty_listing_asks_whether_the_record_exists(
    emulator: EmulatorProc, mount_factory: Callable[..., MountProc]
) -> None:
    empty = emulator.json("POST", "/api/now/table/incident", {"short_description": "e"})["result"][
        "sys_id"
    ]
    m = mount_factory(emulator, "--tables", "incident")
    emulator.reset_stats()
    assert os.listdir(m.path("incident", empty)) == []
    assert _routes(emulator) == {"GET /attachment": 1, "GET /table/{table}/{sys_id}": 1}
    with pytest.raises(FileNotFoundError):
        os.stat(m.path("incident", "0" * 32))
    with pytest.raises(OSError) as e:
        os.stat(m.path("no_such_table"))  # a table no listing shows is checked
    assert e.value.errno == errno.ENOENT
