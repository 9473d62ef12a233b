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
import trio
import trio.testing

from snfs.http import SessionPool
from tests.support.emulator_proc import EmulatorProc
from tests.support.mount_proc import MountProc
from tests.support.waiting import eventually, in_thread


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


# -- no mount-wide stalls: bulk transfers never take the sessions metadata needs -----------------


async def test_bulk_transfers_leave_sessions_for_metadata() -> None:
    """Kernel-free: with every bulk slot of the pool held, a metadata request still gets a
    session at once, and a further bulk transfer waits."""
    assert SessionPool(8).reserve == 1 and SessionPool(1).reserve == 0  # the defaults
    pool = SessionPool(8, reserve=2)
    held: list[trio.Event] = []
    async with trio.open_nursery() as nursery:

        async def hold(bulk: bool, started: trio.Event, release: trio.Event) -> None:
            async with pool.take(bulk=bulk):
                started.set()
                await release.wait()

        release = trio.Event()
        for _ in range(6):
            started = trio.Event()
            nursery.start_soon(hold, True, started, release)
            await started.wait()
            held.append(started)
        late_bulk = trio.Event()
        nursery.start_soon(hold, True, late_bulk, release)
        await trio.testing.wait_all_tasks_blocked()
        assert not late_bulk.is_set()  # the 7th bulk transfer waits...
        meta = trio.Event()
        nursery.start_soon(hold, False, meta, release)
        await trio.testing.wait_all_tasks_blocked()
        assert meta.is_set()  # ...a listing does not
        assert pool.in_use == 7
        release.set()
    assert pool.in_use == 0


def test_ls_answers_while_downloads_hold_every_bulk_slot(
    emulator: EmulatorProc, mount_factory: Callable[..., MountProc]
) -> None:
    """8 downloads held by the instance for 20 s (one per file of a record): an `ls -l` of
    another record still answers, through the sessions bulk transfers may not take."""
    record = _record_with_file(emulator)
    for i in range(7):
        status, _, _ = emulator.request(
            "POST",
            f"/api/now/attachment/file?table_name=incident&table_sys_id={record}"
            f"&file_name=b{i}.txt",
            b"x" * 100,
            headers={"Content-Type": "text/plain"},
        )
        assert status == 201
    other = _record_with_file(emulator, "problem")
    m = mount_factory(emulator, "--prefetch", "0")
    names = sorted(os.listdir(m.path("incident", record)))
    assert len(names) == 8
    emulator.fault(method="GET", path=r"/file$", delay=20, count=8)
    try:
        readers = [in_thread(lambda n=n: m.path("incident", record, n).read_bytes()) for n in names]
        eventually(
            lambda: emulator.stats()["by_route"].get("GET /attachment/{sys_id}/file", 0) >= 6
        )
        done, box = in_thread(lambda: [e.name for e in os.scandir(m.path("problem", other))])
        assert done.wait(10), "ls waited behind the downloads"
        assert box.get("value") == ["a.txt"], box
        assert not any(d.is_set() for d, _ in readers)  # the downloads were still held
    finally:
        emulator.request("DELETE", "/__emulator__/faults")
