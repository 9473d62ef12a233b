"""The write path without a kernel: `Operations` and `Writes` driven directly.

Each test here reproduces one row of issue 12 (a race, or a local fault) deterministically. A
fake backend (tests/fake_backend.py) stands in for the instance because these faults cannot be
made on demand by the emulator: an upload held at an exact point by a trio Event, one that
hangs, fails, or stores and then answers with an error (in doubt). Time is trio's MockClock
(`autojump_clock`) wherever a retry delay is involved; no test sleeps. The end-to-end
behaviour is checked against the real emulator through a real mount in test_mount_write.py.
"""

from __future__ import annotations

import errno
import json
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pyfuse3
import pytest
import trio
import trio.testing

from snfs.attrs import Owner, Timeouts
from snfs.content_cache import ContentCache
from snfs.control import Control
from snfs.errors import ExtensionRefused, ServerError
from snfs.fs import Operations
from snfs.inodes import Kind
from snfs.spool import Spool
from snfs.tree import Tree
from snfs.write_states import TRANSITIONS, BadTransition, Staged, State
from snfs.writes import RETRY_MAX, Writes
from tests.fake_backend import FakeBackend, Hold

T = "incident"
REC = "a" * 32


class Core:
    """One mount's write side, without FUSE: calls go in as the kernel would make them."""

    def __init__(
        self, backend: FakeBackend, spool_dir: Path, cache: ContentCache, **writes_kw: Any
    ) -> None:
        self.backend = backend
        self.spool_dir = spool_dir
        self.tree = Tree(backend, clock=trio.current_time)
        self.spool = Spool(spool_dir)
        self.writes = Writes(self.tree, backend, cache, self.spool, **writes_kw)
        self.ops = Operations(
            self.tree, cache, self.writes, Control(self.tree.inodes, dict), Owner(0, 0), Timeouts()
        )
        self.rec = self.tree.record_node(T, REC)

    async def create(self, name: str) -> int:
        fi, _ = await self.ops.create(self.rec.ino, name.encode(), 0o644, os.O_WRONLY)
        return fi.fh

    async def open(self, name: str, flags: int = os.O_WRONLY | os.O_TRUNC) -> int:
        attr = await self.ops.lookup(self.rec.ino, name.encode())
        fi = await self.ops.open(attr.st_ino, flags)
        return fi.fh

    async def write(self, fh: int, data: bytes, off: int = 0) -> int:
        return await self.ops.write(fh, off, data)

    async def close(self, fh: int) -> int:
        """close(2): flush, then release (always); returns flush's errno (0 for success)."""
        try:
            await self.ops.flush(fh)
            return 0
        except pyfuse3.FUSEError as e:
            return e.errno
        finally:
            await self.ops.release(fh)

    async def unlink(self, name: str) -> None:
        await self.ops.unlink(self.rec.ino, name.encode())

    async def rename(self, old: str, new: str) -> None:
        await self.ops.rename(self.rec.ino, old.encode(), self.rec.ino, new.encode(), 0)

    async def names(self) -> list[str]:
        return [n for n, _ in await self.ops._record_entries(self.rec)]

    def staged(self, name: str) -> Staged:
        node = self.writes.local_entry(T, REC, name)
        assert node is not None and node.kind is Kind.LOCAL, name
        return node.data

    def journal(self) -> list[dict]:
        # Entries are removed by worker threads (settle/discard) while a test polls: one that
        # vanishes between the glob and the read is simply gone (writes are atomic renames).
        entries = []
        for p in sorted(self.spool_dir.glob("*.json")):
            try:
                entries.append(json.loads(p.read_text()))
            except FileNotFoundError:
                continue
        return entries

    def kill(self) -> None:
        """The daemon dies here: the kernel would close its files and drop its spool lock."""
        for node in self.writes._staged_nodes():
            node.data.close()
        assert self.spool._lock_fd is not None
        os.close(self.spool._lock_fd)


@asynccontextmanager
async def running(backend: FakeBackend, spool_dir: Path, **writes_kw: Any) -> AsyncIterator[Core]:
    async with ContentCache(lambda sid, off: backend.stream(sid, offset=off)) as cache:
        yield Core(backend, spool_dir, cache, **writes_kw)


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
async def core(backend: FakeBackend, tmp_path: Path) -> AsyncIterator[Core]:
    async with running(backend, tmp_path / "spool") as c:
        yield c


async def retry_until_settled(core: Core) -> None:
    """Let virtual time (MockClock) pass every backoff, then run the retry pass, until nothing
    is owed. The pass is awaited directly: with an autojump clock a sleeping test would race
    the journal's fsync thread."""
    for _ in range(20):
        if not any(st.owed for st in core.writes.pending()):
            return
        await trio.sleep(RETRY_MAX)  # costs no real time
        await core.writes._retry_due()
    raise AssertionError("still owed after 20 retry passes")


# -- the state machine itself -------------------------------------------------------------------


def test_transition_table_is_closed_and_dropped_is_final() -> None:
    assert set(TRANSITIONS) == set(State)
    assert TRANSITIONS[State.DROPPED] == frozenset()
    assert State.DROPPED not in TRANSITIONS[State.UPLOADING]  # unlink waits for the upload
    st = Staged("x", T, REC, "a.txt", -1, state=State.DROPPED)
    with pytest.raises(BadTransition):
        st.move(State.UPLOADING)


async def test_plain_create_write_close_uploads_once(core: Core, backend: FakeBackend) -> None:
    fh = await core.create("a.txt")
    await core.write(fh, b"hello")
    assert await core.close(fh) == 0
    assert backend.on_instance(REC) == {"a.txt": [b"hello"]}
    assert core.journal() == [] and list(core.spool_dir.glob("*.data")) == []


# -- row 1: recovery never takes the replaced attachment for the upload ------------------------


async def test_row1_recovery_never_deletes_the_attachment_it_matches(
    backend: FakeBackend, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Re-save the same bytes, fail the upload, kill the daemon, remount: the old code found the
    attachment being replaced (same name, size, hash, recent) and deleted it as "already
    stored": both copies gone. It must be re-uploaded, then the old one deleted."""
    old = backend.put(T, REC, "same.txt", b"same bytes")
    async with running(backend, tmp_path / "spool") as c1:
        fh = await c1.open("same.txt")
        await c1.write(fh, b"same bytes")
        backend.fail_uploads.append(ServerError("503"))
        assert await c1.close(fh) == errno.EIO
        c1.kill()
    async with running(backend, tmp_path / "spool") as c2:
        assert await c2.writes.recover() == 1
        await c2.writes._retry_due()
        assert backend.on_instance(REC) == {"same.txt": [b"same bytes"]}
        assert old.sys_id not in backend.files  # replaced by a new attachment, not kept twice
        assert c2.journal() == []


async def test_row1_no_hash_means_upload_again_never_delete(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A backend without hashes (EasyVista) cannot tell a same-size file from ours: the file is
    sent again, and the old attachment is deleted only after that."""
    backend = FakeBackend(hashes=False)
    backend.put(T, REC, "doc.bin", b"1234")
    async with running(backend, tmp_path / "spool") as c1:
        fh = await c1.open("doc.bin")
        await c1.write(fh, b"abcd")  # same size, other content
        backend.in_doubt_uploads = 1  # stored, but the answer was lost
        assert await c1.close(fh) == errno.EIO
        c1.kill()
    async with running(backend, tmp_path / "spool") as c2:
        await c2.writes.recover()
        await c2.writes._retry_due()
    # Sent again (a duplicate of the new content at worst); the new content is never lost.
    assert set(backend.on_instance(REC)["doc.bin"]) == {b"abcd"}
    assert backend.stats.uploads == 2


# -- row 2: shutdown never uploads a file open for writing --------------------------------------


async def test_row2_shutdown_keeps_an_open_file_unsent(core: Core, backend: FakeBackend) -> None:
    backend.put(T, REC, "big.txt", b"old content")
    fh = await core.open("big.txt")
    await core.write(fh, b"half wri")  # the writer is still going when the daemon stops
    await core.writes.finish(30)
    assert backend.stats.uploads == 0
    assert backend.on_instance(REC) == {"big.txt": [b"old content"]}  # nothing deleted
    [entry] = core.journal()
    assert entry["blocked"] and "open for writing" in entry["last_error"]
    assert core.staged("big.txt").state is State.BLOCKED


async def test_row2_blocked_open_file_is_shown_after_remount_not_sent(
    backend: FakeBackend, tmp_path: Path
) -> None:
    async with running(backend, tmp_path / "spool") as c1:
        fh = await c1.create("new.txt")
        await c1.write(fh, b"partial")
        await c1.writes.finish(30)
        c1.kill()
    async with running(backend, tmp_path / "spool") as c2:
        await c2.writes.recover()
        await c2.writes._retry_due()
        assert backend.stats.uploads == 0
        assert "new.txt" in await c2.names()
        assert c2.staged("new.txt").state is State.BLOCKED


# -- row 3: rm and mv wait for an upload in flight; writes after rm are never sent ---------------


async def test_row3_rm_during_close_upload(core: Core, backend: FakeBackend) -> None:
    fh = await core.create("a.txt")
    await core.write(fh, b"data")
    backend.hold = hold = Hold()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(core.close, fh)
        await hold.started.wait()
        nursery.start_soon(core.unlink, "a.txt")
        await trio.testing.wait_all_tasks_blocked()
        hold.release.set()
    assert backend.on_instance(REC) == {}  # the upload landed, then rm deleted it
    assert "a.txt" not in await core.names()


async def test_row3_writes_after_rm_are_never_uploaded(core: Core, backend: FakeBackend) -> None:
    fh = await core.create("a.txt")
    await core.write(fh, b"one")
    await core.ops.flush(fh)
    await core.unlink("a.txt")
    await core.write(fh, b"two", 3)  # still open: POSIX lets it write
    assert await core.close(fh) == 0
    assert backend.stats.uploads == 1 and backend.on_instance(REC) == {}
    assert list(core.spool_dir.glob("*")) == [core.spool_dir / ".lock"]


async def test_row3_mv_during_upload_keeps_the_replaced_file(
    core: Core, backend: FakeBackend
) -> None:
    old = backend.put(T, REC, "a.txt", b"v1")
    fh = await core.open("a.txt")
    await core.write(fh, b"v2")
    backend.hold = hold = Hold()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(core.close, fh)
        await hold.started.wait()
        nursery.start_soon(core.rename, "a.txt", "b.txt")
        await trio.testing.wait_all_tasks_blocked()
        assert old.sys_id in backend.files  # not deleted before its replacement is stored
        hold.release.set()
    assert backend.on_instance(REC) == {"b.txt": [b"v2"]}
    assert await core.names() == ["b.txt"]


# -- row 4: a failed local write is never uploaded ----------------------------------------------


async def test_an_answer_naming_the_replaced_attachment_is_not_stored(
    core: Core, backend: FakeBackend
) -> None:
    """A 2xx answer whose sys_id is the attachment being replaced is no new attachment: taking
    it as stored would delete the only copy. The save fails and nothing is deleted."""
    original = backend.put(T, REC, "a.txt", b"original")
    fh = await core.open("a.txt")
    await core.write(fh, b"new")
    backend.answer_with = original
    assert await core.close(fh) != 0
    assert backend.stats.deletes == 0
    assert backend.on_instance(REC) == {"a.txt": [b"original"]}


async def test_row4_failed_write_keeps_the_original(
    core: Core, backend: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.put(T, REC, "a.txt", b"original")
    fh = await core.open("a.txt")
    await core.write(fh, b"new ")
    real = os.pwrite

    def full(fd: int, data: bytes, off: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(pyfuse3.FUSEError) as e:
        await core.write(fh, b"content", 4)
    assert e.value.errno == errno.ENOSPC
    monkeypatch.setattr(os, "pwrite", real)
    assert await core.close(fh) == errno.EIO  # close reports it too
    assert backend.stats.uploads == 0
    assert backend.on_instance(REC) == {"a.txt": [b"original"]}
    assert await core.names() == ["a.txt"]
    assert core.writes.local_entries(T, REC) == []  # back to the attachment
    assert list(core.spool_dir.glob("*.data")) == []


async def test_row4_failed_write_of_a_new_file_stays_blocked(
    core: Core, backend: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    fh = await core.create("n.txt")
    monkeypatch.setattr(os, "pwrite", lambda *a: (_ for _ in ()).throw(OSError(errno.EIO, "EIO")))
    with pytest.raises(pyfuse3.FUSEError):
        await core.write(fh, b"x")
    monkeypatch.undo()
    assert await core.close(fh) == errno.EIO
    assert backend.stats.uploads == 0
    assert core.staged("n.txt").state is State.BLOCKED
    fh = await core.open("n.txt")  # O_TRUNC: a fresh start heals it
    await core.write(fh, b"good")
    assert await core.close(fh) == 0
    assert backend.on_instance(REC) == {"n.txt": [b"good"]}


# -- row 5: two writers of one attachment ---------------------------------------------------------


async def test_row5_two_appenders_share_one_staged_copy(core: Core, backend: FakeBackend) -> None:
    backend.put(T, REC, "log.txt", b"0")
    backend.stream_gate = gate = trio.Event()
    fhs: list[int] = []

    async def opener() -> None:
        fhs.append(await core.open("log.txt", os.O_WRONLY | os.O_APPEND))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(opener)
        nursery.start_soon(opener)
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
    await core.write(fhs[0], b"1", 1)
    await core.write(fhs[1], b"2", 2)
    assert [await core.close(fh) for fh in fhs] == [0, 0]
    assert backend.on_instance(REC) == {"log.txt": [b"012"]}
    assert list(core.spool_dir.glob("*.data")) == []  # no orphaned copy


# -- row 6: renamed out of blocked, then a transient error: still retried -----------------------


async def test_row6_renamed_out_of_blocked_is_retried(
    core: Core, backend: FakeBackend, autojump_clock: trio.testing.MockClock
) -> None:
    fh = await core.create("tool.exe")
    await core.write(fh, b"MZ")
    backend.fail_uploads.append(ExtensionRefused("extension refused"))
    assert await core.close(fh) == errno.EPERM
    assert core.staged("tool.exe").state is State.BLOCKED
    backend.fail_uploads.append(ServerError("503"))
    # The rename is done once the name changed hands: answered so (an error would leave the
    # kernel's old view of both names), the failed upload is owed and retried.
    await core.rename("tool.exe", "tool.ext")
    assert await core.names() == ["tool.ext"]
    assert core.staged("tool.ext").state is State.OWED
    await retry_until_settled(core)
    assert backend.on_instance(REC) == {"tool.ext": [b"MZ"]}


async def test_a_scratch_file_renamed_over_an_attachment_whose_upload_fails_is_renamed(
    core: Core, backend: FakeBackend, autojump_clock: trio.testing.MockClock
) -> None:
    """rsync's temp file renamed over the attachment, the upload answered 503: `mv` succeeds
    (the name has changed hands; an EIO left the kernel showing the old attachment's inode
    under the name, and the next open staged that attachment as `a~<sys_id>.txt`, found by
    the soak, seed 205), the name shows the new file, and the retry replaces the attachment."""
    old = backend.put(T, REC, "a.txt", b"old")
    fh = await core.create(".a.txt.x1Yz9Q")
    await core.write(fh, b"new")
    assert await core.close(fh) == 0  # a scratch name: held, nothing sent
    backend.fail_uploads.append(ServerError("503", status=503))
    await core.rename(".a.txt.x1Yz9Q", "a.txt")
    assert await core.names() == ["a.txt"]
    st = core.staged("a.txt")
    assert st.state is State.OWED and st.replaces == [old.sys_id]
    await retry_until_settled(core)
    assert backend.on_instance(REC) == {"a.txt": [b"new"]}


# -- row 7: a failed create leaves nothing ---------------------------------------------------------


async def test_row7_failed_create_leaves_no_ghost(core: Core, backend: FakeBackend) -> None:
    backend.fail_lists.append(ServerError("503"))
    with pytest.raises(pyfuse3.FUSEError) as e:
        await core.create("ghost.txt")
    assert e.value.errno == errno.EIO
    assert core.writes.local_entries(T, REC) == []
    assert await core.names() == []
    assert list(core.spool_dir.glob("*.data")) == []


# -- row 8: leftover spool bytes are removed -------------------------------------------------------


async def test_row8_failed_replace_open_leaves_no_bytes(core: Core, backend: FakeBackend) -> None:
    backend.put(T, REC, "a.txt", b"content")
    backend.fail_streams.append(ServerError("503"))
    with pytest.raises(pyfuse3.FUSEError):
        await core.open("a.txt", os.O_RDWR)
    assert list(core.spool_dir.glob("*.data")) == []
    assert core.writes.local_entries(T, REC) == []


async def test_a_closed_scratch_file_of_a_dead_run_is_held_then_sent(
    backend: FakeBackend, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Issue 18, row 5: a scratch-looking name is no reason to lose a closed file. The next
    mount does not sweep it: it is held for the rest of its grace, then uploaded."""
    async with running(backend, tmp_path / "spool") as c1:
        fh = await c1.create(".a.txt.swp")
        await c1.write(fh, b"swap")
        assert await c1.close(fh) == 0
        assert backend.stats.uploads == 0  # held: not at close
        assert [e["state"] for e in c1.journal()] == ["owed"]
        c1.kill()
    async with running(backend, tmp_path / "spool") as c2:
        assert await c2.writes.recover() == 1
        assert len(list(c2.spool_dir.glob("*.data"))) == 1
        await c2.writes.sync()  # sync ends the grace at once
        assert backend.on_instance(REC) == {".a.txt.swp": [b"swap"]}
        assert c2.journal() == []


# -- row 9: an upload in doubt is looked for before it is sent again -----------------------------


async def test_row9_attempt_is_journaled_before_sending(core: Core, backend: FakeBackend) -> None:
    fh = await core.create("a.txt")
    await core.write(fh, b"x")
    backend.hold = hold = Hold()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(core.close, fh)
        await hold.started.wait()
        [entry] = core.journal()
        assert entry["attempt_started"] is not None and entry["stored"] is None
        hold.release.set()
    assert core.journal() == []


async def test_row9_in_doubt_upload_is_not_stored_twice(
    core: Core, backend: FakeBackend, autojump_clock: trio.testing.MockClock
) -> None:
    fh = await core.create("a.txt")
    await core.write(fh, b"once")
    backend.in_doubt_uploads = 1
    assert await core.close(fh) == errno.EIO
    await retry_until_settled(core)
    assert backend.on_instance(REC) == {"a.txt": [b"once"]}
    assert backend.stats.uploads == 1 and backend.stats.lookups == 1


async def test_row9_cancelled_upload_is_looked_for_after_remount(
    backend: FakeBackend, tmp_path: Path
) -> None:
    async with running(backend, tmp_path / "spool") as c1:
        fh = await c1.create("a.txt")
        await c1.write(fh, b"body")
        backend.hold = hold = Hold()
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(c1.ops.flush, fh)
                await hold.started.wait()
                # The instance stores it; the answer never arrives (SIGTERM, cut connection).
                backend.put(T, REC, "a.txt", b"body")
                scope.cancel()
        assert c1.staged("a.txt").state is State.OWED
        c1.kill()
    async with running(backend, tmp_path / "spool") as c2:
        await c2.writes.recover()
        await c2.writes._retry_due()
    assert backend.on_instance(REC) == {"a.txt": [b"body"]}
    assert backend.stats.uploads == 1 and backend.stats.lookups == 1


# -- row 10: the journal's fsync runs off the trio thread ----------------------------------------


async def test_row10_slow_fsync_does_not_stall_the_loop(core: Core) -> None:
    """The journal's fsync is held until the trio loop itself releases it: possible only if the
    fsync runs in a worker thread (on the loop's thread, `from_thread` refuses to run)."""
    entered = trio.Event()
    released = threading.Event()

    def slow_fsync(fd: int) -> None:
        trio.from_thread.run_sync(entered.set)  # RuntimeError on the trio thread itself
        assert released.wait(timeout=10)
        os.fsync(fd)

    core.spool._fsync = slow_fsync  # type: ignore[method-assign]
    fh = await core.create("a.txt")
    await core.write(fh, b"x")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(core.close, fh)
            await entered.wait()  # the disk is "slow", and the loop still runs
            released.set()
    assert core.backend.on_instance(REC) == {"a.txt": [b"x"]}


async def test_rm_of_a_stored_file(core: Core, backend: FakeBackend) -> None:
    fh = await core.create("gone.txt")
    await core.write(fh, b"x")
    assert await core.close(fh) == 0
    await core.unlink("gone.txt")
    assert backend.on_instance(REC) == {}


async def test_scratch_file_renamed_to_real_name_is_uploaded_once(
    core: Core, backend: FakeBackend
) -> None:
    fh = await core.create(".f0.txt.AbC123")
    await core.write(fh, b"rsync")
    assert await core.close(fh) == 0
    assert backend.stats.uploads == 0
    await core.rename(".f0.txt.AbC123", "f0.txt")
    assert backend.on_instance(REC) == {"f0.txt": [b"rsync"]} and backend.stats.uploads == 1


async def test_row15_odd_instance_names_list_and_open(core: Core, backend: FakeBackend) -> None:
    """An attachment named "" and one with a lone surrogate: the listing still works, every
    name is non-empty valid UTF-8, and each opens to its own content."""
    backend.put(T, REC, "", b"empty name")
    backend.put(T, REC, "x\ud800.txt", b"surrogate")
    backend.put(T, REC, "ok.txt", b"ok")
    shown = await core.names()
    assert len(shown) == 3
    for name in shown:
        assert name and os.fsencode(name).decode("utf-8") == name
        attr = await core.ops.lookup(core.rec.ino, os.fsencode(name))
        fi = await core.ops.open(attr.st_ino, os.O_RDONLY)
        assert await core.ops.read(fi.fh, 0, 100) in (b"empty name", b"surrogate", b"ok")
