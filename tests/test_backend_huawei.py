"""HuaweiBackend against `snfs emulator --kind huawei`, over real sockets."""

from __future__ import annotations

import errno
import logging
import re
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from snfs.backends.huawei import HuaweiBackend, LimitReached, Limits, _classify
from snfs.errors import AuthError, ExtensionRefused, InvalidInput, NotFound, TooLarge, Unsupported
from tests.support.client_support import payload, sha256, shared_emulator
from tests.support.emulator_proc import EmulatorProc

SECRET = "secret-token-4711"
emu = shared_emulator("--kind", "huawei", "--token", SECRET, "--limit-size", "25")
emu_nolimits = shared_emulator(
    "--kind", "huawei", "--token", SECRET, "--no-limits", "--limit-size", "1"
)
emu_b = shared_emulator(
    "--kind",
    "huawei",
    "--token",
    SECRET,
    "--limit-count",
    "1",
    "--business-errors-200",
    "--not-found-status",
    "400",
    "--limit-size",
    "1",
)

FILE_ID = re.compile(r"^[A-Za-z0-9_.-]+$")
QUICK = dict(timeout=5, retry_base_delay=0.05, retry_max_delay=0.3, retry_total_seconds=15)
POST = "POST /accessorys"


@pytest.fixture(autouse=True)
def fresh(request: pytest.FixtureRequest):
    for name in ("emu", "emu_b", "emu_nolimits"):
        if name in request.fixturenames:
            request.getfixturevalue(name).reset_stats()
    yield


def backend(e: EmulatorProc, token: str = SECRET, **kw) -> HuaweiBackend:
    return HuaweiBackend(e.url, token, **{**QUICK, **kw})


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def sparse(tmp_path: Path, size: int) -> Path:
    p = tmp_path / "sparse.bin"
    with open(p, "wb") as f:
        f.truncate(size)
    return p


async def read_all(b: HuaweiBackend, file_id: str, offset: int = 0) -> bytes:
    return b"".join([c async for c in b.stream(file_id, offset=offset)])


def routes(e: EmulatorProc) -> dict[str, int]:
    return e.stats()["by_route"]


async def test_check_limits_and_namespace(emu) -> None:
    b = backend(emu)
    try:
        await b.check()
        assert b.limits is not None and b.limits.size_bytes == 25 * 1024 * 1024
        assert {"txt", "pdf", "zip"} <= b.limits.file_types and b.limits.count == 100
        assert routes(emu)["GET /accessorys/limits"] == 1
        caps = b.capabilities("accessorys")
        assert (caps.list, caps.read, caps.create, caps.delete, caps.rename, caps.discover) == (
            False,
            True,
            True,
            True,
            False,
            False,
        )
        assert await b.tables() == ["accessorys"] and await b.table_exists("accessorys")
        assert b.valid_record_name("accessorys", "incident") and b.valid_record_name(
            "accessorys", "message"
        )
        assert not b.valid_record_name("accessorys", "a/b") and not b.valid_record_name(
            "accessorys", "x" * 65
        )
        assert await b.record_exists("accessorys", "incident")
        assert await b.list_record("accessorys", "incident") == []
        assert await b.find_record("accessorys", "x") is None
        assert b.supports_range is False
        assert SECRET not in repr(b) and SECRET not in repr(b.core.http.auth)
    finally:
        await b.aclose()


async def test_401_is_auth_error_without_the_token(emu, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    b = backend(emu, token="wrong-token-0815")
    with pytest.raises(AuthError) as e:
        await b.check()
    await b.aclose()
    assert e.value.errno == errno.EACCES and "APIGW.0301" in str(e.value)
    assert "wrong-token-0815" not in str(e.value) and "wrong-token-0815" not in caplog.text


async def test_round_trip(emu, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    files = {"trace é.log": payload(300_001, 3), "shot.png": payload(10, 4), "empty.txt": b""}
    b = backend(emu)
    try:
        atts = []
        for name, data in files.items():
            att = await b.upload(
                "accessorys", "incident", name, write(tmp_path, "s", data), size=len(data)
            )
            assert FILE_ID.match(att.sys_id) and att.extra == {"accessory_id": att.sys_id}
            assert (att.table_name, att.table_sys_id, att.file_name, att.size_bytes, att.hash) == (
                "accessorys",
                "incident",
                name,
                len(data),
                sha256(data),
            )
            assert att.created_on.tzinfo is UTC
            atts.append(att)
        assert routes(emu)["GET /accessorys/limits"] == 1  # fetched once, lazily
        assert atts[1].content_type == "image/png"
        for att in atts:
            assert sha256(await read_all(b, att.sys_id)) == sha256(files[att.file_name])
        assert await read_all(b, atts[0].sys_id, offset=300_000) == files["trace é.log"][300_000:]
        m = await b.upload("accessorys", "message", "m.txt", write(tmp_path, "m", b"msg"), size=3)
        assert await read_all(b, m.sys_id) == b"msg"
        assert (
            await b.find_uploaded(
                "accessorys", "incident", "shot.png", atts[1].hash, 10, datetime.now(UTC)
            )
            is None
        )
        await b.delete(atts[0].sys_id)
        with pytest.raises(NotFound):
            await read_all(b, atts[0].sys_id)
        await b.delete(atts[0].sys_id, missing_ok=True)
        with pytest.raises(NotFound):
            await b.delete(atts[0].sys_id)
        with pytest.raises(Unsupported):
            await b.rename(atts[1].sys_id, "x.png")
        with pytest.raises(InvalidInput):
            await b.upload("accessorys", "bad/from", "a.txt", write(tmp_path, "a", b"a"), size=1)
    finally:
        await b.aclose()
    assert SECRET not in caplog.text


async def test_20mb_round_trip(emu, tmp_path: Path) -> None:
    data = payload(20 * 1024 * 1024, 9)
    async with _closing(backend(emu, timeout=30)) as b:
        att = await b.upload(
            "accessorys", "incident", "big.zip", write(tmp_path, "big", data), size=len(data)
        )
        assert att.hash == sha256(data)
        assert sha256(await read_all(b, att.sys_id)) == att.hash


async def test_limit_prechecks_send_nothing(emu, tmp_path: Path) -> None:
    async with _closing(backend(emu)) as b:
        await b.check()
        emu.reset_stats()
        with pytest.raises(TooLarge) as e:
            await b.upload(
                "accessorys",
                "incident",
                "huge.zip",
                sparse(tmp_path, 26 * 1024 * 1024),
                size=26 * 1024 * 1024,
            )
        assert e.value.errno == errno.EFBIG
        with pytest.raises(ExtensionRefused) as e2:
            await b.upload(
                "accessorys", "incident", "tool.exe", write(tmp_path, "x", b"MZ"), size=2
            )
        assert e2.value.errno == errno.EPERM
        with pytest.raises(InvalidInput) as e3:  # form_data over 5000 characters
            await b.upload(
                "accessorys", "incident", "\x01" * 900 + ".txt", write(tmp_path, "x", b"a"), size=1
            )
        assert e3.value.errno == errno.ENAMETOOLONG
        assert emu.stats()["total"] == 0


async def test_server_refusals_map_to_the_same_errors(emu, tmp_path: Path) -> None:
    async with _closing(backend(emu)) as b:
        b.limits = Limits(None, None, frozenset())  # as if the limits were unknown: no pre-check
        with pytest.raises(ExtensionRefused):
            await b.upload(
                "accessorys", "incident", "tool.exe", write(tmp_path, "x", b"MZ"), size=2
            )
        with pytest.raises(TooLarge):
            await b.upload(
                "accessorys",
                "incident",
                "huge.zip",
                sparse(tmp_path, 26 * 1024 * 1024),
                size=26 * 1024 * 1024,
            )
        assert routes(emu)[POST] == 2


async def test_business_errors_with_http_200(emu_b, tmp_path: Path) -> None:
    emu_b.json("POST", "/__emulator__/reset", {"data": True})
    async with _closing(backend(emu_b)) as b:
        b.limits = Limits(None, None, frozenset())
        with pytest.raises(TooLarge) as e:
            await b.upload(
                "accessorys",
                "incident",
                "a.zip",
                write(tmp_path, "x", payload(1024 * 1024 + 1)),
                size=1024 * 1024 + 1,
            )
        assert e.value.errno == errno.EFBIG
        await b.upload("accessorys", "incident", "1.txt", write(tmp_path, "x", b"1"), size=1)
        with pytest.raises(LimitReached) as e2:
            await b.upload("accessorys", "incident", "2.txt", write(tmp_path, "x", b"2"), size=1)
        assert e2.value.errno == errno.EDQUOT
        await b.delete("nope", missing_ok=True)  # unknown id answered 400 + code
        with pytest.raises(NotFound):
            await b.delete("nope")


async def test_503_retried(emu, tmp_path: Path) -> None:
    async with _closing(backend(emu)) as b:
        emu.fault(method="POST", path=r"/accessorys$", count=1, status=503)
        emu.fault(method="GET", path=r"/accessorys/limits$", count=1, status=503)
        att = await b.upload(
            "accessorys", "incident", "a.txt", write(tmp_path, "a", b"abc"), size=3
        )
        emu.fault(method="GET", path=r"/accessorys/[0-9a-f]+$", count=2, status=503)
        assert await read_all(b, att.sys_id) == b"abc"
        assert b.stats.retries >= 4
        assert routes(emu)[POST] == 2


class _closing:
    def __init__(self, b: HuaweiBackend) -> None:
        self.b = b

    async def __aenter__(self) -> HuaweiBackend:
        return self.b

    async def __aexit__(self, *exc) -> None:
        await self.b.aclose()


def test_token_header_sent(emu) -> None:
    r = httpx.get(
        f"{emu.url}/v2/servicerequest/accessorys/limits", headers={"X-Auth-Token": SECRET}
    )
    assert r.status_code == 200


def test_codes_before_words() -> None:
    """The error code decides; words only where the code is none we know."""
    assert _classify("OSM.01010101", "file type not allowed", "upload", InvalidInput) is TooLarge
    assert _classify("OSM.01010102", "附件大小超过限制", "upload", InvalidInput) is ExtensionRefused
    assert _classify("OSM.01010104", "size", "delete", InvalidInput) is NotFound
    assert _classify("OSM.09999999", "The accessory size is too large", "upload", InvalidInput) is (
        TooLarge
    )
    assert _classify("OSM.09999999", "附件大小超过限制", "upload", InvalidInput) is InvalidInput
    assert _classify("OSM.01010103", "", "delete", InvalidInput) is InvalidInput  # upload only


async def test_mounts_without_the_limits_call(emu_nolimits, tmp_path: Path) -> None:
    """GET /accessorys/limits is not in document 003: without it check() passes, nothing is
    pre-checked, and the upload's own answer refuses (by its code, in the language we ask)."""
    async with _closing(backend(emu_nolimits)) as b:
        await b.check()
        assert b.limits is None and b.limits_offered is False
        with pytest.raises(TooLarge) as e:
            await b.upload(
                "accessorys",
                "incident",
                "a.zip",
                write(tmp_path, "x", payload(1024 * 1024 + 1)),
                size=1024 * 1024 + 1,
            )
        assert e.value.errno == errno.EFBIG
        assert "size" in str(e.value.instance_message)  # English: X-Language en-us was sent
        att = await b.upload("accessorys", "incident", "a.txt", write(tmp_path, "a", b"a"), size=1)
        assert await read_all(b, att.sys_id) == b"a"
        r = routes(emu_nolimits)
        assert r["GET /accessorys/limits"] == 1 and r[POST] == 2  # asked once, not per upload
    async with _closing(backend(emu_nolimits, language="zh-cn")) as b:
        b.limits = Limits(None, None, frozenset())
        with pytest.raises(ExtensionRefused) as e2:  # a Chinese message: the code decides
            await b.upload("accessorys", "incident", "t.exe", write(tmp_path, "x", b"MZ"), size=2)
        assert e2.value.instance_message == "附件文件类型不允许"
    with pytest.raises(AuthError):
        async with _closing(backend(emu_nolimits, token="wrong")) as b:
            await b.check()
