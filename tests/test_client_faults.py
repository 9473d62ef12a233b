"""Injected faults: retries, Retry-After, give-up, resumed downloads, uploads stored once."""

from __future__ import annotations

import errno
import logging

import pytest
import trio

from snfs.backends.servicenow import query as q
from snfs.errors import RateLimited, ServerError
from tests.support.client_support import (
    client,
    fresh,
    new_record,
    payload,
    route_count,
    sha256,
    shared_emulator,
)

__all__ = ["fresh"]

emu = shared_emulator("--state-delay", "0")
emu_range = shared_emulator("--range", "--state-delay", "0")
pytestmark = pytest.mark.usefixtures("fresh")

GET_FILE = "GET /attachment/{sys_id}/file"


async def _read(c, sys_id: str, **kw) -> bytes:
    return b"".join([chunk async for chunk in c.stream(sys_id, **kw)])


def _count_named(emu, rec: str, name: str) -> int:
    return len(
        emu.attachments(q.all_of(q.term("table_sys_id", "=", rec), q.term("file_name", "=", name)))
    )


async def test_503_twice_then_success(emu) -> None:
    rec = new_record(emu)
    async with client(emu) as c:
        a = await c.upload("incident", rec, "x.txt", b"x")
        emu.reset_stats()
        emu.fault(method="GET", path=r"/attachment/[0-9a-f]{32}$", count=2, status=503)
        assert (await c.get(a.sys_id)).sys_id == a.sys_id
        assert c.stats.retries == 2 and c.stats.errors == 0
        assert emu.stats()["by_route"]["GET /attachment/{sys_id}"] == 3


async def test_429_retry_after_is_honoured(emu, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wait is read from a spy on trio.sleep (it still sleeps), not timed: machines are
    noisy, and the question is what the retry policy asked for."""
    waits: list[float] = []
    real_sleep = trio.sleep

    async def spy(seconds: float) -> None:
        waits.append(seconds)
        await real_sleep(seconds)

    monkeypatch.setattr(trio, "sleep", spy)
    async with client(emu) as c:
        emu.fault(method="GET", path=r"/attachment$", count=1, status=429, retry_after=1)
        await c.check()
        assert c.stats.retries == 1
    assert any(w >= 1.0 for w in waits), waits


async def test_429_forever_is_rate_limited(emu) -> None:
    async with client(emu, retry_attempts=3) as c:
        emu.fault(method="GET", path=r"/stats/", count=10, status=429, retry_after=0.1)
        with pytest.raises(RateLimited) as e:
            await c.count_by("table_name")
        assert e.value.errno == errno.EAGAIN


async def test_give_up_after_503s_is_eio(emu, caplog: pytest.LogCaptureFixture) -> None:
    async with client(emu, retry_attempts=3) as c:
        emu.fault(method="GET", path=r"/attachment$", count=50, status=503)
        with caplog.at_level(logging.DEBUG, logger="snfs.client"), pytest.raises(ServerError) as e:
            await c.list_all(q.term("file_name", "=", "nothing"))
        assert e.value.errno == errno.EIO and e.value.status == 503
        assert route_count(emu, "GET /attachment") == 3
        assert c.stats.errors == 1 and c.stats.retries == 2
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1
    msg = lines[0].getMessage()
    assert "GET /attachment" in msg and "503" in msg and "Service Unavailable" in msg
    assert "sysparm" not in msg


@pytest.mark.parametrize("which", ["plain", "range"])
async def test_broken_download_resumes(which, emu, emu_range) -> None:
    e = emu if which == "plain" else emu_range
    rec = new_record(e)
    data = payload(3_000_000, seed=11)
    async with client(e) as c:
        a = await c.upload("incident", rec, "big.bin", data)
        e.reset_stats()
        e.fault(method="GET", path=r"/file$", count=2, drop_after_bytes=700_000)
        got = await _read(c, a.sys_id)
        assert len(got) == len(data) and sha256(got) == sha256(data) == a.hash
        assert route_count(e, GET_FILE) == 3
        assert c.stats.retries == 2
        assert c.supports_range is (which == "range")
        # a read from an offset that breaks midway resumes too
        e.fault(method="GET", path=r"/file$", count=1, drop_after_bytes=300_000)
        assert await _read(c, a.sys_id, offset=1_234_567) == data[1_234_567:]


async def test_download_gives_up(emu) -> None:
    rec = new_record(emu)
    async with client(emu, retry_attempts=3) as c:
        a = await c.upload("incident", rec, "f.bin", b"abc")
        emu.fault(method="GET", path=r"/file$", count=10, status=503)
        with pytest.raises(ServerError) as e:
            await _read(c, a.sys_id)
        assert e.value.errno == errno.EIO


@pytest.mark.parametrize("status", [503, 429])
async def test_upload_retried_on_503_429_stored_once(status, emu) -> None:
    rec = new_record(emu)
    async with client(emu) as c:
        emu.fault(method="POST", path=r"/attachment/file", count=1, status=status, retry_after=0)
        a = await c.upload("incident", rec, "once.txt", payload(200_000))
        assert a.size_bytes == 200_000
        assert route_count(emu, "POST /attachment/file") == 2
    assert _count_named(emu, rec, "once.txt") == 1


async def test_multipart_upload_retried_on_503(emu) -> None:
    rec = new_record(emu)
    async with client(emu) as c:
        emu.fault(method="POST", path=r"/attachment/upload", count=1, status=503)
        await c.upload("incident", rec, "mp.txt", b"multi", multipart=True)
    assert _count_named(emu, rec, "mp.txt") == 1


async def test_upload_delayed_past_timeout_not_duplicated(emu) -> None:
    rec = new_record(emu)
    data = payload(100_000, seed=5)
    async with client(emu, timeout=1.0) as c:
        emu.fault(method="POST", path=r"/attachment/file", count=1, delay=2.0)
        a = await c.upload("incident", rec, "slow.bin", data)
        assert a.hash == sha256(data)
    assert _count_named(emu, rec, "slow.bin") == 1


async def test_upload_502_in_doubt_looked_up_then_sent_again(emu) -> None:
    rec = new_record(emu)
    async with client(emu, in_doubt_wait=0.5) as c:
        emu.fault(method="POST", path=r"/attachment/file", count=1, status=502)
        a = await c.upload("incident", rec, "doubt.txt", b"in doubt")
        assert a.size_bytes == 8
        assert route_count(emu, "POST /attachment/file") == 2
        assert route_count(emu, "GET /attachment") >= 1  # it looked first
    assert _count_named(emu, rec, "doubt.txt") == 1


async def test_upload_stored_answer_lost_and_look_ups_failing_is_not_sent_again(emu) -> None:
    """Issue 18, row 6: the upload is stored, its answer lost, and the look-up for it gets no
    answer. "Not found" is then not known: the upload fails in doubt rather than being sent
    again on a guess (which stored a second copy)."""
    rec = new_record(emu)
    async with client(emu, in_doubt_wait=0.5) as c:
        emu.fault(method="POST", path=r"/attachment/file", count=1, drop_after_bytes=0)
        emu.fault(method="GET", path=r"/attachment$", query="file_name=lost", count=999, status=500)
        with pytest.raises(ServerError) as err:
            await c.upload("incident", rec, "lost.txt", b"stored once")
        assert err.value.in_doubt
        assert route_count(emu, "POST /attachment/file") == 1
    emu.json("DELETE", "/__emulator__/faults")
    assert _count_named(emu, rec, "lost.txt") == 1


async def test_upload_404_not_retried(emu) -> None:
    async with client(emu) as c:
        from snfs.errors import NotFound

        with pytest.raises(NotFound):
            await c.upload("incident", "0" * 32, "x.txt", b"x")
        assert route_count(emu, "POST /attachment/file") == 1
