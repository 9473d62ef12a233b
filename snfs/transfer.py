"""The data path of one transfer, run in a worker thread of its own.

A download's bytes are received, hashed (SHA-256) and written into the content cache's file
by one thread per transfer; an upload's bytes are read from the spool and hashed by one. The
trio event loop only coordinates: it takes the session, starts each attempt, learns of each
batch that landed (`trio.lowlevel.TrioToken.run_sync_soon`, which never blocks the worker),
and decides on retries, resumes, pauses and budgets. The threads release the GIL where the
bytes are handled (socket receive, zlib, hashlib on buffers of more than 2 KiB, pwritev), so
parallel transfers use several cores; the Python work per byte is kept small by batches of
about 1 MiB (`BATCH`).

Hashing in a worker thread per 64 KiB chunk, with the receive left on the event loop, made a
GIL convoy (measured: it tripled the main thread's write time); a thread that owns the whole
path of its transfer hands the GIL over only once per batch.

Tests slow the worker down through `fault` (a hook called in the worker before each batch is
written): see tests/test_transfer.py.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import sys
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar, cast

import trio

BATCH = 1 << 20  # bytes a worker gathers before one vectored write when no reader waits
BLOCK = 1 << 20  # bytes per receive buffer (`Block`); the kernel's largest FUSE read
IOV_MAX = 1024  # pieces per pwritev (Linux's UIO_MAXIOV)
SWITCH_INTERVAL = 0.0005  # s: see share_the_gil
RESERVE = 16 << 20  # bytes of disk a download worker allocates ahead of its writes (`reserve`)
_FALLOC_FL_KEEP_SIZE = 1

T = TypeVar("T")
Buffer = bytes | bytearray | memoryview  # a piece of a body

if TYPE_CHECKING:
    from hashlib import _Hash as Hash

# Test hook: called in the worker thread before each batch is written, with the sink and the
# size of the batch. Never set in production.
fault: Callable[[object, int], None] | None = None


class Sink(Protocol):
    """Where a worker thread puts a download's bytes, in order (the content cache's file).

    Both methods are called in the worker thread."""

    def urgent(self, ahead: int) -> bool:
        """A reader waits for bytes that the `ahead` bytes gathered reach: write them now
        rather than gather a whole batch."""
        ...

    def put(self, pieces: Sequence[Buffer]) -> None:
        """Write `pieces` after the bytes put before; raise `Stop` when told to stop. A piece
        that is a view of a `Block` may be kept and read later: its bytes never change."""
        ...


class Stop(Exception):
    """The sink's owner asked the worker to stop (the file was dropped, the download paused
    or abandoned): the transfer ends without an error of its own."""


class Block(bytearray):
    """A buffer of `BLOCK` bytes (fewer at the start of a resumed transfer) that holds the
    file's bytes from offset `base` on, received straight into it. Blocks are aligned to
    file offsets, so a 1 MiB FUSE read at a 1 MiB boundary lies in one block, and the content
    cache answers a reader waiting for bytes just received with a view of the block
    (`snfs.content_cache`): no read back from the cache file, no copy. The bytes of a block
    that were handed to the sink are never written again."""

    base: int


def new_block(base: int, size: int) -> Block:
    """A block for `size` bytes from file offset `base` on: one of the pool's when it is a
    whole block and the pool has one free (`BlockPool`), else a new one."""
    block = BLOCKS.take(size)
    block.base = base
    return block


def _allocate(size: int) -> Block:
    """A new block of `size` bytes. Its memory is not zeroed first (only received bytes are
    ever read from it); where the interpreter cannot resize a bytearray in place, it is."""
    block = Block()
    if _resize is None or _resize(block, size) != 0:
        block.extend(bytes(size))
    return block


class BlockPool:
    """Whole blocks, used again once nothing else refers to them.

    A new block is new memory to the process: the kernel faults in and zeroes each of its
    pages (measured, 8 parallel reads of 32 MiB on a fresh mount: 82,000 minor faults and
    1.52-1.60 s of CPU per GiB with a new block each time, 30,000-37,000 and 1.40-1.44 s with
    the pool). A block is free when only the pool refers to it: no
    worker, cache entry or view of it (a view holds its block) is left. At most `keep` are
    kept; `drain` lets them go when no download runs."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._blocks: list[Block] = []
        self._lock = threading.Lock()

    def take(self, size: int) -> Block:
        if size != BLOCK:
            return _allocate(size)
        with self._lock:
            for block in self._blocks:
                # The list's reference, `block` and getrefcount's own argument: no other.
                if sys.getrefcount(block) == 3:
                    return block
            block = _allocate(size)
            if len(self._blocks) < self.keep:
                self._blocks.append(block)
            return block

    def drain(self) -> None:
        with self._lock:
            self._blocks = []


def _bytearray_resize() -> Callable[[bytearray, int], int] | None:
    """CPython's `PyByteArray_Resize`: grows a bytearray without zeroing the new bytes
    (`bytearray(n)` writes n zeros, then the receive writes every byte again)."""
    try:
        fn = ctypes.pythonapi.PyByteArray_Resize
    except AttributeError:  # not CPython
        return None
    fn.argtypes, fn.restype = (ctypes.py_object, ctypes.c_ssize_t), ctypes.c_int
    return cast(Callable[[bytearray, int], int], fn)


_resize = _bytearray_resize()
# Enough for 8 parallel downloads, each with the blocks a cache entry keeps for its readers
# (`content_cache.RECENT_BLOCKS`) and the ones its worker fills.
BLOCKS = BlockPool(keep=48)


class Blocks:
    """The bytes of one body, gathered in `Block`s for the sink. The file's last byte (the
    last byte received, where the file's size `total` is not known) is held back until the
    body is verified (`release`), so a wrong body never completes in the sink: a reader never
    gets its end, and the cache never keeps it.

    Bytes come either received straight into `room()` (then `added(n)`), or as pieces of a
    stream (`add`, one copy)."""

    def __init__(self, pos: int, total: int | None = None) -> None:
        self.pos = pos  # file offset of the next byte
        self.taken = pos  # bytes before this offset were handed over (`take`)
        self.total = total
        self.seen = pos  # bytes before this offset were handed to `fresh`
        self.released = False
        self._blocks: list[Block] = []  # the blocks with bytes not taken yet; the last one fills

    def room(self) -> memoryview:
        """The free part of the current block (a new one when it is full)."""
        last = self._blocks[-1] if self._blocks else None
        if last is None or self.pos == last.base + len(last):
            last = new_block(self.pos, BLOCK - self.pos % BLOCK)
            self._blocks.append(last)
        return memoryview(last)[self.pos - last.base :]

    def added(self, n: int) -> None:
        """`n` bytes were received into the start of `room()`."""
        self.pos += n

    def add(self, piece: bytes) -> None:
        view = memoryview(piece)
        while view:
            room = self.room()
            n = min(len(room), len(view))
            room[:n] = view[:n]
            self.pos += n
            view = view[n:]

    @property
    def ready(self) -> int:
        """How many bytes `take` would hand over."""
        return self._end() - self.taken

    def due(self, sink: Sink) -> bool:
        """Whether to put now: a whole batch is ready, or less that a reader waits for."""
        ready = self.ready
        return ready >= BATCH or (ready > 0 and sink.urgent(ready))

    def _end(self) -> int:
        if self.released:
            return self.pos
        last = self.pos - 1 if self.total is None else min(self.pos, self.total - 1)
        return max(self.taken, last)

    def take(self) -> list[memoryview]:
        """Views of the bytes not handed over yet (but the held one), in order."""
        end = self._end()
        pieces, self.taken = self._views(self.taken, end), end
        # The block being filled stays, and one with bytes not taken or not seen yet.
        keep = min(self.taken, self.seen)
        self._blocks = [b for b in self._blocks[:-1] if b.base + len(b) > keep] + self._blocks[-1:]
        return pieces

    def fresh(self) -> list[memoryview]:
        """Views of the bytes received since the last call, in order (for the body's check:
        hashing a batch at once hands the GIL over once, not once per receive)."""
        views, self.seen = self._views(self.seen, self.pos), self.pos
        return views

    def _views(self, start: int, end: int) -> list[memoryview]:
        views = []
        for block in self._blocks:
            a, b = max(start, block.base), min(end, block.base + len(block))
            if a < b:
                views.append(memoryview(block)[a - block.base : b - block.base])
        return views

    def release(self) -> None:
        """The body is verified: the held byte may go too."""
        self.released = True


def share_the_gil() -> None:
    """Let the event loop take the GIL from a busy worker within 0.5 ms, not CPython's 5 ms:
    each batch a worker writes wakes the loop (a reader waits for it), and a loop that waits
    5 ms for the GIL at each wake-up would make the workers' speed a latency's."""
    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))


def put(sink: Sink, pieces: Sequence[Buffer]) -> int:
    """Hand `pieces` to the sink (through the test hook); the bytes handed."""
    n = sum(map(len, pieces))
    if pieces:
        if fault is not None:
            fault(sink, n)
        sink.put(pieces)
    return n


def pwritev_all(fd: int, pieces: Sequence[Buffer], offset: int) -> int:
    """Write `pieces` at `offset` with as few syscalls as the kernel allows; bytes written."""
    total = 0
    views = [memoryview(p) for p in pieces if p]
    while views:
        n = os.pwritev(fd, views[:IOV_MAX], offset + total)
        total += n
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if n:
            views[0] = views[0][n:]
    return total


class Reserve:
    """Disk blocks allocated ahead of a worker's writes into one file (`fallocate` with
    FALLOC_FL_KEEP_SIZE: the file's size still grows only with the bytes written).

    Writing into blocks already allocated costs the kernel less than allocating them write by
    write (ext4's delayed allocation: measured 0.044 → 0.026 s of CPU per 256 MiB written in
    1 MiB `pwritev`s). At most `RESERVE` bytes past what was written are allocated; `trim`
    gives back what was not used (a truncate to the size frees blocks past it). Where the file
    system cannot allocate ahead, it is not tried again and the writes are as before."""

    supported = True  # shared: one file system's answer holds for the next files

    def __init__(self, fd: int, pos: int) -> None:
        self.fd, self.end = fd, pos

    def ahead_of(self, pos: int, n: int) -> None:
        """In the worker, before `n` bytes are written at `pos`."""
        if pos + n <= self.end or not Reserve.supported:
            return
        start = max(pos, self.end)
        err = _fallocate(self.fd, _FALLOC_FL_KEEP_SIZE, start, pos + n + RESERVE - start)
        if err == 0:
            self.end = pos + n + RESERVE
        elif err in (errno.EOPNOTSUPP, errno.ENOSYS):
            Reserve.supported = False
        # (any other error, e.g. ENOSPC: the write itself will say what it has to)

    def trim(self, pos: int) -> None:
        """On the event loop, once the worker has stopped at `pos` (the file's size)."""
        if self.end > pos:
            self.end = pos
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, pos)


def _fallocate(fd: int, mode: int, offset: int, length: int) -> int:
    """fallocate(2): 0, or its errno (ENOSYS where the C library has none)."""
    fn = getattr(_libc(), "fallocate", None)
    if fn is None:
        return errno.ENOSYS
    if fn(fd, mode, ctypes.c_int64(offset), ctypes.c_int64(length)) == 0:
        return 0
    return ctypes.get_errno()


_LIBC: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


async def in_worker(fn: Callable[[], T], on_cancel: Callable[[], None]) -> T:
    """`fn()` in a worker thread. When the caller is cancelled, `on_cancel()` runs on the
    event loop (it must make `fn` return soon: a stop flag, a socket shut down) and the
    caller waits, shielded, until `fn` has returned: a worker never outlives the files and
    sockets its caller owns."""
    done = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def run() -> T:
        try:
            return fn()
        finally:
            token.run_sync_soon(done.set)

    try:
        return await trio.to_thread.run_sync(run, abandon_on_cancel=True)
    except trio.Cancelled:
        on_cancel()
        with trio.CancelScope(shield=True):
            await done.wait()
        raise


async def feed(chunks: AsyncIterator[bytes], sink: Sink, pos: int) -> None:
    """For a backend without a worker path of its own: the bytes of an async stream put
    into `sink` (whose next byte is at file offset `pos`) from a worker thread, in batches."""
    blocks, stopped = Blocks(pos), False
    try:
        async for chunk in chunks:
            blocks.add(chunk)
            if blocks.due(sink):
                await trio.to_thread.run_sync(put, sink, blocks.take())
    except Stop:
        stopped = True
        raise
    finally:
        # Everything the stream gave is the file's (a stream holds back its own last piece
        # until it has verified the body), so what arrived stays: a resume starts after it.
        blocks.release()
        if blocks.ready and not stopped:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(put, sink, blocks.take())
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            with trio.CancelScope(shield=True):
                await aclose()


async def file_chunks(path: Path, want: int, digest: Hash | None) -> AsyncGenerator[bytes, None]:
    """Up to `want` bytes of the file at `path`, in batches of `BATCH`, read and hashed into
    `digest` by a worker thread of their own while the event loop sends the batch before
    (an upload's read → hash → send). An error of the file is raised here."""
    send, recv = trio.open_memory_channel[bytes | OSError](1)
    token = trio.lowlevel.current_trio_token()

    def work() -> None:
        try:
            with open(path, "rb") as f:
                left = want
                while left > 0:
                    chunk = f.read(min(BATCH, left))
                    if not chunk:
                        break
                    left -= len(chunk)
                    if digest is not None:
                        digest.update(chunk)
                    trio.from_thread.run(send.send, chunk, trio_token=token)
        except OSError as e:
            with contextlib.suppress(trio.BrokenResourceError, trio.RunFinishedError):
                trio.from_thread.run(send.send, e, trio_token=token)
        except (trio.BrokenResourceError, trio.RunFinishedError, trio.Cancelled):
            pass  # the consumer left (the upload failed or was cancelled)
        finally:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(send.close, trio_token=token)

    trio.lowlevel.start_thread_soon(work, lambda outcome: None, name="snfs upload reader")
    with recv:  # closing it makes the worker's next send fail: it stops
        async for item in recv:
            if isinstance(item, OSError):
                raise item
            yield item
