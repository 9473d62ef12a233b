"""Every AttachmentClient operation against the emulator, over real sockets."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import trio

from snfs.auth import BasicAuth
from snfs.backends.servicenow import query as q
from snfs.backends.servicenow.client import Attachment
from snfs.errors import ExtensionRefused, InvalidInput, NotFound, TooLarge, Unsupported
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

emu = shared_emulator(
    "--demo", "--user", "bob:pw:itil", "--state-delay", "0", "--release", "australia"
)
emu_range = shared_emulator("--range")
emu_norename = shared_emulator("--no-rename", "--max-size", "1", "--extensions", "txt,bin,dat")

pytestmark = pytest.mark.usefixtures("fresh")


async def _read(c, sys_id: str, **kw) -> bytes:
    return b"".join([chunk async for chunk in c.stream(sys_id, **kw)])


async def test_check_get_and_missing(emu) -> None:
    async with client(emu) as c:
        await c.check()
        atts = await c.list_all(q.attachments_of_table("incident"))
        assert atts and all(isinstance(a, Attachment) for a in atts)
        one = await c.get(atts[0].sys_id)
        assert one == atts[0] or one.sys_id == atts[0].sys_id
        assert one.created_on.tzinfo is not None and one.hash
        with pytest.raises(NotFound) as e:
            await c.get("0" * 32)
        assert e.value.errno == errno.ENOENT and e.value.status == 404
        assert c.stats.requests["get"] == 2 and c.stats.errors == 1


async def test_validation_before_any_request(emu) -> None:
    rec = new_record(emu)
    emu.reset_stats()
    async with client(emu) as c:
        for bad in ("../attachment", "ABC", "0" * 31, "0" * 32 + "/file"):
            with pytest.raises(InvalidInput):
                await c.get(bad)
            with pytest.raises(InvalidInput):
                await c.delete(bad)
            with pytest.raises(InvalidInput):
                c.stream(bad)
        for table in ("inc/../x", "Incident", "incident?x=1", ""):
            with pytest.raises(InvalidInput) as e:
                await c.upload(table, rec, "a.txt", b"x")
            assert e.value.errno == errno.EINVAL
            with pytest.raises(InvalidInput):
                await c.record_exists(table, rec)
        with pytest.raises(InvalidInput):
            await c.upload("incident", "nope", "a.txt", b"x")
        with pytest.raises(InvalidInput):
            await c.upload("incident", rec, "", b"x")
        with pytest.raises(InvalidInput):
            await c.count_by("table_name^ORx")
    assert emu.stats()["total"] == 0


async def test_paging_sees_each_once(emu) -> None:
    rec = new_record(emu)
    async with client(emu) as c:
        async with trio.open_nursery() as n:
            for i in range(25):
                n.start_soon(c.upload, "incident", rec, f"page-{i:02}.txt", f"item {i}".encode())
        emu.reset_stats()
        pages = [
            page
            async for page in c.list_pages(q.attachments_of_record("incident", rec), page_size=4)
        ]
        assert [len(p) for p in pages] == [4, 4, 4, 4, 4, 4, 1]
        names = [a.file_name for p in pages for a in p]
        assert sorted(names) == [f"page-{i:02}.txt" for i in range(25)]
        assert len({a.sys_id for p in pages for a in p}) == 25
        assert route_count(emu, "GET /attachment") == 7
        # sorted by creation, then sys_id: stable across pages
        flat = [a for p in pages for a in p]
        assert flat == sorted(flat, key=lambda a: (a.created_on, a.sys_id))
        assert len(await c.list_all(q.attachments_of_record("incident", rec), page_size=10)) == 25


async def test_upload_sources_and_stream(emu, tmp_path: Path) -> None:
    rec = new_record(emu)
    data = payload(700_000)
    src = tmp_path / "report.pdf"
    src.write_bytes(data)

    async def gen():
        for i in range(0, len(data), 100_000):
            yield data[i : i + 100_000]

    async with client(emu) as c:
        a1 = await c.upload("incident", rec, "report.pdf", src)
        a2 = await c.upload("incident", rec, "b.bin", data, content_type="application/x-thing")
        a3 = await c.upload("incident", rec, "c.dat", gen)  # size unknown: chunked
        a4 = await c.upload("incident", rec, 'd é"x.txt', src, multipart=True)
        assert a1.content_type == "application/pdf"
        assert a2.content_type == "application/x-thing"
        assert a3.content_type == "application/octet-stream"
        assert a4.content_type == "text/plain" and a4.file_name == 'd é"x.txt'
        for a in (a1, a2, a3, a4):
            assert a.size_bytes == len(data) and a.hash == sha256(data) and a.table_sys_id == rec
            assert await _read(c, a.sys_id) == data
        # offsets without Range support: the client skips
        assert await _read(c, a1.sys_id, offset=123_457) == data[123_457:]
        assert c.supports_range is False
        assert await _read(c, a1.sys_id, offset=len(data)) == b""
        assert await _read(c, a1.sys_id, offset=len(data) + 10) == b""
        assert c.stats.bytes_out >= 4 * len(data) and c.stats.bytes_in > 0


async def test_stream_with_range(emu_range) -> None:
    rec = new_record(emu_range)
    data = payload(1_500_000, seed=7)
    async with client(emu_range) as c:
        a = await c.upload("incident", rec, "r.bin", data)
        assert c.supports_range is None
        assert await _read(c, a.sys_id) == data
        got = await _read(c, a.sys_id, offset=1_000_001, expected_size=len(data))
        assert got == data[1_000_001:]
        assert c.supports_range is True  # the server answered 206
        assert await _read(c, a.sys_id, offset=5) == data[5:]


async def test_upload_errors(emu_norename) -> None:
    emu = emu_norename
    rec = new_record(emu)
    async with client(emu) as c:
        with pytest.raises(TooLarge) as e:
            await c.upload("incident", rec, "big.bin", payload(1_100_000))
        assert e.value.errno == errno.EFBIG and e.value.status == 400
        with pytest.raises(ExtensionRefused) as e2:
            await c.upload("incident", rec, "evil.exe", b"MZ")
        assert e2.value.errno == errno.EPERM and "extension" in e2.value.message.lower()
        with pytest.raises(NotFound):
            await c.upload("incident", "0" * 32, "a.txt", b"x")
        with pytest.raises(TooLarge):
            await c.upload("incident", rec, "big.bin", payload(1_100_000), multipart=True)
    assert emu.attachments(f"table_sys_id={rec}") == []


async def test_delete(emu) -> None:
    rec = new_record(emu)
    async with client(emu) as c:
        a = await c.upload("incident", rec, "gone.txt", b"bye")
        await c.delete(a.sys_id)
        with pytest.raises(NotFound):
            await c.get(a.sys_id)
        with pytest.raises(NotFound):
            await c.delete(a.sys_id)
        await c.delete(a.sys_id, missing_ok=True)


async def test_rename_patch(emu) -> None:
    rec = new_record(emu)
    async with client(emu) as c:
        a = await c.upload("incident", rec, "old.txt", b"content")
        r = await c.rename(a.sys_id, "new^name.txt")
        assert r.sys_id == a.sys_id and r.file_name == "new^name.txt"
        assert c.rename_supported is True
        assert [
            x.file_name for x in await c.list_all(q.attachments_of_record("incident", rec))
        ] == ["new^name.txt"]
        with pytest.raises(NotFound):
            await c.rename("0" * 32, "x.txt")


async def test_rename_without_patch_is_unsupported_and_changes_nothing(emu_norename) -> None:
    """Without PATCH the client does not copy on its own (an un-journaled copy-then-delete
    left second copies behind: issue 18, rows 11 and 12): it says Unsupported, once learnt
    without asking again, and the file system core renames by a journaled copy."""
    emu = emu_norename
    rec = new_record(emu)
    async with client(emu, max_in_flight=1) as c:
        a = await c.upload("incident", rec, "old.bin", b"data")
        with pytest.raises(Unsupported):
            await c.rename(a.sys_id, "new.bin")
        assert c.rename_supported is False
        emu.reset_stats()
        with pytest.raises(Unsupported):
            await c.rename(a.sys_id, "third.bin")  # remembered: no PATCH this time
        assert route_count(emu, "PATCH /attachment/{sys_id}") == 0
        assert [
            (x.sys_id, x.file_name)
            for x in await c.list_all(q.attachments_of_record("incident", rec))
        ] == [(a.sys_id, "old.bin")]


async def test_count_and_records(emu) -> None:
    rec = new_record(emu)
    async with client(emu) as c:
        await c.upload("incident", rec, "one.txt", b"1")
        await c.upload("incident", rec, "two.txt", b"2")
        by_table = await c.count_by("table_name")
        assert by_table.get("incident", 0) >= 2 and "hr_case" in by_table
        mine = await c.count_by("file_name", q.term("table_sys_id", "=", rec))
        assert mine == {"one.txt": 1, "two.txt": 1}
        assert await c.record_exists("incident", rec)
        assert not await c.record_exists("incident", "0" * 32)
        assert not await c.record_exists("problem", rec)
        assert not await c.record_exists("no_such_table", rec)
        assert await c.table_exists("incident") and await c.table_exists("ZZ_YYincident")
        assert not await c.table_exists("no_such_table")
        number = emu.json("GET", f"/api/now/table/incident/{rec}")["result"]["number"]
        assert await c.find_record("incident", number) == rec
        assert await c.find_record("incident", "INC9999999") is None
        assert await c.find_record("no_such_table", number) is None
        assert c.stats.errors == 0


async def test_query_injection_does_not_leak(emu) -> None:
    a_rec, b_rec = new_record(emu, "incident"), new_record(emu, "problem")
    tricky = ["x^ORtable_name!=incident", "a^NQsys_id!=0", "b^ORDERBYfile_name", "c^^d"]
    async with client(emu) as c:
        for name in tricky:
            await c.upload("incident", a_rec, name, b"A")
            await c.upload("problem", b_rec, name, b"B")
        await c.upload("incident", a_rec, "plain.txt", b"A")
        await c.upload("problem", b_rec, "other.txt", b"B")
        for name in tricky:
            mine = await c.list_all(
                q.all_of(
                    q.term("table_name", "=", "incident"),
                    q.term("table_sys_id", "=", a_rec),
                    q.term("file_name", "=", name),
                )
            )
            assert [(a.file_name, a.table_sys_id) for a in mine] == [(name, a_rec)]
            both = await c.list_all(q.term("file_name", "=", name))
            assert sorted((a.table_name, a.file_name) for a in both) == [
                ("incident", name),
                ("problem", name),
            ]
        of_a = await c.list_all(q.attachments_of_record("incident", a_rec))
        assert sorted(a.file_name for a in of_a) == sorted(tricky + ["plain.txt"])
        assert {a.table_sys_id for a in of_a} == {a_rec}
        counts = await c.count_by("table_sys_id", q.term("file_name", "=", tricky[0]))
        assert counts == {a_rec: 1, b_rec: 1}


async def test_roles_forbidden(emu) -> None:
    """A real instance answers a read the user may not make with 404 ("does not exist, or the
    current user cannot access it"), and an upload to such a record with 404 too."""
    hr = emu.attachments("table_name=hr_case")
    assert hr
    async with client(emu, auth=BasicAuth("bob", "pw")) as c:
        await c.check()
        with pytest.raises(NotFound) as e:
            await c.get(hr[0]["sys_id"])
        assert e.value.errno == errno.ENOENT and e.value.status == 404
        with pytest.raises(NotFound):
            await _read(c, hr[0]["sys_id"])
        listed = await c.list_all(q.attachments_of_table("hr_case"))
        assert listed == []
        rec = hr[0]["table_sys_id"]
        with pytest.raises(NotFound):
            await c.upload("hr_case", rec, "x.txt", b"x")
    assert emu.attachments(f"table_sys_id={rec}^file_name=x.txt") == []


async def test_upload_source_shorter_than_announced(emu, tmp_path: Path) -> None:
    rec = new_record(emu)
    f = tmp_path / "short.bin"
    f.write_bytes(b"12345")
    async with client(emu) as c:
        with pytest.raises(InvalidInput):
            await c.upload("incident", rec, "short.bin", f, size=10)
        assert c.stats.errors == 1
    assert emu.attachments(f"table_sys_id={rec}") == []


async def test_connection_refused_is_connection_failed(tmp_path: Path) -> None:
    import socket

    from snfs.backends.servicenow.client import AttachmentClient, ClientConfig
    from snfs.errors import ConnectionFailed

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    cfg = ClientConfig(
        f"http://127.0.0.1:{port}",
        BasicAuth("a", "b"),
        retry_attempts=2,
        retry_base_delay=0.01,
        retry_max_delay=0.02,
    )
    async with AttachmentClient(cfg) as c:
        with pytest.raises(ConnectionFailed) as e:
            await c.check()
        assert e.value.errno == errno.EIO
