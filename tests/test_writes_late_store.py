"""An upload the instance stores after its sender died: found, never doubled, never back.

Found by the outside-in soak (tests/soak/mount_soak.py, write-back seed 102: four attachments
created at 03:14:56, none of them in the mount's log, after the kill at 03:14:55.7; the same
three kinds in the default mode): a daemon killed while its uploads waited in the instance's
queue (the soak's "upload slow" fault) left them in doubt; the instance stored them later, after
the next mount had already looked for them, found nothing and sent the bytes again (two
attachments of one name), or after `rm` had looked for them (the name came back). An attempt
in doubt now counts as "not stored" only when a look-up made `doubt_wait` seconds after it
started finds nothing (docs/WRITES.md, "In doubt").

Kernel-free: the fake backend holds the upload (the request in the instance's queue), the test
kills the daemon under it, and the fake stores the orphaned request right after the next mount's
first look-up for it has missed it (`FakeBackend.store_after_lookup`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from tests.fake_backend import FakeBackend, Hold
from tests.test_writes_core import REC, T, backend, retry_until_settled, running

__all__ = ["backend"]

ORPHAN = (T, REC, "a.txt", b"v1")  # what the instance stores late


async def killed_while_queued(backend: FakeBackend, spool: Path, data: bytes) -> None:
    """Write `a.txt` and close it; its upload waits in the instance's queue; the daemon dies."""
    async with running(backend, spool) as c:
        hold = Hold()  # not stored yet: the request is queued at the instance
        backend.hold = hold
        fh = await c.create("a.txt")
        await c.write(fh, data)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(c.close, fh)
            await hold.started.wait()
            [entry] = c.journal()
            assert entry["attempt_started"] is not None  # journaled before it was sent
            nursery.cancel_scope.cancel()  # SIGKILL
        c.kill()


async def test_recovery_finds_an_upload_stored_after_the_daemon_died(
    backend: FakeBackend, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    spool = tmp_path / "spool"
    await killed_while_queued(backend, spool, b"v1")
    backend.store_after_lookup.append(ORPHAN)
    async with running(backend, spool) as c:
        await c.writes.recover()
        await retry_until_settled(c)  # the first look-up (at once) misses it
    assert backend.on_instance(REC) == {"a.txt": [b"v1"]}  # adopted, not sent again
    assert [d for n, d in backend.sent if n == "a.txt"] == [b"v1"]


@pytest.mark.parametrize("then", ["rm", "new save"])
async def test_a_late_stored_attempt_is_found_by_rm_and_by_the_next_save(
    backend: FakeBackend, tmp_path: Path, then: str, autojump_clock: trio.testing.MockClock
) -> None:
    """After the remount, before the instance stores the orphan, the user removes the file
    (it must not come back) or saves v2 over it (one attachment, v2)."""
    spool = tmp_path / "spool"
    await killed_while_queued(backend, spool, b"v1")
    backend.store_after_lookup.append(ORPHAN)
    async with running(backend, spool) as c:
        await c.writes.recover()  # no retry yet: the user acts first
        if then == "rm":
            await c.unlink("a.txt")
        else:
            fh = await c.open("a.txt")
            await c.write(fh, b"v2")
            assert await c.close(fh) == 0
        await retry_until_settled(c)
    assert backend.on_instance(REC) == ({} if then == "rm" else {"a.txt": [b"v2"]})


async def test_an_attempt_older_than_doubt_wait_is_looked_for_once(
    backend: FakeBackend, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Past `doubt_wait`, one look-up that finds nothing is the answer: sent again at once."""
    spool = tmp_path / "spool"
    await killed_while_queued(backend, spool, b"v1")
    async with running(backend, spool, doubt_wait=0.0) as c:
        lookups = backend.stats.lookups
        await c.writes.recover()
        await retry_until_settled(c)
        assert backend.stats.lookups == lookups + 1
    assert backend.on_instance(REC) == {"a.txt": [b"v1"]}
