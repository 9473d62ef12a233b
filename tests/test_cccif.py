"""CCCIF media upload: the emulator's endpoint, the client call, and `/.cccif/<user_id>/` in a
mount (the CCCIF backend behind the ServiceNow router)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import uuid
from pathlib import Path

import pytest

from snfs.auth import BasicAuth
from snfs.client import AttachmentClient, ClientConfig
from tests.emulator_proc import EmulatorProc
from tests.mount_proc import MountProc


def multipart(fields: dict[str, str], file_name: str | None, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = b""
    for k, v in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
    if file_name is not None:
        out += (
            (
                f"--{boundary}\r\nContent-Disposition: form-data; "
                f'name="file"; filename="{file_name}"'
                f"\r\nContent-Type: image/png\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    out += f"--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


def test_emulator_cccif_upload(emulator: EmulatorProc) -> None:
    body, ctype = multipart({"user_id": "lincoln"}, "Screenshot 1.png", b"\x89PNG fake")
    status, _, raw = emulator.request(
        "POST", "/api/now/v1/cccif/media/upload", body, headers={"Content-Type": ctype}
    )
    assert status == 201, raw
    result = json.loads(raw)["result"]
    assert result["name"] == "Screenshot 1.png" and result["state"] in ("pending", "available")
    assert "/api/now/v1/cs/media/" in result["mediaUrl"]
    meta = emulator.json("GET", f"/api/now/attachment/{result['attachmentId']}")["result"]
    assert meta["file_name"] == "Screenshot 1.png"
    assert meta["hash"] == hashlib.sha256(b"\x89PNG fake").hexdigest()
    status, _, content = emulator.request("GET", result["mediaUrl"][len(emulator.url) :])
    assert status == 200 and content == b"\x89PNG fake"
    for fields, name in (({}, "x.png"), ({"user_id": "u"}, None)):
        body, ctype = multipart(fields, name, b"x")
        status, _, raw = emulator.request(
            "POST", "/api/now/cccif/media/upload", body, headers={"Content-Type": ctype}
        )
        assert status == 400, raw
    status, _, _ = emulator.request("POST", "/api/now/cccif/media/upload", b"", auth=("admin", "x"))
    assert status == 401


async def test_client_cccif_upload(emulator: EmulatorProc, tmp_path: Path) -> None:
    src = tmp_path / "chat.txt"
    src.write_bytes(b"hello bot")
    config = ClientConfig(base_url=emulator.url, auth=BasicAuth("admin", "admin"))
    async with AttachmentClient(config) as client:
        att = await client.cccif_upload("lincoln", "chat.txt", src)
        assert att.extra["attachment_id"] == att.sys_id and att.extra["media_url"]
        assert att.size_bytes == 9 and att.hash == hashlib.sha256(b"hello bot").hexdigest()
        assert b"".join([c async for c in client.stream(att.sys_id)]) == b"hello bot"
    assert emulator.stats()["by_route"]["POST /cccif/media/upload"] == 1


def test_mount_cccif_directory(emulator: EmulatorProc, mount_factory, tmp_path: Path) -> None:
    m: MountProc = mount_factory(emulator)
    d = m.path(".cccif", "lincoln")
    assert d.is_dir() and os.listdir(d) == []  # write-only: nothing listed until written here
    (d / "photo.png").write_bytes(b"\x89PNG data")
    assert os.listdir(d) == ["photo.png"]
    attachment_id = os.getxattr(d / "photo.png", "user.servicenow.attachment_id").decode()
    media_url = os.getxattr(d / "photo.png", "user.servicenow.media_url").decode()
    assert "/cs/media/" in media_url
    meta = emulator.json("GET", f"/api/now/attachment/{attachment_id}")["result"]
    assert meta["file_name"] == "photo.png"
    assert (d / "photo.png").read_bytes() == b"\x89PNG data"  # read back via the Attachment API
    assert "lincoln" in os.listdir(m.path(".cccif"))
    os.unlink(d / "photo.png")
    status, _, _ = emulator.request("GET", f"/api/now/attachment/{attachment_id}")
    assert status == 404
    with pytest.raises(OSError) as e:
        os.mkdir(m.path(".cccif", "lincoln", "sub"))
    assert e.value.errno == errno.EPERM
