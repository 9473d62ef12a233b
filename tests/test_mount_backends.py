"""EasyVista and Huawei Cloud through a real mount of their emulators, checked through their
APIs."""

from __future__ import annotations

import base64
import errno
import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support.emulator_proc import EmulatorProc
from tests.support.mount_proc import start_mount

ACCOUNT = "50004"


def ev_api(emu: EmulatorProc) -> str:
    return f"/api/v1/{ACCOUNT}"


def new_ticket(emu: EmulatorProc) -> str:
    href = emu.json("POST", f"{ev_api(emu)}/requests", {"title": "printer"})["HREF"]
    return href.rsplit("/", 1)[1]


def ev_documents(emu: EmulatorProc, rfc: str) -> dict[str, bytes]:
    """name -> content of a ticket's documents, straight from the EasyVista API."""
    out = {}
    docs = emu.json("GET", f"{ev_api(emu)}/requests/{rfc}/documents")["Documents"]
    for d in docs:
        status, headers, body = emu.request(
            "GET", f"{ev_api(emu)}/requests/{rfc}/documents/{d['DOCUMENT_ID']}"
        )
        assert status == 200
        disp = {k.lower(): v for k, v in headers.items()}["content-disposition"]
        name = disp.split("filename*=UTF-8''", 1)[1]
        from urllib.parse import unquote

        out[unquote(name)] = body
    return out


def ev_attach(emu: EmulatorProc, rfc: str, name: str, data: bytes) -> None:
    """Attach a document as document 004 says (form-data, key `documents`)."""
    docs = [{"filename": name, "filedata": base64.b64encode(data).decode()}]
    body = (
        b'--b\r\nContent-Disposition: form-data; name="documents"\r\n\r\n'
        + json.dumps(docs).encode()
        + b"\r\n--b--\r\n"
    )
    status, _, raw = emu.request(
        "POST",
        f"{ev_api(emu)}/requests/{quote(rfc, safe='')}/documents",
        body,
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert status == 201, raw


def ev_mount(emu: EmulatorProc, tmp_path: Path, *args: str):
    return start_mount(
        f"easyvista+{emu.url}/api/v1/{ACCOUNT}", tmp_path / "m", tmp_path / "w", *args
    )


@pytest.fixture
def easyvista(emulator_factory) -> EmulatorProc:
    return emulator_factory("--kind", "easyvista")


@pytest.fixture
def huawei(emulator_factory) -> EmulatorProc:
    return emulator_factory(
        "--kind", "huawei", "--limit-size", "1", "--limit-file-type", "txt,pdf,png"
    )


def test_easyvista_mount(easyvista: EmulatorProc, tmp_path: Path) -> None:
    rfc = new_ticket(easyvista)
    # A document attached by someone else, before the mount.
    ev_attach(easyvista, rfc, "before.txt", b"from the web UI")
    m = start_mount(f"easyvista+{easyvista.url}/api/v1/{ACCOUNT}", tmp_path / "m", tmp_path / "w")
    try:
        d = m.path("requests", rfc)
        assert os.listdir(d) == ["before.txt"]
        assert (d / "before.txt").read_bytes() == b"from the web UI"
        src = tmp_path / "report.pdf"
        src.write_bytes(os.urandom(300_000))
        subprocess.run(["cp", str(src), str(d)], check=True)
        assert ev_documents(easyvista, rfc)["report.pdf"] == src.read_bytes()
        assert sorted(os.listdir(d)) == ["before.txt", "report.pdf"]
        assert os.getxattr(d / "report.pdf", "user.easyvista.document_id")
        assert rfc in os.listdir(m.path("requests"))  # visited tickets are listed
        # No rename in the API: mv is copy-then-delete, and the end state is what ls shows.
        os.rename(d / "report.pdf", d / "final.pdf")
        assert sorted(ev_documents(easyvista, rfc)) == ["before.txt", "final.pdf"]
        os.unlink(d / "before.txt")
        assert sorted(ev_documents(easyvista, rfc)) == ["final.pdf"]
        with pytest.raises(FileNotFoundError):
            os.listdir(m.path("requests", "I000000_000009"))
    finally:
        m.stop()


def test_huawei_mount_write_only_listing_and_limits(huawei: EmulatorProc, tmp_path: Path) -> None:
    m = start_mount(
        f"huawei+{huawei.url}", tmp_path / "m", tmp_path / "w", env={"SNFS_TOKEN": "test-token"}
    )
    try:
        d = m.path("accessorys", "incident")
        assert os.listdir(d) == []  # the API cannot list: only what this mount uploads shows
        (d / "log.txt").write_bytes(b"kernel panic")
        assert os.listdir(d) == ["log.txt"]
        accessory_id = os.getxattr(d / "log.txt", "user.huawei.accessory_id").decode()
        status, _, body = huawei.request(
            "GET",
            f"/v2/servicerequest/accessorys/{accessory_id}",
            auth=None,
            headers={"X-Auth-Token": "test-token"},
        )
        assert status == 200 and body == b"kernel panic"
        assert (d / "log.txt").read_bytes() == b"kernel panic"
        huawei.reset_stats()
        big = tmp_path / "big.txt"
        big.write_bytes(b"x" * (2 * 2**20))  # --limit-size 1 (MB)
        with pytest.raises(OSError) as e:
            shutil.copyfile(big, d / "big.txt")
        assert e.value.errno == errno.EFBIG
        with pytest.raises(OSError) as e:
            (d / "tool.exe").write_bytes(b"MZ")
        assert e.value.errno == errno.EPERM
        assert huawei.stats()["by_route"]["POST /accessorys"] == 0  # refused before sending
        assert "refused" in m.log_text()
        os.unlink(d / "log.txt")
        status, _, _ = huawei.request(
            "GET",
            f"/v2/servicerequest/accessorys/{accessory_id}",
            auth=None,
            headers={"X-Auth-Token": "test-token"},
        )
        assert status in (400, 404)
    finally:
        m.stop()


def test_huawei_wrong_token_fails_at_start(huawei: EmulatorProc, tmp_path: Path) -> None:
    m = start_mount(
        f"huawei+{huawei.url}",
        tmp_path / "m",
        tmp_path / "w",
        env={"SNFS_TOKEN": "wrong-token"},
        expect_fail=True,
    )
    assert m.proc.wait(timeout=30) != 0
    assert "wrong-token" not in m.log_text()
    assert not os.path.ismount(tmp_path / "m")


def test_huawei_mount_without_the_limits_call(emulator_factory, tmp_path: Path) -> None:
    """A server without GET /accessorys/limits (not in document 003) mounts; the upload's own
    answer refuses, with the same errno the pre-check gives."""
    huawei = emulator_factory("--kind", "huawei", "--no-limits", "--limit-size", "1")
    m = start_mount(
        f"huawei+{huawei.url}", tmp_path / "m", tmp_path / "w", env={"SNFS_TOKEN": "test-token"}
    )
    try:
        d = m.path("accessorys", "incident")
        (d / "ok.txt").write_bytes(b"fine")
        assert os.listdir(d) == ["ok.txt"]
        big = tmp_path / "big.txt"
        big.write_bytes(b"x" * (2 * 2**20))
        with pytest.raises(OSError) as e:
            shutil.copyfile(big, d / "big.txt")
        assert e.value.errno == errno.EFBIG
        with pytest.raises(OSError) as e:
            (d / "tool.exe").write_bytes(b"MZ")
        assert e.value.errno == errno.EPERM
        routes = huawei.stats()["by_route"]
        assert routes["POST /accessorys"] == 3 and routes["GET /accessorys/limits"] == 1
    finally:
        m.stop()


def test_easyvista_form_data_any_ticket_and_description(easyvista: EmulatorProc, tmp_path) -> None:
    """Form-data as document 004 says (the emulator refuses other forms by default), any ticket
    identifier, the description from the mount option; checked in the server's own store."""
    rfc = "Ticket #7 ü?"
    easyvista.json("POST", f"{ev_api(easyvista)}/requests", {"rfc_number": rfc})
    m = ev_mount(easyvista, tmp_path, "--easyvista-description", "sent by snfs")
    try:
        d = m.path("requests", rfc)
        assert os.listdir(d) == []
        (d / "a.txt").write_bytes(b"form data")
        assert os.listdir(d) == ["a.txt"] and (d / "a.txt").read_bytes() == b"form data"
        assert ev_documents(easyvista, quote(rfc, safe="")) == {"a.txt": b"form data"}
        db = sqlite3.connect(easyvista.data_dir / "easyvista.sqlite3")
        rows = db.execute("SELECT rfc_number, file_name, description FROM ev_documents").fetchall()
        db.close()
        assert rows == [(rfc, "a.txt", "sent by snfs")]
    finally:
        m.stop()


def test_easyvista_without_delete_gives_eperm(emulator_factory, tmp_path: Path) -> None:
    """DELETE is not in document 004: on a server without it, overwrite and rm give EPERM
    at once: no second document next to the first, nothing retried in the background."""
    emu = emulator_factory("--kind", "easyvista", "--no-delete")
    rfc = new_ticket(emu)
    ev_attach(emu, rfc, "old.txt", b"old")
    m = ev_mount(emu, tmp_path)
    try:
        d = m.path("requests", rfc)
        with pytest.raises(OSError) as e:
            (d / "old.txt").write_bytes(b"new")
        assert e.value.errno == errno.EPERM
        with pytest.raises(OSError) as e:
            os.unlink(d / "old.txt")
        assert e.value.errno == errno.EPERM
        (d / "new.txt").write_bytes(b"a new document is fine")
        assert ev_documents(emu, rfc) == {"old.txt": b"old", "new.txt": b"a new document is fine"}
        routes = emu.stats()["by_route"]
        assert routes["POST /requests/{rfc_number}/documents"] == 2  # ev_attach + new.txt
        assert json.loads(m.path(".snfs", "status").read_text())["pending_uploads"] == []
    finally:
        m.stop()


def test_easyvista_without_list_sends_nothing(emulator_factory, tmp_path: Path) -> None:
    """GET …/documents is not in document 004: without it an upload could not name its new
    document, so nothing is sent and the user gets EOPNOTSUPP (not a silent duplicate)."""
    emu = emulator_factory("--kind", "easyvista", "--no-list")
    rfc = new_ticket(emu)
    m = ev_mount(emu, tmp_path)
    try:
        d = m.path("requests", rfc)
        with pytest.raises(OSError) as e:
            os.listdir(d)
        assert e.value.errno == errno.EOPNOTSUPP
        with pytest.raises(OSError) as e:
            (d / "a.txt").write_bytes(b"a")
        assert e.value.errno == errno.EOPNOTSUPP
        assert emu.stats()["by_route"]["POST /requests/{rfc_number}/documents"] == 0
        assert "does not list" in m.log_text()
    finally:
        m.stop()


def test_easyvista_without_download_and_ticket_get(emulator_factory, tmp_path: Path) -> None:
    """A server with only the documented upload and the documents list: the mount starts,
    writes work (the new document named without a download), reads give EOPNOTSUPP."""
    emu = emulator_factory("--kind", "easyvista", "--no-download", "--no-ticket")
    rfc = new_ticket(emu)
    m = ev_mount(emu, tmp_path)
    try:
        d = m.path("requests", rfc)
        (d / "a.txt").write_bytes(b"written")
        assert os.listdir(d) == ["a.txt"] and os.stat(d / "a.txt").st_size == 7
        with pytest.raises(OSError) as e:
            (d / "a.txt").read_bytes()
        assert e.value.errno == errno.EOPNOTSUPP
        routes = emu.stats()["by_route"]
        assert routes["POST /requests/{rfc_number}/documents"] == 1
        assert json.loads(m.path(".snfs", "status").read_text())["pending_uploads"] == []
    finally:
        m.stop()
