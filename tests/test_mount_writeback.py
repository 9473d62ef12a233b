"""`--write-back` through a real FUSE mount of the emulator, each outcome checked through the
instance's API: `cp -r` returns before the uploads end, `snfs sync` returns once every file is
stored (exactly once), and a refused upload is visible (`snfs sync`, `snfs status`, the
`user.snfs.state` xattr, the log, a desktop notification through a fake `notify-send`)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from snfs.children import snfs_command
from tests.support.emulator_proc import EmulatorProc, start_emulator
from tests.support.mount_proc import MountProc, start_mount
from tests.support.waiting import eventually


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> EmulatorProc:
    tmp = tmp_path_factory.mktemp("emu")
    e = start_emulator(tmp / "data", "--demo", "--extensions", "txt,bin", log=tmp / "emu.log")
    yield e
    e.stop()


@pytest.fixture(scope="module")
def wb(emu: EmulatorProc, tmp_path_factory: pytest.TempPathFactory) -> MountProc:
    """A write-back mount whose PATH has a fake `notify-send` that records its arguments."""
    tmp = tmp_path_factory.mktemp("wb")
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "notify-send"
    tool.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> {tmp / "notified"}\n')
    tool.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    m = start_mount(emu.url, tmp / "mnt", tmp / "work", "--write-back", "--transfers", "4", env=env)
    yield m
    m.stop()


def new_record(emu: EmulatorProc) -> str:
    return emu.json("POST", "/api/now/table/incident", {"short_description": "wb"})["result"][
        "sys_id"
    ]


def snfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(snfs_command(*args), capture_output=True, text=True, timeout=120)


def test_cp_r_then_sync_stores_every_file_exactly_once(
    emu: EmulatorProc, wb: MountProc, tmp_path: Path
) -> None:
    rec = new_record(emu)
    src = tmp_path / "src"
    src.mkdir()
    files = {f"f{i:02}.txt": os.urandom(8192) for i in range(30)}
    for name, data in files.items():
        (src / name).write_bytes(data)
    before = emu.stats()["by_route"].get("POST /attachment/file", 0)
    # Each upload takes 0.3 s on the instance: without sync waiting, files would be missing.
    emu.fault(method="POST", path="/attachment/file", count=len(files), delay=0.3)
    subprocess.run(["cp", "-r", f"{src}/.", str(wb.path("incident", rec))], check=True)
    done = snfs("sync", str(wb.mountpoint))
    assert done.returncode == 0, done.stderr
    stored = emu.attachments(f"table_sys_id={rec}")
    assert sorted(a["file_name"] for a in stored) == sorted(files)  # each exactly once
    for a in stored:
        assert a["hash"] == hashlib.sha256(files[a["file_name"]]).hexdigest()
    sent = emu.stats()["by_route"].get("POST /attachment/file", 0) - before
    assert sent == len(files)
    status = json.loads(snfs("status", str(wb.mountpoint), "--json").stdout)
    assert status["write_back"] is True and status["pending_uploads"] == []


def test_a_refused_upload_is_shown_everywhere(
    emu: EmulatorProc, wb: MountProc, tmp_path: Path
) -> None:
    rec = new_record(emu)
    target = wb.path("incident", rec, "tool.exe")
    target.write_bytes(b"MZ not allowed")  # close succeeds: the refusal comes later
    done = snfs("sync", str(wb.mountpoint))
    assert done.returncode == 1
    assert f"incident/{rec}/tool.exe: blocked:" in done.stderr

    def listed() -> list[str]:  # the status file is rendered at most once a second
        out = snfs("status", str(wb.mountpoint)).stdout
        return [x for x in out.splitlines() if "tool.exe" in x]

    [line] = eventually(listed, what="tool.exe in snfs status")
    assert "blocked" in line and "exe" in line.split("blocked", 1)[1]  # the instance's reason
    assert os.getxattr(target, "user.snfs.state") == b"blocked"
    assert emu.attachments(f"table_sys_id={rec}") == []
    notified = wb.mountpoint.parent / "notified"
    text = eventually(lambda: notified.exists() and notified.read_text(), what="notify-send")
    assert "snfs: upload refused" in text and f"incident/{rec}/tool.exe" in text
    refusals = [x for x in wb.log_text().splitlines() if "refused" in x and "tool.exe" in x]
    assert len(refusals) == 1
