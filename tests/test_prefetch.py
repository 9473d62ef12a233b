"""Cross-file prefetch (snfs.prefetch and ContentCache.prefetch).

The first tests drive `Prefetcher` with a fake loader and trio's MockClock (the walk window is
about time, so the clock must be ours); then `ContentCache.prefetch` with an in-memory fetch;
the last ones read a record's files one after another through a real mount of the emulator and
check, through the emulator's request counters, that each file was fetched once and ahead of
its reader.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trio.testing

from snfs.content_cache import ContentCache
from snfs.prefetch import Prefetcher
from tests.support.emulator_proc import EmulatorProc
from tests.support.mount_proc import MountProc


@dataclass
class F:
    sys_id: str
    size_bytes: int
    table_name: str = "incident"
    table_sys_id: str = "r1"


class FakeLoader:
    def __init__(self, budget: int = 1 << 30) -> None:
        self.asked: list[str] = []
        self.budget = budget

    def prefetch(self, sys_id: str, size: int) -> bool:
        if size > self.budget:
            return False
        self.budget -= size
        self.asked.append(sys_id)
        return True


FILES = [F(f"f{i}", size) for i, size in enumerate([50, 40, 30, 20, 10, 5, 1, 2])]


async def siblings(f: object) -> list[F]:
    return FILES


async def _settle() -> None:
    await trio.testing.wait_all_tasks_blocked()


async def test_single_open_prefetches_nothing(mock_clock: trio.testing.MockClock) -> None:
    loader = FakeLoader()
    p = Prefetcher(loader, siblings, depth=3)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(p.run)
        p.opened(FILES[0])
        p.opened(FILES[0])  # the same file again (e.g. `file` then `cat`) is no walk
        await _settle()
        assert loader.asked == []
        nursery.cancel_scope.cancel()


async def test_walk_prefetches_next_files_small_first(mock_clock: trio.testing.MockClock) -> None:
    loader = FakeLoader()
    p = Prefetcher(loader, siblings, depth=3)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(p.run)
        p.opened(FILES[0])
        mock_clock.jump(1)
        p.opened(FILES[1])
        await _settle()
        # The three after f1 in listing order (f2, f3, f4), the smallest first.
        assert loader.asked == ["f4", "f3", "f2"]
        nursery.cancel_scope.cancel()


async def test_walk_window_expires(mock_clock: trio.testing.MockClock) -> None:
    loader = FakeLoader()
    p = Prefetcher(loader, siblings, depth=3, window_s=5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(p.run)
        p.opened(FILES[0])
        mock_clock.jump(6)  # the next open is too late to be part of the same walk
        p.opened(FILES[1])
        await _settle()
        assert loader.asked == []
        nursery.cancel_scope.cancel()


async def test_files_already_opened_are_skipped(mock_clock: trio.testing.MockClock) -> None:
    loader = FakeLoader()
    p = Prefetcher(loader, siblings, depth=2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(p.run)
        # A shell glob may sort differently from the listing: f3 before f2.
        for f in (FILES[0], FILES[3], FILES[2]):
            p.opened(f)
            await _settle()
        # After f3: f4 and f5; after f2: f3 is skipped (opened already), so f4 and f5 again
        # (the cache answers a repeated ask without a second fetch).
        assert loader.asked == ["f5", "f4", "f5", "f4"]
        nursery.cancel_scope.cancel()


async def test_loader_refusal_stops_the_round(mock_clock: trio.testing.MockClock) -> None:
    loader = FakeLoader(budget=35)
    p = Prefetcher(loader, siblings, depth=3)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(p.run)
        p.opened(FILES[0])
        p.opened(FILES[1])
        await _settle()
        assert loader.asked == ["f4", "f3"]  # 10 + 20 fit in 35; f2 (30) is refused
        nursery.cancel_scope.cancel()


async def test_depth_zero_is_off(mock_clock: trio.testing.MockClock) -> None:
    loader = FakeLoader()
    p = Prefetcher(loader, siblings, depth=0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(p.run)
        for f in FILES:
            p.opened(f)
        await _settle()
        assert loader.asked == []
        nursery.cancel_scope.cancel()


# -- ContentCache.prefetch ----------------------------------------------------------------------


def fetcher(sizes: dict[str, int], calls: list[str]) -> Callable[[str, int], AsyncIterator[bytes]]:
    async def fetch(sys_id: str, offset: int) -> AsyncIterator[bytes]:
        calls.append(sys_id)
        yield bytes([len(sys_id)]) * (sizes[sys_id] - offset)

    return fetch


def sid(n: int) -> str:
    return f"{n:032x}"


async def test_cache_prefetch_then_read_hits_memory(tmp_path: Path) -> None:
    sizes = {sid(i): 1000 for i in range(4)}
    calls: list[str] = []
    async with ContentCache(fetcher(sizes, calls), disk_dir=tmp_path / "c") as cache:
        assert cache.prefetch(sid(1), 1000)
        assert cache.prefetch(sid(1), 1000)  # already loading: not fetched twice
        await trio.testing.wait_all_tasks_blocked()
        assert calls == [sid(1)]
        assert await cache.read(sid(1), 1000, 0, 4096) == bytes([32]) * 1000
        assert calls == [sid(1)]  # served from memory
        stats = cache.stats()
        assert stats["prefetches"] == 1 and stats["prefetch_hits"] == 1


async def test_cache_prefetch_is_bounded(tmp_path: Path) -> None:
    sizes = {sid(i): 1000 for i in range(10)}
    calls: list[str] = []
    # Memory budget 8000: prefetches may hold at most a quarter of it (2000 bytes) unread.
    async with ContentCache(
        fetcher(sizes, calls), memory_bytes=8000, small_file_bytes=4000, disk_dir=tmp_path / "c"
    ) as cache:
        took = [cache.prefetch(sid(i), 1000) for i in range(4)]
        assert took == [True, True, False, False]
        assert not cache.prefetch(sid(9), 5000)  # too large for the memory cache at all
        await trio.testing.wait_all_tasks_blocked()
        await cache.read(sid(0), 1000, 0, 10)  # read: its share of the budget is free again
        assert cache.prefetch(sid(2), 1000)


# -- through a real mount -------------------------------------------------------------------------

N_FILES = 12


def _record_with_files(emu: EmulatorProc) -> tuple[str, dict[str, bytes]]:
    record = emu.json("POST", "/api/now/table/incident", {"short_description": "prefetch"})[
        "result"
    ]["sys_id"]
    files = {
        f"file{i:02d}.txt": f"content of file {i}\n".encode() * (i + 1) for i in range(N_FILES)
    }
    for name, data in files.items():
        status, _, body = emu.request(
            "POST",
            f"/api/now/attachment/file?table_name=incident&table_sys_id={record}&file_name={name}",
            data,
            headers={"Content-Type": "text/plain"},
        )
        assert status == 201, body
    return record, files


def _file_gets(emu: EmulatorProc) -> int:
    return sum(n for route, n in emu.stats()["by_route"].items() if route.endswith("/file"))


def _cache_after(m: MountProc, reads: int) -> dict:
    """The cache figures once they include `reads` reads (/.snfs/status is rendered at most
    once a second, so an early read can show figures from before our reads)."""
    deadline = time.monotonic() + 10
    while True:
        cache = json.loads(m.path(".snfs", "status").read_text())["cache"]
        if cache["hits"] + cache["misses"] >= reads or time.monotonic() > deadline:
            return cache
        time.sleep(0.1)


def test_reading_a_directory_in_turn_is_prefetched(
    emulator: EmulatorProc, mount_factory: Callable[..., MountProc]
) -> None:
    record, files = _record_with_files(emulator)
    m = mount_factory(emulator)
    emulator.reset_stats()
    for name in sorted(files):  # like `cat dir/*`
        assert m.path("incident", record, name).read_bytes() == files[name]
    cache = _cache_after(m, N_FILES)
    # The first two opens start the walk; every later file was asked for ahead of its reader...
    assert cache["prefetches"] >= N_FILES - 2
    assert cache["prefetch_hits"] >= N_FILES - 2
    # ...and no file was fetched twice (the instance's own count of downloads).
    assert _file_gets(emulator) == N_FILES


def test_prefetch_zero_fetches_only_what_is_read(
    emulator: EmulatorProc, mount_factory: Callable[..., MountProc]
) -> None:
    record, files = _record_with_files(emulator)
    m = mount_factory(emulator, "--prefetch", "0")
    emulator.reset_stats()
    for name in sorted(files)[:3]:
        m.path("incident", record, name).read_bytes()
    assert _cache_after(m, 3)["prefetches"] == 0
    assert _file_gets(emulator) == 3


@pytest.mark.parametrize("depth", [4])
def test_single_file_reads_never_prefetch(
    emulator: EmulatorProc, mount_factory: Callable[..., MountProc], depth: int
) -> None:
    """A thumbnailer or `file` opening one file must not cost the instance other downloads."""
    record, files = _record_with_files(emulator)
    m = mount_factory(emulator, "--prefetch", str(depth))
    emulator.reset_stats()
    name = sorted(files)[5]
    m.path("incident", record, name).read_bytes()
    assert _cache_after(m, 1)["prefetches"] == 0
    assert _file_gets(emulator) == 1


# -- bounded read-ahead: a download its readers left stops ---------------------------------------


class SlowSource:
    """fetch(sys_id, offset): `size` bytes in 64 KiB chunks, one chunk per 10 ms (MockClock)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.offsets: list[int] = []

    async def __call__(self, sys_id: str, offset: int) -> AsyncIterator[bytes]:
        self.offsets.append(offset)
        pos = offset
        while pos < self.size:
            await trio.sleep(0.01)
            n = min(64 * 1024, self.size - pos)
            yield bytes([pos % 251]) * n  # content is checked by offset below
            pos += n


async def test_download_pauses_when_its_reader_left(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    size = 64 * 2**20
    src = SlowSource(size)
    async with ContentCache(
        src,
        disk_dir=tmp_path / "c",
        small_file_bytes=1024,
        read_ahead_bytes=2 * 2**20,
        pause_after_s=1.0,
    ) as cache:
        assert len(await cache.read(sid(7), size, 0, 4096)) == 4096  # `file` reads the head
        await trio.sleep(60)  # long enough to stream the whole file at 6.4 MB/s
        stats = cache.stats()
        assert stats["paused"] == 1 and stats["downloads_active"] == 0
        # Stopped past the read-ahead and the idle second (6.4 MB at this rate, plus a 1 MiB
        # write batch), nowhere near the whole file.
        assert 2 * 2**20 <= stats["disk_bytes"] <= 10 * 2**20
        # A reader coming back later resumes after what is on disk.
        far = 32 * 2**20
        assert await cache.read(sid(7), size, far, 10) == bytes([(far // 65536 * 65536) % 251]) * 10
        assert src.offsets[0] == 0 and src.offsets[1] == stats["disk_bytes"]


async def test_download_keeps_going_while_read(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    size = 8 * 2**20
    src = SlowSource(size)
    async with ContentCache(
        src,
        disk_dir=tmp_path / "c",
        small_file_bytes=1024,
        read_ahead_bytes=1 * 2**20,
        pause_after_s=1.0,
    ) as cache:
        offset = 0
        while offset < size:  # a steady sequential reader (cat) never loses its download
            got = await cache.read(sid(8), size, offset, 128 * 1024)
            offset += len(got)
            await trio.sleep(0.05)
        assert cache.stats()["paused"] == 0
        assert src.offsets == [0]
