"""Large tables through a real mount of the real emulator: streaming listings, parallel keyset
pagers, scopes, numbers, stale-while-revalidate. Outcomes are checked against the API.

The table is written straight into the emulator's database (bench.large.generate): 13,200
attachments over 2,000 records (large enough for the listing to split into parallel pagers
and to ask only for keys after its first page), one record with more attachments than a
page, and records without attachments.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from bench.large import _sys_id, generate
from tests.support.emulator_proc import EmulatorProc, start_emulator
from tests.support.mount_proc import MountProc, start_mount
from tests.support.waiting import eventually, in_thread

TABLE = "incident"


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmulatorProc, dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("large")
    expected = generate(
        tmp / "data", records=2000, attachments=12000, empty_records=200, heavy=1200
    )
    emu = start_emulator(tmp / "data", "--state-delay", "0", log=tmp / "emulator.log")
    yield emu, expected
    emu.stop()


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Callable[..., MountProc]]:
    mounts: list[MountProc] = []

    def make(emu: EmulatorProc, *args: str) -> MountProc:
        n = len(mounts)
        m = start_mount(emu.url, tmp_path / f"m{n}", tmp_path / f"w{n}", *args)
        mounts.append(m)
        return m

    yield make
    for m in mounts:
        m.stop()


def api_records_with_attachments(emu: EmulatorProc, record_query: str = "") -> list[str]:
    """What the listing must show, from the API: records (matching `record_query`) that
    have at least one attachment."""
    having = {a["table_sys_id"] for a in emu.attachments(f"table_name={TABLE}")}
    if not record_query:
        return sorted(having)
    rows = emu.json(
        "GET",
        f"/api/now/table/{TABLE}?sysparm_limit=100000&sysparm_fields=sys_id"
        f"&sysparm_query={quote(record_query)}",
    )["result"]
    return sorted({r["sys_id"] for r in rows} & having)


def record_id(i: int) -> str:
    return _sys_id("rec", i)


def clear_faults(emu: EmulatorProc) -> None:
    emu.json("DELETE", "/__emulator__/faults")


def test_every_record_listed_once_across_parallel_pagers(
    big: tuple[EmulatorProc, dict[str, Any]], mount: Callable[..., MountProc]
) -> None:
    """13,200 attachments: the first page shows a large table, so the listing splits
    into parallel keyset pagers asking only for keys; every record with attachments appears
    exactly once, the records without attachments do not, and a record is still reachable."""
    emu, expected = big
    m = mount(emu)
    emu.reset_stats()
    names = os.listdir(m.path(TABLE))
    assert len(names) == len(set(names))
    assert sorted(names) == api_records_with_attachments(emu) == expected["with"]
    routes = emu.stats()["by_route"]
    assert routes["GET /attachment"] >= 5  # several pages (keyset), not one huge request
    heavy = record_id(0)  # 1,201 attachments: more than a page
    assert len(os.listdir(m.path(TABLE, heavy))) == len(
        emu.attachments(f"table_name={TABLE}^table_sys_id={heavy}")
    )
    empty = record_id(2000)  # no attachment: not listed, still reachable by sys_id
    assert empty not in names and os.listdir(m.path(TABLE, empty)) == []


def test_first_entries_and_lookups_do_not_wait_for_the_last_page(
    big: tuple[EmulatorProc, dict[str, Any]], mount: Callable[..., MountProc]
) -> None:
    """Every listing page after the first is held by the emulator for 30 s: the first entry
    still arrives, and a lookup of a record no page has shown yet is answered, long before."""
    emu, expected = big
    m = mount(emu)
    assert os.path.isdir(m.path(TABLE))  # /incident looked up (its own request)
    path = "^/api/now/attachment$"
    # Table listing pages (not one record's listing, which a lookup may make itself).
    pages = r"^(?!.*table_sys_id=[0-9a-f]{32})"
    emu.fault(path=path, query=pages, delay=0.001, count=1)  # the first page passes
    emu.fault(path=path, query=pages, delay=30, count=100)  # every later one is held
    try:
        first: list[str] = []

        def first_entry() -> str:
            with os.scandir(m.path(TABLE)) as it:
                name = next(it).name
                first.append(name)
                return name

        done, box = in_thread(first_entry)
        assert done.wait(20), "the first entry waited for held pages"
        assert "error" not in box, box
        assert box["value"] in expected["with"]
        # The highest sys_id is on the last page of the last pager: not shown yet.
        target = expected["with"][-1]
        done, box = in_thread(lambda: os.stat(m.path(TABLE, target)))
        assert done.wait(20), "a lookup waited for the listing"
        assert "error" not in box, box
    finally:
        clear_faults(emu)


def test_expired_listing_is_served_at_once_and_sighup_refreshes(
    big: tuple[EmulatorProc, dict[str, Any]], mount: Callable[..., MountProc]
) -> None:
    emu, expected = big
    m = mount(emu, "--dir-cache-time", "1")
    before = sorted(os.listdir(m.path(TABLE)))
    listed_at = time.monotonic()
    # A record that had no attachment gets one: the next full listing shows it.
    rec = record_id(2050)
    assert rec not in before
    status, _, _ = emu.request(
        "POST",
        f"/api/now/attachment/file?table_name={TABLE}&table_sys_id={rec}&file_name=new.txt",
        b"new",
        headers={"Content-Type": "text/plain"},
    )
    assert status == 201
    emu.fault(path="^/api/now/attachment$", delay=8, count=100)  # refreshes are held
    try:
        eventually(lambda: time.monotonic() - listed_at > 1.5, what="the listing expired")
        done, box = in_thread(lambda: sorted(os.listdir(m.path(TABLE))))
        assert done.wait(5), "an expired listing waited for its refresh"
        assert box.get("value") == before  # served as it was; the refresh runs behind
    finally:
        clear_faults(emu)
    # SIGHUP drops the listing and cancels the held refresh: list anew. (The emulator still
    # runs the cancelled requests in their sessions, as an instance would, so the new listing
    # may wait for them: up to the 8 s of the hold.)
    m.proc.send_signal(signal.SIGHUP)
    eventually(lambda: rec in os.listdir(m.path(TABLE)), what="SIGHUP relisted", timeout=30)
    assert sorted(os.listdir(m.path(TABLE))) == api_records_with_attachments(emu)


def test_scoped_table_lists_exactly_the_matching_records(
    big: tuple[EmulatorProc, dict[str, Any]], mount: Callable[..., MountProc]
) -> None:
    emu, expected = big
    m = mount(emu, "--scope", f"{TABLE}=active=true")
    names = os.listdir(m.path(TABLE))
    assert len(names) == len(set(names))
    assert sorted(names) == api_records_with_attachments(emu, "active=true")
    assert set(expected["active"]) <= set(names)  # (another test may have added one)
    # Records outside the scope stay reachable by sys_id.
    outside = next(r for r in expected["with"] if r not in set(names))
    assert os.listdir(m.path(TABLE, outside))
    # An ad-hoc scope, by name, without configuration; `/` written %2F.
    adhoc = m.path(TABLE, ".query", "active=false")
    assert sorted(os.listdir(adhoc)) == api_records_with_attachments(emu, "active=false")
    assert ".query" not in names
    assert not m.path(TABLE, ".query", "%ff").exists()  # not UTF-8: ENOENT, one log line
    some = sorted(os.listdir(adhoc))[0]
    assert os.listdir(adhoc / some) == os.listdir(m.path(TABLE, some))


def test_numbers_are_listed_as_symlinks(
    big: tuple[EmulatorProc, dict[str, Any]], mount: Callable[..., MountProc]
) -> None:
    emu, expected = big
    m = mount(emu, "--numbers")
    names = os.listdir(m.path(TABLE))
    numbers = [n for n in names if n.startswith("INC")]
    ids = [n for n in names if not n.startswith("INC")]
    assert sorted(ids) == api_records_with_attachments(emu)
    assert len(numbers) == len(ids)
    rows = emu.json(
        "GET", f"/api/now/table/{TABLE}?sysparm_limit=100000&sysparm_fields=sys_id,number"
    )["result"]
    by_number = {r["number"]: r["sys_id"] for r in rows}
    for n in numbers[:50]:
        assert os.readlink(m.path(TABLE, n)) == by_number[n]
        assert os.path.isdir(m.path(TABLE, n))


def test_acl_short_and_empty_pages_lose_no_record(
    tmp_path: Path, mount: Callable[..., MountProc]
) -> None:
    """The emulator applies `sysparm_limit` before ACLs (its default, as real instances do)
    and hides from this user every record in a contiguous stretch of sys_ids (whole pages
    come back empty) and the records ending in `7` (pages come back short). The listing shows
    exactly what the API lets the user read, each record once."""
    generate(tmp_path / "data", records=2000, attachments=12000, empty_records=10, heavy=1200)
    deny = "table_sys_id>=4^table_sys_id<6^NQtable_sys_idENDSWITH7"
    emu = start_emulator(
        tmp_path / "data",
        "--state-delay",
        "0",
        "--deny",
        f"admin:{deny}",
        log=tmp_path / "emulator.log",
    )
    try:
        m = mount(emu)
        names = os.listdir(m.path(TABLE))
        assert len(names) == len(set(names))
        visible = api_records_with_attachments(emu)
        assert sorted(names) == visible
        assert not any("4" <= n[0] < "6" or n.endswith("7") for n in names)
        assert len(visible) > 1000  # most records are still there
    finally:
        m.stop()
        emu.stop()
