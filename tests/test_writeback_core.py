"""Write-back (`--write-back`) without a kernel: `Operations` and `Writes` driven directly.

Same harness as test_writes_core.py: a fake backend (tests/fake_backend.py) stands in for the
instance because these races need uploads held at an exact point (a trio Event), failed or hung
on demand, and a count of uploads in flight; the emulator cannot do that deterministically.
Retry delays run on trio's MockClock (`autojump_clock`). Waiting for the background uploaders
uses `settled()`, a polling helper with a deadline, never a fixed sleep. The end-to-end
behaviour against the real emulator is in test_mount_writeback.py.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pyfuse3
import pytest
import trio
import trio.testing

from snfs.errors import ExtensionRefused, ServerError
from snfs.write_states import State
from snfs.writes import LARGE_UPLOAD
from tests.fake_backend import FakeBackend, Hold
from tests.support.waiting import eventually_async
from tests.test_writes_core import REC, Core, T, backend, running

__all__ = ["backend"]  # the fixture, shared with test_writes_core


async def settled(pred: Callable[[], bool]) -> None:
    """Poll (with a deadline) until `pred()`: the uploaders run in other tasks and fsync in
    worker threads, so there is no single event to wait for."""

    async def check() -> bool:
        return pred()

    await eventually_async(check, timeout=10, interval=0.001)


@asynccontextmanager
async def write_back(
    backend: FakeBackend, spool: Path, *, pool: bool = True, **kw: object
) -> AsyncIterator[tuple[Core, list[tuple[str, str]]]]:
    """A write-back mount's core, with its background uploaders running (unless `pool` is
    False), and the desktop alerts it raised."""
    alerts: list[tuple[str, str]] = []
    async with (
        running(
            backend, spool, write_back=True, alert=lambda s, b: alerts.append((s, b)), **kw
        ) as core,
        trio.open_nursery() as nursery,
    ):
        if pool:
            await nursery.start(core.writes.run_retries)
        yield core, alerts
        nursery.cancel_scope.cancel()


def nothing_owed(core: Core) -> Callable[[], bool]:
    return lambda: not core.writes.pending()


async def test_close_returns_before_the_upload_with_bytes_and_entry_durable(
    backend: FakeBackend, tmp_path: Path
) -> None:
    """close answers while the upload has not even started (held), and by then the bytes
    and the journal entry are on disk: a crash now loses nothing."""
    hold = backend.hold = Hold()
    async with write_back(backend, tmp_path / "spool") as (core, _):
        fh = await core.create("a.txt")
        await core.write(fh, b"hello")
        synced: list[int] = []
        core.spool._fsync = lambda fd: (synced.append(fd), os.fsync(fd))  # type: ignore[method-assign,func-returns-value]
        assert await core.close(fh) == 0
        assert backend.on_instance(REC) == {}  # close did not wait for the instance
        [entry] = core.journal()
        assert entry["name"] == "a.txt" and not entry["blocked"]
        assert len(synced) >= 3  # the data file, the entry, the directory
        assert (core.spool_dir / f"{entry['id']}.data").read_bytes() == b"hello"
        await hold.started.wait()  # the background uploader took it
        assert core.staged("a.txt").state is State.UPLOADING
        hold.release.set()
        await settled(nothing_owed(core))
        assert backend.on_instance(REC) == {"a.txt": [b"hello"]}
        assert core.journal() == []


async def test_uploads_run_concurrently_up_to_transfers(
    backend: FakeBackend, tmp_path: Path
) -> None:
    backend.upload_gate = gate = trio.Event()
    async with write_back(backend, tmp_path / "spool", transfers=3) as (core, _):
        for i in range(7):
            fh = await core.create(f"f{i}.txt")
            await core.write(fh, b"x" * i)
            assert await core.close(fh) == 0
        await settled(lambda: backend.in_flight == 3)
        await trio.testing.wait_all_tasks_blocked()
        assert backend.in_flight == 3  # no more than --transfers, however many are owed
        gate.set()
        await settled(nothing_owed(core))
    assert backend.peak_in_flight == 3
    assert backend.stats.uploads == 7
    assert backend.on_instance(REC) == {f"f{i}.txt": [b"x" * i] for i in range(7)}


async def test_a_later_version_never_overtakes_an_earlier_one(
    backend: FakeBackend, tmp_path: Path
) -> None:
    """v1 is being uploaded when the file is opened again and v2 written: the open waits for
    v1's upload (the file's lock); v2 is sent after it and replaces it."""
    hold = backend.hold = Hold()
    async with write_back(backend, tmp_path / "spool") as (core, _):
        fh = await core.create("a.txt")
        await core.write(fh, b"v1")
        assert await core.close(fh) == 0
        await hold.started.wait()
        done = trio.Event()

        async def rewrite() -> None:
            fh2 = await core.open("a.txt")  # O_TRUNC: waits for the upload in flight
            await core.write(fh2, b"v2 longer")
            assert await core.close(fh2) == 0
            done.set()

        async with trio.open_nursery() as n:
            n.start_soon(rewrite)
            await trio.testing.wait_all_tasks_blocked()
            assert not done.is_set() and backend.sent == [("a.txt", b"v1")]
            hold.release.set()
        await settled(nothing_owed(core))
    assert backend.sent == [("a.txt", b"v1"), ("a.txt", b"v2 longer")]
    assert backend.on_instance(REC) == {"a.txt": [b"v2 longer"]}  # v1 deleted after v2 stored


async def test_rewritten_while_owed_only_the_last_version_is_sent(
    backend: FakeBackend, tmp_path: Path
) -> None:
    async with write_back(backend, tmp_path / "spool", pool=False) as (core, _):
        fh = await core.create("a.txt")
        await core.write(fh, b"v1")
        assert await core.close(fh) == 0
        fh = await core.open("a.txt")
        await core.write(fh, b"v2")
        assert core.staged("a.txt").state is State.WRITING  # open again: not taken
        await core.writes._retry_due()
        assert backend.sent == []
        assert await core.close(fh) == 0
        await core.writes._retry_due()
    assert backend.sent == [("a.txt", b"v2")]


async def test_rm_of_an_owed_file_sends_nothing(backend: FakeBackend, tmp_path: Path) -> None:
    async with write_back(backend, tmp_path / "spool", pool=False) as (core, _):
        fh = await core.create("a.txt")
        await core.write(fh, b"doomed")
        assert await core.close(fh) == 0
        assert len(core.journal()) == 1
        await core.unlink("a.txt")
        assert core.journal() == [] and list(core.spool_dir.glob("*.data")) == []
        await core.writes._retry_due()
        assert await core.writes.sync() == []
    assert backend.stats.uploads == 0 and backend.on_instance(REC) == {}


async def test_rm_during_a_background_upload_deletes_what_it_stored(
    backend: FakeBackend, tmp_path: Path
) -> None:
    hold = backend.hold = Hold()
    async with write_back(backend, tmp_path / "spool") as (core, _):
        fh = await core.create("a.txt")
        await core.write(fh, b"doomed")
        assert await core.close(fh) == 0
        await hold.started.wait()
        async with trio.open_nursery() as n:
            n.start_soon(core.unlink, "a.txt")  # waits for the upload's outcome
            await trio.testing.wait_all_tasks_blocked()
            hold.release.set()
        assert "a.txt" not in await core.names()
    assert backend.stats.uploads == 1 and backend.on_instance(REC) == {}


async def test_mv_of_an_owed_file_is_sent_under_its_new_name(
    backend: FakeBackend, tmp_path: Path
) -> None:
    old = backend.put(T, REC, "b.txt", b"old b")
    async with write_back(backend, tmp_path / "spool", pool=False) as (core, _):
        fh = await core.create("a.txt")
        await core.write(fh, b"new")
        assert await core.close(fh) == 0
        await core.rename("a.txt", "b.txt")  # over an attachment: replaces it once stored
        [entry] = core.journal()
        assert entry["name"] == "b.txt" and entry["replaces_all"] == [old.sys_id]
        assert backend.stats.uploads == 0  # the rename itself did not upload
        await core.writes._retry_due()
    assert backend.sent == [("b.txt", b"new")]
    assert backend.on_instance(REC) == {"b.txt": [b"new"]}


async def test_scratch_names_are_held_then_sent_and_desktop_metadata_stays_local(
    backend: FakeBackend, tmp_path: Path
) -> None:
    """Issue 18, rows 5 and 8: a closed scratch-named file waits out the grace and is sent if
    it still has that name (sync ends the grace); renamed within it, it is sent only under
    its real name; desktop metadata is never sent, and is shown as local only."""
    async with write_back(backend, tmp_path / "spool", pool=False) as (core, _):
        fh = await core.create(".a.txt.swp")
        await core.write(fh, b"scratch")
        assert await core.close(fh) == 0
        held = core.staged(".a.txt.swp")
        assert held.state is State.OWED and held.hold_until > time.time()
        assert "held" in core.writes.describe(held, time.time())["last_error"]
        await core.writes._retry_due()
        assert backend.stats.uploads == 0  # within the grace
        fh = await core.create("x.part")
        await core.write(fh, b"download")
        assert await core.close(fh) == 0
        await core.rename("x.part", "x.pdf")  # renamed within the grace: due at once
        await core.writes._retry_due()
        assert backend.sent == [("x.pdf", b"download")]
        fh = await core.create(".DS_Store")
        await core.write(fh, b"finder")
        assert await core.close(fh) == 0
        meta = core.staged(".DS_Store")
        assert (
            core.writes.xattrs(core.writes.local_entry(T, REC, ".DS_Store"))[  # type: ignore[arg-type]
                "user.snfs.state"
            ]
            == b"local-only"
        )
        assert await core.writes.sync() == []  # the grace ends; metadata is not waited for
        assert core.writes.kept_local() == [meta]
        assert [e["state"] for e in core.journal()] == ["local"]
    assert backend.on_instance(REC) == {".a.txt.swp": [b"scratch"], "x.pdf": [b"download"]}


async def test_fsync_waits_for_the_upload_and_returns_its_error(
    backend: FakeBackend, tmp_path: Path
) -> None:
    hold = backend.hold = Hold()
    async with write_back(backend, tmp_path / "spool") as (core, _):
        fh = await core.create("a.txt")
        await core.write(fh, b"one")
        done = trio.Event()

        async def fsync() -> None:
            await core.ops.fsync(fh, False)
            done.set()

        async with trio.open_nursery() as n:
            n.start_soon(fsync)
            await hold.started.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert not done.is_set()  # fsync is still waiting for the instance
            hold.release.set()
        assert backend.on_instance(REC) == {"a.txt": [b"one"]}
        await core.write(fh, b"two", 3)
        backend.fail_uploads.append(ExtensionRefused("extension refused"))
        with pytest.raises(pyfuse3.FUSEError) as e:
            await core.ops.fsync(fh, False)
        assert e.value.errno == errno.EPERM
        assert await core.close(fh) == 0  # close only hands over; the refusal was fsync's


async def test_a_refused_upload_is_blocked_with_its_reason_and_one_alert(
    backend: FakeBackend, tmp_path: Path
) -> None:
    backend.fail_uploads.append(ExtensionRefused("extension .exe is not allowed"))
    async with write_back(backend, tmp_path / "spool") as (core, alerts):
        fh = await core.create("a.exe")
        await core.write(fh, b"MZ")
        assert await core.close(fh) == 0  # write-back: close does not see the refusal
        await settled(lambda: bool(alerts))  # raised once the refusal is journaled
        assert core.staged("a.exe").state is State.BLOCKED
        node = core.writes.local_entry(T, REC, "a.exe")
        assert node is not None
        x = core.writes.xattrs(node)
        assert x["user.snfs.state"] == b"blocked"
        assert b"extension .exe is not allowed" in x["user.snfs.last_error"]
        [entry] = core.journal()
        assert entry["blocked"] and "not allowed" in entry["last_error"]
        assert alerts == [
            ("snfs: upload refused", f"{T}/{REC}/a.exe: extension .exe is not allowed")
        ]
        [left] = await core.writes.sync()  # sync reports it; a blocked file is not resent
        assert core.writes.describe(left, 0)["last_error"] == "extension .exe is not allowed"
    assert backend.stats.uploads == 1


async def test_a_passing_failure_stays_owed_alerts_once_and_sync_resends_it(
    backend: FakeBackend, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    backend.fail_uploads += [ServerError("503 busy"), ServerError("503 busy")]
    async with write_back(backend, tmp_path / "spool", pool=False) as (core, alerts):
        fh = await core.create("a.txt")
        await core.write(fh, b"data")
        assert await core.close(fh) == 0
        await core.writes._retry_due()
        st = core.staged("a.txt")
        assert st.state is State.OWED and "503" in st.last_error
        await trio.sleep(600)
        await core.writes._retry_due()  # fails again, same reason: no second alert
        assert st.attempts == 2 and len(alerts) == 1 and "will retry" in alerts[0][0]
        assert await core.writes.sync() == []  # sync does not wait for the backoff
    assert backend.on_instance(REC) == {"a.txt": [b"data"]}


async def test_shutdown_sends_what_is_owed_and_journals_the_rest(
    backend: FakeBackend, tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    """Shutdown sends the owed files side by side; one upload hangs, so the budget runs out
    for it alone (MockClock jumped past the budget once the others are stored)."""
    mock_clock.rate = 1.0  # virtual time runs at real speed until the jump below
    backend.hang_uploads = 1
    async with write_back(backend, tmp_path / "spool", pool=False) as (core, _):
        for name in ("a.txt", "b.txt", "c.txt"):
            fh = await core.create(name)
            await core.write(fh, name.encode())
            assert await core.close(fh) == 0
        async with trio.open_nursery() as n:
            n.start_soon(core.writes.finish, 30.0)
            await settled(lambda: sum(map(len, backend.on_instance(REC).values())) == 2)
            await settled(lambda: len(core.journal()) == 1)
            mock_clock.jump(31)
        assert backend.stats.uploads == 3
        [entry] = core.journal()  # the hung one stays journaled, in doubt, for the next mount
        assert entry["attempt_started"] is not None and not entry["blocked"]


async def test_without_write_back_close_still_returns_the_upload_error(
    backend: FakeBackend, tmp_path: Path
) -> None:
    async with running(backend, tmp_path / "spool") as core:
        backend.fail_uploads.append(ExtensionRefused("no"))
        fh = await core.create("a.exe")
        await core.write(fh, b"MZ")
        assert await core.close(fh) == errno.EPERM


async def test_large_files_take_at_most_half_the_transfers(
    backend: FakeBackend, tmp_path: Path
) -> None:
    """Large uploads are bandwidth-bound: half the slots at most, so listings keep HTTP slots."""
    backend.upload_gate = gate = trio.Event()
    async with write_back(backend, tmp_path / "spool", transfers=4) as (core, _):
        for i in range(3):
            fh = await core.create(f"big{i}.bin")
            await core.write(fh, b"b" * LARGE_UPLOAD)
            assert await core.close(fh) == 0
        fh = await core.create("small.txt")
        await core.write(fh, b"s")
        assert await core.close(fh) == 0
        await settled(lambda: backend.in_flight == 3)
        await trio.testing.wait_all_tasks_blocked()
        assert backend.in_flight == 3  # two large and the small one
        assert sorted(n for n, _ in backend.sent) == ["big0.bin", "big1.bin", "small.txt"]
        gate.set()
        await settled(nothing_owed(core))
    assert backend.stats.uploads == 4


async def test_an_owed_file_reopened_then_crashed_is_never_sent_half_written(
    backend: FakeBackend, tmp_path: Path
) -> None:
    """v1 is owed (journaled: "send these bytes"); it is opened again with O_TRUNC and half of
    v2 written when the daemon dies. The next mount must not send the half-written bytes: it
    shows the file blocked, with its bytes kept."""
    old = backend.put(T, REC, "a.txt", b"original")
    spool = tmp_path / "spool"
    async with write_back(backend, spool, pool=False) as (c1, _):
        fh = await c1.open("a.txt")
        await c1.write(fh, b"v1")
        assert await c1.close(fh) == 0
        fh = await c1.open("a.txt")
        await c1.write(fh, b"half of v")
        [entry] = c1.journal()
        assert entry["blocked"] and "open for writing" in entry["last_error"]
        c1.kill()
    async with write_back(backend, spool, pool=False) as (c2, _):
        assert await c2.writes.recover() == 1
        await c2.writes._retry_due()
        assert c2.staged("a.txt").state is State.BLOCKED
    assert backend.stats.uploads == 0
    assert backend.on_instance(REC) == {"a.txt": [b"original"]} and old.sys_id in backend.files


async def test_an_owed_file_reopened_and_closed_is_owed_again(
    backend: FakeBackend, tmp_path: Path
) -> None:
    async with write_back(backend, tmp_path / "spool", pool=False) as (core, _):
        fh = await core.create("a.txt")
        await core.write(fh, b"v1")
        assert await core.close(fh) == 0
        fh = await core.open("a.txt", os.O_WRONLY)  # opened, nothing written
        assert core.journal()[0]["blocked"]
        assert await core.close(fh) == 0
        [entry] = core.journal()
        assert not entry["blocked"] and entry["last_error"] == ""
        await core.writes._retry_due()
    assert backend.on_instance(REC) == {"a.txt": [b"v1"]}
