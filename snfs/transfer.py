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
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import trio

BATCH = 1 << 20  # bytes a worker gathers before one vectored write when no reader waits
IOV_MAX = 1024  # pieces per pwritev (Linux's UIO_MAXIOV)
SWITCH_INTERVAL = 0.0005  # s: see share_the_gil
RESERVE = 16 << 20  # bytes of disk a download worker allocates ahead of its writes (`reserve`)
_FALLOC_FL_KEEP_SIZE = 1

T = TypeVar("T")

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

    def put(self, pieces: list[bytes]) -> None:
        """Write `pieces` after the bytes put before; raise `Stop` when told to stop."""
        ...


class Stop(Exception):
    """The sink's owner asked the worker to stop (the file was dropped, the download paused
    or abandoned): the transfer ends without an error of its own."""


class Gather:
    """The pieces of a body gathered for the next write. The last piece is held back until
    the body is verified, so a wrong body never completes in the sink."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.size = 0
        self.held = b""

    def add(self, part: bytes) -> None:
        if self.held:
            self.pieces.append(self.held)
            self.size += len(self.held)
        self.held = part

    def take(self) -> list[bytes]:
        pieces, self.pieces, self.size = self.pieces, [], 0
        return pieces

    def release(self) -> None:
        """The body is verified: the held piece may go too."""
        self.add(b"")


def share_the_gil() -> None:
    """Let the event loop take the GIL from a busy worker within 0.5 ms, not CPython's 5 ms:
    each batch a worker writes wakes the loop (a reader waits for it), and a loop that waits
    5 ms for the GIL at each wake-up would make the workers' speed a latency's."""
    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))


def put(sink: Sink, pieces: list[bytes]) -> int:
    """Hand `pieces` to the sink (through the test hook); the bytes handed."""
    n = sum(map(len, pieces))
    if pieces:
        if fault is not None:
            fault(sink, n)
        sink.put(pieces)
    return n


def pwritev_all(fd: int, pieces: list[bytes], offset: int) -> int:
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


async def feed(chunks: AsyncIterator[bytes], sink: Sink) -> None:
    """For a backend without a worker path of its own: the bytes of an async stream put
    into `sink` from a worker thread, in batches."""
    gather, stopped = Gather(), False
    try:
        async for chunk in chunks:
            gather.add(chunk)
            if gather.size >= BATCH or (gather.pieces and sink.urgent(gather.size)):
                await trio.to_thread.run_sync(put, sink, gather.take())
    except Stop:
        stopped = True
        raise
    finally:
        # Everything the stream gave is the file's (a stream holds back its own last piece
        # until it has verified the body), so what arrived stays: a resume starts after it.
        gather.release()
        if gather.pieces and not stopped:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(put, sink, gather.take())
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
