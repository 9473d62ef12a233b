"""The write side through a real FUSE mount, each outcome checked through the instance's API."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from snfs.temp_names import is_temp
from tests.support.emulator_proc import EmulatorProc, start_emulator
from tests.support.mount_proc import MountProc, start_mount, stop_mount


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> EmulatorProc:
    tmp = tmp_path_factory.mktemp("emu")
    e = start_emulator(
        tmp / "data",
        "--demo",
        "--max-size",
        "2",
        "--extensions",
        "txt,pdf,png,bin,csv,md,ods,dat,log,json,html,ext",
        log=tmp / "emulator.log",
    )
    yield e
    e.stop()


def new_record(emu: EmulatorProc, table: str = "incident") -> str:
    return emu.json("POST", f"/api/now/table/{table}", {"short_description": "t"})["result"][
        "sys_id"
    ]


def on_instance(emu: EmulatorProc, record: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for a in emu.attachments(f"table_sys_id={record}"):
        out.setdefault(a["file_name"], []).append(a)
    return out


def wait_for(get, ok, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if ok(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sending(m: MountProc) -> bool:
    """A journal entry says an upload attempt started (every file open for writing has an
    entry too, saying "open": docs/WRITES.md, "The journal is the state")."""
    for j in m.spool.rglob("*.json"):
        try:
            if json.loads(j.read_text()).get("attempt_started"):
                return True
        except (FileNotFoundError, ValueError):
            continue
    return False


def uploads(emu: EmulatorProc) -> int:
    c = emu.stats()["by_route"]
    return c.get("POST /attachment/file", 0) + c.get("POST /attachment/upload", 0)


def test_cp_in_small_and_empty(emu: EmulatorProc, mnt: MountProc, tmp_path: Path) -> None:
    rec = new_record(emu)
    src = tmp_path / "notes.txt"
    src.write_bytes(b"hello snfs\n")
    subprocess.run(["cp", str(src), str(mnt.path("incident", rec))], check=True)
    atts = on_instance(emu, rec)
    assert list(atts) == ["notes.txt"]
    assert atts["notes.txt"][0]["hash"] == digest(b"hello snfs\n")
    assert atts["notes.txt"][0]["content_type"].startswith("text/plain")
    assert mnt.path("incident", rec, "notes.txt").read_bytes() == b"hello snfs\n"
    subprocess.run(["touch", str(mnt.path("incident", rec, "empty.txt"))], check=True)
    # touch never writes: the empty file is uploaded on release, just after close returns.
    atts = wait_for(lambda: on_instance(emu, rec), lambda a: "empty.txt" in a)
    assert atts["empty.txt"][0]["size_bytes"] == "0"
    assert len(atts["notes.txt"]) == 1


def test_overwrite_and_append(emu: EmulatorProc, mnt: MountProc) -> None:
    rec = new_record(emu)
    p = mnt.path("incident", rec, "log.txt")
    p.write_bytes(b"one\n")
    old = on_instance(emu, rec)["log.txt"][0]["sys_id"]
    p.write_bytes(b"two\n")  # O_TRUNC
    atts = on_instance(emu, rec)
    assert len(atts["log.txt"]) == 1 and atts["log.txt"][0]["hash"] == digest(b"two\n")
    assert atts["log.txt"][0]["sys_id"] != old
    with open(p, "ab") as f:
        f.write(b"three\n")
    atts = on_instance(emu, rec)
    assert len(atts["log.txt"]) == 1 and atts["log.txt"][0]["hash"] == digest(b"two\nthree\n")
    assert p.read_bytes() == b"two\nthree\n"
    assert os.listdir(mnt.path("incident", rec)) == ["log.txt"]


def test_replace_uploads_before_deleting(emu: EmulatorProc, mnt: MountProc) -> None:
    """If the upload of the new content fails, the old attachment must still be there."""
    rec = new_record(emu)
    p = mnt.path("incident", rec, "keep.txt")
    p.write_bytes(b"original")
    emu.fault(method="POST", path="/attachment/file", count=100, status=500)
    try:
        with pytest.raises(OSError):
            p.write_bytes(b"replacement")
        atts = on_instance(emu, rec)
        assert [a["hash"] for a in atts["keep.txt"]] == [digest(b"original")]
    finally:
        emu.json("DELETE", "/__emulator__/faults")
    os.unlink(p)


def test_rm(emu: EmulatorProc, mnt: MountProc) -> None:
    rec = new_record(emu)
    p = mnt.path("incident", rec, "gone.txt")
    p.write_bytes(b"x")
    assert "gone.txt" in on_instance(emu, rec)
    os.unlink(p)
    assert "gone.txt" not in on_instance(emu, rec)
    assert not p.exists()


def test_rsync_never_uploads_temp_names(emu: EmulatorProc, mnt: MountProc, tmp_path: Path) -> None:
    rec = new_record(emu)
    src = tmp_path / "folder"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}.txt").write_bytes(os.urandom(1000 + i))
    emu.reset_stats()
    subprocess.run(["rsync", "-a", f"{src}/", str(mnt.path("incident", rec)) + "/"], check=True)
    atts = on_instance(emu, rec)
    assert sorted(atts) == [f"f{i}.txt" for i in range(5)]
    for i in range(5):
        assert atts[f"f{i}.txt"][0]["hash"] == digest((src / f"f{i}.txt").read_bytes())
    assert uploads(emu) == 5  # no temp name was ever uploaded, not even for a moment


def test_vim_save(emu: EmulatorProc, mnt: MountProc) -> None:
    vim = shutil.which("vim") or shutil.which("vim.tiny")
    assert vim, "vim is installed by make test"
    rec = new_record(emu)
    p = mnt.path("incident", rec, "edit.txt")
    p.write_bytes(b"line one\n")
    emu.reset_stats()
    subprocess.run(
        [
            vim,
            "-u",
            "NONE",
            "-i",
            "NONE",
            "-n",
            "-es",
            "-c",
            "set backup",
            "-c",
            "normal Goline two",
            "-c",
            "wq",
            str(p),
        ],
        check=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    atts = on_instance(emu, rec)
    assert list(atts) == ["edit.txt"], atts
    assert atts["edit.txt"][0]["hash"] == digest(b"line one\nline two\n")
    assert uploads(emu) == 1
    assert not any(is_temp(n) for n in atts)


def test_gnome_and_libreoffice_save_patterns(emu: EmulatorProc, mnt: MountProc) -> None:
    """Simulated syscall by syscall (neither tool is in the test image)."""
    rec = new_record(emu)
    d = mnt.path("incident", rec)
    (d / "doc.ods").write_bytes(b"v1")
    emu.reset_stats()
    # GNOME (gio): write .goutputstream-XXXXXX, rename over the target.
    tmp = d / ".goutputstream-AB12CD"
    tmp.write_bytes(b"v2")
    os.rename(tmp, d / "doc.ods")
    # LibreOffice: lock file, temp file, rename over the target, unlock.
    lock = d / ".~lock.doc.ods#"
    lock.write_bytes(b",user,host,01.01.2026 00:00,user;")
    lu = d / "lu1234abcd.tmp"
    lu.write_bytes(b"v3")
    os.rename(lu, d / "doc.ods")
    assert lock.exists()  # visible locally while the document is open
    os.unlink(lock)
    atts = on_instance(emu, rec)
    assert list(atts) == ["doc.ods"] and atts["doc.ods"][0]["hash"] == digest(b"v3")
    assert uploads(emu) == 2
    assert sorted(os.listdir(d)) == ["doc.ods"]


def test_mv_within_across_and_over(emu: EmulatorProc, mnt: MountProc) -> None:
    r1, r2 = new_record(emu), new_record(emu, "problem")
    a = mnt.path("incident", r1, "a.txt")
    a.write_bytes(b"A")
    sys_a = on_instance(emu, r1)["a.txt"][0]["sys_id"]
    os.rename(a, mnt.path("incident", r1, "b.txt"))
    atts = on_instance(emu, r1)
    # The default release has no PATCH (405): a copy under the new name, then the old deleted.
    assert list(atts) == ["b.txt"] and atts["b.txt"][0]["sys_id"] != sys_a
    assert atts["b.txt"][0]["hash"] == digest(b"A")
    assert emu.attachments(f"sys_id={sys_a}") == []
    mnt.path("incident", r1, "c.txt").write_bytes(b"C")
    os.rename(mnt.path("incident", r1, "b.txt"), mnt.path("incident", r1, "c.txt"))
    atts = on_instance(emu, r1)
    assert list(atts) == ["c.txt"] and atts["c.txt"][0]["hash"] == digest(b"A")
    subprocess.run(
        ["mv", str(mnt.path("incident", r1, "c.txt")), str(mnt.path("problem", r2))], check=True
    )
    assert on_instance(emu, r1) == {}
    moved = on_instance(emu, r2)
    assert list(moved) == ["c.txt"] and moved["c.txt"][0]["table_name"] == "problem"
    assert mnt.path("problem", r2, "c.txt").read_bytes() == b"A"


def test_refused_uploads_keep_the_file(emu: EmulatorProc, mnt: MountProc, tmp_path: Path) -> None:
    rec = new_record(emu)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * 2**20))  # emulator --max-size 2 (MB)
    r = subprocess.run(
        ["cp", str(big), str(mnt.path("incident", rec))], capture_output=True, text=True
    )
    assert r.returncode != 0 and "too large" in r.stderr.lower(), r.stderr
    staged = mnt.path("incident", rec, "big.bin")
    assert staged.read_bytes() == big.read_bytes()  # not lost
    assert os.getxattr(staged, "user.snfs.state") == b"blocked"
    exe = tmp_path / "tool.exe"
    exe.write_bytes(b"MZ")
    with pytest.raises(OSError) as e:
        shutil.copyfile(exe, mnt.path("incident", rec, "tool.exe"))
    assert e.value.errno == errno.EPERM
    assert on_instance(emu, rec) == {}
    log = mnt.log_text()
    assert "big.bin refused" in log and "tool.exe refused" in log
    # Renamed to an accepted name it goes up (and the refusal is forgotten).
    os.rename(mnt.path("incident", rec, "tool.exe"), mnt.path("incident", rec, "tool.ext"))
    assert list(on_instance(emu, rec)) == ["tool.ext"]
    os.unlink(staged)
    assert "big.bin" not in os.listdir(mnt.path("incident", rec))


def test_failed_upload_retried_in_background(emu: EmulatorProc, mnt: MountProc) -> None:
    rec = new_record(emu)
    emu.fault(method="POST", path="/attachment/file", count=8, status=503)
    p = mnt.path("incident", rec, "later.txt")
    with pytest.raises(OSError) as e:
        p.write_bytes(b"eventually")
    assert e.value.errno in (errno.EIO, errno.EAGAIN)
    assert p.read_bytes() == b"eventually"  # visible meanwhile
    status = json.loads(mnt.path(".snfs", "status").read_text())
    assert any(u["path"].endswith("later.txt") for u in status["pending_uploads"])
    deadline = time.monotonic() + 60
    while "later.txt" not in on_instance(emu, rec):
        assert time.monotonic() < deadline, mnt.log_text()[-2000:]
        time.sleep(0.5)
    assert on_instance(emu, rec)["later.txt"][0]["hash"] == digest(b"eventually")
    assert len(on_instance(emu, rec)["later.txt"]) == 1


def test_sigkill_mid_upload_then_recovery(emu: EmulatorProc, tmp_path: Path) -> None:
    rec = new_record(emu)
    m = start_mount(emu.url, tmp_path / "m", tmp_path / "w")
    emu.fault(method="POST", path="/attachment/file", count=1, delay=30)
    writer = subprocess.Popen(["cp", "/etc/services", str(m.path("incident", rec, "svc.txt"))])
    deadline = time.monotonic() + 20
    while not sending(m):  # the upload has started (a file open for writing is journaled too)
        assert time.monotonic() < deadline
        time.sleep(0.1)
    os.kill(m.proc.pid, signal.SIGKILL)
    m.proc.wait()
    writer.wait(timeout=30)
    stop_mount(m.mountpoint, None)
    emu.json("DELETE", "/__emulator__/faults")
    m2 = start_mount(emu.url, tmp_path / "m", tmp_path / "w")
    try:
        want = digest(Path("/etc/services").read_bytes())
        deadline = time.monotonic() + 60
        while "svc.txt" not in on_instance(emu, rec):
            assert time.monotonic() < deadline, m2.log_text()[-2000:]
            time.sleep(0.5)
        time.sleep(1)
        atts = on_instance(emu, rec)["svc.txt"]
        assert len(atts) == 1 and atts[0]["hash"] == want
        assert not list(m2.spool.rglob("*.json"))
    finally:
        m2.stop()


def test_odd_names_round_trip(emu: EmulatorProc, mnt: MountProc) -> None:
    rec = new_record(emu)
    mnt.path("incident", rec, "a^ORtable_name!=x.txt").write_bytes(b"caret")
    mnt.path("incident", rec, "dir\uff0ffile.txt").write_bytes(b"slash")
    atts = on_instance(emu, rec)
    assert sorted(atts) == ["a^ORtable_name!=x.txt", "dir/file.txt"]
    assert mnt.path("incident", rec, "dir\uff0ffile.txt").read_bytes() == b"slash"


def test_concurrent_writers(emu: EmulatorProc, mnt: MountProc) -> None:
    recs = [new_record(emu) for _ in range(4)]
    errors: list[BaseException] = []

    def write(rec: str) -> None:
        try:
            for i in range(3):
                mnt.path("incident", rec, f"w{i}.txt").write_bytes(rec.encode() * (i + 1))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(r,)) for r in recs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    for rec in recs:
        atts = on_instance(emu, rec)
        assert sorted(atts) == ["w0.txt", "w1.txt", "w2.txt"]
        assert atts["w2.txt"][0]["hash"] == digest(rec.encode() * 3)


def test_directories_and_refusals(emu: EmulatorProc, mnt: MountProc) -> None:
    rec = new_record(emu)
    subprocess.run(["mkdir", "-p", str(mnt.path("incident", rec))], check=True)
    with pytest.raises(FileNotFoundError):
        os.mkdir(mnt.path("incident", "0" * 32))
    with pytest.raises(OSError) as e:
        os.mkdir(mnt.path("new_table"))
    assert e.value.errno == errno.EPERM
    p = mnt.path("incident", rec, "meta.txt")
    p.write_bytes(b"m")
    os.chmod(p, 0o600)
    os.utime(p, (0, 0))
    for op in (
        lambda: os.link(p, mnt.path("incident", rec, "hard")),
        lambda: os.symlink("x", mnt.path("incident", rec, "sym")),
    ):
        with pytest.raises(OSError) as e:
            op()
        assert e.value.errno == errno.EPERM
    with pytest.raises(OSError) as e:
        os.rmdir(mnt.path("incident", rec))
    assert e.value.errno == errno.ENOTEMPTY
    os.unlink(p)
    os.rmdir(mnt.path("incident", rec))
    assert on_instance(emu, rec) == {}


def test_read_only(emu: EmulatorProc, tmp_path: Path) -> None:
    rec = new_record(emu)
    m = start_mount(emu.url, tmp_path / "m", tmp_path / "w", "-o", "ro")
    try:
        emu.reset_stats()
        for op in (
            lambda: m.path("incident", rec, "x.txt").write_bytes(b"x"),
            lambda: os.mkdir(m.path("incident", rec)),
        ):
            with pytest.raises(OSError) as e:
                op()
            assert e.value.errno in (errno.EROFS, errno.EEXIST)
        assert uploads(emu) == 0
    finally:
        m.stop()


def test_large_upload_memory(emu: EmulatorProc, tmp_path: Path) -> None:
    """300 MB copied in: right bytes on the instance, daemon peak RSS under 150 MB."""
    e2 = start_emulator(tmp_path / "data2", log=tmp_path / "e2.log")
    try:
        rec = new_record(e2)
        m = start_mount(e2.url, tmp_path / "m", tmp_path / "w")
        try:
            src = tmp_path / "big.bin"
            block = hashlib.sha256(b"x").digest() * 32768  # 1 MiB
            h = hashlib.sha256()
            with open(src, "wb") as f:
                for _ in range(300):
                    f.write(block)
                    h.update(block)
            subprocess.run(["cp", str(src), str(m.path("incident", rec))], check=True, timeout=300)
            src.unlink()
            atts = on_instance(e2, rec)
            assert atts["big.bin"][0]["hash"] == h.hexdigest()
            peak = m.peak_rss()
            assert peak < 150 * 2**20, f"daemon peak RSS {peak / 2**20:.0f} MiB"
        finally:
            m.stop()
    finally:
        e2.stop()


def test_cp_a_and_tar_x(emu: EmulatorProc, mnt: MountProc, tmp_path: Path) -> None:
    rec, rec2 = new_record(emu), new_record(emu)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"t{i}.txt").write_bytes(f"file {i}\n".encode())
        os.utime(src / f"t{i}.txt", (1_000_000_000, 1_000_000_000))
    emu.reset_stats()
    subprocess.run(["cp", "-a", f"{src}/.", str(mnt.path("incident", rec))], check=True)
    atts = on_instance(emu, rec)
    assert sorted(atts) == ["t0.txt", "t1.txt", "t2.txt"] and uploads(emu) == 3
    subprocess.run(["tar", "-cf", str(tmp_path / "a.tar"), "-C", str(src), "."], check=True)
    emu.reset_stats()
    subprocess.run(
        ["tar", "-xf", str(tmp_path / "a.tar"), "-C", str(mnt.path("incident", rec2))], check=True
    )
    atts = on_instance(emu, rec2)
    assert sorted(atts) == ["t0.txt", "t1.txt", "t2.txt"] and uploads(emu) == 3
    assert atts["t1.txt"][0]["hash"] == digest(b"file 1\n")


def test_fsync_and_truncate(emu: EmulatorProc, mnt: MountProc) -> None:
    rec = new_record(emu)
    p = mnt.path("incident", rec, "sync.txt")
    fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"before close")
        os.fsync(fd)  # uploads now
        assert on_instance(emu, rec)["sync.txt"][0]["hash"] == digest(b"before close")
        os.ftruncate(fd, 6)
    finally:
        os.close(fd)
    atts = on_instance(emu, rec)
    assert len(atts["sync.txt"]) == 1 and atts["sync.txt"][0]["hash"] == digest(b"before")
    os.truncate(p, 3)  # no handle: uploaded at once
    atts = on_instance(emu, rec)
    assert len(atts["sync.txt"]) == 1 and atts["sync.txt"][0]["hash"] == digest(b"bef")
    assert p.read_bytes() == b"bef"


def test_clean_shutdown_keeps_what_is_owed(emu: EmulatorProc, tmp_path: Path) -> None:
    """Unmount while an upload is failing: the bytes stay journaled; the next mount stores them."""
    rec = new_record(emu)
    m = start_mount(emu.url, tmp_path / "m", tmp_path / "w")
    emu.fault(method="POST", path="/attachment/file", count=1000, status=503)
    with pytest.raises(OSError):
        m.path("incident", rec, "owed.txt").write_bytes(b"owed")
    m.stop()
    assert list(m.spool.rglob("*.json")) and on_instance(emu, rec) == {}
    emu.json("DELETE", "/__emulator__/faults")
    m2 = start_mount(emu.url, tmp_path / "m", tmp_path / "w")
    try:
        atts = wait_for(lambda: on_instance(emu, rec), lambda a: "owed.txt" in a, timeout=60)
        assert atts["owed.txt"][0]["hash"] == digest(b"owed")
        status = wait_for(
            lambda: json.loads(m2.path(".snfs", "status").read_text()),
            lambda s: not s["pending_uploads"],
        )
        assert status["pending_uploads"] == []
    finally:
        m2.stop()


def test_row11_vim_ex_mode_swap_and_probe_stay_local(emu: EmulatorProc, mnt: MountProc) -> None:
    """vim in ex mode with its default settings (swap file on): neither `.name.swp` nor the
    `.name.swx` probe becomes an attachment."""
    vim = shutil.which("vim") or shutil.which("vim.tiny")
    assert vim, "vim is installed by make test"
    rec = new_record(emu)
    p = mnt.path("incident", rec, "ex.txt")
    p.write_bytes(b"one\n")
    emu.reset_stats()
    subprocess.run(
        [vim, "-u", "NONE", "-i", "NONE", "-es", "-c", "normal Gotwo", "-c", "wq", str(p)],
        check=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    atts = on_instance(emu, rec)
    assert list(atts) == ["ex.txt"], atts
    assert atts["ex.txt"][0]["hash"] == digest(b"one\ntwo\n")
    assert uploads(emu) == 1


def test_row3_rm_during_close_upload_end_to_end(emu: EmulatorProc, tmp_path: Path) -> None:
    """`rm` while the close-upload is in flight: rm waits for it, then deletes what it stored."""
    rec = new_record(emu)
    m = start_mount(emu.url, tmp_path / "m", tmp_path / "w")
    try:
        emu.fault(method="POST", path="/attachment/file", count=1, delay=3)
        p = m.path("incident", rec, "racy.txt")
        writer = threading.Thread(target=p.write_bytes, args=(b"in flight",))
        writer.start()
        wait_for(lambda: sending(m), bool)  # the upload has started
        os.unlink(p)
        writer.join(30)
        assert on_instance(emu, rec) == {}
        assert "racy.txt" not in os.listdir(m.path("incident", rec))
    finally:
        emu.json("DELETE", "/__emulator__/faults")
        m.stop()


def test_row2_sigterm_never_uploads_a_file_open_for_writing(
    emu: EmulatorProc, tmp_path: Path
) -> None:
    rec = new_record(emu)
    m = start_mount(emu.url, tmp_path / "m", tmp_path / "w")
    try:
        p = m.path("incident", rec, "half.bin")
        p.write_bytes(b"original")
        f = open(p, "r+b")  # noqa: SIM115 - held open across the daemon's stop
        f.write(os.urandom(2**20))
        f.flush()  # in the spool; not closed
        m.proc.send_signal(signal.SIGTERM)
        m.proc.wait(timeout=60)
        try:
            f.close()
        except OSError:
            pass  # the mount is gone
        atts = on_instance(emu, rec)
        assert [a["hash"] for a in atts["half.bin"]] == [digest(b"original")]
        [entry] = [json.loads(j.read_text()) for j in m.spool.rglob("*.json")]
        assert entry["blocked"] and entry["name"] == "half.bin"  # kept, not sent
    finally:
        m.stop()


def test_row14_row16_allow_other_and_a_non_ascii_mount_point(
    emu: EmulatorProc, tmp_path: Path
) -> None:
    """allow_other without umask= shows files 0600 (owner only); `snfs status` finds a mount
    point whose path has non-ASCII characters and a space."""
    from snfs.status import snfs_mounts

    rec = new_record(emu)
    m = start_mount(emu.url, tmp_path / "café dir", tmp_path / "w", "-o", "allow_other")
    try:
        p = m.path("incident", rec, "private.txt")
        p.write_bytes(b"p")
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(m.path("incident")).st_mode) == 0o700
        assert m.mountpoint in snfs_mounts()
        assert "allow_other without umask=" in m.log_text()
    finally:
        m.stop()


def test_row1_resave_same_bytes_fail_kill_remount_keeps_one_copy(
    emu: EmulatorProc, tmp_path: Path
) -> None:
    """Re-save identical bytes, the upload fails, the daemon is killed, the instance is
    mounted again: recovery must not take the attachment being replaced for the upload (and
    delete it). It uploads again, then deletes the old one: exactly one copy remains."""
    rec = new_record(emu)
    m = start_mount(emu.url, tmp_path / "m", tmp_path / "w")
    p = m.path("incident", rec, "same.txt")
    p.write_bytes(b"identical")
    [old] = on_instance(emu, rec)["same.txt"]
    emu.fault(method="POST", path="/attachment/file", count=1000, status=503)
    try:
        with pytest.raises(OSError):
            p.write_bytes(b"identical")
    finally:
        os.kill(m.proc.pid, signal.SIGKILL)
        m.proc.wait()
        stop_mount(m.mountpoint, None)
        emu.json("DELETE", "/__emulator__/faults")
    m2 = start_mount(emu.url, tmp_path / "m", tmp_path / "w")
    try:
        wait_for(lambda: list(m2.spool.rglob("*.json")), lambda j: not j, timeout=60)
        atts = on_instance(emu, rec)["same.txt"]
        assert [a["hash"] for a in atts] == [digest(b"identical")]
        assert atts[0]["sys_id"] != old["sys_id"]  # stored again, then the old one deleted
    finally:
        m2.stop()
