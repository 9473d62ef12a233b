"""Issue 18, row by row, without a kernel: the journal is the state.

Each test reproduces one row of issue 18's table with the fake backend (tests/fake_backend.py:
the faults the emulator cannot make on demand) and a killed daemon (`Core.kill`: files closed,
spool lock dropped, memory gone), then checks what the instance ends with. The same rows go
through a real mount in test_mount_write.py / test_mount_writeback.py; the model test
(test_writes_model.py) drives random sequences of the same moves.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

import pyfuse3
import pytest
import trio
import trio.testing

from snfs.errors import ServerError
from snfs.spool import Spool
from snfs.write_states import State
from snfs.writes import REOPENED, RETRY_MAX
from tests.fake_backend import FakeBackend, Hold
from tests.test_writes_core import REC, Core, T, backend, core, retry_until_settled, running

__all__ = ["backend", "core"]  # the fixtures, shared with test_writes_core.py

BOTH = pytest.mark.parametrize("write_back", [False, True], ids=["write-through", "write-back"])


async def remount(backend: FakeBackend, spool: Path, write_back: bool) -> None:
    """The next mount: recovery, then the background retry until nothing is owed."""
    async with running(backend, spool, write_back=write_back) as c:
        await c.writes.recover()
        await retry_until_settled(c)


@BOTH
async def test_row1_fsync_then_more_then_close_then_killed_leaves_one(
    backend: FakeBackend, tmp_path: Path, write_back: bool, autojump_clock: trio.testing.MockClock
) -> None:
    spool = tmp_path / "spool"
    async with running(backend, spool, write_back=write_back) as c:
        fh = await c.create("a.txt")
        await c.write(fh, b"v1")
        await c.ops.fsync(fh, False)  # stored as v1 while open
        assert backend.on_instance(REC) == {"a.txt": [b"v1"]}
        await c.write(fh, b"v2-longer")
        if not write_back:
            backend.fail_uploads.append(ServerError("503", status=503))
        assert await c.close(fh) in (0, errno.EIO)
        [entry] = c.journal()
        assert entry["state"] == "owed"
        assert len(entry["replaces_all"]) == 1  # v1, journaled before v2 is sent
        c.kill()  # before v2 is stored
    await remount(backend, spool, write_back)
    assert backend.on_instance(REC) == {"a.txt": [b"v2-longer"]}


@BOTH
async def test_row3_a_dup_closed_then_killed_mid_write_never_sends_torn_bytes(
    backend: FakeBackend, tmp_path: Path, write_back: bool, autojump_clock: trio.testing.MockClock
) -> None:
    """`{ cmd1; cmd2; } > report.csv` over an attachment: the first descriptor's close hands
    over cmd1's output (its upload fails), cmd2 writes on, the daemon dies. The next mount
    never sends those bytes (no close accepted them) and never deletes the original."""
    backend.put(T, REC, "report.csv", b"original")
    spool = tmp_path / "spool"
    async with running(backend, spool, write_back=write_back) as c:
        fh = await c.open("report.csv")
        await c.write(fh, b"cmd1\n")
        backend.fail_uploads.append(ServerError("503", status=503))
        if write_back:
            backend.upload_gate = trio.Event()  # nothing is sent before the kill
        with contextlib.suppress(pyfuse3.FUSEError):
            await c.ops.flush(fh)  # cmd1 exits: one descriptor closed (write-through: EIO)
        await c.write(fh, b"cmd2 half", 5)  # writing goes on through the other
        [entry] = c.journal()
        assert entry["state"] == "open" and entry["last_error"] == REOPENED
        c.kill()
    backend.upload_gate = None
    backend.fail_uploads.clear()
    async with running(backend, spool, write_back=write_back) as c:
        await c.writes.recover()
        st = c.staged("report.csv")
        assert st.state is State.BLOCKED and st.blocked == REOPENED
        await retry_until_settled(c)
        await c.writes.sync()
        assert backend.on_instance(REC) == {"report.csv": [b"original"]}
        assert c.journal()[0]["state"] == "open"  # kept, shown, for its owner


async def test_row3_a_damaged_file_is_never_sent_after_a_crash(
    backend: FakeBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.put(T, REC, "a.txt", b"original")
    spool = tmp_path / "spool"
    async with running(backend, spool, write_back=True) as c:
        fh = await c.open("a.txt")
        await c.write(fh, b"first")
        real = os.pwrite

        def full(*a: object) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "pwrite", full)
        with pytest.raises(pyfuse3.FUSEError):
            await c.write(fh, b"more", 5)
        monkeypatch.setattr(os, "pwrite", real)
        assert c.journal()[0]["state"] == "open"  # journaled before the failing write
        c.kill()
    await remount(backend, spool, True)
    assert backend.on_instance(REC) == {"a.txt": [b"original"]}
    assert backend.stats.uploads == 0


async def test_row4_a_failed_rename_keeps_the_targets_unsent_bytes(
    backend: FakeBackend, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    backend.put(T, REC, "b.txt", b"bee")
    spool = tmp_path / "spool"
    async with running(backend, spool, write_back=True) as c:
        backend.upload_gate = trio.Event()  # a.txt stays owed
        fh = await c.create("a.txt")
        await c.write(fh, b"unsent")
        assert await c.close(fh) == 0
        backend.fail_renames.append(ServerError("500", status=500))
        with pytest.raises(pyfuse3.FUSEError) as err:
            await c.rename("b.txt", "a.txt")
        assert err.value.errno == errno.EIO
        assert await c.names() == ["a.txt", "b.txt"]
        assert c.staged("a.txt").state is State.OWED
        assert [e["name"] for e in c.journal()] == ["a.txt"]
        backend.upload_gate.set()
        backend.upload_gate = None
        await retry_until_settled(c)
    assert backend.on_instance(REC) == {"a.txt": [b"unsent"], "b.txt": [b"bee"]}


async def test_row6_an_attempt_in_doubt_is_looked_for_after_a_new_save(
    backend: FakeBackend, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """v1 stored, its answer lost, the look-up failed; then v2 is saved: v1's attachment is
    found (by v1's content) and deleted once v2 is stored. One attachment, v2."""
    async with running(backend, tmp_path / "spool") as c:
        fh = await c.create("a.txt")
        await c.write(fh, b"v1")
        backend.in_doubt_uploads = 1
        assert await c.close(fh) == errno.EIO  # stored, answer unreadable
        backend.fail_lookups.append(ServerError("502", status=502))
        await trio.sleep(RETRY_MAX)  # the backoff passes (virtual time)
        await c.writes._retry_due()  # the look-up fails: still in doubt
        assert not backend.fail_lookups and c.staged("a.txt").attempt_started
        fh = await c.open("a.txt")
        await c.write(fh, b"v2")
        assert c.staged("a.txt").doubts  # v1's attempt, remembered by its content
        assert await c.close(fh) == 0
        await retry_until_settled(c)
    assert backend.on_instance(REC) == {"a.txt": [b"v2"]}


async def test_row7_a_journal_that_cannot_be_written_is_never_synced(
    backend: FakeBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = tmp_path / "spool"
    async with running(backend, spool, write_back=True) as c:
        fh = await c.create("a.txt")
        await c.write(fh, b"keep me")
        real = Spool.journal_sync

        def full(self: Spool, *a: object, **k: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(Spool, "journal_sync", full)
        assert await c.close(fh) == errno.ENOSPC
        left = await c.writes.sync()  # the upload cannot journal its attempt either
        assert [st.name for st in left] == ["a.txt"]  # never "synced"
        assert c.staged("a.txt").attempt_started is None  # nothing sent: nothing in doubt
        assert backend.stats.uploads == 0
        monkeypatch.setattr(Spool, "journal_sync", real)
        c.kill()
    async with running(backend, spool, write_back=True) as c:
        await c.writes.recover()  # the entry written at create says "open": bytes kept
        st = c.staged("a.txt")
        assert st.state is State.BLOCKED
        assert os.pread(st.fd, 100, 0) == b"keep me"


async def test_row9_a_listing_older_than_a_save_never_undoes_it(
    backend: FakeBackend, tmp_path: Path
) -> None:
    """A listing fetched before a save and stored after it would point the name at the
    deleted attachment, and the next save would leave two."""
    old = backend.put(T, REC, "a.txt", b"old")
    async with running(backend, tmp_path / "spool") as c:
        assert await c.names() == ["a.txt"]
        gate, listed = trio.Event(), trio.Event()
        real = backend.list_record

        async def slow(table: str, record: str) -> list:
            atts = await real(table, record)  # the instance as it was: the old a.txt
            listed.set()
            await gate.wait()
            return atts

        backend.list_record = slow  # type: ignore[method-assign]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(c.tree._fetch_record, T, REC)  # a refresh, slow to answer
            await listed.wait()
            backend.list_record = real  # type: ignore[method-assign]
            fh = await c.open("a.txt")
            await c.write(fh, b"new")
            assert await c.close(fh) == 0  # stored, the old one deleted
            gate.set()
        assert old.sys_id not in backend.files
        node = await c.tree.lookup_file(T, REC, "a.txt")
        assert node is not None and node.data.sys_id != old.sys_id
        fh = await c.open("a.txt")
        await c.write(fh, b"newer")
        assert await c.close(fh) == 0
    assert backend.on_instance(REC) == {"a.txt": [b"newer"]}


async def test_row10_locks_go_with_their_files(core: Core, backend: FakeBackend) -> None:
    for i in range(50):
        fh = await core.create(f"f{i}.txt")
        await core.write(fh, b"x")
        assert await core.close(fh) == 0
    assert len(backend.files) == 50
    assert core.writes._locks == {}


async def test_row11_no_patch_a_failed_delete_of_the_source_is_owned_and_finished(
    backend: FakeBackend, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    backend.rename_supported = False
    backend.put(T, REC, "a", b"payload")
    async with running(backend, tmp_path / "spool") as c:
        backend.fail_deletes.append(ServerError("500", status=500))
        await c.rename("a", "b")  # the copy is stored; the delete of a fails: owed
        assert await c.names() == ["b"]
        assert c.staged("b").state is State.OWED and c.journal()
        await retry_until_settled(c)
        assert backend.on_instance(REC) == {"b": [b"payload"]}
        await c.unlink("b")
        c.tree.invalidate()
        assert await c.names() == []  # nothing comes back
    assert backend.on_instance(REC) == {}


async def test_row12_no_patch_killed_mid_copy_the_next_mount_finishes_the_rename(
    backend: FakeBackend, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    backend.rename_supported = False
    backend.put(T, REC, "a", b"payload")
    backend.put(T, REC, "b", b"old b")
    spool = tmp_path / "spool"
    async with running(backend, spool) as c:
        hold = Hold(store_first=True)  # the copy is stored, its answer never comes
        backend.hold = hold
        async with trio.open_nursery() as nursery:
            nursery.start_soon(c.rename, "a", "b")
            await hold.started.wait()
            [entry] = c.journal()
            assert entry["name"] == "b" and len(entry["replaces_all"]) == 2
            nursery.cancel_scope.cancel()  # the daemon dies mid-rename
        c.kill()
    await remount(backend, spool, False)
    assert backend.on_instance(REC) == {"b": [b"payload"]}


async def test_a_source_moved_away_never_takes_the_plain_name_from_a_shown_file(
    backend: FakeBackend, tmp_path: Path
) -> None:
    """Found by the model (seed 7013): c.txt moved to another record (its copy owed, so the
    source stays on the instance, hidden), then a.txt renamed to c.txt. The record showed
    `c~00000000.txt`: the hidden source, newer, had taken the plain name."""
    other = "b" * 32
    backend.put(T, REC, "a.txt", b"")
    backend.put(T, REC, "c.txt", b"")  # newer than a.txt
    async with running(backend, tmp_path / "spool", write_back=True) as c:
        assert await c.names() == ["a.txt", "c.txt"]
        dest = c.tree.record_node(T, other)
        await c.ops.rename(c.rec.ino, b"c.txt", dest.ino, b"a.txt", 0)  # its copy is owed
        await c.rename("a.txt", "c.txt")  # renamed on the instance (PATCH)
        c.tree.invalidate()
        assert await c.names() == ["c.txt"]
        await c.writes.sync()
    assert backend.on_instance(REC) == {"c.txt": [b""]}
    assert backend.on_instance(other) == {"a.txt": [b""]}


async def test_no_patch_rename_then_open_at_a_crash_names_what_the_instance_keeps(
    backend: FakeBackend, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """`mv c.txt a.txt` without PATCH, the copy not stored yet, then a.txt opened for writing
    and the daemon killed. The next mount keeps a.txt blocked (its bytes are no close's) and
    the instance keeps c.txt: the mount says so (status, sync, xattr), and `rm a.txt`
    finishes what the user asked for (docs/WRITES.md, "Recovery")."""
    backend.rename_supported = False
    backend.put(T, REC, "c.txt", b"cee")
    backend.put(T, REC, "a.txt", b"old a")
    spool = tmp_path / "spool"
    async with running(backend, spool) as c:
        await c.names()
        backend.fail_uploads.extend(ServerError("503", status=503) for _ in range(20))
        with contextlib.suppress(pyfuse3.FUSEError):
            await c.rename("c.txt", "a.txt")  # moved; the copy's upload is owed
        assert await c.names() == ["a.txt"]
        fh = await c.open("a.txt", os.O_WRONLY)
        await c.write(fh, b"half")
        c.kill()
    backend.fail_uploads.clear()
    async with running(backend, spool) as c:
        await c.writes.recover()
        assert await c.names() == ["a.txt"]
        st = c.staged("a.txt")
        assert st.state is State.BLOCKED
        why = c.writes.describe(st, 0.0)["last_error"]
        assert "c.txt" in str(why) and "a.txt" in str(why), why
        await c.writes.sync()
        assert backend.on_instance(REC) == {"c.txt": [b"cee"], "a.txt": [b"old a"]}
        await c.unlink("a.txt")
    assert backend.on_instance(REC) == {}


@BOTH
async def test_row2_backup_rename_then_new_save_uploads_the_new_bytes_once(
    backend: FakeBackend, tmp_path: Path, write_back: bool, autojump_clock: trio.testing.MockClock
) -> None:
    """vim with uploads failing: a.txt (owed) renamed to a.txt~, a new a.txt saved; clean
    unmount, remount: one a.txt with the new bytes; the backup is held, then sent; sync
    settles."""
    spool = tmp_path / "spool"
    async with running(backend, spool, write_back=write_back) as c:
        fh = await c.create("a.txt")
        await c.write(fh, b"old")
        backend.fail_uploads.extend(ServerError("503", status=503) for _ in range(20))
        await c.close(fh)
        await c.rename("a.txt", "a.txt~")
        assert [e["name"] for e in c.journal()] == ["a.txt~"]  # the entry moved with it
        fh = await c.create("a.txt")
        await c.write(fh, b"new")
        await c.close(fh)
        await c.writes.finish(1.0)  # clean unmount: uploads still failing
        c.kill()
    backend.fail_uploads.clear()
    async with running(backend, spool, write_back=write_back) as c:
        await c.writes.recover()
        assert await c.writes.sync() == []  # sync ends the backup's grace: settled
    assert backend.on_instance(REC) == {"a.txt": [b"new"], "a.txt~": [b"old"]}


async def test_row5_scratch_looking_real_files_reach_the_instance(
    backend: FakeBackend, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    names = ["data.tmp", "notes.txt~", ".env.sample", "quote.part", "4913"]
    async with running(backend, tmp_path / "spool") as c:
        for n in names:
            fh = await c.create(n)
            await c.write(fh, n.encode())
            assert await c.close(fh) == 0
        assert backend.stats.uploads == 0  # every one looks like scratch: held
        assert {st.name for st in c.writes.pending()} >= {"data.tmp", "quote.part", "4913"}
        await trio.sleep(c.writes.hold_seconds + 1)  # the grace passes (virtual time)
        await c.writes._retry_due()
    assert backend.on_instance(REC) == {n: [n.encode()] for n in names}


async def test_row8_desktop_metadata_stays_local_and_shows_so(
    backend: FakeBackend, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    async with running(backend, spool) as c:
        for n in (".DS_Store", ".directory", "Thumbs.db", "desktop.ini", "._a.txt"):
            fh = await c.create(n)
            await c.write(fh, b"meta")
            assert await c.close(fh) == 0
            node = c.writes.local_entry(T, REC, n)
            assert node is not None
            assert c.writes.xattrs(node)["user.snfs.state"] == b"local-only"
        assert await c.writes.sync() == []
        assert len(c.writes.kept_local()) == 5
        c.kill()
    async with running(backend, spool) as c:
        assert await c.writes.recover() == 5  # kept across mounts, still local only
        assert await c.writes.sync() == []
    assert backend.stats.uploads == 0


async def test_local_only_is_extendable_by_option(backend: FakeBackend, tmp_path: Path) -> None:
    async with running(backend, tmp_path / "spool", local_only=["*.bak"]) as c:
        fh = await c.create("x.bak")
        await c.write(fh, b"b")
        assert await c.close(fh) == 0
        assert c.staged("x.bak").local_only
    assert backend.stats.uploads == 0


@BOTH
async def test_vim_probes_created_closed_and_removed_within_the_grace_are_never_sent(
    backend: FakeBackend, tmp_path: Path, write_back: bool
) -> None:
    """vim's `.name.swx` and `4913` probes: created, closed unwritten, removed at once."""
    async with running(backend, tmp_path / "spool", write_back=write_back) as c:
        for probe in (".ex.txt.swx", "4913"):
            fh = await c.create(probe)
            assert await c.close(fh) == 0  # release of a never-written file: held too
            await c.unlink(probe)
        await c.writes.sync()
    assert backend.stats.uploads == 0


async def test_a_blocked_file_fsynced_then_moved_without_patch_is_a_move_not_an_eio(
    backend: FakeBackend, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Found by the model (seed 4072): a file open when the daemon died is blocked; reopened
    and fsynced, it is stored (fsync is the writer's word for its bytes); moved then to
    another record without PATCH, the rename answered EIO (`stored -> blocked`: the stored
    file still carried its old blocked reason)."""
    backend.rename_supported = False
    other = "b" * 32
    spool = tmp_path / "spool"
    async with running(backend, spool) as c:
        fh = await c.create("a.txt")
        await c.write(fh, b"half")
        c.kill()  # open at the crash: blocked at the next mount
    async with running(backend, spool) as c:
        await c.writes.recover()
        assert c.staged("a.txt").blocked == REOPENED
        fh = await c.open("a.txt", os.O_WRONLY)
        await c.ops.fsync(fh, False)  # stored as it is
        assert backend.on_instance(REC) == {"a.txt": [b"half"]}
        assert c.staged("a.txt").blocked == ""
        dest = c.tree.record_node(T, other)
        await c.ops.rename(c.rec.ino, b"a.txt", dest.ino, b"a.txt", 0)  # copy, then delete
        assert await c.close(fh) == 0
        await c.writes.sync()
    assert backend.on_instance(REC) == {}
    assert backend.on_instance(other) == {"a.txt": [b"half"]}
