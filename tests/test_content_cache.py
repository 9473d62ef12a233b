"""Unit tests of snfs.content_cache.

The cache is a plain trio module that is handed a fetch function, so these tests drive it with a
fake fetch (FakeSource): deterministic bytes derived from the offset, an optional per-chunk delay,
a call counter and fault injection. No emulator or HTTP is involved on purpose; the real fetch is
covered by the client's and the filesystem's tests.
"""

from __future__ import annotations

import os
import random
import stat
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from snfs import transfer
from snfs.content_cache import ContentCache
from snfs.content_cache import ContentCache as _ContentCache
from snfs.errors import InvalidInput, NotFound, ServerError

KiB = 2**10
MiB = 2**20
PERIOD = 65521  # prime, so the pattern never lines up with chunk or read sizes
_BASE = random.Random(1234).randbytes(PERIOD)


def pattern(offset: int, n: int) -> bytes:
    """The deterministic content of every fake file: byte i is _BASE[i % PERIOD]."""
    out = bytearray()
    while n > 0:
        start = offset % PERIOD
        take = min(n, PERIOD - start)
        out += _BASE[start : start + take]
        offset += take
        n -= take
    return bytes(out)


def sid(n: int) -> str:
    return f"{n:032x}"


class FakeSource:
    """fetch(sys_id, offset): `sizes[sys_id]` bytes of pattern(), `chunk` bytes at a time.

    delay: seconds slept before each chunk; gate: if set, each chunk waits for it.
    fail_after: {sys_id: n} raises `exc` once n bytes were sent (one-shot unless sticky).
    """

    def __init__(self, sizes: dict[str, int], *, chunk: int = 64 * KiB, delay: float = 0.0) -> None:
        self.sizes = sizes
        self.chunk = chunk
        self.delay = delay
        self.calls: list[tuple[str, int]] = []
        self.active = 0
        self.fail_after: dict[str, int] = {}
        self.exc: Exception = ServerError("boom", status=500)
        self.sticky = False
        self.gate: trio.Event | None = None

    async def __call__(self, sys_id: str, offset: int) -> AsyncIterator[bytes]:
        self.calls.append((sys_id, offset))
        self.active += 1
        try:
            size = self.sizes[sys_id]
            pos = offset
            sent = 0
            while pos < size:
                if self.gate is not None:
                    await self.gate.wait()
                if self.delay:
                    await trio.sleep(self.delay)
                limit = self.fail_after.get(sys_id)
                if limit is not None and sent >= limit:
                    if not self.sticky:
                        del self.fail_after[sys_id]
                    raise self.exc
                n = min(self.chunk, size - pos)
                yield pattern(pos, n)
                pos += n
                sent += n
        finally:
            self.active -= 1

    def fetches(self, sys_id: str) -> int:
        return sum(1 for s, _ in self.calls if s == sys_id)


@pytest.fixture(autouse=True, params=["event-loop", "worker"])
def data_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs twice: large files written by the cache's own task from the fetch's
    async stream, and by a worker thread (`into`, here `snfs.transfer.feed` over the same
    fake fetch: the worker's sink, batches, stop and resume rules)."""
    if request.param == "worker":

        def with_worker(fetch: Callable[..., Any], **kw: Any) -> ContentCache:
            async def into(sys_id: str, offset: int, sink: Any) -> None:
                await transfer.feed(fetch(sys_id, offset), sink, offset)

            return _ContentCache(fetch, into=into, **kw)

        monkeypatch.setattr(sys.modules[__name__], "ContentCache", with_worker)
    return str(request.param)


async def wait_until(cond: Callable[[], bool], limit: float = 5.0) -> None:
    """Poll a condition the cache's own tasks make true (no event to wait on from outside)."""
    with trio.fail_after(limit):
        while not cond():  # noqa: ASYNC110 - a condition on another object's state
            await trio.sleep(0.001)


async def settled(cache: ContentCache) -> None:
    """Wait for background downloads to finish (a reader may return before the rename)."""
    await wait_until(lambda: cache.stats()["downloads_active"] == 0)


# ---- small files -------------------------------------------------------------------------------


async def test_small_file_cached_in_memory_second_read_no_fetch(tmp_path: Path) -> None:
    src = FakeSource({sid(1): 1000})
    async with ContentCache(src, disk_dir=tmp_path / "c") as cache:
        assert await cache.read(sid(1), 1000, 10, 100) == pattern(10, 100)
        assert await cache.read(sid(1), 1000, 950, 100) == pattern(950, 50)  # short at EOF
        assert await cache.read(sid(1), 1000, 1000, 100) == b""
        assert await cache.read(sid(1), 1000, 5000, 100) == b""
        assert src.fetches(sid(1)) == 1
        st = cache.stats()
        assert st["memory_bytes"] == 1000 and st["disk_bytes"] == 0
        assert st["misses"] == 1 and st["hits"] == 1
        assert st["downloads_started"] == 1 and st["downloads_active"] == 0
        assert not any(p.name != ".lock" for p in (tmp_path / "c").iterdir())


async def test_memory_lru_bounded_by_bytes_evicts_oldest() -> None:
    sizes = {sid(i): 400 for i in range(4)}
    src = FakeSource(sizes)
    async with ContentCache(src, memory_bytes=1000) as cache:
        for i in range(2):
            await cache.read(sid(i), 400, 0, 10)
        await cache.read(sid(0), 400, 0, 10)  # sid(0) is now the most recent
        await cache.read(sid(2), 400, 0, 10)  # 1200 > 1000: evicts sid(1)
        assert cache.stats()["memory_bytes"] == 800
        assert cache.stats()["evictions"] == 1
        await cache.read(sid(0), 400, 0, 10)
        assert src.fetches(sid(0)) == 1
        await cache.read(sid(1), 400, 0, 10)
        assert src.fetches(sid(1)) == 2


async def test_small_file_bigger_than_memory_goes_to_disk() -> None:
    src = FakeSource({sid(1): 5000})
    async with ContentCache(src, memory_bytes=1000) as cache:
        assert await cache.read(sid(1), 5000, 4000, 2000) == pattern(4000, 1000)
        assert cache.stats()["memory_bytes"] == 0
        await wait_until(lambda: cache.stats()["disk_bytes"] == 5000)


async def test_concurrent_small_readers_share_one_fetch() -> None:
    src = FakeSource({sid(1): 300 * KiB}, delay=0.002)
    results: list[bytes] = []
    async with ContentCache(src) as cache:
        async with trio.open_nursery() as n:
            for off in (0, 100 * KiB, 200 * KiB):
                n.start_soon(
                    lambda o=off: _collect(results, cache.read(sid(1), 300 * KiB, o, 4096))
                )
        assert sorted(results) == sorted(pattern(o, 4096) for o in (0, 100 * KiB, 200 * KiB))
        assert src.fetches(sid(1)) == 1
        assert cache.stats()["downloads_started"] == 1


async def _collect(out: list[bytes], coro) -> None:
    out.append(bytes(await coro))  # a view of a block, or bytes


# ---- large files -------------------------------------------------------------------------------


async def test_large_file_first_bytes_return_before_download_finishes() -> None:
    size = 20 * MiB
    src = FakeSource({sid(1): size}, chunk=256 * KiB, delay=0.01)  # ~0.8 s for the whole file
    async with ContentCache(src, small_file_bytes=MiB) as cache:
        with trio.fail_after(0.5):
            assert await cache.read(sid(1), size, 0, 128 * KiB) == pattern(0, 128 * KiB)
        st = cache.stats()
        assert st["downloads_active"] == 1 and st["disk_bytes"] < size
        # a read a little further ahead waits only for its own range
        assert await cache.read(sid(1), size, 3 * MiB, 4096) == pattern(3 * MiB, 4096)
        assert cache.stats()["downloads_active"] == 1
        assert src.fetches(sid(1)) == 1


async def test_large_reads_at_random_offsets_are_exact() -> None:
    size = 3 * MiB + 12345
    src = FakeSource({sid(1): size}, chunk=50_000)
    rng = random.Random(7)
    async with ContentCache(src, small_file_bytes=64 * KiB) as cache:
        probes = [
            (rng.randrange(size), rng.choice([1, 100, 4096, 50_000, 131072, 300_000]))
            for _ in range(300)
        ]
        probes += [
            (49_999, 2),
            (50_000, 50_000),
            (size - 10, 100),
            (size - 1, 1),
            (size, 10),
            (size + 1000, 10),
            (0, size + 100),
        ]
        for off, length in probes:
            want = pattern(off, max(0, min(length, size - off)))
            assert await cache.read(sid(1), size, off, length) == want, (off, length)
        assert src.fetches(sid(1)) == 1
        st = cache.stats()
        assert st["disk_bytes"] == size and st["hits"] > 0 and st["bytes_fetched"] == size


async def test_two_concurrent_large_readers_share_one_download() -> None:
    size = 4 * MiB
    src = FakeSource({sid(1): size}, delay=0.001)
    got: list[bytes] = []
    async with ContentCache(src, small_file_bytes=MiB) as cache:
        async with trio.open_nursery() as n:
            n.start_soon(_collect, got, cache.read(sid(1), size, size - 100, 100))
            n.start_soon(_collect, got, cache.read(sid(1), size, 2 * MiB, 100))
        assert sorted(got) == sorted([pattern(size - 100, 100), pattern(2 * MiB, 100)])
        assert src.fetches(sid(1)) == 1
        assert cache.stats()["downloads_started"] == 1
        before = len(src.calls)
        assert await cache.read(sid(1), size, 0, size) == pattern(0, size)
        assert len(src.calls) == before  # already cached: no fetch at all


async def test_disk_dir_mode_fixed_and_files_private(tmp_path: Path) -> None:
    d = tmp_path / "cache"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    src = FakeSource({sid(1): 2 * MiB})
    async with ContentCache(src, disk_dir=d, small_file_bytes=0) as cache:
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
        await cache.read(sid(1), 2 * MiB, 0, 10)
        await wait_until(lambda: (d / sid(1)).exists())
        assert stat.S_IMODE((d / sid(1)).stat().st_mode) == 0o600
    fresh = tmp_path / "new" / "cache"
    async with ContentCache(src, disk_dir=fresh):
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o700


async def test_private_temp_dir_is_0700_and_removed() -> None:
    async with ContentCache(FakeSource({})) as cache:
        d = cache._dir
        assert d is not None and stat.S_IMODE(d.stat().st_mode) == 0o700
    assert not d.exists()


async def test_disk_bound_evicts_least_recently_used(tmp_path: Path) -> None:
    sizes = {sid(i): MiB for i in range(4)}
    src = FakeSource(sizes)
    async with ContentCache(
        src, disk_dir=tmp_path, disk_bytes=3 * MiB, small_file_bytes=0
    ) as cache:
        for i in range(3):
            assert await cache.read(sid(i), MiB, MiB - 10, 10) == pattern(MiB - 10, 10)
        await settled(cache)
        await cache.read(sid(0), MiB, 0, 10)  # sid(0) becomes most recent
        await cache.read(sid(3), MiB, MiB - 10, 10)  # needs room: evicts sid(1)
        st = cache.stats()
        assert st["disk_bytes"] <= 3 * MiB and st["evictions"] == 1
        assert not (tmp_path / sid(1)).exists() and (tmp_path / sid(0)).exists()
        await cache.read(sid(0), MiB, 0, 10)
        await cache.read(sid(2), MiB, 0, 10)
        assert src.fetches(sid(0)) == 1 and src.fetches(sid(2)) == 1
        await cache.read(sid(1), MiB, 0, 10)
        assert src.fetches(sid(1)) == 2


async def test_file_bigger_than_disk_budget_is_readable_then_evicted(tmp_path: Path) -> None:
    src = FakeSource({sid(1): 3 * MiB, sid(2): MiB, sid(3): MiB})
    async with ContentCache(
        src, disk_dir=tmp_path, disk_bytes=2 * MiB, small_file_bytes=0
    ) as cache:
        await cache.read(sid(2), MiB, MiB - 1, 1)
        await settled(cache)
        assert await cache.read(sid(1), 3 * MiB, 0, 3 * MiB) == pattern(0, 3 * MiB)
        await settled(cache)
        assert cache.stats()["disk_bytes"] == 3 * MiB  # over budget while in use
        assert not (tmp_path / sid(2)).exists()  # the idle one made room
        await cache.read(sid(3), MiB, MiB - 1, 1)  # the next write reclaims it
        assert cache.stats()["disk_bytes"] == MiB
        assert not (tmp_path / sid(1)).exists()


async def test_unread_download_over_budget_is_abandoned(tmp_path: Path) -> None:
    src = FakeSource({sid(1): 4 * MiB}, delay=0.001)
    async with ContentCache(
        src, disk_dir=tmp_path, disk_bytes=MiB, small_file_bytes=0, idle_grace_s=0.05
    ) as cache:
        await cache.read(sid(1), 4 * MiB, 0, 10)
        await wait_until(lambda: cache.stats()["downloads_active"] == 0)
        assert cache.stats()["disk_bytes"] == 0
        assert [p.name for p in tmp_path.iterdir()] == [".lock"]  # noqa: ASYNC240
        # and it is still readable afterwards
        assert await cache.read(sid(1), 4 * MiB, 2 * MiB, 10) == pattern(2 * MiB, 10)


async def test_pinned_file_is_not_evicted(tmp_path: Path) -> None:
    src = FakeSource({sid(1): MiB, sid(2): MiB})
    async with ContentCache(src, disk_dir=tmp_path, disk_bytes=MiB, small_file_bytes=0) as cache:
        await cache.read(sid(1), MiB, 0, MiB)
        await settled(cache)
        entry = cache._entries[sid(1)]
        entry.pins += 1  # as if a read of sid(1) were in flight
        await cache.read(sid(2), MiB, 0, MiB)
        assert (tmp_path / sid(1)).exists()
        entry.pins -= 1


# ---- failures and cancellation -------------------------------------------------------------------


@pytest.mark.parametrize("size", [100 * KiB, 3 * MiB])
async def test_fetch_failure_reaches_all_waiters_then_retry_succeeds(size: int) -> None:
    src = FakeSource({sid(1): size}, chunk=32 * KiB, delay=0.001)
    src.fail_after[sid(1)] = 64 * KiB
    errors: list[BaseException] = []

    async def reader(off: int) -> None:
        try:
            await cache.read(sid(1), size, off, 100)
        except ServerError as exc:
            errors.append(exc)

    async with ContentCache(src, small_file_bytes=MiB) as cache:
        async with trio.open_nursery() as n:
            for off in (size - 100, size // 2, 80 * KiB):
                n.start_soon(reader, off)
        assert len(errors) == 3 and all(e is src.exc for e in errors)
        assert cache.stats()["downloads_active"] == 0
        assert await cache.read(sid(1), size, size - 100, 100) == pattern(size - 100, 100)
        assert src.fetches(sid(1)) == 2
        # the early bytes were kept: a large file resumes where the failed download stopped
        if size > MiB:
            assert src.calls[-1] == (sid(1), 64 * KiB)
        assert await cache.read(sid(1), size, 0, size) == pattern(0, size)


async def test_cancelled_reader_does_not_break_shared_download() -> None:
    size = 3 * MiB
    src = FakeSource({sid(1): size}, delay=0.002)
    async with ContentCache(src, small_file_bytes=MiB) as cache:
        got: list[bytes] = []
        async with trio.open_nursery() as n:
            n.start_soon(_collect, got, cache.read(sid(1), size, size - 10, 10))
            with trio.move_on_after(0.02) as scope:  # a FUSE interrupt
                await cache.read(sid(1), size, size - 10, 10)
            assert scope.cancelled_caught
        assert got == [pattern(size - 10, 10)]
        assert src.fetches(sid(1)) == 1


async def test_cancelled_sole_small_reader_still_fills_cache() -> None:
    src = FakeSource({sid(1): 200 * KiB}, chunk=16 * KiB, delay=0.002)
    async with ContentCache(src) as cache:
        with trio.move_on_after(0.005):
            await cache.read(sid(1), 200 * KiB, 0, 10)
        await wait_until(lambda: cache.stats()["memory_bytes"] == 200 * KiB)
        assert await cache.read(sid(1), 200 * KiB, 0, 10) == pattern(0, 10)
        assert src.fetches(sid(1)) == 1


async def test_closing_cache_wakes_waiters() -> None:
    src = FakeSource({sid(1): 3 * MiB})
    src.gate = trio.Event()  # the download never progresses
    caught: list[BaseException] = []

    async def reader(cache: ContentCache) -> None:
        try:
            await cache.read(sid(1), 3 * MiB, MiB, 10)
        except trio.ClosedResourceError as exc:
            caught.append(exc)

    async with trio.open_nursery() as n, ContentCache(src, small_file_bytes=MiB) as cache:
        n.start_soon(reader, cache)
        await wait_until(lambda: src.active == 1)
    assert len(caught) == 1


# ---- forget / copy_to / persistence --------------------------------------------------------------


async def test_forget_drops_memory_and_disk_and_fails_waiters(tmp_path: Path) -> None:
    src = FakeSource({sid(1): 1000, sid(2): 2 * MiB})
    async with ContentCache(src, disk_dir=tmp_path, small_file_bytes=MiB) as cache:
        await cache.read(sid(1), 1000, 0, 10)
        await cache.read(sid(2), 2 * MiB, 0, 2 * MiB)
        cache.forget(sid(1))
        cache.forget(sid(2))
        st = cache.stats()
        assert st["memory_bytes"] == 0 and st["disk_bytes"] == 0
        assert not (tmp_path / sid(2)).exists()
        await cache.read(sid(1), 1000, 0, 10)
        assert src.fetches(sid(1)) == 2

        src.gate = trio.Event()  # a waiter of a download in progress
        caught: list[BaseException] = []

        async def reader() -> None:
            try:
                await cache.read(sid(2), 2 * MiB, MiB, 10)
            except NotFound as exc:
                caught.append(exc)

        async with trio.open_nursery() as n:
            n.start_soon(reader)
            await wait_until(lambda: src.active == 1)
            cache.forget(sid(2))
        assert len(caught) == 1
        await wait_until(lambda: src.active == 0)
        assert not list(tmp_path.glob("*.part"))  # noqa: ASYNC240
        src.gate.set()
        assert await cache.read(sid(2), 2 * MiB, MiB, 10) == pattern(MiB, 10)


async def test_copy_to(tmp_path: Path) -> None:
    small, large = 1000, 5 * MiB + 7
    src = FakeSource({sid(1): small, sid(2): large}, chunk=100_000)
    async with ContentCache(src, small_file_bytes=MiB) as cache:
        await cache.read(sid(2), large, 0, 10)
        await cache.copy_to(sid(1), small, tmp_path / "a")
        await cache.copy_to(sid(2), large, tmp_path / "b")
        assert (tmp_path / "a").read_bytes() == pattern(0, small)
        assert (tmp_path / "b").read_bytes() == pattern(0, large)
        assert stat.S_IMODE((tmp_path / "b").stat().st_mode) == 0o600
        assert src.fetches(sid(2)) == 1  # reused the running download
        await cache.copy_to(sid(1), small, tmp_path / "a")
        assert src.fetches(sid(1)) == 1


async def test_complete_files_persist_across_mounts(tmp_path: Path) -> None:
    size = 2 * MiB
    src = FakeSource({sid(1): size, sid(2): size})
    async with ContentCache(src, disk_dir=tmp_path, small_file_bytes=MiB) as cache:
        await cache.read(sid(1), size, 0, size)
    assert (tmp_path / sid(1)).exists()
    (tmp_path / (sid(2) + ".part")).write_bytes(b"junk")  # a crash leftover
    src.calls.clear()
    async with ContentCache(src, disk_dir=tmp_path, small_file_bytes=MiB) as cache:
        assert not (tmp_path / (sid(2) + ".part")).exists()
        assert cache.stats()["disk_bytes"] == size
        assert await cache.read(sid(1), size, 1000, 5000) == pattern(1000, 5000)
        assert src.calls == []


async def test_partial_download_is_not_published(tmp_path: Path) -> None:
    src = FakeSource({sid(1): 3 * MiB})
    src.gate = trio.Event()
    async with ContentCache(src, disk_dir=tmp_path, small_file_bytes=MiB) as cache:
        with trio.move_on_after(0.05):
            await cache.read(sid(1), 3 * MiB, MiB, 10)
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]  # noqa: ASYNC240


async def test_second_live_cache_on_same_dir_falls_back_to_private_dir(tmp_path: Path) -> None:
    src = FakeSource({sid(1): 2 * MiB})
    async with ContentCache(src, disk_dir=tmp_path, small_file_bytes=MiB):
        async with ContentCache(src, disk_dir=tmp_path, small_file_bytes=MiB) as second:
            assert second._dir != tmp_path
            assert await second.read(sid(1), 2 * MiB, 0, 2 * MiB) == pattern(0, 2 * MiB)
            await settled(second)
        assert [p.name for p in tmp_path.iterdir()] == [".lock"]  # noqa: ASYNC240


async def test_invalid_sys_id_rejected() -> None:
    async with ContentCache(FakeSource({})) as cache:
        with pytest.raises(InvalidInput):
            await cache.read("../etc/passwd", 10, 0, 10)


async def test_far_ahead_read_uses_range_fetch_when_supported() -> None:
    size = 40 * MiB
    src = FakeSource({sid(1): size}, chunk=256 * KiB, delay=0.005)
    src.supports_range = True  # type: ignore[attr-defined]
    async with ContentCache(src, small_file_bytes=MiB) as cache:
        with trio.fail_after(0.3):  # the sequential download would need ~0.6 s
            assert await cache.read(sid(1), size, 30 * MiB, 4096) == pattern(30 * MiB, 4096)
        assert (sid(1), 30 * MiB) in src.calls and (sid(1), 0) in src.calls
        assert cache.stats()["range_fetches"] == 1


# ---- memory ------------------------------------------------------------------------------------

_CHILD = textwrap.dedent("""
    import hashlib, sys, trio

    def peak_rss_kib():
        # VmHWM: this process' own peak (ru_maxrss keeps the forking parent's across exec)
        with open('/proc/self/status') as f:
            return next(int(l.split()[1]) for l in f if l.startswith('VmHWM:'))
    sys.path[:0] = [{root!r}]
    from snfs.content_cache import ContentCache
    from tests.test_content_cache import FakeSource, pattern, PERIOD

    SIZE = 200 * 2**20

    async def main():
        src = FakeSource({{"big": SIZE}}, chunk=64 * 1024)
        got, want = hashlib.sha256(), hashlib.sha256()
        async with ContentCache(src) as cache:
            off = 0
            while True:
                data = await cache.read("big", SIZE, off, 128 * 1024)
                if not data:
                    break
                got.update(data)
                want.update(pattern(off, len(data)))
                off += len(data)
        assert off == SIZE and got.digest() == want.digest()
        print(peak_rss_kib() // 1024)

    trio.run(main)
""")


def test_200mb_file_read_through_cache_stays_small_in_memory() -> None:
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run(
        [sys.executable, "-c", _CHILD.format(root=root)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=root,
    )
    assert out.returncode == 0, out.stderr
    peak_mib = int(out.stdout.strip())
    assert peak_mib < 100, f"peak RSS {peak_mib} MiB"
