"""The metadata index (snfs.index): on its own, and through real mounts of the real emulator.

- the file: private, survives a crash mid-write (a process killed inside a transaction),
  an old-format or damaged file is dropped and rebuilt;
- a walk (`find`) of a table whose listing had to keep ids only costs about one request per
  page, not one per record;
- a remount serves the index at once and catches up: rows added on the instance show after
  the check for changes, rows deleted there after the slower full relist;
- `rsync -a` twice: the second run uploads and deletes nothing (times kept per attachment).
Outcomes are checked through the emulator's API and its request counters.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio

from bench.large import _sys_id, generate
from snfs.backend import RemoteFile
from snfs.index import FILE_NAME, FORMAT, MetadataIndex
from tests.fake_backend import FakeBackend
from tests.support.emulator_proc import EmulatorProc, start_emulator
from tests.support.mount_proc import MountProc, start_mount
from tests.support.waiting import eventually

TABLE = "incident"
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def att(sys_id: str, record: str, name: str = "a.txt", table: str = TABLE) -> RemoteFile:
    return RemoteFile(sys_id, table, record, name, 3, "text/plain", T0, T0, "admin", "", "", "")


def rows(ix: MetadataIndex, record: str) -> list[RemoteFile]:
    known = ix.record(TABLE, record)
    return known[0] if known is not None else []


# -- the file ------------------------------------------------------------------------------------


def test_rows_listings_and_times_survive_a_reopen(tmp_path: Path) -> None:
    async def main() -> None:
        ix = MetadataIndex.open(tmp_path)
        gen = ix.new_generation(TABLE)
        await ix.put_page(TABLE, None, gen, [att("a1", "r1"), att("a2", "r1")], ["r1"], ["r1"])
        await ix.put_page(TABLE, None, gen, [att("a3", "r2")], [], ["r2"])  # r2: held
        await ix.finish_listing(TABLE, None, gen, at=100.0, full=True, newest=T0)
        ix.set_times("a1", 5 * 10**9, 6 * 10**9)
        await ix.aclose()
        ix = MetadataIndex.open(tmp_path)
        try:
            state = ix.listing(TABLE, None)
            assert state is not None and state.gen == gen and state.newest == T0
            assert sorted(await ix.members(TABLE, None, gen)) == ["r1", "r2"]
            assert sorted(a.sys_id for a in rows(ix, "r1")) == ["a1", "a2"]
            assert ix.record(TABLE, "r2") is None  # its rows were never known whole
            assert ix.times() == {"a1": (5 * 10**9, 6 * 10**9)}
            assert ix.new_generation(TABLE) > gen  # generations never go back
        finally:
            await ix.aclose()

    trio.run(main)
    assert stat.S_IMODE(os.stat(tmp_path / FILE_NAME).st_mode) == 0o600


def test_a_full_listing_drops_what_it_did_not_see_but_not_local_changes(tmp_path: Path) -> None:
    async def main() -> None:
        ix = MetadataIndex.open(tmp_path)
        try:
            g1 = ix.new_generation(TABLE)
            await ix.put_page(TABLE, None, g1, [att("a1", "r1"), att("a2", "r2")], ["r1", "r2"])
            await ix.finish_listing(TABLE, None, g1, at=1.0, full=True, newest=T0)
            g2 = ix.new_generation(TABLE)
            ix.added(att("a9", "r9"))  # uploaded through the mount while g2 lists
            await ix.put_page(TABLE, None, g2, [att("a1", "r1")], ["r1"], ["r1"])
            await ix.finish_listing(TABLE, None, g2, at=2.0, full=True, newest=T0)
            assert [a.sys_id for a in rows(ix, "r1")] == ["a1"]
            assert ix.record(TABLE, "r2") is None  # gone from the instance: gone here
            ix.record_fetched(TABLE, "r9", [att("a9", "r9")])
            ix.removed("a1", TABLE, "r1")
            # A page read before the delete does not bring it back.
            await ix.put_page(TABLE, None, g2, [att("a1", "r1")], ["r1"])
            assert ix.record(TABLE, "r1") == ([], g2)
            assert [a.sys_id for a in rows(ix, "r9")] == ["a9"]
        finally:
            await ix.aclose()

    trio.run(main)


class PagedBackend(FakeBackend):
    """Pages of `page_size` rows ordered by record, as the instance's keyset pagers give them:
    a record's rows may continue on the next page. Counts the requests a walk would make."""

    def __init__(self, page_size: int) -> None:
        super().__init__()
        self.page_size = page_size
        self.record_requests = 0

    def groups_by_record(self, table: str) -> bool:
        return True

    async def list_table(self, table: str, *, page_size: int = 1000) -> AsyncIterator[list[Any]]:
        ordered = sorted(
            (a for a, _ in self.files.values() if a.table_name == table),
            key=lambda a: (a.table_sys_id, a.sys_id),
        )
        for i in range(0, len(ordered), self.page_size):
            await trio.lowlevel.checkpoint()
            yield ordered[i : i + self.page_size]

    async def list_record(self, table: str, record: str) -> list[Any]:
        self.record_requests += 1
        return await super().list_record(table, record)

    async def list_records(self, table: str, records: list[str]) -> list[Any]:
        self.record_requests += 1
        return [a for r in records for a in await super().list_record(table, r)]


def test_a_large_listing_goes_to_the_index_and_a_walk_reads_it_in_batches(
    tmp_path: Path,
) -> None:
    """150 records of 3 files, pages of 10 rows (records split across pages): the listing's
    rows go to the index only (more than the memory layer holds), every record is whole
    there, and a walk reads them back several records a query, without a request."""
    from snfs import tree as tree_mod
    from snfs.tree import Tree

    backend = PagedBackend(page_size=10)
    records = sorted(_sys_id("rec", i) for i in range(150))
    for r in records:
        for k in range(3):
            backend.put(TABLE, r, f"f{k}.txt", b"x")

    async def main() -> None:
        ix = MetadataIndex.open(tmp_path)
        queries: list[int] = []
        read = ix.records

        def counted(table: str, ids: list[str]) -> Any:
            queries.append(len(ids))
            return read(table, ids)

        ix.records = counted  # type: ignore[method-assign]
        # A memory layer of 160 attachments: this listing (450) does not fit.
        size = 160 * (tree_mod.ATTACHMENT_OVERHEAD + 200)
        tree = Tree(backend, index=ix, record_cache_bytes=size)
        try:
            listing = tree.listing(TABLE)
            await listing.complete()
            assert sorted(listing.names) == records
            # The memory layer kept the first records only (160 attachments); the rest of
            # the rows are on disk only.
            kept = len(tree._records)
            assert 0 < kept <= 160 // 3 + 1
            assert (TABLE, records[0]) in tree._records  # not the last ones, evicting them
            assert (TABLE, records[-1]) not in tree._records
            for r in listing.names:  # a walk, in readdir order
                shown = await tree.record_listing(TABLE, r)
                assert sorted(shown) == ["f0.txt", "f1.txt", "f2.txt"], r
            assert backend.record_requests == 0
            # A record whose rows are still being written is read once they are, not asked
            # for again.
            last = listing.names[-1]
            ix.record_fetched(
                TABLE, last, [a for a, _ in backend.files.values() if a.table_sys_id == last]
            )
            assert ix.writing(TABLE, last)
            tree._records.clear()
            assert sorted(await tree.record_listing(TABLE, last)) == ["f0.txt", "f1.txt", "f2.txt"]
            assert backend.record_requests == 0
            queries.pop()
            batch = tree._read_ahead + 1
            assert batch > 5
            expected = [min(150 - i, batch) for i in range(kept, 150, batch)]
            assert queries == expected, queries
        finally:
            await tree.aclose()

    trio.run(main)


CRASH = textwrap.dedent(
    """
    import sys, os, trio
    from datetime import UTC, datetime
    from pathlib import Path
    from snfs.backend import RemoteFile
    from snfs.index import MetadataIndex
    T0 = datetime(2025, 1, 1, tzinfo=UTC)

    async def main():
        ix = MetadataIndex.open(Path(sys.argv[1]))
        gen = ix.new_generation("incident")
        rows = [RemoteFile(f"k{i}", "incident", "r1", "f", 1, "", T0, T0, "", "", "", "")
                for i in range(3)]
        await ix.put_page("incident", None, gen, rows, ["r1"], ["r1"])
        await ix.finish_listing("incident", None, gen, at=1.0, full=True, newest=T0)
        print("committed", flush=True)
        # A huge page: the process is killed while it is being written.
        big = [RemoteFile(f"x{i}", "incident", "r2", "f" * 200, 1, "", T0, T0, "", "", "", "")
               for i in range(400_000)]
        await ix.put_page("incident", None, gen + 1, big, ["r2"], ["r2"])
        print("too late", flush=True)

    trio.run(main)
    """
)


def test_a_crash_mid_write_leaves_the_last_committed_index(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASH, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "committed"
        wal = tmp_path / (FILE_NAME + "-wal")
        size = wal.stat().st_size if wal.exists() else 0
        # Killed once the big transaction is being written (the WAL grows past the first one).
        eventually(lambda: wal.exists() and wal.stat().st_size > size + 2**20, what="writing")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=10)

    async def main() -> None:
        ix = MetadataIndex.open(tmp_path)
        try:
            assert [a.sys_id for a in rows(ix, "r1")] == ["k0", "k1", "k2"]
            assert ix.record(TABLE, "r2") is None  # the cut transaction left nothing
            state = ix.listing(TABLE, None)
            assert state is not None and sorted(await ix.members(TABLE, None, state.gen)) == ["r1"]
        finally:
            await ix.aclose()

    trio.run(main)


def test_an_old_format_index_is_dropped_and_rebuilt(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / FILE_NAME)
    conn.executescript(
        f"CREATE TABLE attachments (sys_id TEXT); INSERT INTO attachments VALUES ('old');"
        f" PRAGMA user_version={FORMAT - 1 or 99};"
    )
    conn.close()

    async def main() -> None:
        ix = MetadataIndex.open(tmp_path)
        try:
            assert ix.listing(TABLE, None) is None
            gen = ix.new_generation(TABLE)
            await ix.put_page(TABLE, None, gen, [att("a1", "r1")], ["r1"])
            assert [a.sys_id for a in rows(ix, "r1")] == ["a1"]
        finally:
            await ix.aclose()

    trio.run(main)
    conn = sqlite3.connect(tmp_path / FILE_NAME)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == FORMAT
    conn.close()


def test_a_damaged_index_is_dropped_and_rebuilt(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_bytes(b"this is not a database" * 500)

    async def main() -> None:
        ix = MetadataIndex.open(tmp_path)
        try:
            assert ix.listing(TABLE, None) is None and ix.times() == {}
        finally:
            await ix.aclose()

    trio.run(main)


def test_a_second_mount_gets_a_private_index(tmp_path: Path) -> None:
    async def main() -> None:
        first = MetadataIndex.open(tmp_path)
        second = MetadataIndex.open(tmp_path)
        try:
            assert first.path != second.path
            ix = second.path
        finally:
            await second.aclose()
            await first.aclose()
        assert not ix.exists()  # removed when it closed
        assert (tmp_path / FILE_NAME).exists()

    trio.run(main)


# -- through real mounts -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmulatorProc, dict[str, Any]]]:
    # 13,000 attachments over 2,000 records: the listing splits into parallel pagers, and
    # without an index it would keep ids only (more than ~10,500 attachments).
    tmp = tmp_path_factory.mktemp("indexed")
    expected = generate(tmp / "data", records=2000, attachments=13000, empty_records=50)
    emu = start_emulator(tmp / "data", "--state-delay", "0", log=tmp / "emulator.log")
    yield emu, expected
    emu.stop()


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Callable[..., MountProc]]:
    """Mounts that share one work directory (spool, cache, index): a remount finds the index."""
    mounts: list[MountProc] = []

    def make(emu: EmulatorProc, *args: str) -> MountProc:
        m = start_mount(emu.url, tmp_path / "m", tmp_path / "w", *args)
        mounts.append(m)
        return m

    yield make
    for m in mounts:
        m.stop()


def find_files(root: Path) -> list[str]:
    out = subprocess.run(
        ["find", str(root), "-type", "f"], capture_output=True, text=True, timeout=300, check=True
    )
    return sorted(p[len(str(root)) + 1 :] for p in out.stdout.splitlines())


def api_files(emu: EmulatorProc) -> list[str]:
    from snfs import names

    by_record: dict[str, list[Any]] = {}
    for a in emu.attachments(f"table_name={TABLE}"):
        by_record.setdefault(a["table_sys_id"], []).append(
            names.Named(a["sys_id"], a["file_name"], datetime.fromisoformat(a["sys_created_on"]))
        )
    return sorted(
        f"{record}/{name}"
        for record, atts in by_record.items()
        for name in names.assign_names(atts, ())
    )


def list_requests(emu: EmulatorProc) -> int:
    return int(emu.stats()["by_route"].get("GET /attachment", 0))


@pytest.mark.timeout(300)  # two walks, then the full relist 20 s after the first listing
def test_find_walks_a_large_table_in_pages_and_a_remount_catches_up(
    big: tuple[EmulatorProc, dict[str, Any]], mount: Callable[..., MountProc]
) -> None:
    emu, _ = big
    m = mount(emu, "--dir-cache-time", "2")
    emu.reset_stats()
    first = find_files(m.path(TABLE))
    assert first == api_files(emu)
    walked = list_requests(emu)
    assert walked <= 13000 // 1000 + 10, walked  # pages, not one request per record (2,000)
    m.stop()

    # On the instance, behind the mount's back: one record gains a file, one loses its files.
    gains, loses = _sys_id("rec", 5), _sys_id("rec", 6)
    status, _, _ = emu.request(
        "POST",
        f"/api/now/attachment/file?table_name={TABLE}&table_sys_id={gains}&file_name=added.txt",
        b"new",
        headers={"Content-Type": "text/plain"},
    )
    assert status == 201
    for a in emu.attachments(f"table_name={TABLE}^table_sys_id={loses}"):
        emu.json("DELETE", f"/api/now/attachment/{a['sys_id']}")

    emu.reset_stats()
    m = mount(emu, "--dir-cache-time", "2")
    again = find_files(m.path(TABLE))  # from the index, at once
    assert len(again) >= len(first) - 20
    assert list_requests(emu) <= 10, list_requests(emu)  # the check for changes, not a relist
    # The check for changes shows the new file; the full relist (10 x dir_cache_time after
    # the last one) drops the deleted ones.
    eventually(lambda: f"{gains}/added.txt" in find_files(m.path(TABLE)), what="added", timeout=30)
    eventually(lambda: find_files(m.path(TABLE)) == api_files(emu), what="deleted", timeout=60)
    assert loses not in os.listdir(m.path(TABLE))


def test_without_an_index_a_walk_fills_record_directories_in_batches(
    big: tuple[EmulatorProc, dict[str, Any]], mount: Callable[..., MountProc]
) -> None:
    """--no-index: the listing keeps ids only (13,000 attachments), so record directories are
    filled 200 records a request (`table_sys_idIN`), not one request each (2,000)."""
    emu, _ = big
    m = mount(emu, "--no-index", "--dir-cache-time", "600")
    emu.reset_stats()
    assert find_files(m.path(TABLE)) == api_files(emu)
    # The listing's pages, and two pages (1,000 rows each) per batch of 200 records.
    assert list_requests(emu) <= 13000 // 1000 + 2 * 2000 // 200 + 15, list_requests(emu)
    assert not list((m.cache / "index").glob("*/metadata.sqlite3"))  # none written


def test_rsync_twice_uploads_nothing_the_second_time(
    big: tuple[EmulatorProc, dict[str, Any]], mount: Callable[..., MountProc], tmp_path: Path
) -> None:
    emu, _ = big
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"f{i}.txt").write_text(f"content {i}\n")
        os.utime(src / f"f{i}.txt", (1_600_000_000 + i, 1_600_000_000 + i))
    record = _sys_id("rec", 2001)  # a record without attachments
    m = mount(emu)
    dest = m.path(TABLE, record)

    def rsync() -> dict[str, int]:
        emu.reset_stats()
        subprocess.run(["rsync", "-a", f"{src}/", f"{dest}/"], check=True, timeout=120)
        routes = emu.stats()["by_route"]
        return {
            "uploads": routes.get("POST /attachment/file", 0),
            "deletes": routes.get("DELETE /attachment/{sys_id}", 0),
        }

    assert rsync()["uploads"] == 3
    assert rsync() == {"uploads": 0, "deletes": 0}
    for i in range(3):
        assert os.stat(dest / f"f{i}.txt").st_mtime == 1_600_000_000 + i
    stored = emu.attachments(f"table_name={TABLE}^table_sys_id={record}")
    assert sorted(a["file_name"] for a in stored) == ["f0.txt", "f1.txt", "f2.txt"]
    # The times are kept in the index: a remount still finds nothing to send.
    m.stop()
    m = mount(emu)
    assert rsync() == {"uploads": 0, "deletes": 0}


# -- inodes: only the most recent file and record nodes kept whole ------------------------------


def test_old_inodes_the_kernel_holds_are_parked_and_built_again() -> None:
    from snfs.inodes import Inodes, Kind, Node

    known = {f"a{i}": att(f"a{i}", "r1") for i in range(4)}

    def resolve(key: Any) -> Node | None:
        a = known.get(key[1])
        return None if a is None else Node(0, Kind.FILE, key, table=TABLE, record="r1", data=a)

    inodes = Inodes(keep=2)
    inodes.park_files = True
    inodes.resolve = resolve
    nodes = [inodes.ensure(("file", s), Kind.FILE, data=a) for s, a in known.items()]
    nodes[1].busy = 1  # open: never parked
    for n in nodes:  # as a readdirplus: entries made first, then replied (looked up)
        inodes.looked_up(n)
    inodes.ensure(("file", "a3"), Kind.FILE, data=known["a3"])  # used again
    first = nodes[0]
    assert inodes.whole(("file", "a0")) is None  # parked: only its number and key stay
    again = inodes.get(first.ino)
    assert again is not None and again is not first
    assert again.ino == first.ino and again.data == known["a0"] and again.nlookup == 1
    assert inodes.whole(("file", "a1")) is nodes[1]
    # The same key keeps its number; a forget of a parked inode drops it for good.
    assert inodes.ensure(("file", "a0"), Kind.FILE, data=known["a0"]).ino == first.ino
    for n in nodes[2:]:
        inodes.ensure(n.key, Kind.FILE, data=n.data)
    parked = nodes[0].ino if inodes.whole(("file", "a0")) is None else None
    assert parked is not None
    inodes.forget(parked, 1)
    del known["a0"]
    assert inodes.get(parked) is None


def test_a_walk_does_not_stat_each_directory_again() -> None:
    """A record directory's attributes live as long as its entry (they never change), not
    1 s: `find` over 80,000 directories otherwise asks for each one's attributes again."""
    from snfs.attrs import Owner, Timeouts, entry
    from snfs.inodes import Kind, Node

    timeouts = Timeouts.for_listings(20.0)
    shown = entry(Node(5, Kind.RECORD, ("record", TABLE, "r1")), Owner(0, 0), timeouts)
    assert shown.attr_timeout == shown.entry_timeout == 20.0
    assert Timeouts.for_listings(3600.0).dir_attr == 60.0  # capped, as entries are


def test_parked_file_keys_come_back_as_they_were() -> None:
    """A parked file's key is stored compactly (a hex id as a number): lowercase hex ids,
    and ids of any other shape, are built again with exactly the key they had."""
    from snfs.inodes import Inodes, Kind, Node

    ids = ["0123456789abcdef0123456789abcdef", "0123456789ABCDEF0123456789ABCDEF", "42", "x" * 32]
    seen: list[Any] = []

    def resolve(key: Any) -> Node | None:
        seen.append(key)
        return Node(0, Kind.FILE, key, table=TABLE, record="r1", data=att(key[1], "r1"))

    inodes = Inodes(keep=1)
    inodes.park_files = True
    inodes.resolve = resolve
    nodes = [inodes.ensure(("file", s), Kind.FILE, data=att(s, "r1")) for s in ids]
    for n in nodes:
        inodes.looked_up(n)
    inodes.ensure(("file", "last"), Kind.FILE, data=att("last", "r1"))  # parks every other
    for n, s in zip(nodes, ids, strict=True):
        assert inodes.whole(("file", s)) is None
        again = inodes.get(n.ino)
        assert again is not None and again.key == ("file", s) and again.data.sys_id == s
        assert inodes.by_key(("file", s)) is again
    assert seen == [("file", s) for s in ids]


def test_a_write_after_a_remount_replaces_what_the_instance_has_not_what_the_index_says(
    big: tuple[EmulatorProc, dict[str, Any]], mount: Callable[..., MountProc]
) -> None:
    """The index said `x.txt` was attachment A; on the instance A was replaced by B meanwhile.
    Writing `x.txt` through the new mount replaces B: one `x.txt` is left, the new one."""
    emu, _ = big
    record = _sys_id("rec", 2002)  # no attachments yet

    def upload(name: str, body: bytes) -> str:
        return str(
            emu.json(
                "POST",
                f"/api/now/attachment/file?table_name={TABLE}&table_sys_id={record}"
                f"&file_name={name}",
                body,
                headers={"Content-Type": "text/plain"},
            )["result"]["sys_id"]
        )

    a = upload("x.txt", b"a")
    m = mount(emu, "--dir-cache-time", "600")
    assert record in os.listdir(m.path(TABLE))  # the table's listing, into the index
    assert os.listdir(m.path(TABLE, record)) == ["x.txt"]
    m.stop()
    emu.json("DELETE", f"/api/now/attachment/{a}")
    b = upload("x.txt", b"b")
    # The remount's check for changes is held: only the index speaks for the table.
    emu.fault(path="^/api/now/attachment$", query="sys_updated_on", delay=30, count=10)
    try:
        m = mount(emu, "--dir-cache-time", "600")
        assert record in os.listdir(m.path(TABLE))  # from the index, at once
        m.path(TABLE, record, "x.txt").write_bytes(b"new")
    finally:
        emu.json("DELETE", "/__emulator__/faults")
    stored = emu.attachments(f"table_name={TABLE}^table_sys_id={record}")
    assert [s["file_name"] for s in stored] == ["x.txt"]
    assert stored[0]["sys_id"] not in (a, b)
