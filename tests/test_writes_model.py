"""The write path against a reference model (issue 18, item 4): hypothesis stateful testing.

mountpoint-s3 proves its file system against a small reference model; this does the same for
the kernel-free core (`Operations` and `Writes` over tests/fake_backend.py, as the kernel would
call them). Random sequences of open, write, dup'd close (flush alone), close, fsync, truncate,
rename (onto existing names and into the other record), unlink and create, on a few names in
two records, with backend faults (a failed upload, a hung one, one stored then answered with an
error, one stored whose answer is lost, failed look-ups and deletes, no PATCH rename) and a
crash-and-remount at any step (memory dropped, the core rebuilt from the spool and journal as
the next mount would). After every step the instance and the local view must agree with the
model of docs/SEMANTICS.md's promises ("Writing"):

- the instance only ever holds, under a name, content some close (or fsync) handed over under
  that name, or that the name held before: never torn bytes, never a dropped file's bytes;
- the directory shows exactly the names the user left, and every file reads as written (after
  a crash a file that was open for writing is kept, blocked, as it is on disk);
- once faults stop, every handle is closed and `sync` has run: one attachment per name, with
  the bytes of its last accepted close; nothing else on the instance; a name the user removed
  never comes back; desktop metadata never leaves.

A failure prints the seed and the shrunk sequence of steps. `make test` runs 100 examples of
the fixed seed 18; SNFS_SOAK_SEED gives another (`random`: a random one, printed);
SNFS_SOAK_MINUTES runs rounds of 200 examples (seed, seed+1, ...) for that long (`make soak`).
"""

from __future__ import annotations

import errno
import logging
import os
import random
import re
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, TypeVar

import pyfuse3
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from snfs.attrs import Owner, Timeouts
from snfs.content_cache import ContentCache
from snfs.control import Control
from snfs.errors import ServerError
from snfs.fs import Operations
from snfs.inodes import Kind
from snfs.spool import Spool
from snfs.tree import Tree
from snfs.write_states import State
from snfs.writes import Writes
from tests.fake_backend import FakeBackend, Hold

T = "incident"
RECORDS = ("a" * 32, "b" * 32)
NAMES = ("a.txt", "b.txt", "c.txt", "d.tmp", ".DS_Store")
LOCAL_ONLY = {".DS_Store"}
R = TypeVar("R")


# -- a trio run in a thread: hypothesis's rules are plain functions -------------------------------


# Each step of the model takes this long in virtual time (strictly increasing times, as on a
# real machine, but the same on every run of an example).
STEP = 0.01
EPOCH = 1_767_225_600.0  # the virtual wall clock starts at 2026-01-01 00:00 UTC


class Loop:
    """One trio run for one test case; each rule runs one coroutine in it and waits.

    Time is virtual and moves only with the steps: trio's clock is a MockClock, and the wall
    clock (when an attempt started, the instance's creation times, a held name's grace) is
    EPOCH plus it. A replayed example therefore behaves exactly as the first run (hypothesis
    can shrink it), however loaded the machine; `wait` moves both clocks on by seconds."""

    def __init__(self) -> None:
        self.clock = trio.testing.MockClock()
        self._ready = threading.Event()
        self._thread = threading.Thread(
            target=trio.run, args=(self._main,), kwargs={"clock": self.clock}, daemon=True
        )
        self._thread.start()
        self._ready.wait()

    def wall(self) -> float:
        return EPOCH + self.clock.current_time()

    async def _main(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def run(self, fn: Callable[..., Awaitable[R]], *args: Any) -> R:
        async def step() -> R:
            self.clock.jump(STEP)
            return await fn(*args)

        return trio.from_thread.run(step, trio_token=self.token)

    def wait(self, seconds: float) -> None:
        trio.from_thread.run_sync(self.clock.jump, seconds, trio_token=self.token)

    def close(self) -> None:
        trio.from_thread.run_sync(self._stop.set, trio_token=self.token)
        self._thread.join(10)


class Mount:
    """One run of the daemon's core: a tree, a spool, writes, operations; a content cache
    held open by a task of the loop (a nursery is left by the task that entered it)."""

    def __init__(
        self, backend: FakeBackend, spool_dir: Path, write_back: bool, wall: Callable[[], float]
    ) -> None:
        self.backend, self.spool_dir, self.write_back = backend, spool_dir, write_back
        self.wall = wall

    async def start(self, nursery: trio.Nursery) -> None:
        self._done = trio.Event()
        await nursery.start(self._hold_cache)
        self.tree = Tree(self.backend, clock=trio.current_time, wall=self.wall)
        self.spool = Spool(self.spool_dir)
        # doubt_wait 0: the fake instance never stores a request late, so its first look-up is
        # final; late stores: tests/test_writes_late_store.py
        self.writes = Writes(
            self.tree,
            self.backend,
            self.cache,
            self.spool,
            write_back=self.write_back,
            doubt_wait=0.0,
            wall=self.wall,
        )
        self.ops = Operations(
            self.tree,
            self.cache,
            self.writes,
            Control(self.tree.inodes, dict),
            Owner(0, 0),
            Timeouts(),
        )
        await self.writes.recover()

    async def _hold_cache(self, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        async with AsyncExitStack() as stack:
            self.cache = await stack.enter_async_context(
                ContentCache(lambda sid, off: self.backend.stream(sid, offset=off))
            )
            task_status.started()
            await self._done.wait()

    def kill(self) -> None:
        """The daemon dies: the kernel closes its files and drops its spool lock."""
        for node in self.writes._staged_nodes():
            node.data.close()
        assert self.spool._lock_fd is not None
        os.close(self.spool._lock_fd)
        self.spool._lock_fd = None

    def rec(self, r: int) -> int:
        return self.tree.record_node(T, RECORDS[r]).ino


# -- the reference model --------------------------------------------------------------------------


@dataclass(eq=False)
class Obj:
    """A file as the user sees it (an inode): its bytes, and what closes handed over."""

    current: bytes = b""
    accepted: bytes | None = None  # the bytes of the last accepted close (None: never closed)
    history: set[bytes] = field(default_factory=set)  # every accepted content, initial too
    wrote: bool = False  # changed since the last accepted close
    doubtful: bool = False  # open for writing at a crash: kept blocked, bytes as on disk
    writers: int = 0

    def accept(self) -> None:
        self.accepted = self.current
        self.history.add(self.current)
        self.wrote = False
        self.doubtful = False


@dataclass
class Handle:
    obj: Obj
    fh: int


def _pwrite(data: bytes, off: int, buf: bytes) -> bytes:
    data = data.ljust(off, b"\0")
    return data[:off] + buf + data[off + len(buf) :]


def _errno(e: BaseException) -> int:
    return e.errno if isinstance(e, pyfuse3.FUSEError) else -1


class Bugs(logging.Handler):
    """Records what a handler answered EIO for because of a bug (a traceback in the log)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.seen.append(self.format(record))


# A second attachment of one name, as the listing names it (snfs.names): an upload in doubt
# that stored may show so until the retry's look-up adopts it.
_DEDUP = re.compile(r"~[0-9a-f]{8}")


class WritesModel(RuleBasedStateMachine):
    """See the module docstring. Names: (record index, name)."""

    def __init__(self) -> None:
        super().__init__()
        self.bugs = Bugs()
        logging.getLogger("snfs").addHandler(self.bugs)
        self.loop = Loop()
        self._tmp = TemporaryDirectory()
        self.backend = FakeBackend()
        self.backend.wall = self.loop.wall
        self.names: dict[tuple[int, str], Obj] = {}
        # Per name: every content the instance may hold under it (initial, accepted, renamed in)
        self.allowed: dict[tuple[int, str], set[bytes]] = {}
        self.handles: list[Handle] = []
        self.counter = 0
        self.mount: Mount | None = None

    # -- set-up and tear-down --

    @initialize(write_back=st.booleans(), patch=st.booleans())
    def start(self, write_back: bool, patch: bool) -> None:
        self.write_back = write_back
        self.backend.rename_supported = patch
        for r, name, data in ((0, "a.txt", b"A0"), (1, "b.txt", b"B0")):
            self.backend.put(T, RECORDS[r], name, data)
            self.names[(r, name)] = Obj(data, data, {data})
            self.allowed[(r, name)] = {data}
        self._remount()

    def teardown(self) -> None:
        logging.getLogger("snfs").removeHandler(self.bugs)
        if self.mount is not None and self.mount.spool._lock_fd is not None:
            self._kill()
        self.loop.close()
        self._tmp.cleanup()

    def _remount(self) -> None:
        self.mount = Mount(
            self.backend, Path(self._tmp.name) / "spool", self.write_back, self.loop.wall
        )
        self.loop.run(self.mount.start, self.loop.nursery)

    @property
    def m(self) -> Mount:
        assert self.mount is not None
        return self.mount

    def _bytes(self) -> bytes:
        self.counter += 1
        return f"<{self.counter}>".encode()

    def _bind(self, key: tuple[int, str], obj: Obj) -> None:
        self.names[key] = obj
        self.allowed.setdefault(key, set()).update(obj.history)

    def _call(self, fn: Callable[..., Awaitable[R]], *args: Any) -> tuple[R | None, int]:
        """Run one operation; returns (result, errno or 0)."""

        async def call() -> tuple[R | None, int]:
            try:
                return await fn(*args), 0
            except pyfuse3.FUSEError as e:
                return None, _errno(e)

        return self.loop.run(call)

    async def _ino(self, r: int, name: str) -> int:
        attr = await self.m.ops.lookup(self.m.rec(r), name.encode())
        return int(attr.st_ino)

    # -- the user's operations --

    @rule(r=st.integers(0, 1), name=st.sampled_from(NAMES))
    def create(self, r: int, name: str) -> None:
        info, err = self._call(self.m.ops.create, self.m.rec(r), name.encode(), 0o644, os.O_WRONLY)
        if err:
            assert err in (errno.EIO, errno.EAGAIN), err  # a failed listing: nothing staged
            return
        assert info is not None
        obj = Obj(wrote=True, writers=1)
        self._bind((r, name), obj)
        self.handles.append(Handle(obj, info[0].fh))

    @rule(r=st.integers(0, 1), name=st.sampled_from(NAMES), trunc=st.booleans())
    def open_for_writing(self, r: int, name: str, trunc: bool) -> None:
        obj = self.names.get((r, name))
        if obj is None:
            return

        async def op() -> Any:
            flags = os.O_RDWR | (os.O_TRUNC if trunc else 0)
            return await self.m.ops.open(await self._ino(r, name), flags)

        info, err = self._call(op)
        if err:
            assert err in (errno.EIO, errno.EAGAIN), err
            return
        assert info is not None
        if trunc:
            obj.current, obj.wrote, obj.doubtful = b"", True, False
        obj.writers += 1
        self.handles.append(Handle(obj, info.fh))

    @precondition(lambda self: self.handles)
    @rule(i=st.integers(0, 7), append=st.booleans(), size=st.integers(1, 3))
    def write(self, i: int, append: bool, size: int) -> None:
        h = self.handles[i % len(self.handles)]
        buf = self._bytes() * size
        off = len(h.obj.current) if append else 0
        _, err = self._call(self.m.ops.write, h.fh, off, buf)
        assert err == 0, err
        h.obj.current = _pwrite(h.obj.current, off, buf)
        h.obj.wrote, h.obj.doubtful = True, False

    @precondition(lambda self: self.handles)
    @rule(i=st.integers(0, 7), size=st.integers(0, 4))
    def truncate(self, i: int, size: int) -> None:
        h = self.handles[i % len(self.handles)]

        async def op() -> None:  # ftruncate(2): Operations.setattr passes it on as is
            await self.m.writes.truncate(self.m.ops._handle(h.fh).node, size, has_handle=True)

        _, err = self._call(op)
        if err:
            assert err in (errno.EIO, errno.EAGAIN), err
            return
        h.obj.current = h.obj.current[:size].ljust(size, b"\0")
        h.obj.wrote, h.obj.doubtful = True, False

    def _accepts(self, obj: Obj) -> bool:
        return obj in self.names.values()

    @precondition(lambda self: self.handles)
    @rule(i=st.integers(0, 7))
    def close_dup(self, i: int) -> None:
        """One of two dup'd descriptors is closed: flush alone; writing goes on."""
        h = self.handles[i % len(self.handles)]
        _, err = self._call(self.m.ops.flush, h.fh)
        assert err in (0, errno.EIO, errno.EAGAIN), err
        if h.obj.wrote and self._accepts(h.obj) and not h.obj.doubtful:
            self._accept(h.obj)

    @precondition(lambda self: self.handles)
    @rule(i=st.integers(0, 7))
    def fsync(self, i: int) -> None:
        h = self.handles[i % len(self.handles)]
        _, err = self._call(self.m.ops.fsync, h.fh, False)
        assert err in (0, errno.EIO, errno.EAGAIN), err
        if self._accepts(h.obj):
            self._accept(h.obj)

    @precondition(lambda self: self.handles)
    @rule(i=st.integers(0, 7))
    def close(self, i: int) -> None:
        h = self.handles.pop(i % len(self.handles))
        self._close(h)

    def _close(self, h: Handle) -> None:
        _, err = self._call(self.m.ops.flush, h.fh)
        assert err in (0, errno.EIO, errno.EAGAIN), err
        _, err2 = self._call(self.m.ops.release, h.fh)
        assert err2 == 0, err2
        h.obj.writers -= 1
        obj = h.obj
        if self._accepts(obj) and not obj.doubtful and (obj.wrote or obj.accepted is None):
            self._accept(obj)

    def _accept(self, obj: Obj) -> None:
        obj.accept()
        for key, o in self.names.items():
            if o is obj:
                self.allowed.setdefault(key, set()).add(obj.current)

    @rule(
        r=st.integers(0, 1),
        name=st.sampled_from(NAMES),
        r2=st.integers(0, 1),
        name2=st.sampled_from([n for n in NAMES if n not in LOCAL_ONLY]),
    )
    def rename(self, r: int, name: str, r2: int, name2: str) -> None:
        src, dst = (r, name), (r2, name2)
        if src not in self.names or src == dst:
            return
        ino = self._ino_of(r, name)
        _, err = self._call(
            self.m.ops.rename, self.m.rec(r), name.encode(), self.m.rec(r2), name2.encode(), 0
        )
        if err:
            assert err in (errno.EIO, errno.EAGAIN, errno.EPERM), err
            if self._ino_of(r2, name2) != ino:  # the rename itself failed: nothing moved
                return
            # The move happened, its upload failed: owed under the new name.
        self._move(src, dst)

    def _move(self, src: tuple[int, str], dst: tuple[int, str]) -> None:
        obj = self.names.pop(src)
        self._bind(dst, obj)

    def _ino_of(self, r: int, name: str) -> int | None:
        ino, err = self._call(self._ino, r, name)
        return ino if not err else None

    @rule(r=st.integers(0, 1), name=st.sampled_from(NAMES))
    def unlink(self, r: int, name: str) -> None:
        if (r, name) not in self.names:
            return
        ino = self._ino_of(r, name)
        _, err = self._call(self.m.ops.unlink, self.m.rec(r), name.encode())
        if err:
            assert err in (errno.EIO, errno.EAGAIN), err
            assert self._ino_of(r, name) == ino, "a failed rm must leave the file as it was"
            return
        del self.names[(r, name)]

    # -- the instance misbehaves --

    @rule(
        kind=st.sampled_from(
            ["fail", "in doubt", "lookup fails", "delete fails", "list fails", "rename fails"]
        )
    )
    def fault(self, kind: str) -> None:
        b = self.backend
        if kind == "fail":
            b.fail_uploads.append(ServerError("503 from the fault rule", status=503))
        elif kind == "in doubt":
            b.in_doubt_uploads += 1
        elif kind == "lookup fails":
            b.fail_lookups.append(ServerError("lookup: 502", status=502))
        elif kind == "delete fails":
            b.fail_deletes.append(ServerError("delete: 500", status=500))
        elif kind == "list fails":
            b.fail_lists.append(ServerError("list: 500", status=500))
        else:
            b.fail_renames.append(ServerError("rename: 500", status=500))

    @rule()
    def retry(self) -> None:
        """The background retry's pass, every backoff over (no real time passes)."""

        async def op() -> None:
            for node in self.m.writes._staged_nodes():
                if node.data.state is State.OWED and node.data.hold_until == 0:
                    node.data.next_try = 0.0
            await self.m.writes._retry_due()

        self.loop.run(op)

    # -- the daemon dies --

    @rule()
    def crash(self) -> None:
        self._crash()

    @rule(lost_answer=st.booleans(), during_close=st.booleans(), i=st.integers(0, 7))
    def crash_during_upload(self, lost_answer: bool, during_close: bool, i: int) -> None:
        """An upload hangs (or stores, then its answer is lost) and the daemon dies in it."""
        hold = Hold(store_first=lost_answer)
        self.backend.hold = hold
        h = self.handles.pop(i % len(self.handles)) if during_close and self.handles else None

        async def op() -> None:
            async with trio.open_nursery() as nursery:
                done = trio.Event()

                async def run() -> None:
                    try:
                        if h is not None:
                            try:
                                await self.m.ops.flush(h.fh)
                            finally:
                                await self.m.ops.release(h.fh)
                        else:
                            await self.m.writes.sync()
                    except pyfuse3.FUSEError:
                        pass
                    finally:
                        done.set()

                async def started() -> None:
                    await hold.started.wait()
                    done.set()

                nursery.start_soon(run)
                nursery.start_soon(started)
                await done.wait()
                nursery.cancel_scope.cancel()  # the daemon dies mid-request

        self.loop.run(op)
        self.backend.hold = None
        if h is not None:
            h.obj.writers -= 1
            if self._accepts(h.obj) and (h.obj.wrote or h.obj.accepted is None):
                # The close was cut off: it may or may not count. Either is allowed.
                for key, o in self.names.items():
                    if o is h.obj:
                        self.allowed.setdefault(key, set()).add(h.obj.current)
                h.obj.history.add(h.obj.current)
                h.obj.doubtful = True
        self._crash()

    def _kill(self) -> None:
        self.m.kill()
        trio.from_thread.run_sync(self.m._done.set, trio_token=self.loop.token)

    def _crash(self) -> None:
        self._kill()
        for h in self.handles:
            h.obj.writers -= 1
            h.obj.doubtful = True  # open for writing at the crash
        self.handles.clear()
        self._remount()
        # A file that was open is kept as it is on disk: the model learns its bytes.
        for (r, name), obj in self.names.items():
            if obj.doubtful:
                obj.current = self._read(r, name)
                obj.wrote = False
                node = self.loop.run(
                    self.m.ops._child, self.m.tree.record_node(T, RECORDS[r]), name
                )
                if node is not None and node.kind is Kind.FILE:
                    obj.accept()  # nothing was kept: the name shows its attachment again
                    self.allowed[(r, name)].add(obj.current)

    # -- what the user and the instance see --

    def _listing(self, r: int) -> list[str]:
        self.m.tree.invalidate()  # a fresh listing: a removed name must not come back

        async def op() -> list[str]:
            return [
                n
                for n, _ in await self.m.ops._record_entries(self.m.tree.record_node(T, RECORDS[r]))
            ]

        for _ in range(3):  # a listing fault injected by the fault rule: look again
            try:
                return self.loop.run(op)
            except ServerError:
                continue
        raise AssertionError("listing failed three times")

    def _read(self, r: int, name: str) -> bytes:
        async def op() -> bytes:
            info = await self.m.ops.open(await self._ino(r, name), os.O_RDONLY)
            try:
                out = b""
                while chunk := await self.m.ops.read(info.fh, len(out), 1 << 16):
                    out += chunk
                return out
            finally:
                await self.m.ops.release(info.fh)

        return self.loop.run(op)

    @invariant()
    def no_bug_answered_eio(self) -> None:
        assert not self.bugs.seen, self.bugs.seen[0]

    def _doubt_names(self, r: int) -> set[str]:
        """Names under which an attempt in doubt may have stored an attachment not known yet
        (it shows until the retry's look-up finds it)."""
        out: set[str] = set()
        for node in self.m.writes._staged_nodes():
            s = node.data
            if s.attempt_started and s.record == RECORDS[r]:
                out.add(s.name)
            out.update(d[5] for d in s.doubts if d[4] == RECORDS[r])
        return out

    @invariant()
    def instance_holds_only_accepted_bytes(self) -> None:
        if self.mount is None:
            return
        for r, rec in enumerate(RECORDS):
            for name, contents in self.backend.on_instance(rec).items():
                allowed = self.allowed.get((r, name), set())
                for data in contents:
                    assert data in allowed, (r, name, data, allowed)
                assert name not in LOCAL_ONLY, name

    @invariant()
    def local_view_is_the_users(self) -> None:
        if self.mount is None:
            return
        self.backend.fail_lists.clear()
        for r in range(2):
            shown = sorted(self._listing(r))
            expected = sorted(n for (rr, n) in self.names if rr == r)
            doubts = self._doubt_names(r)
            if doubts:
                shown = [n for n in shown if n in expected or not (n in doubts or _DEDUP.search(n))]
            assert shown == expected, (r, shown, expected)
            for name in expected:
                node = self.m.writes.local_entry(T, RECORDS[r], name)
                if node is not None and node.kind is Kind.LOCAL and node.data.damaged:
                    continue
                assert self._read(r, name) == self.names[(r, name)].current, (r, name)

    # -- faults stop: everything closed, synced, compared exactly --

    @rule()
    def settle(self) -> None:
        b = self.backend
        b.fail_uploads.clear()
        b.fail_lookups.clear()
        b.fail_deletes.clear()
        b.fail_renames.clear()
        b.in_doubt_uploads = 0
        for h in list(self.handles):
            self._close(h)
        self.handles.clear()
        # A file kept blocked by a crash: its owner saves it again.
        for (r, name), obj in list(self.names.items()):
            if obj.doubtful or self._blocked(r, name):
                self.open_for_writing(r, name, True)
                h = self.handles.pop()
                buf = self._bytes()
                _, err = self._call(self.m.ops.write, h.fh, 0, buf)
                assert err == 0
                h.obj.current, h.obj.wrote, h.obj.doubtful = buf, True, False
                self._close(h)
        for _ in range(5):
            left = self.loop.run(self.m.writes.sync)
            if not left:
                break
        assert not left, [(s.name, s.state, s.blocked or s.last_error) for s in left]
        for r, rec in enumerate(RECORDS):
            on = self.backend.on_instance(rec)
            want = {
                n: [o.accepted]
                for (rr, n), o in self.names.items()
                if rr == r and n not in LOCAL_ONLY
            }
            assert on == want, (r, on, want)
        kept = {st.name for st in self.m.writes.kept_local()}
        assert kept == {n for (_, n) in self.names if n in LOCAL_ONLY}

    def _blocked(self, r: int, name: str) -> bool:
        node = self.m.writes.local_entry(T, RECORDS[r], name)
        return node is not None and node.kind is Kind.LOCAL and node.data.state is State.BLOCKED


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        stateful_step_count=30,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


# A soak runs as long as asked (`make soak`): the per-test timeout follows it.
SOAK_MINUTES = float(os.environ.get("SNFS_SOAK_MINUTES") or 0)


@pytest.mark.timeout(int(SOAK_MINUTES * 60) + 600)
def test_writes_against_the_model() -> None:
    """Bounded in `make test` (well under a minute); SNFS_SOAK_MINUTES runs it for longer."""
    # `make test` runs a fixed seed (a merge is never red by chance); a soak gives its own,
    # or a random one with SNFS_SOAK_SEED=random.
    given = os.environ.get("SNFS_SOAK_SEED") or "18"
    base = random.randrange(2**32) if given == "random" else int(given)
    minutes = SOAK_MINUTES
    end = time.monotonic() + minutes * 60
    round_ = 0
    while True:
        this = base + round_
        print(f"writes model: seed {this} (SNFS_SOAK_SEED={this} reproduces it)", flush=True)
        try:
            run_state_machine_as_test(
                seed(this)(WritesModel), settings=_settings(200 if minutes else 100)
            )
        except BaseException:
            print(f"writes model: FAILED with seed {this}", flush=True)
            raise
        round_ += 1
        if time.monotonic() >= end:
            return
