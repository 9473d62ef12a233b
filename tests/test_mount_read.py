"""The read side through a real FUSE mount of the emulator, checked against the API's view."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import stat
import subprocess
import tarfile
from collections import Counter
from datetime import UTC
from pathlib import Path

import pytest

from snfs.children import snfs_command
from tests.support.client_support import shared_emulator
from tests.support.emulator_proc import EmulatorProc
from tests.support.mount_proc import MountProc, start_mount, stop_mount
from tests.support.waiting import eventually

emu = shared_emulator("--demo")


def by_record(atts: list[dict]) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for a in atts:
        out.setdefault((a["table_name"], a["table_sys_id"]), []).append(a)
    return out


def shown(att: dict, siblings: list[dict]) -> str:
    """The name the mount must give `att`, from the API's data and the rules in
    docs/SEMANTICS.md ("Names"), not from snfs.names: `/` shows as U+FF0F; of several files
    with one name the newest (created, then sys_id) keeps it and each older one is shown as
    `stem~<first 8 hex digits of its sys_id>.ext`."""
    name = att["file_name"].replace("/", "\uff0f")
    same = [s for s in siblings if s["file_name"] == att["file_name"]]
    newest = max(same, key=lambda s: (s["sys_created_on"], s["sys_id"]))
    if newest["sys_id"] == att["sys_id"]:
        return name
    stem, dot, ext = name.rpartition(".")
    tag = "~" + att["sys_id"][:8]
    return f"{stem}{tag}.{ext}" if dot and stem else name + tag


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def route_counts(emu: EmulatorProc) -> Counter:
    return Counter(emu.stats()["by_route"])


def test_root_lists_tables_with_attachments(emu: EmulatorProc, mnt: MountProc) -> None:
    tables = {a["table_name"] for a in emu.attachments()}
    assert set(os.listdir(mnt.mountpoint)) == tables
    assert "ZZ_YYincident" in tables  # image-field attachments are their own table


def test_every_attachment_is_a_file_with_its_bytes(emu: EmulatorProc, mnt: MountProc) -> None:
    atts = emu.attachments()
    assert len(atts) >= 10
    for (table, record), siblings in by_record(atts).items():
        listed = set(os.listdir(mnt.path(table, record)))
        assert len(listed) == len(siblings), (table, record, listed)
        for att in siblings:
            path = mnt.path(table, record, shown(att, siblings))
            st = path.stat()
            assert stat.S_ISREG(st.st_mode)
            assert st.st_size == int(att["size_bytes"])
            assert sha256(path) == att["hash"]


def test_odd_names_round_trip(emu: EmulatorProc, mnt: MountProc) -> None:
    atts = emu.attachments()
    slash = [a for a in atts if "/" in a["file_name"]]
    assert slash, "demo data should hold a name with a slash"
    a = slash[0]
    p = mnt.path(a["table_name"], a["table_sys_id"], a["file_name"].replace("/", "\uff0f"))
    assert sha256(p) == a["hash"]
    for ch in ("^", "%", "#", "é"):
        assert any(ch in n for a in atts for n in [a["file_name"]]), ch
        hits = [a for a in atts if ch in a["file_name"]]
        p = mnt.path(hits[0]["table_name"], hits[0]["table_sys_id"], hits[0]["file_name"])
        assert sha256(p) == hits[0]["hash"]


def test_duplicate_names_all_shown(emu: EmulatorProc, mnt: MountProc) -> None:
    for (table, record), siblings in by_record(emu.attachments()).items():
        counts = Counter(a["file_name"] for a in siblings)
        dup = [n for n, c in counts.items() if c > 1]
        if dup:
            listed = os.listdir(mnt.path(table, record))
            stem, ext = os.path.splitext(dup[0])
            tagged = [n for n in listed if n.startswith(stem + "~") and n.endswith(ext)]
            assert dup[0] in listed and len(tagged) == counts[dup[0]] - 1
            newest = max(
                (a for a in siblings if a["file_name"] == dup[0]),
                key=lambda a: (a["sys_created_on"], a["sys_id"]),
            )
            assert sha256(mnt.path(table, record, dup[0])) == newest["hash"]
            return
    pytest.fail("demo data should hold two attachments with one name on one record")


def test_attributes_and_xattrs(emu: EmulatorProc, mnt: MountProc) -> None:
    att = next(a for a in emu.attachments() if a["file_name"].endswith(".png"))
    siblings = by_record(emu.attachments())[(att["table_name"], att["table_sys_id"])]
    p = mnt.path(att["table_name"], att["table_sys_id"], shown(att, siblings))
    st = p.stat()
    assert st.st_uid == os.getuid() and st.st_mode & 0o777 == 0o644
    from datetime import datetime

    updated = datetime.strptime(att["sys_updated_on"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    assert int(st.st_mtime) == int(updated.timestamp())
    assert os.stat(p).st_ino == st.st_ino  # stable
    # Tools read and write in pieces of st_blksize: 1 MiB, one FUSE request each (attrs.IO_SIZE)
    assert st.st_blksize == 1 << 20
    assert os.getxattr(p, "user.mime_type") == b"image/png"
    assert os.getxattr(p, "user.servicenow.sys_id").decode() == att["sys_id"]
    assert os.getxattr(p, "user.servicenow.hash").decode() == att["hash"]
    assert "user.servicenow.download_link" in os.listxattr(p)
    with pytest.raises(OSError) as e:
        os.getxattr(p, "user.nope")
    assert e.value.errno == errno.ENODATA
    vfs = os.statvfs(mnt.mountpoint)
    assert vfs.f_bavail > 0 and vfs.f_namemax == 255


def test_number_alias_is_a_symlink(emu: EmulatorProc, mnt: MountProc) -> None:
    rec = emu.json("GET", "/api/now/table/incident?sysparm_limit=1")["result"][0]
    alias = mnt.path("incident", rec["number"])
    assert alias.is_symlink()
    assert os.readlink(alias) == rec["sys_id"]
    assert alias.resolve().name == rec["sys_id"]
    assert rec["number"] not in os.listdir(mnt.path("incident"))


def test_record_without_attachments_is_reachable(emu: EmulatorProc, mnt: MountProc) -> None:
    rec = emu.json("POST", "/api/now/table/problem", {"short_description": "empty"})["result"]
    p = mnt.path("problem", rec["sys_id"])
    assert p.is_dir() and os.listdir(p) == []
    assert not mnt.path("problem", "0" * 32).exists()
    with pytest.raises(FileNotFoundError):
        os.stat(mnt.path("no_such_table"))


def test_tools_work(emu: EmulatorProc, mnt: MountProc, tmp_path: Path) -> None:
    table = "incident"
    found = subprocess.run(
        ["find", str(mnt.path(table)), "-type", "f"], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    api = [a for a in emu.attachments() if a["table_name"] == table]
    assert len([f for f in found if f]) == len(api)
    subprocess.run(
        ["tar", "-cf", str(tmp_path / "t.tar"), "-C", str(mnt.mountpoint), table], check=True
    )
    with tarfile.open(tmp_path / "t.tar") as t:
        assert len([m for m in t.getmembers() if m.isfile()]) == len(api)
    txt = next(a for a in api if a["file_name"].endswith(".txt"))
    siblings = by_record(api)[(table, txt["table_sys_id"])]
    src = mnt.path(table, txt["table_sys_id"], shown(txt, siblings))
    subprocess.run(["cp", str(src), str(tmp_path / "out")], check=True)
    assert sha256(tmp_path / "out") == txt["hash"]
    ls_a = subprocess.run(
        ["ls", "-a", str(src.parent)], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert ls_a[:2] == [".", ".."] and src.name in ls_a
    out = subprocess.run(["sha256sum", str(src)], capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == txt["hash"]
    first_word = (tmp_path / "out").read_text().split()[0]
    grep = subprocess.run(
        ["grep", "-rl", "--", first_word, str(mnt.path(table))], capture_output=True, text=True
    )
    assert str(src) in grep.stdout


def test_request_counts(emu: EmulatorProc, tmp_path: Path) -> None:
    """`ls -l` costs one list request and nothing per file; `find` over a table costs about
    one request per 1000 attachments; a second read costs none."""
    m = start_mount(emu.url, tmp_path / "m", tmp_path / "w")
    try:
        rec = next(r for r, s in by_record(emu.attachments()).items() if len(s) >= 3)
        emu.reset_stats()
        subprocess.run(["ls", "-l", str(m.path(*rec))], check=True, capture_output=True)
        c = route_counts(emu)
        assert c["GET /attachment"] == 1, c
        assert c["GET /attachment/{sys_id}"] == 0 and c["GET /attachment/{sys_id}/file"] == 0
        # A miss in a freshly listed directory costs nothing.
        emu.reset_stats()
        assert not m.path(*rec, "missing.txt").exists()
        assert emu.stats()["total"] == 0
        emu.reset_stats()
        subprocess.run(
            ["find", str(m.path("incident")), "-type", "f", "-ls"], check=True, capture_output=True
        )
        c = route_counts(emu)
        assert c["GET /attachment"] <= 2 and c["GET /attachment/{sys_id}"] == 0, c
        f = next(p for p in m.path(*rec).iterdir())
        f.read_bytes()
        emu.reset_stats()
        f.read_bytes()
        subprocess.run(["cat", str(f)], check=True, capture_output=True)
        assert emu.stats()["total"] == 0
    finally:
        m.stop()


def test_sighup_drops_listings(emu: EmulatorProc, tmp_path: Path) -> None:
    m = start_mount(emu.url, tmp_path / "m", tmp_path / "w", "--dir-cache-time", "600")
    try:
        rec = emu.json("GET", "/api/now/table/incident?sysparm_limit=1")["result"][0]["sys_id"]
        before = set(os.listdir(m.path("incident", rec)))
        status, _, _ = emu.request(
            "POST",
            f"/api/now/attachment/file?table_name=incident&table_sys_id={rec}&file_name=hup.txt",
            b"hello",
            headers={"Content-Type": "text/plain"},
        )
        assert status == 201
        assert set(os.listdir(m.path("incident", rec))) == before  # cached
        m.proc.send_signal(signal.SIGHUP)
        eventually(lambda: "hup.txt" in os.listdir(m.path("incident", rec)), timeout=10)
    finally:
        m.stop()


def test_restricted_user_gets_enoent(emu: EmulatorProc, tmp_path: Path) -> None:
    """A real instance answers a record the user may not read with 404 ("does not exist, or
    the current user cannot access it"): the record is not there for this user."""
    hr = next(a for a in emu.attachments() if a["table_name"] == "hr_case")
    m = start_mount(emu.url, tmp_path / "m", tmp_path / "w", user="itil", password="itil")
    try:
        assert "hr_case" not in os.listdir(m.mountpoint)
        with pytest.raises(OSError) as e:
            os.listdir(m.path("hr_case", hr["table_sys_id"]))
        assert e.value.errno == errno.ENOENT
        status, _, _ = emu.request(
            "GET", f"/api/now/table/hr_case/{hr['table_sys_id']}", auth=("itil", "itil")
        )
        assert status == 404
        assert os.listdir(m.path("incident"))  # and the mount is fine
    finally:
        m.stop()


def test_wrong_password_fails_before_mounting(emu: EmulatorProc, tmp_path: Path) -> None:
    m = start_mount(emu.url, tmp_path / "m", tmp_path / "w", password="wrong", expect_fail=True)
    code = m.proc.wait(timeout=30)
    assert code != 0
    assert not os.path.ismount(tmp_path / "m")
    text = m.log_text()
    assert "wrong" not in text  # the secret never reaches the log
    lines = [line for line in text.splitlines() if "ERROR" in line]
    assert len(lines) == 1 and ("401" in lines[0] or "Authenticat" in lines[0]), text


def test_faults_during_reads(emu: EmulatorProc, tmp_path: Path) -> None:
    m = start_mount(emu.url, tmp_path / "m", tmp_path / "w")
    try:
        api = emu.attachments()
        txts = [a for a in api if a["file_name"].endswith(".txt") and a["table_name"] == "incident"]
        a, b = txts[0], txts[1]
        pa = m.path(
            "incident", a["table_sys_id"], shown(a, by_record(api)[("incident", a["table_sys_id"])])
        )
        pb = m.path(
            "incident", b["table_sys_id"], shown(b, by_record(api)[("incident", b["table_sys_id"])])
        )
        emu.fault(method="GET", path=f"/attachment/{a['sys_id']}/file", count=2, status=503)
        assert sha256(pa) == a["hash"]  # retried
        emu.fault(method="GET", path=f"/attachment/{b['sys_id']}/file", count=50, status=503)
        with pytest.raises(OSError) as e:
            pb.read_bytes()
        assert e.value.errno in (errno.EIO, errno.EAGAIN)
        emu.json("DELETE", "/__emulator__/faults")
        assert sha256(pb) == b["hash"]  # the mount survived and recovers
    finally:
        m.stop()


def test_deleted_attachment_reads_enoent(emu: EmulatorProc, tmp_path: Path) -> None:
    rec = emu.json("GET", "/api/now/table/incident?sysparm_limit=1")["result"][0]["sys_id"]
    status, _, body = emu.request(
        "POST",
        f"/api/now/attachment/file?table_name=incident&table_sys_id={rec}&file_name=doomed.txt",
        b"x" * 100,
        headers={"Content-Type": "text/plain"},
    )
    sys_id = json.loads(body)["result"]["sys_id"]
    m = start_mount(emu.url, tmp_path / "m", tmp_path / "w")
    try:
        p = m.path("incident", rec, "doomed.txt")
        assert p.stat().st_size == 100
        emu.json("DELETE", f"/api/now/attachment/{sys_id}")
        with pytest.raises(FileNotFoundError):
            p.read_bytes()
        assert "doomed.txt" not in os.listdir(m.path("incident", rec))
    finally:
        m.stop()


def test_handler_bug_leaves_mount_alive(emu: EmulatorProc, tmp_path: Path) -> None:
    m = start_mount(
        emu.url, tmp_path / "m", tmp_path / "w", env={"SNFS_TEST_HANDLER_BUG": "getxattr"}
    )
    try:
        f = next(m.path("incident").iterdir())
        g = next(f.iterdir())
        with pytest.raises(OSError) as e:
            os.getxattr(g, "user.mime_type")
        assert e.value.errno == errno.EIO
        assert m.proc.poll() is None and os.listdir(m.path("incident"))
        assert "unexpected error in getxattr" in m.log_text()
    finally:
        m.stop()


def test_large_file_read_memory(emu: EmulatorProc, tmp_path: Path) -> None:
    """A 200 MB file read through the mount: right bytes, daemon peak RSS under 150 MB."""
    rec = emu.json("GET", "/api/now/table/incident?sysparm_limit=1")["result"][0]["sys_id"]
    size = 200 * 2**20
    digest = upload_stream(emu, "incident", rec, "big.bin", size)
    m = start_mount(emu.url, tmp_path / "m", tmp_path / "w")
    try:
        out = subprocess.run(
            ["sha256sum", str(m.path("incident", rec, "big.bin"))],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        assert out.stdout.split()[0] == digest
        peak = m.peak_rss()
        assert peak < 150 * 2**20, f"daemon peak RSS {peak / 2**20:.0f} MiB"
    finally:
        m.stop()


def pattern_chunks(size: int, chunk: int = 1 << 20):
    block = hashlib.sha256(b"snfs").digest() * (chunk // 32)
    sent = 0
    while sent < size:
        n = min(chunk, size - sent)
        yield block[:n]
        sent += n


def upload_stream(emu: EmulatorProc, table: str, record: str, name: str, size: int) -> str:
    """Upload `size` deterministic bytes through the API without holding them in memory."""
    import http.client
    from base64 import b64encode
    from urllib.parse import urlsplit

    u = urlsplit(emu.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
    h = hashlib.sha256()
    conn.putrequest(
        "POST",
        f"/api/now/attachment/file?table_name={table}&table_sys_id={record}&file_name={name}",
    )
    conn.putheader("Authorization", "Basic " + b64encode(b"admin:admin").decode())
    conn.putheader("Content-Type", "application/octet-stream")
    conn.putheader("Content-Length", str(size))
    conn.endheaders()
    for c in pattern_chunks(size):
        h.update(c)
        conn.send(c)
    resp = conn.getresponse()
    assert resp.status == 201, resp.read()
    resp.read()
    conn.close()
    return h.hexdigest()


def test_owner_options(emu: EmulatorProc, tmp_path: Path) -> None:
    m = start_mount(emu.url, tmp_path / "m", tmp_path / "w", "-o", "uid=1234,gid=4321,umask=077")
    try:
        table = next(m.mountpoint.iterdir())
        f = next(next(table.iterdir()).iterdir())
        for p, mode in ((table, 0o700), (f, 0o600)):
            st = p.stat()
            assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1234, 4321, mode)
    finally:
        m.stop()


def test_daemon_unmount_and_signals(emu: EmulatorProc, tmp_path: Path) -> None:
    """--daemon returns once mounted; `snfs unmount` stops it; SIGTERM unmounts cleanly."""
    import sys

    mp = tmp_path / "d"
    mp.mkdir()
    env = dict(os.environ, SNFS_PASSWORD="admin")
    base = [
        sys.executable,
        "-m",
        "snfs",
        "mount",
        emu.url,
        str(mp),
        "--user",
        "admin",
        "--spool-dir",
        str(tmp_path / "s"),
        "--cache-dir",
        str(tmp_path / "c"),
        "--log-file",
        str(tmp_path / "d.log"),
    ]
    try:
        r = subprocess.run([*base, "--daemon"], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert os.path.ismount(mp) and "incident" in os.listdir(mp)
        pid = int(json.loads((mp / ".snfs" / "status").read_text())["pid"])
        r = subprocess.run(
            snfs_command("unmount", str(mp)),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 0, r.stderr
        wait_gone(pid)
        assert not os.path.ismount(mp)
        m = start_mount(emu.url, mp, tmp_path / "w2")
        m.proc.send_signal(signal.SIGTERM)
        assert m.proc.wait(timeout=30) == 0
        assert not os.path.ismount(mp)
        assert "unmounted" in m.log_text()
    finally:
        stop_mount(mp, None)


def wait_gone(pid: int, timeout: float = 30.0) -> None:
    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    try:
        eventually(gone, timeout=timeout, what=f"daemon {pid} exits after unmount")
    except AssertionError:
        os.kill(pid, signal.SIGKILL)
        raise


def test_second_mount_on_live_mountpoint_fails(
    emu: EmulatorProc, mnt: MountProc, tmp_path: Path
) -> None:
    m = start_mount(emu.url, mnt.mountpoint, tmp_path / "w", expect_fail=True)
    assert m.proc.wait(timeout=30) != 0
    assert "already a mount point" in m.log_text()
    assert os.listdir(mnt.mountpoint)  # the first mount is untouched


def test_status_command(emu: EmulatorProc, mnt: MountProc) -> None:
    (mnt.path("incident").iterdir().__next__())  # some traffic
    r = subprocess.run(
        snfs_command("status", str(mnt.mountpoint)),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert (
        emu.url in r.stdout and "cache: hit rate" in r.stdout and "pending uploads: 0" in r.stdout
    )
    assert "requests:" in r.stdout and "list" in r.stdout
    r = subprocess.run(snfs_command("status"), capture_output=True, text=True)
    assert str(mnt.mountpoint) in r.stdout  # every snfs mount, found in /proc/self/mounts


def test_unreachable_instance_fails_before_mounting(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    m = start_mount(f"http://127.0.0.1:{port}", tmp_path / "m", tmp_path / "w", expect_fail=True)
    assert m.proc.wait(timeout=60) == 1
    assert not os.path.ismount(tmp_path / "m")
    lines = [line for line in m.log_text().splitlines() if "WARNING" in line or "ERROR" in line]
    assert len(lines) == 1 and "cannot use" in lines[0], m.log_text()


def test_concurrent_large_reads_stay_exact_under_download_faults(
    emulator_factory, tmp_path: Path
) -> None:
    """Large files (past the memory cache: the download workers' blocks, the answers from
    memory, the pool) read at once by several readers in several ways while the instance
    breaks downloads mid-body and refuses some: every byte a read returns is the file's, and
    every read completes (a break is resumed). Binary files come identity (received into
    blocks), text files gzip (decoded pieces copied in). Read again after the kernel dropped
    its pages: the same bytes from the cache file."""
    import random
    import threading

    e = emulator_factory("--state-delay", "0")
    rec = e.json("POST", "/api/now/table/incident", {"short_description": "reads"})["result"][
        "sys_id"
    ]
    rng = random.Random(2112)
    files: dict[str, bytes] = {}
    for i in range(6):
        size = rng.randrange(4_500_000, 10_000_000)
        if i % 2:
            name, ctype = f"notes{i}.txt", "text/plain"
            data = b"".join(b"%08d some text of the notes\n" % n for n in range(size // 33))
        else:
            name, ctype = f"blob{i}.bin", "application/octet-stream"
            data = rng.randbytes(size)
        status, _, raw = e.request(
            "POST",
            f"/api/now/attachment/file?table_name=incident&table_sys_id={rec}&file_name={name}",
            data,
            headers={"Content-Type": ctype},
        )
        assert status == 201, raw
        files[name] = data
    for cut in (300_000, 1_500_000, 2_600_000, 5_000_000, 700_000, 3_300_000):
        e.fault(method="GET", path=r"/file$", count=1, drop_after_bytes=cut)
    e.fault(method="GET", path=r"/file$", count=2, status=503)
    m = start_mount(e.url, tmp_path / "m", tmp_path / "w")
    wrong: list[str] = []

    def whole(name: str) -> None:
        with open(m.path("incident", rec, name), "rb") as f:
            got = b"".join(iter(lambda: f.read(1 << 20), b""))
        if got != files[name]:
            wrong.append(f"{name}: whole read differs")

    def scattered(name: str, seed: int) -> None:
        r, data = random.Random(seed), files[name]
        with open(m.path("incident", rec, name), "rb") as f:
            for _ in range(40):
                off, n = r.randrange(len(data)), r.choice((4096, 131072, 1 << 20, 3 << 20))
                if os.pread(f.fileno(), n, off) != data[off : off + n]:
                    wrong.append(f"{name}: pread({n}, {off}) differs")

    try:
        readers = [threading.Thread(target=whole, args=(n,)) for n in files]
        readers += [threading.Thread(target=scattered, args=(n, i)) for i, n in enumerate(files)]
        for t in readers:
            t.start()
        for t in readers:
            t.join(120)
        assert not any(t.is_alive() for t in readers)
        assert wrong == []
        assert route_counts(e).get("GET /attachment/{sys_id}/file", 0) > len(files)  # resumed
        for name, data in files.items():
            with open(m.path("incident", rec, name), "rb") as f:
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
                assert b"".join(iter(lambda f=f: f.read(1 << 20), b"")) == data, name
    finally:
        m.stop()
