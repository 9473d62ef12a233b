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
from snfs.backends.servicenow.client import AttachmentClient, ClientConfig
from tests.support.emulator_proc import EmulatorProc
from tests.support.mount_proc import MountProc
from tests.support.waiting import eventually


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


def media_record(user_id: str, app_id: str = "") -> str:
    """The record the emulator files a user's media under (snfs.emulator.cccif)."""
    key = f"cccif:{user_id}" if not app_id else f"cccif:{app_id}:{user_id}"
    return hashlib.md5(key.encode()).hexdigest()


def uploads(emulator: EmulatorProc) -> dict[str, int]:
    routes = emulator.stats()["by_route"]
    return {k: routes[k] for k in ("POST /cccif/media/upload", "POST /attachment/file")}


def test_emulator_cccif_as_documented(emulator: EmulatorProc) -> None:
    """v1, v2 and the default URL; JSON whatever the Accept (errors too)."""
    for version in ("/v1", "/v2", ""):
        body, ctype = multipart({"user_id": "lincoln"}, "a.png", b"x")
        status, headers, raw = emulator.request(
            "POST",
            f"/api/now{version}/cccif/media/upload",
            body,
            headers={"Content-Type": ctype, "Accept": "application/xml"},
        )
        assert status == 201, raw
        assert {k.lower(): v for k, v in headers.items()}["content-type"].startswith(
            "application/json"
        )
        assert json.loads(raw)["result"]["attachmentId"]
    body, ctype = multipart({}, "a.png", b"x")
    status, _, raw = emulator.request(
        "POST",
        "/api/now/v2/cccif/media/upload",
        body,
        headers={"Content-Type": ctype, "Accept": "application/xml"},
    )
    assert status == 400 and json.loads(raw)["error"]["message"]
    body, ctype = multipart({"user_id": "u", "provider_application_id": "nope"}, "a.png", b"x")
    status, _, raw = emulator.request(
        "POST", "/api/now/cccif/media/upload", body, headers={"Content-Type": ctype}
    )
    assert status == 400, raw


def test_mount_cccif_written_through_cccif_whatever_was_listed(
    emulator: EmulatorProc, mount_factory
) -> None:
    """Once /sys_cs_media/<rec>/ is listed, /.cccif/<user>/f is still its own inode, and an
    overwrite goes through CCCIF (not POST /attachment/file into sys_cs_media)."""
    m: MountProc = mount_factory(emulator, "--dir-cache-time", "0.5")
    d = m.path(".cccif", "lincoln")
    (d / "f.txt").write_bytes(b"one")
    first = os.getxattr(d / "f.txt", "user.servicenow.attachment_id").decode()
    eventually(lambda: "sys_cs_media" in os.listdir(m.path()), timeout=10)
    assert os.listdir(m.path("sys_cs_media")) == [media_record("lincoln")]
    media = m.path("sys_cs_media", media_record("lincoln"))
    assert os.listdir(media) == ["f.txt"]  # an admin sees the attachment where it is filed
    assert os.stat(media / "f.txt").st_ino != os.stat(d / "f.txt").st_ino
    with open(d / "f.txt", "wb") as f:  # overwrite: through CCCIF
        f.write(b"two")
    assert (d / "f.txt").read_bytes() == b"two"
    assert os.listdir(d) == ["f.txt"]
    assert uploads(emulator) == {"POST /cccif/media/upload": 2, "POST /attachment/file": 0}
    rows = emulator.attachments(f"table_sys_id={media_record('lincoln')}")
    assert [r["file_name"] for r in rows] == ["f.txt"] and rows[0]["sys_id"] != first
    status, _, _ = emulator.request("GET", f"/api/now/attachment/{rows[0]['sys_id']}/file")
    assert status == 200
    assert emulator.request("GET", f"/api/now/attachment/{rows[0]['sys_id']}/file")[2] == b"two"


def test_mount_cccif_non_admin_201_is_proof(emulator_factory, mount_factory) -> None:
    """A chat bot's user who may not read sys_cs_media: the 201 (attachmentId) is the proof of
    storage; the write succeeds once, nothing is left behind locally or twice remotely."""
    emulator = emulator_factory("--user", "bot:botpw:itil")
    m: MountProc = mount_factory(emulator, user="bot", password="botpw")
    d = m.path(".cccif", "lincoln")
    (d / "chat.txt").write_bytes(b"hello")  # raises on a false error at close
    attachment_id = os.getxattr(d / "chat.txt", "user.servicenow.attachment_id").decode()
    assert os.getxattr(d / "chat.txt", "user.servicenow.state") == b"pending"
    rows = emulator.attachments(f"table_sys_id={media_record('lincoln')}")
    assert [(r["sys_id"], r["file_name"]) for r in rows] == [(attachment_id, "chat.txt")]
    assert rows[0]["hash"] == os.getxattr(d / "chat.txt", "user.servicenow.hash").decode()
    assert os.stat(d / "chat.txt").st_size == 5 and os.listdir(d) == ["chat.txt"]
    assert (d / "chat.txt").read_bytes() == b"hello"  # through the mediaUrl, not the denied API
    assert emulator.stats()["by_route"]["GET /cs/media/{token}"] >= 1
    # This user cannot delete what the ACL hides from it: EPERM at once, never a 404 taken for
    # "already gone" that would leave the old version on the instance as an orphan.
    with pytest.raises(PermissionError):
        os.unlink(d / "chat.txt")
    with pytest.raises(PermissionError):
        (d / "chat.txt").write_bytes(b"again")
    (d / "second.txt").write_bytes(b"new files are fine")
    rows = emulator.attachments(f"table_sys_id={media_record('lincoln')}")
    assert sorted(r["file_name"] for r in rows) == ["chat.txt", "second.txt"]
    assert json.loads(m.path(".snfs", "status").read_text())["pending_uploads"] == []
    assert uploads(emulator)["POST /cccif/media/upload"] == 2  # chat.txt, second.txt


def test_mount_cccif_state_refreshed(emulator_factory, mount_factory) -> None:
    """`state` is pending at upload and follows the attachment's record afterwards."""
    emulator = emulator_factory("--state-delay", "0.5")
    m: MountProc = mount_factory(emulator, "--dir-cache-time", "0.5")
    d = m.path(".cccif", "lincoln")
    (d / "s.txt").write_bytes(b"state")
    assert os.getxattr(d / "s.txt", "user.servicenow.state") == b"pending"

    def refreshed() -> bool:
        os.listdir(d)
        return os.getxattr(d / "s.txt", "user.servicenow.state") == b"available"

    eventually(refreshed, timeout=15)


def test_mount_cccif_any_user_id_and_provider_application(
    emulator: EmulatorProc, mount_factory
) -> None:
    """Any user id the API allows, escaped into a directory name (`/` shows as `／`); the
    provider application from the mount option."""
    app = "0123456789abcdef0123456789abcdef"
    m: MountProc = mount_factory(emulator, "--cccif-provider-application-id", app)
    user = "Lincoln Q. Public/chat #7 ✓"
    d = m.path(".cccif", user.replace("/", "\uff0f"))
    (d / "a.txt").write_bytes(b"any")
    rows = emulator.attachments(f"table_sys_id={media_record(user, app)}")
    assert [r["file_name"] for r in rows] == ["a.txt"]
    assert os.listdir(d) == ["a.txt"]
