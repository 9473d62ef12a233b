"""Read cache between FUSE ``read()`` and the HTTP client.

Attachment content never changes under a sys_id, so everything here is keyed by sys_id and is
never revalidated. The module is plain trio: it is handed a ``fetch(sys_id, offset)`` that
streams the content from ``offset`` to the end.

* Small files (size <= small_file_bytes and <= memory_bytes) are downloaded whole into a
  byte-bounded in-memory LRU.
* Larger files stream, in a background task of the cache's nursery, into
  ``<disk_dir>/<sys_id>.part`` from offset 0; a per-file watermark says how many bytes are on
  disk. A reader pins the entry and waits on the entry's progress Event only until the
  watermark covers its range, then serves the bytes with ``os.pread`` (page-cache reads are
  fast; no thread hop on the hot path).
  A complete file is fsynced (persistent dir only) and renamed to ``<disk_dir>/<sys_id>``, so the
  next mount with the same disk_dir reuses it; ``*.part`` files are removed at start.
* Given `into` (the mount gives `Backend.stream_into`), a large file's bytes are received,
  verified and written by a worker thread per download (`snfs.transfer`); this module's task
  only waits for it and moves the watermark as batches land (`_landed`). A reader that waited
  for bytes at the download's front is answered with a view of the worker's block they landed
  in, not a `pread` (`_Entry.recent`). Readers, pins, the budget, pauses and resumes work the
  same on both paths (docs/ARCHITECTURE.md, "The data path").
* The disk budget is enforced when bytes are added: least-recently-used entries that are not
  pinned (no in-flight read, no running download) are deleted. Pinned entries may push the total
  over the budget (e.g. one file bigger than the whole budget stays readable); the excess is
  reclaimed at the next write. A download that cannot fit and whose file nobody has read for
  ``idle_grace_s`` is abandoned and its partial file deleted, so an unread huge file does not
  fill the disk.
* Read-ahead is bounded: a disk download whose readers have left (no read for ``pause_after_s``)
  stops once it is ``read_ahead_bytes`` past the furthest byte asked for, so a thumbnailer's
  4 KiB read of a huge file does not keep a connection busy; the next read resumes it.
* ``prefetch`` loads a small file into memory ahead of a reader (snfs.prefetch decides which);
  prefetched bytes not yet read are bounded to a quarter of the memory budget.
* One download per file at a time, shared by all readers. A failed download wakes every waiter
  with the fetch's own exception; the partial file is kept with its watermark and the next read
  resumes with ``fetch(sys_id, watermark)``. A cancelled reader only stops waiting: downloads
  belong to the cache's nursery, so other readers are unaffected (the download runs on as
  read-ahead).

Two live caches never share a disk_dir: an exclusive flock on ``<disk_dir>/.lock`` guards it, and
a cache that finds it taken falls back to a private temporary directory (logged). Pick one
disk_dir per instance: sys_ids are only unique within an instance (and its clones).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cachetools
import trio

from snfs import transfer
from snfs.errors import InvalidInput, NotFound
from snfs.spool import private_dir
from snfs.transfer import Block, Buffer, Reserve, Sink, Stop, pwritev_all

log = logging.getLogger("snfs.cache")

Fetch = Callable[[str, int], AsyncIterator[bytes]]
# `into(sys_id, offset, sink)`: the content from `offset` on, put into `sink` by a worker
# thread (`snfs.transfer`): how a large file reaches the disk when the cache is given one.
Into = Callable[[str, int, Sink], Awaitable[None]]

_SYS_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # file ids; also safe cache file names
_PART = ".part"
_LOCK = ".lock"
RANGE_AHEAD = 8 * 2**20  # a read this far past the watermark may use its own range fetch
COPY_CHUNK = 2**20
# Blocks an entry keeps in memory (`_Entry.recent`) while a reader waits: the one it waits
# for and the ones that land with it (a batch may end a block and begin the next).
RECENT_BLOCKS = 3
_NO_NEED = 2**63  # `_Entry.need` while no reader waits


class _Abandoned(Exception):
    """Internal: the download cannot fit in the disk budget and nobody is reading the file."""


class _Paused(Exception):
    """Internal: the readers of a file left and the download is far enough ahead of them."""


@dataclass(eq=False)
class _Download:
    """One attempt at streaming a file; waiters hold on to it to learn how it ended."""

    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    error: BaseException | None = None


@dataclass(eq=False)
class _Entry:
    """A file in the disk cache, complete or partial."""

    sys_id: str
    path: Path
    fd: int | None = None
    watermark: int = 0  # bytes on disk, contiguous from offset 0
    complete: bool = False
    pins: int = 0  # in-flight reads / copies
    last_access: float = 0.0
    download: _Download | None = None
    dead: BaseException | None = None  # set once forgotten/evicted: what late readers get
    progress: trio.Event = field(default_factory=trio.Event)
    waiting: int = 0  # readers blocked until the watermark moves
    ends: list[int] = field(default_factory=list)  # the end each of them waits for
    need: int = _NO_NEED  # the nearest of those ends (read by download workers)
    wanted: int = 0  # the furthest end any reader asked for
    # The blocks the worker landed last, each with the end of its bytes on disk: a reader
    # that waited for them is answered from memory (`_pread`). Kept while the download runs.
    recent: list[tuple[Block, int]] = field(default_factory=list)

    def has(self, end: int) -> bool:
        return self.complete or self.watermark >= end

    def keep(self, landed: list[tuple[Block, int]]) -> None:
        """Keep the blocks that just landed, if a reader waits for them: a reader behind
        the download reads the file (its pages are in the page cache), and a block nobody
        keeps goes back to the pool for the next bytes."""
        if not self.waiting:
            self.recent.clear()
            return
        for block, end in landed:
            if self.recent and self.recent[-1][0] is block:
                self.recent[-1] = (block, end)
            else:
                self.recent.append((block, end))
        del self.recent[:-RECENT_BLOCKS]

    def in_memory(self, offset: int, end: int) -> memoryview | None:
        """[offset, end) as a view of a block that holds all of it, if one does."""
        for block, landed in self.recent:
            if block.base <= offset and end <= landed:
                return memoryview(block)[offset - block.base : end - block.base]
        return None


@dataclass(eq=False)
class _MemLoad:
    """A shared whole-file download of a small file."""

    done: trio.Event = field(default_factory=trio.Event)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    data: bytes | None = None
    error: BaseException | None = None
    forgotten: bool = False


class _CountingLRU(cachetools.LRUCache):
    """LRUCache that counts the evictions it makes to stay within maxsize."""

    def __init__(self, maxsize: int, on_evict: Callable[[str], object]) -> None:
        super().__init__(maxsize=maxsize, getsizeof=len)
        self.evictions = 0
        self._on_evict = on_evict

    def popitem(self) -> tuple[Any, Any]:
        self.evictions += 1
        key, value = super().popitem()
        self._on_evict(key)
        return key, value


def _closed() -> trio.ClosedResourceError:
    return trio.ClosedResourceError("content cache closed or download abandoned")


def _pwrite_all(fd: int, data: Buffer, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _pread_all(fd: int, length: int, offset: int) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) == length:  # the usual case: one syscall, no copy
        return data
    parts = [data]
    got = len(data)
    while got < length:
        more = os.pread(fd, length - got, offset + got)
        if not more:
            raise OSError(errno.EIO, "cache file shorter than its watermark")
        parts.append(more)
        got += len(more)
    return b"".join(parts)


async def _aclose(it: AsyncIterator[bytes]) -> None:
    aclose = getattr(it, "aclose", None)
    if aclose is not None:
        with trio.CancelScope(shield=True):  # let the HTTP stream release its connection
            with trio.move_on_after(5):
                await aclose()


class ContentCache:
    def __init__(
        self,
        fetch: Fetch,
        *,
        into: Into | None = None,
        memory_bytes: int = 256 * 2**20,
        disk_dir: Path | None = None,
        disk_bytes: int = 2 * 2**30,
        small_file_bytes: int = 4 * 2**20,
        range_reads: Callable[[], bool | None] | None = None,
        idle_grace_s: float = 10.0,
        read_ahead_bytes: int = 16 * 2**20,
        pause_after_s: float = 5.0,
    ) -> None:
        self._fetch = fetch
        self._into = into
        self._mem = _CountingLRU(memory_bytes, lambda sys_id: self._prefetched.pop(sys_id, None))
        self._mem_max = memory_bytes
        self._mem_loads: dict[str, _MemLoad] = {}
        self._disk_dir_arg = disk_dir
        self._disk_budget = disk_bytes
        self._small = small_file_bytes
        self._range_reads = range_reads
        self._idle_grace = idle_grace_s
        self._read_ahead = read_ahead_bytes
        self._pause_after = pause_after_s
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # LRU order, oldest first
        self._dir: Path | None = None
        self._private_dir = False
        self._lock_fd: int | None = None
        self._nursery: trio.Nursery | None = None
        self._stack = contextlib.AsyncExitStack()
        self._closed = False
        self._disk_used = 0
        self._counts = dict(
            hits=0,
            misses=0,
            downloads_started=0,
            downloads_active=0,
            bytes_fetched=0,
            evictions=0,
            range_fetches=0,
            prefetches=0,
            prefetch_hits=0,
            paused=0,
            from_memory=0,
        )
        # Prefetched files not read yet: sys_id -> size. Bounded to a quarter of the memory
        # budget so a walk ahead can never push out what readers are using.
        self._prefetched: dict[str, int] = {}

    # ---- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> ContentCache:
        if self._into is not None:
            transfer.share_the_gil()
        self._open_dir()
        try:
            self._nursery = await self._stack.enter_async_context(trio.open_nursery())
        except BaseException:
            self._close_dir()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closed = True
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()
        try:
            await self._stack.aclose()
        finally:
            self._close_dir()

    def _open_dir(self) -> None:
        if self._disk_dir_arg is not None:
            # Ours alone, or refused: no symlink, no directory of another user (snfs.spool).
            path = private_dir(Path(self._disk_dir_arg))
            self._lock_fd = _try_lock(path)
            if self._lock_fd is not None:
                self._dir = path
                self._load_existing()
                return
            log.warning(
                "cache directory %s is in use by another mount; "
                "using a private temporary cache instead",
                path,
            )
        self._dir = Path(tempfile.mkdtemp(prefix="snfs-cache-"))  # created 0700
        self._private_dir = True

    def _load_existing(self) -> None:
        """Drop leftover .part files; adopt complete files from an earlier mount, oldest first."""
        assert self._dir is not None
        found: list[tuple[float, str, int]] = []
        for item in os.scandir(self._dir):
            if not item.is_file(follow_symlinks=False):
                continue
            if item.name.endswith(_PART):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(item.path)
            elif _SYS_ID.fullmatch(item.name):
                st = item.stat(follow_symlinks=False)
                found.append((st.st_mtime, item.name, st.st_size))
        for _mtime, sys_id, size in sorted(found):
            self._entries[sys_id] = _Entry(
                sys_id, self._dir / sys_id, watermark=size, complete=True
            )
            self._disk_used += size
        self._make_room(0, None)

    def _close_dir(self) -> None:
        for entry in list(self._entries.values()):
            if entry.fd is not None:
                os.close(entry.fd)
                entry.fd = None
            if not entry.complete:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
            entry.dead = entry.dead or _closed()
        self._entries.clear()
        self._disk_used = 0
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if self._private_dir and self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    # ---- public API ----------------------------------------------------------------------

    async def read(self, sys_id: str, size: int, offset: int, length: int) -> Buffer:
        """Up to `length` bytes at `offset` of a file of `size` bytes (short only at EOF); a
        view of a download's block when the bytes just landed (never changed later)."""
        _check_id(sys_id)
        end = min(size, offset + length)
        if offset < 0 or offset >= end:
            return b""
        if sys_id not in self._entries and self._fits_memory(size):
            return await self._read_small(sys_id, offset, end)
        return await self._read_disk(sys_id, offset, end)

    def prefetch(self, sys_id: str, size: int) -> bool:
        """Load a small file into memory in the background (snfs.prefetch's hint).

        True when the file is there, loading, or now being loaded; False when the cache takes
        no more prefetches now (too large for memory, or the prefetch budget is spent)."""
        _check_id(sys_id)
        if sys_id in self._mem or sys_id in self._mem_loads or sys_id in self._entries:
            return True
        if self._closed or not self._fits_memory(size):
            return False
        if sum(self._prefetched.values()) + size > self._mem_max // 4:
            return False
        self._prefetched[sys_id] = size
        self._counts["prefetches"] += 1
        self._start_mem_load(sys_id)
        return True

    def forget(self, sys_id: str) -> None:
        """The attachment was deleted: drop its memory and disk copies, fail its waiters."""
        gone = NotFound(f"attachment {sys_id} was deleted")
        self._mem.pop(sys_id, None)
        self._prefetched.pop(sys_id, None)
        load = self._mem_loads.pop(sys_id, None)
        if load is not None:
            load.forgotten = True
            load.error = gone
            load.scope.cancel()
            load.done.set()
        entry = self._entries.get(sys_id)
        if entry is not None:  # every file in our directory has an entry
            self._drop(entry, gone)

    async def copy_to(self, sys_id: str, size: int, dest: Path) -> None:
        """Write the whole content into `dest` (created 0600 / truncated), through the cache."""
        # os.open on a local path does not block meaningfully; the writes go to a thread.
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            offset = 0
            while True:
                chunk = await self.read(sys_id, size, offset, COPY_CHUNK)
                if not chunk:
                    break
                await trio.to_thread.run_sync(_pwrite_all, fd, chunk, offset)
                offset += len(chunk)
        finally:
            os.close(fd)

    def stats(self) -> dict[str, int]:
        return dict(
            self._counts,
            memory_bytes=int(self._mem.currsize),
            disk_bytes=self._disk_used,
            evictions=self._counts["evictions"] + self._mem.evictions,
        )

    # ---- small files: whole file in memory -----------------------------------------------------

    def _fits_memory(self, size: int) -> bool:
        return size <= self._small and size <= self._mem_max

    async def _read_small(self, sys_id: str, offset: int, end: int) -> bytes:
        if self._prefetched.pop(sys_id, None) is not None:
            self._counts["prefetch_hits"] += 1
        data = self._mem.get(sys_id)
        if data is not None:
            self._counts["hits"] += 1
            return data[offset:end]
        self._counts["misses"] += 1
        load = self._mem_loads.get(sys_id)
        if load is None:
            load = self._start_mem_load(sys_id)
        await load.done.wait()
        if load.error is not None:
            raise load.error
        assert load.data is not None
        return load.data[offset:end]

    def _start_mem_load(self, sys_id: str) -> _MemLoad:
        load = _MemLoad()
        self._mem_loads[sys_id] = load
        self._spawn(self._run_mem_load, sys_id, load)
        return load

    async def _run_mem_load(self, sys_id: str, load: _MemLoad) -> None:
        try:
            with load.scope:
                parts: list[bytes] = []
                stream = self._fetch(sys_id, 0)
                try:
                    async for chunk in stream:
                        parts.append(chunk)
                        self._counts["bytes_fetched"] += len(chunk)
                finally:
                    await _aclose(stream)
                load.data = b"".join(parts)
                if not load.forgotten and len(load.data) <= self._mem_max:
                    self._mem[sys_id] = load.data
        except Exception as exc:
            load.error = exc
        finally:
            self._counts["downloads_active"] -= 1
            if sys_id not in self._mem:
                self._prefetched.pop(sys_id, None)  # nothing to read: give the budget back
            if load.data is None and load.error is None:
                load.error = _closed()
            if self._mem_loads.get(sys_id) is load:
                del self._mem_loads[sys_id]
            load.done.set()

    # ---- large files: streamed to disk -----------------------------------------------------------

    async def _read_disk(self, sys_id: str, offset: int, end: int) -> Buffer:
        entry = self._entries.get(sys_id) or self._new_entry(sys_id)
        self._touch(entry)
        entry.wanted = max(entry.wanted, end)
        if entry.has(end):
            self._counts["hits"] += 1
        else:
            self._counts["misses"] += 1
            if offset > entry.watermark + RANGE_AHEAD and self._range_ok():
                self._ensure_download(entry)  # keep filling the cache behind the jump
                return await self._range_read(sys_id, offset, end)
        entry.pins += 1
        try:
            if not entry.has(end):
                await self._wait_for(entry, end)
            return self._pread(entry, offset, end)
        finally:
            entry.pins -= 1
            entry.last_access = trio.current_time()

    def _new_entry(self, sys_id: str) -> _Entry:
        if self._closed or self._dir is None:
            raise _closed()
        path = self._dir / (sys_id + _PART)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        entry = _Entry(sys_id, path, fd=fd)
        self._entries[sys_id] = entry
        return entry

    def _touch(self, entry: _Entry) -> None:
        self._entries.move_to_end(entry.sys_id)
        entry.last_access = trio.current_time()

    async def _wait_for(self, entry: _Entry, end: int) -> None:
        """Wait until [.., end) is on disk; raise what the download we waited on raised."""
        seen: _Download | None = None
        while not entry.has(end):
            if entry.dead is not None:
                raise entry.dead
            if seen is not None and seen.error is not None:
                raise seen.error
            seen = self._ensure_download(entry)
            entry.waiting += 1
            entry.ends.append(end)
            entry.need = min(entry.ends)
            try:
                await entry.progress.wait()
            finally:
                entry.waiting -= 1
                entry.ends.remove(end)
                entry.need = min(entry.ends, default=_NO_NEED)

    def _pread(self, entry: _Entry, offset: int, end: int) -> Buffer:
        if entry.dead is not None:
            raise entry.dead
        end = min(end, entry.watermark)  # the stream may be shorter than size_bytes said
        if offset >= end:
            return b""
        view = entry.in_memory(offset, end)
        if view is not None:
            self._counts["from_memory"] += 1
            return view
        if entry.fd is None:  # adopted from an earlier mount: opened on first use
            entry.fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)
        return _pread_all(entry.fd, end - offset, offset)

    def _notify(self, entry: _Entry) -> None:
        entry.progress.set()
        entry.progress = trio.Event()

    def _ensure_download(self, entry: _Entry) -> _Download:
        if entry.download is None:
            entry.download = _Download()
            self._spawn(self._run_disk_download, entry, entry.download)
        return entry.download

    async def _run_disk_download(self, entry: _Entry, dl: _Download) -> None:
        abandoned = paused = False
        try:
            with dl.scope:
                await self._stream_to_disk(entry)
        except _Abandoned:
            abandoned = True
        except _Paused:
            paused = True  # no error: the partial file stays; the next read resumes after it
        except Exception as exc:
            dl.error = exc
            if getattr(exc, "discard_partial", False):
                # The bytes were not the file's (snfs.errors.NotTheContent): none are kept.
                self._drop(entry, exc)
        finally:
            self._counts["downloads_active"] -= 1
            if not self._counts["downloads_active"]:
                transfer.BLOCKS.drain()  # the blocks go once nobody uses them
            if dl.error is None and not entry.complete and not abandoned and not paused:
                dl.error = entry.dead or _closed()  # cancelled or forgotten
            # (an abandoned download has no error: a reader who arrived meanwhile restarts it)
            if entry.download is dl:
                entry.download = None
            entry.recent.clear()  # its readers were woken; later ones read the file
            if entry.dead is not None and entry.fd is not None:
                os.close(entry.fd)  # _drop leaves the fd to us while we may still write to it
                entry.fd = None
            elif abandoned and entry.pins == 0:
                self._drop(entry, _closed(), evicted=True)
            self._notify(entry)

    async def _stream_to_disk(self, entry: _Entry) -> None:
        if self._into is not None:
            await self._stream_in_worker(entry, self._into)
            return
        stream = self._fetch(entry.sys_id, entry.watermark)
        # Chunks are gathered into large writes (fewer syscalls and wake-ups on the hot path),
        # except while a reader waits: then every chunk goes to disk at once.
        buf = bytearray()
        try:
            async for chunk in stream:
                if entry.dead is not None:  # forgotten while we were waiting for this chunk
                    return
                buf += chunk
                if len(buf) >= transfer.BATCH or entry.waiting:
                    self._append(entry, buf)
                    buf.clear()
                    self._maybe_pause(entry)
        finally:
            if buf and entry.dead is None:
                self._append(entry, buf)  # keep what arrived: a retry resumes after it
            await _aclose(stream)
        if entry.dead is None:
            await self._finish(entry)

    async def _stream_in_worker(self, entry: _Entry, into: Into) -> None:
        """The download's bytes are received, verified and written by a worker thread; this
        task only waits for it, and `_landed` moves the watermark as each batch lands."""
        assert entry.fd is not None
        sink = _DiskSink(self, entry, trio.lowlevel.current_trio_token())
        try:
            await into(entry.sys_id, entry.watermark, sink)
        except Stop:
            if sink.stop is not None:
                raise sink.stop from None  # paused, abandoned
            return  # dropped (forgotten, evicted): nothing to finish
        finally:
            if entry.dead is None:  # the worker has returned: give back what it allocated
                sink.reserve.trim(sink.pos)
        if entry.dead is None:
            await self._finish(entry)

    def _landed(self, sink: _DiskSink) -> None:
        """On the event loop: more bytes of `sink`'s file are on disk. Never raises (it runs
        as a callback of the loop); what stops the worker is set on the sink."""
        entry, (n, landed) = sink.entry, sink.told()
        if entry.dead is not None:
            return  # dropped: its worker sees that before its next write
        entry.keep(landed)
        entry.watermark += n
        self._disk_used += n
        self._counts["bytes_fetched"] += n
        self._notify(entry)
        try:
            # The bytes are written before they are counted: the budget is enforced one
            # batch (1 MiB) late, as pinned entries may exceed it anyway.
            self._make_room(0, entry)
            self._maybe_pause(entry)
        except (_Abandoned, _Paused) as exc:
            sink.stop = exc
        except Exception as exc:  # e.g. an eviction's unlink failing: stop this download
            sink.stop = exc

    def _maybe_pause(self, entry: _Entry) -> None:
        """Stop a download its readers have left (a thumbnailer's 4 KiB read of a 1 GiB file).

        Read-ahead is bounded: once nobody has read the file for `pause_after_s` and the
        download is `read_ahead_bytes` past the furthest byte asked for, it stops and frees its
        connection. A later read resumes after the watermark (on an instance without Range, by
        skipping what is already here)."""
        if (
            not entry.waiting
            and entry.pins == 0
            and entry.watermark >= entry.wanted + self._read_ahead
            and trio.current_time() - entry.last_access >= self._pause_after
        ):
            self._counts["paused"] += 1
            raise _Paused()

    def _append(self, entry: _Entry, chunk: bytes | bytearray) -> None:
        n = len(chunk)
        self._make_room(n, entry)
        assert entry.fd is not None
        _pwrite_all(entry.fd, chunk, entry.watermark)
        entry.watermark += n
        self._disk_used += n
        self._counts["bytes_fetched"] += n
        self._notify(entry)

    async def _finish(self, entry: _Entry) -> None:
        """Publish a complete file under its final name (after fsync when it must persist)."""
        assert self._dir is not None and entry.fd is not None
        if not self._private_dir:
            # Shielded: a file that is complete and verified is kept even when the cache is
            # closing as its last bytes land (an unmount right after a read).
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(os.fsync, entry.fd)
            if entry.dead is not None:
                return
        final = self._dir / entry.sys_id
        os.replace(entry.path, final)
        entry.path = final
        entry.complete = True

    # ---- disk budget -------------------------------------------------------------------

    def _make_room(self, n: int, growing: _Entry | None) -> None:
        """Evict idle LRU entries so `n` more bytes fit; maybe abandon an unread download."""
        if self._disk_used + n <= self._disk_budget:
            return
        for victim in list(self._entries.values()):
            if self._disk_used + n <= self._disk_budget:
                return
            if victim is not growing and victim.pins == 0 and victim.download is None:
                self._drop(victim, _closed(), evicted=True)
        if (
            growing is not None
            and self._disk_used + n > self._disk_budget
            and growing.pins == 0
            and trio.current_time() - growing.last_access > self._idle_grace
        ):
            raise _Abandoned()

    def _drop(self, entry: _Entry, why: BaseException, *, evicted: bool = False) -> None:
        """Remove an entry from the table and the disk; waiters see `why`."""
        if entry.dead is not None:
            return
        if self._entries.get(entry.sys_id) is entry:
            del self._entries[entry.sys_id]
        entry.dead = why
        entry.recent.clear()
        self._disk_used -= entry.watermark
        if evicted:
            self._counts["evictions"] += 1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)
        if entry.download is not None:
            entry.download.scope.cancel()  # its task closes the fd when it stops
        elif entry.fd is not None:
            os.close(entry.fd)
            entry.fd = None
        self._notify(entry)

    # ---- range reads (optional: only with a fetch that can start mid-file cheaply) ---------------

    def _range_ok(self) -> bool:
        probe: object = self._range_reads
        if probe is None:
            probe = getattr(self._fetch, "supports_range", None)
        if callable(probe):
            probe = probe()
        return bool(probe)

    async def _range_read(self, sys_id: str, offset: int, end: int) -> bytes:
        """Serve one far-ahead read with its own fetch; the bytes are not cached."""
        self._counts["range_fetches"] += 1
        parts: list[bytes] = []
        want = end - offset
        stream = self._fetch(sys_id, offset)
        try:
            async for chunk in stream:
                self._counts["bytes_fetched"] += len(chunk)
                parts.append(chunk[:want])
                want -= len(parts[-1])
                if want <= 0:
                    break
        finally:
            await _aclose(stream)
        return b"".join(parts)

    # ---- helpers ------------------------------------------------------------------------

    def _spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._closed or self._nursery is None:
            raise _closed()
        self._counts["downloads_started"] += 1
        self._counts["downloads_active"] += 1  # counted now so stats() is exact before it runs
        self._nursery.start_soon(fn, *args)


class _DiskSink:
    """A disk entry's file as a worker's `snfs.transfer.Sink`: the worker writes each batch
    after the last (pwritev, GIL released) and tells the event loop (`_landed`), without
    waiting for it; the loop answers through `stop`, seen before the next write. One wake-up
    of the loop at a time: batches that land while one is pending are told with it."""

    def __init__(self, cache: ContentCache, entry: _Entry, token: trio.lowlevel.TrioToken):
        assert entry.fd is not None
        self.cache, self.entry, self.token = cache, entry, token
        self.fd, self.pos = entry.fd, entry.watermark
        self.reserve = Reserve(self.fd, self.pos)
        self.stop: BaseException | None = None
        self._lock = threading.Lock()
        self._untold = 0  # bytes written that the loop has not been told of
        self._landed: list[tuple[Block, int]] = []  # and the blocks they lie in
        self._pending = False  # a `_landed` call is queued on the loop

    def urgent(self, ahead: int) -> bool:
        return self.pos + ahead >= self.entry.need

    def put(self, pieces: Sequence[Buffer]) -> None:
        if self.stop is not None or self.entry.dead is not None:
            raise Stop()
        self.reserve.ahead_of(self.pos, sum(map(len, pieces)))
        n = pwritev_all(self.fd, pieces, self.pos)
        # Blocks are kept for readers that wait for them (`_Entry.keep`), and at most the
        # last few: holding more until the loop runs `_landed` takes blocks from the pool for
        # nothing. (`waiting` is the loop's; read here, it may be a batch late.)
        landed = _blocks_of(pieces, self.pos) if self.entry.waiting else []
        self.pos += n
        with self._lock:
            self._untold += n
            self._landed = (self._landed + landed)[-RECENT_BLOCKS:]
            if self._pending:
                return
            self._pending = True
        self.token.run_sync_soon(self.cache._landed, self)

    def told(self) -> tuple[int, list[tuple[Block, int]]]:
        """On the loop: the bytes written since the last call, and the blocks they lie in."""
        with self._lock:
            n, self._untold, self._pending = self._untold, 0, False
            landed, self._landed = self._landed, []
        return n, landed


def _blocks_of(pieces: Sequence[Buffer], pos: int) -> list[tuple[Block, int]]:
    """The blocks that `pieces`, written at `pos`, are views of, each with where its bytes
    written end."""
    landed = []
    for piece in pieces:
        pos += len(piece)
        if isinstance(piece, memoryview) and isinstance(piece.obj, Block):
            landed.append((piece.obj, pos))
    return landed


def _try_lock(path: Path) -> int | None:
    """An exclusive flock on <path>/.lock: its fd, or None when another live cache holds it."""
    fd = os.open(path / _LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _check_id(sys_id: str) -> None:
    if not _SYS_ID.fullmatch(sys_id):
        raise InvalidInput(f"not a valid sys_id: {sys_id!r}")
