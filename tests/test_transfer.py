"""The data path in worker threads (snfs.transfer): a download received, verified and written
to the content cache by a thread per transfer, over real sockets to the emulator; gzip asked
for only where it pays.

A slow worker is made with `snfs.transfer.fault`, the hook the worker calls before each batch
it writes (the emulator cannot slow a client's own thread down): held at a gate, or sleeping.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from snfs import transfer, wire
from snfs.backends.servicenow.client import AttachmentClient
from snfs.compressible import gzip_pays
from snfs.content_cache import ContentCache
from snfs.errors import AuthError, CertificateError, NotTheContent
from tests.support.client_support import client, fresh, new_record, payload, shared_emulator
from tests.support.emulator_proc import self_signed_cert
from tests.support.waiting import eventually_async
from tests.test_client_auth import oauth

__all__ = ["fresh"]

emu = shared_emulator("--state-delay", "0")
# The gzip test counts every body byte the emulator sends: its own instance, so a download an
# earlier test cancelled (the emulator may still be sending into the closed socket) never
# counts as this test's.
emu_quiet = shared_emulator("--state-delay", "0")
pytestmark = pytest.mark.usefixtures("fresh")

KiB, MiB = 2**10, 2**20


def _cache(c: AttachmentClient, disk_dir: Path, like: Any = None) -> ContentCache:
    """A content cache whose large files come through the client's download workers (with
    `like`, the file's metadata, as the mount gives it: gzip asked for only where it pays)."""
    return ContentCache(
        lambda sid, off: c.stream(sid, offset=off, like=like),
        into=lambda sid, off, sink: c.stream_into(sid, sink, offset=off, like=like),
        disk_dir=disk_dir,
        small_file_bytes=MiB,
    )


async def _published(cache: ContentCache) -> None:
    """Wait until the cache's downloads are over (a complete file is then renamed)."""

    async def idle() -> bool:
        return cache.stats()["downloads_active"] == 0

    await eventually_async(idle, timeout=30)


@pytest.fixture(params=["received", "decoded"])
def way(request: pytest.FixtureRequest) -> str:
    """How a test's body reaches the worker's blocks: an identity body received straight
    into them (the mount's way for a binary file, whose metadata it knows), or gzip pieces
    decoded by httpx and copied in (without metadata the client asks for gzip)."""
    return str(request.param)


def _like(att: Any, way: str) -> Any:
    return att if way == "received" else None


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, list[int]]]:
    """The worker writes its first batch, then waits at the gate before each next one."""
    opened, batches = threading.Event(), []

    def fault(sink: object, n: int) -> None:
        batches.append(n)
        if len(batches) > 1:
            opened.wait(30)

    monkeypatch.setattr(transfer, "fault", fault)
    try:
        yield opened, batches
    finally:
        opened.set()  # never leave a worker thread waiting


async def test_a_reader_gets_its_first_bytes_while_the_worker_is_held(
    emu, tmp_path, gate, way
) -> None:
    opened, batches = gate
    data = payload(12 * MiB)
    async with client(emu) as c:
        att = await c.upload("incident", new_record(emu), "big.bin", data)
        async with _cache(c, tmp_path / "cache", _like(att, way)) as cache:
            with trio.fail_after(20):
                first = await cache.read(att.sys_id, len(data), 0, 64 * KiB)
            assert first == data[: 64 * KiB]
            # The worker cannot have finished: 12 MiB take more than one batch, and it
            # waits at the gate before its second. The file is not complete in the cache.
            assert not opened.is_set() and batches
            assert not (tmp_path / "cache" / att.sys_id).exists()
            assert cache.stats()["downloads_active"] == 1
            opened.set()
            with trio.fail_after(30):
                whole = await cache.read(att.sys_id, len(data), 0, len(data))
            assert whole == data
            assert len(batches) > 1
            await _published(cache)
    # Complete, verified, published under its final name; of the disk the worker allocated
    # ahead of its writes (transfer.Reserve), nothing is left past the file's end.
    published = tmp_path / "cache" / att.sys_id
    assert published.read_bytes() == data
    assert published.stat().st_blocks * 512 < len(data) + transfer.RESERVE // 2


async def test_a_wrong_hash_keeps_the_file_out_of_the_cache_with_a_slow_worker(
    emu, tmp_path, monkeypatch: pytest.MonkeyPatch, way
) -> None:
    monkeypatch.setattr(transfer, "fault", lambda sink, n: time.sleep(0.01))
    data = payload(6 * MiB)
    async with client(emu) as c:
        att = await c.upload("incident", new_record(emu), "big.bin", data)
        # The instance now serves other bytes of the same length than those it hashed (what
        # a broken proxy or a corrupted store would do): the SHA-256 cannot match.
        blob = Path(emu.data_dir) / "blobs" / att.sys_id[:2] / att.sys_id
        blob.write_bytes(payload(len(data), seed=2))
        cache_dir = tmp_path / "cache"
        async with _cache(c, cache_dir, _like(att, way)) as cache:
            with trio.fail_after(30), pytest.raises(NotTheContent) as e:
                await cache.read(att.sys_id, len(data), 0, len(data))
            assert "SHA-256" in e.value.message
            assert cache.stats()["disk_bytes"] == 0
            assert [p.name for p in cache_dir.iterdir() if p.name != ".lock"] == []
            # Once the instance serves the right bytes, the next read downloads them anew.
            blob.write_bytes(data)
            with trio.fail_after(30):
                assert await cache.read(att.sys_id, len(data), 0, len(data)) == data
            await _published(cache)
    assert (cache_dir / att.sys_id).read_bytes() == data


async def test_a_download_resumes_after_a_break_in_the_worker(emu, tmp_path, way) -> None:
    """The emulator cuts the answer mid-body: the worker's bytes so far stay, the next
    attempt (asked for again without Range, skipping what is here) completes the file."""
    data = payload(5 * MiB)
    async with client(emu) as c:
        att = await c.upload("incident", new_record(emu), "big.bin", data)
        emu.fault(method="GET", path=r"/file$", count=1, drop_after_bytes=2 * MiB)
        async with _cache(c, tmp_path / "cache", _like(att, way)) as cache:
            with trio.fail_after(30):
                assert await cache.read(att.sys_id, len(data), 0, len(data)) == data
            await _published(cache)
        assert c.stats.retries >= 1
    assert (tmp_path / "cache" / att.sys_id).stat().st_blocks * 512 < len(data) + MiB
    assert hashlib.sha256((tmp_path / "cache" / att.sys_id).read_bytes()).digest() == (
        hashlib.sha256(data).digest()
    )


@pytest.mark.parametrize(
    ("name", "ctype", "direct"),
    [("big.bin", "application/octet-stream", True), ("notes.txt", "text/plain", False)],
    ids=["identity-received-into-blocks", "gzip-pieces-copied-into-blocks"],
)
async def test_a_waiting_reader_is_answered_from_the_workers_block(
    emu, tmp_path, monkeypatch: pytest.MonkeyPatch, name: str, ctype: str, direct: bool
) -> None:
    """A reader that waits for bytes at the download's front gets a view of the block they
    landed in, not a read of the cache file; both ways bytes reach the blocks (an identity
    body received straight into them, a gzip body's decoded pieces copied in)."""
    received: list[bool] = []
    readinto = wire.readinto

    def spy(resp: Any) -> Any:
        got = readinto(resp)
        received.append(got is not None)
        return got

    monkeypatch.setattr(wire, "readinto", spy)
    data = b"".join(b"line %07d of the notes\n" % i for i in range(6 * MiB // 24))
    async with client(emu) as c:
        att = await c.upload("incident", new_record(emu), name, data, content_type=ctype)
        async with _cache(c, tmp_path / "cache", like=att) as cache:
            with trio.fail_after(30):
                first = await cache.read(att.sys_id, len(data), 0, MiB)
                rest = [
                    bytes(await cache.read(att.sys_id, len(data), off, MiB))
                    for off in range(MiB, len(data), MiB)
                ]
            assert isinstance(first, memoryview) and isinstance(first.obj, transfer.Block)
            assert bytes(first) + b"".join(rest) == data
            assert cache.stats()["from_memory"] >= 1
            await _published(cache)
    assert received == [direct]
    assert (tmp_path / "cache" / att.sys_id).read_bytes() == data


async def test_cancelling_a_download_stops_its_worker(emu, tmp_path, gate, way) -> None:
    """Closing the cache while a worker is held: the worker is told to stop, the close waits
    for it, and no part file is left behind."""
    opened, batches = gate
    data = payload(8 * MiB)
    async with client(emu) as c:
        att = await c.upload("incident", new_record(emu), "big.bin", data)
        async with _cache(c, tmp_path / "cache", _like(att, way)) as cache:
            with trio.fail_after(20):
                await cache.read(att.sys_id, len(data), 0, 4 * KiB)
            trio.lowlevel.current_trio_token().run_sync_soon(opened.set)  # once the close began
        assert list((tmp_path / "cache").glob("*.part")) == []


@pytest.mark.parametrize(
    ("name", "ctype", "gzip"),
    [
        ("notes.txt", "text/plain", True),
        ("dump.json", "application/json", True),
        ("app.log", "application/octet-stream", True),
        ("photo.jpg", "image/jpeg", False),
        ("report.pdf", "application/pdf", False),
        ("sheet.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", False),
        ("bundle.zip", "application/zip", False),
        ("big.bin", "application/octet-stream", False),
    ],
)
async def test_gzip_is_asked_for_only_where_it_pays(emu_quiet, name, ctype, gzip) -> None:
    """What travels is the emulator's count of body bytes sent: text-like content compresses
    (gzip asked for), the rest comes as it is stored (identity)."""
    emu = emu_quiet
    assert gzip_pays(ctype, name) is gzip
    text = b"".join(b"line %06d: the quick brown fox\n" % i for i in range(40_000))
    async with client(emu) as c:
        att = await c.upload("incident", new_record(emu), name, text, content_type=ctype)
        assert att.content_type.split(";")[0] == ctype
        emu.reset_stats()
        got = b"".join([chunk async for chunk in c.stream(att.sys_id, like=att)])
    assert got == text
    sent = emu.stats()["bytes_out"]
    assert (sent < len(text) // 4) if gzip else (sent >= len(text))


class _Collect:
    """A sink that keeps what the worker puts (and checks it is called off the event loop)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.threads: set[int] = set()

    def urgent(self, ahead: int) -> bool:
        return False

    def put(self, pieces: list[bytes]) -> None:
        self.threads.add(threading.get_ident())
        self.parts.extend(pieces)


async def test_stream_into_runs_in_a_worker_and_refreshes_an_oauth_token_once(emu) -> None:
    """A 401 on the worker's request: the auth flow refreshes its token on the event loop and
    the download is asked for again; a second 401 in a row is a real one."""
    auth = oauth(emu, grant="password")
    data = payload(3 * MiB)
    async with client(emu, auth=auth) as c:
        att = await c.upload("incident", new_record(emu), "big.bin", data)
        sink = _Collect()
        await c.stream_into(att.sys_id, sink)
        assert b"".join(sink.parts) == data
        assert threading.get_ident() not in sink.threads
        emu.fault(method="GET", path=r"/file$", count=1, status=401)
        sink = _Collect()
        await c.stream_into(att.sys_id, sink)
        assert b"".join(sink.parts) == data
        assert auth.grants == ["password", "refresh_token"]
        emu.fault(method="GET", path=r"/file$", count=2, status=401)
        with pytest.raises(AuthError):
            await c.stream_into(att.sys_id, _Collect())


async def test_gzip_always_asks_for_gzip_for_any_file(emu) -> None:
    """The switch for an instance that serves its stored compressed copy cheaper: a JPEG (here
    compressible bytes under that name) comes gzip as well."""
    text = b"".join(b"line %06d: the quick brown fox\n" % i for i in range(40_000))
    async with client(emu, gzip_always=True) as c:
        att = await c.upload(
            "incident", new_record(emu), "photo.jpg", text, content_type="image/jpeg"
        )
        emu.reset_stats()
        assert b"".join([chunk async for chunk in c.stream(att.sys_id, like=att)]) == text
    assert emu.stats()["bytes_out"] < len(text) // 4


@pytest.fixture
def tls_emu(emulator_factory, tmp_path) -> tuple[Any, Path]:
    """An emulator behind TLS with a self-signed certificate, and that certificate."""
    cert, key = self_signed_cert(tmp_path)
    return emulator_factory(
        "--state-delay", "0", "--certfile", str(cert), "--keyfile", str(key)
    ), cert


async def test_the_workers_read_over_verified_tls_and_keep_their_connection(tls_emu) -> None:
    """The download workers' transport (snfs.wire): TLS verified against the CA bundle given,
    an untrusted certificate named as such, and one keep-alive connection for downloads in a
    row (chunked answers, as the emulator and real instances send)."""
    tls, cert = tls_emu
    data = payload(3 * MiB)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SSL_CERT_FILE", str(cert))  # for the test's own request
        record = new_record(tls)
    async with client(tls, verify=str(cert)) as c:
        att = await c.upload("incident", record, "big.bin", data)
        transport = c._core.worker_http._transport
        assert isinstance(transport, wire.WireTransport)
        for _ in range(2):
            sink = _Collect()
            await c.stream_into(att.sys_id, sink)
            assert b"".join(sink.parts) == data
            assert [len(v) for v in transport._idle.values()] == [1]
    async with client(tls, retry_total_seconds=0.5) as c:
        with pytest.raises(CertificateError):
            await c.stream_into(att.sys_id, _Collect())


def _serve_once(raw: bytes, *, hang_up: bool = False) -> tuple[int, threading.Thread, Any]:
    """A socket server of the test's that answers one request with `raw`, then keeps the
    connection open (a keep-alive server would) or, with `hang_up`, closes it."""
    import socket

    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(raw)
            if not hang_up:
                conn.recv(65536)  # until the client closes

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv.getsockname()[1], t, srv


def _receive_all(receive: Any, step: int) -> bytes:
    got, buf = bytearray(), bytearray(step)
    while n := receive(memoryview(buf)):
        got += buf[:n]
    return bytes(got)


@pytest.mark.parametrize(
    ("head", "body", "want"),
    [
        # small chunks, a chunk extension and a trailer: what http.client's chunk reader
        # (which `_Response.readinto1` shares) must undo
        (
            b"Transfer-Encoding: chunked\r\n",
            b"7;ext=1\r\nabcdefg\r\n3\r\nhij\r\n0\r\nX-Trailer: 1\r\n\r\n",
            b"abcdefghij",
        ),
        (b"Content-Length: 10\r\n", b"abcdefghij", b"abcdefghij"),
    ],
    ids=["chunked", "content-length"],
)
def test_a_worker_receives_an_identity_body_straight_into_its_buffer(
    head: bytes, body: bytes, want: bytes
) -> None:
    """`wire.readinto`: the body's bytes, at most one receive per call, then 0; the
    connection, read to the end, goes back to the pool."""
    import httpx

    port, t, srv = _serve_once(b"HTTP/1.1 200 OK\r\n" + head + b"\r\n" + body)
    transport = wire.WireTransport(verify=True, timeout=5, pool=2)
    try:
        with httpx.Client(transport=transport) as c:
            with c.stream("GET", f"http://127.0.0.1:{port}/f") as r:
                receive = wire.readinto(r)
                assert receive is not None
                assert _receive_all(receive, 4) == want
            assert [len(v) for v in transport._idle.values()] == [1]
    finally:
        srv.close()


def test_a_gzip_body_is_not_received_straight_into_a_buffer() -> None:
    import gzip

    import httpx

    packed = gzip.compress(b"hello " * 100)
    port, t, srv = _serve_once(
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(packed)
        + packed
    )
    try:
        with (
            httpx.Client(transport=wire.WireTransport(verify=True, timeout=5, pool=2)) as c,
            c.stream("GET", f"http://127.0.0.1:{port}/f") as r,
        ):
            assert wire.readinto(r) is None  # httpx's decoder must see it
            assert r.read() == b"hello " * 100
    finally:
        srv.close()


@pytest.mark.parametrize("way", ["iter_bytes", "readinto"])
def test_a_body_cut_short_is_a_protocol_error_and_its_connection_not_kept(way: str) -> None:
    """http.client ends a Content-Length body cut short without a word: the transport says
    so, as h11 would (the worker's resume logic takes it as a break), whether the body is
    read through httpx or received into the worker's buffer, and keeps no connection that is
    in the middle of an answer. The server is a socket of the test's: the emulator cannot
    announce more bytes than it sends."""
    import httpx

    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 50
    port, t, srv = _serve_once(raw, hang_up=True)
    transport = wire.WireTransport(verify=True, timeout=5, pool=2)
    try:
        with (
            httpx.Client(transport=transport) as c,
            c.stream("GET", f"http://127.0.0.1:{port}/f") as r,
            pytest.raises(httpx.RemoteProtocolError, match="50 bytes missing"),
        ):
            receive = wire.readinto(r)
            assert receive is not None
            if way == "readinto":
                _receive_all(receive, 64)
            else:
                b"".join(r.iter_bytes())
        assert not any(transport._idle.values())
    finally:
        srv.close()
