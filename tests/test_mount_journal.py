"""Issue 18 through a real FUSE mount of the emulator (its default release: no PATCH), each
outcome read back through the instance's API: scratch-looking names reach the instance, desktop
metadata stays local and is shown so, a backup rename with failing uploads leaves one file, a
failed rename keeps its target, the copy-then-delete rename is owned by the mount, and a daemon
killed mid-move or mid-write is finished (or kept) by the next mount, never torn. Every row runs
in both modes (write-through, `--write-back`); rows 6, 9 and 10 share one mount per mode: an
attempt in doubt is never left beside a new save, a listing answered late never undoes a save,
and no lock outlives its file."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from snfs.children import snfs_command
from tests.support.emulator_proc import EmulatorProc, start_emulator
from tests.support.mount_proc import MountProc, start_mount, stop_mount
from tests.support.waiting import in_thread

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProc]:
    tmp = tmp_path_factory.mktemp("emu")
    e = start_emulator(tmp / "data", "--demo", log=tmp / "emu.log")
    yield e
    e.stop()


@pytest.fixture(autouse=True)
def no_faults(emu: EmulatorProc) -> Iterator[None]:
    yield
    emu.json("DELETE", "/__emulator__/faults")


def new_record(emu: EmulatorProc) -> str:
    return emu.json("POST", "/api/now/table/incident", {"short_description": "j"})["result"][
        "sys_id"
    ]


def on_instance(emu: EmulatorProc, rec: str) -> dict[str, list[str]]:
    """file name -> the SHA-256 of each attachment of that name."""
    out: dict[str, list[str]] = {}
    for a in emu.attachments(f"table_sys_id={rec}"):
        out.setdefault(a["file_name"], []).append(a["hash"])
    return out


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def snfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(snfs_command(*args), capture_output=True, text=True, timeout=180)


def until(get: Callable[[], Any], ok: Callable[[Any], bool], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if ok(value):
            return value
        assert time.monotonic() < deadline, f"still {value!r}"
        time.sleep(0.2)


def journal(m: MountProc) -> list[dict]:
    out = []
    for p in m.spool.rglob("*.json"):
        try:
            out.append(json.loads(p.read_text()))
        except (FileNotFoundError, ValueError):
            continue
    return out


# Every row, in both modes: a close that uploads (write-through) and one that only journals.
MODES = pytest.mark.parametrize(
    "mode", [(), ("--write-back",)], ids=["write-through", "write-back"]
)


def write_owed(path: Path, data: bytes) -> None:
    """Write and close `path` while uploads fail: write-through's close answers EIO (the bytes
    are kept, owed), write-back's close answers 0; either way the bytes are the user's."""
    _quiet(path.write_bytes, data)


def kill(m: MountProc) -> None:
    os.kill(m.proc.pid, signal.SIGKILL)
    m.proc.wait()
    stop_mount(m.mountpoint, None)


@MODES
def test_row5_scratch_looking_names_reach_the_instance(
    emu: EmulatorProc, tmp_path: Path, mode: tuple[str, ...]
) -> None:
    rec = new_record(emu)
    m = start_mount(emu.url, tmp_path / "m", tmp_path / "w", *mode)
    try:
        names = ["data.tmp", "notes.txt~", ".env.sample", "quote.part", "4913"]
        for n in names:
            src = tmp_path / n
            src.write_bytes(n.encode() * 10)
            subprocess.run(["cp", str(src), str(m.path("incident", rec, n))], check=True)
        time.sleep(1.1)  # the status is rendered at most once a second
        status = snfs("status", str(m.mountpoint))
        assert "held" in status.stdout, status.stdout  # shown while the grace runs
        done = snfs("sync", str(m.mountpoint))  # ends the grace at once
        assert done.returncode == 0, done.stderr
        assert on_instance(emu, rec) == {n: [digest(n.encode() * 10)] for n in names}
    finally:
        m.stop()


@MODES
def test_row8_desktop_metadata_stays_local_and_is_shown_so(
    emu: EmulatorProc, tmp_path: Path, mode: tuple[str, ...]
) -> None:
    rec = new_record(emu)
    m = start_mount(emu.url, tmp_path / "m", tmp_path / "w", *mode)
    try:
        for n in (".DS_Store", ".directory"):
            m.path("incident", rec, n).write_bytes(b"[Desktop]\n")
            assert os.getxattr(m.path("incident", rec, n), "user.snfs.state") == b"local-only"
        done = snfs("sync", str(m.mountpoint))
        assert done.returncode == 0, done.stderr
        assert done.stderr.count("local-only") == 2, done.stderr
        time.sleep(1.1)  # the status is rendered at most once a second
        assert snfs("status", str(m.mountpoint)).stdout.count("local-only") == 2
        assert sorted(os.listdir(m.path("incident", rec))) == [".DS_Store", ".directory"]
        assert on_instance(emu, rec) == {}
    finally:
        m.stop()
    assert on_instance(emu, rec) == {}  # not at unmount either


@MODES
def test_row2_backup_rename_with_uploads_failing_then_remount_leaves_one(
    emu: EmulatorProc, tmp_path: Path, mode: tuple[str, ...]
) -> None:
    rec = new_record(emu)
    m = start_mount(emu.url, tmp_path / "m", tmp_path / "w", *mode)
    try:
        emu.fault(method="POST", path="/attachment/file", count=10_000, status=503)
        d = m.path("incident", rec)
        write_owed(d / "a.txt", b"old bytes")
        os.rename(d / "a.txt", d / "a.txt~")  # vim's backup
        write_owed(d / "a.txt", b"NEW bytes")
        assert sorted(e["name"] for e in journal(m)) == ["a.txt", "a.txt~"]
    finally:
        m.stop()  # clean unmount: the uploads fail, the journal keeps both
    assert on_instance(emu, rec) == {}
    emu.json("DELETE", "/__emulator__/faults")
    m = start_mount(emu.url, tmp_path / "m", tmp_path / "w", *mode)
    try:
        done = snfs("sync", str(m.mountpoint))  # settles: the backup's grace ends too
        assert done.returncode == 0, done.stderr
        assert on_instance(emu, rec) == {
            "a.txt": [digest(b"NEW bytes")],
            "a.txt~": [digest(b"old bytes")],
        }
    finally:
        m.stop()


@MODES
def test_row4_a_failed_rename_keeps_the_targets_unsent_bytes(
    emu: EmulatorProc, tmp_path: Path, mode: tuple[str, ...]
) -> None:
    rec = new_record(emu)
    m = start_mount(emu.url, tmp_path / "m", tmp_path / "w", *mode)
    try:
        d = m.path("incident", rec)
        (d / "b.txt").write_bytes(b"bee")
        assert snfs("sync", str(m.mountpoint)).returncode == 0
        emu.fault(method="POST", path="/attachment/file", count=10_000, status=503)
        write_owed(d / "a.txt", b"unsent")
        emu.fault(method="GET", path="/file", count=10_000, status=500)  # the copy fails
        with pytest.raises(OSError) as err:
            os.rename(d / "b.txt", d / "a.txt")
        assert err.value.errno == errno.EIO
        emu.json("DELETE", "/__emulator__/faults")
        assert (d / "a.txt").read_bytes() == b"unsent"
        done = snfs("sync", str(m.mountpoint))
        assert done.returncode == 0, done.stderr
        assert on_instance(emu, rec) == {"a.txt": [digest(b"unsent")], "b.txt": [digest(b"bee")]}
    finally:
        m.stop()


@MODES
def test_row11_no_patch_a_failed_delete_of_the_source_is_finished_by_the_mount(
    emu: EmulatorProc, tmp_path: Path, mode: tuple[str, ...]
) -> None:
    rec = new_record(emu)
    m = start_mount(emu.url, tmp_path / "m", tmp_path / "w", *mode)
    try:
        d = m.path("incident", rec)
        (d / "a").write_bytes(b"payload")
        assert snfs("sync", str(m.mountpoint)).returncode == 0  # write-back: stored first
        emu.fault(method="DELETE", path="/attachment/", count=20, status=500)
        os.rename(d / "a", d / "b")  # the copy is stored; the source's delete is owed
        assert os.listdir(d) == ["b"]
        emu.json("DELETE", "/__emulator__/faults")
        done = snfs("sync", str(m.mountpoint))
        assert done.returncode == 0, done.stderr
        assert on_instance(emu, rec) == {"b": [digest(b"payload")]}
        os.unlink(d / "b")
        assert on_instance(emu, rec) == {}
        assert os.listdir(d) == []  # nothing comes back
    finally:
        m.stop()


@MODES
def test_row12_killed_mid_copy_rename_the_next_mount_finishes_it(
    emu: EmulatorProc, tmp_path: Path, mode: tuple[str, ...]
) -> None:
    rec = new_record(emu)
    m = start_mount(emu.url, tmp_path / "m", tmp_path / "w", *mode)
    d = m.path("incident", rec)
    (d / "a").write_bytes(b"payload")
    (d / "b").write_bytes(b"old b")
    assert snfs("sync", str(m.mountpoint)).returncode == 0  # write-back: both stored first
    emu.fault(method="POST", path="/attachment/file", count=1, delay=60)
    mover = threading.Thread(target=lambda: _quiet(os.rename, d / "a", d / "b"))
    mover.start()
    try:
        until(lambda: [e["name"] for e in journal(m)], lambda names: names == ["b"])
    finally:
        kill(m)  # the daemon dies mid-rename
        mover.join(30)
    emu.json("DELETE", "/__emulator__/faults")
    m = start_mount(emu.url, tmp_path / "m", tmp_path / "w", *mode)
    try:
        until(lambda: journal(m), lambda j: not j)
        assert on_instance(emu, rec) == {"b": [digest(b"payload")]}
        assert os.listdir(m.path("incident", rec)) == ["b"]
    finally:
        m.stop()


@MODES
def test_row1_fsync_write_more_close_killed_before_that_upload_leaves_one(
    emu: EmulatorProc, tmp_path: Path, mode: tuple[str, ...]
) -> None:
    rec = new_record(emu)
    m = start_mount(emu.url, tmp_path / "m", tmp_path / "w", *mode)
    p = m.path("incident", rec, "a.txt")
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, b"v1")
        os.fsync(fd)  # stored as v1
        until(lambda: on_instance(emu, rec), lambda a: a == {"a.txt": [digest(b"v1")]})
        os.write(fd, b" and v2")
        emu.fault(method="POST", path="/attachment/file", count=10_000, status=503)
        _quiet(os.close, fd)  # write-through: EIO (owed); write-back: 0
        until(lambda: [e["state"] for e in journal(m)], lambda s: s == ["owed"])
    finally:
        kill(m)
    emu.json("DELETE", "/__emulator__/faults")
    m = start_mount(emu.url, tmp_path / "m", tmp_path / "w", *mode)
    try:
        until(lambda: journal(m), lambda j: not j)
        assert on_instance(emu, rec) == {"a.txt": [digest(b"v1 and v2")]}
    finally:
        m.stop()


@MODES
def test_row3_dup_closed_writing_on_killed_never_sends_torn_bytes(
    emu: EmulatorProc, tmp_path: Path, mode: tuple[str, ...]
) -> None:
    """`{ cmd1; cmd2; } > report.csv` over an attachment, the first close's upload failing,
    the daemon killed while cmd2 writes: the original stays; the file is kept, blocked."""
    rec = new_record(emu)
    m = start_mount(emu.url, tmp_path / "m", tmp_path / "w", *mode)
    p = m.path("incident", rec, "report.csv")
    p.write_bytes(b"original")
    assert snfs("sync", str(m.mountpoint)).returncode == 0  # write-back: an attachment first
    try:
        fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
        dup = os.dup(fd)
        os.write(fd, b"cmd1\n")
        emu.fault(method="POST", path="/attachment/file", count=10_000, status=503)
        _quiet(os.close, dup)  # cmd1 exits: flush, its upload fails (owed)
        os.write(fd, b"cmd2 hal")
        until(lambda: [e["state"] for e in journal(m)], lambda s: s == ["open"])
    finally:
        kill(m)
    emu.json("DELETE", "/__emulator__/faults")
    m = start_mount(emu.url, tmp_path / "m", tmp_path / "w", *mode)
    try:
        q = m.path("incident", rec, "report.csv")
        assert os.getxattr(q, "user.snfs.state") == b"blocked"
        assert snfs("sync", str(m.mountpoint)).returncode == 1  # shown as not sent
        assert on_instance(emu, rec) == {"report.csv": [digest(b"original")]}
    finally:
        m.stop()
    assert on_instance(emu, rec) == {"report.csv": [digest(b"original")]}


def _quiet(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except OSError:
        pass


# -- rows 6, 9 and 10: one mount per mode, shared by these tests -------------------------------


@pytest.fixture(scope="module", params=[(), ("--write-back",)], ids=["write-through", "write-back"])
def shared(
    emu: EmulatorProc, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[MountProc]:
    tmp = tmp_path_factory.mktemp("shared")
    m = start_mount(emu.url, tmp / "m", tmp / "w", *request.param, "--timeout", "5")
    yield m
    m.stop()


def put(emu: EmulatorProc, rec: str, name: str, data: bytes) -> str:
    """An attachment stored through the API (not the mount); its sys_id."""
    path = f"/api/now/attachment/file?table_name=incident&table_sys_id={rec}&file_name={name}"
    return emu.json("POST", path, data, headers={"Content-Type": "text/plain"})["result"]["sys_id"]


def synced(m: MountProc) -> None:
    done = snfs("sync", str(m.mountpoint))
    assert done.returncode == 0, done.stdout + done.stderr


def status(m: MountProc) -> dict:
    return json.loads((m.mountpoint / ".snfs" / "status").read_text())


def save(path: Path, data: bytes) -> None:
    """What an editor's save does: open with O_TRUNC, write, close (errors raised)."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def test_row6_an_attempt_in_doubt_then_a_new_save_leaves_one(
    emu: EmulatorProc, shared: MountProc
) -> None:
    """v1 is stored but its answer is lost, and every look-up for it fails; then v2 is saved.
    The instance ends with one a.txt, v2 (v1's attempt is looked for by v1's content and
    deleted once v2 is stored), never v1 beside it."""
    m, rec = shared, new_record(emu)
    p = m.path("incident", rec, "a.txt")
    emu.fault(method="POST", path="/attachment/file", count=1, drop_after_bytes=0)
    emu.fault(
        method="GET", path="/attachment$", query=r"file_name=a\.txt", count=10_000, status=500
    )
    _quiet(lambda: p.write_bytes(b"v1"))  # write-through: EIO (in doubt); write-back: 0
    if "--write-back" in " ".join(map(str, m.proc.args)):
        until(lambda: status(m)["pending_uploads"], lambda s: s and s[0]["attempts"] >= 1)
    assert on_instance(emu, rec) == {"a.txt": [digest(b"v1")]}  # stored, the mount unsure
    _quiet(save, p, b"v2")  # a new save while v1's attempt is in doubt (write-through: the look-up
    # fails, so v2 is not sent on a guess; it stays owed)
    emu.json("DELETE", "/__emulator__/faults")
    synced(m)
    assert on_instance(emu, rec) == {"a.txt": [digest(b"v2")]}
    assert p.read_bytes() == b"v2"


def test_row9_a_listing_fetched_before_a_save_and_stored_after_it_never_undoes_it(
    emu: EmulatorProc, shared: MountProc
) -> None:
    """The record's listing is computed by the instance while a.txt is still the old one, and
    its answer arrives after a save replaced a.txt (the emulator holds it until then): the
    mount keeps the save, so the next save replaces the new attachment and leaves one."""
    m, rec = shared, new_record(emu)
    put(emu, rec, "a.txt", b"old")
    d = m.path("incident", rec)
    fd = os.open(d / "a.txt", os.O_WRONLY)  # staged from the old attachment
    try:
        emu.fault(method="GET", path="/attachment$", query=f"table_sys_id={rec}", hold=True)
        drops = m.log_text().count("cached listings dropped")
        os.kill(m.proc.pid, signal.SIGHUP)  # the next look at the record lists it anew
        until(lambda: m.log_text().count("cached listings dropped"), lambda n: n > drops)
        listed, box = in_thread(lambda: os.listdir(d))
        until(lambda: emu.json("GET", "/__emulator__/state")["held"], lambda n: n == 1)
        os.write(fd, b"new")
    finally:
        os.close(fd)  # write-through: stored, the old one deleted; write-back: owed
    synced(m)
    assert on_instance(emu, rec) == {"a.txt": [digest(b"new")]}
    assert emu.json("POST", "/__emulator__/release") == {"released": 1}
    assert listed.wait(60) and box.get("value") == ["a.txt"], box
    save(d / "a.txt", b"newer")
    synced(m)
    assert on_instance(emu, rec) == {"a.txt": [digest(b"newer")]}
    assert (d / "a.txt").read_bytes() == b"newer"


def test_row10_locks_and_staged_files_go_with_their_files(
    emu: EmulatorProc, shared: MountProc
) -> None:
    """A mount's life: many files written. Once they are stored and closed, the daemon keeps
    no lock and no staged file for any of them (`snfs status --json`, "writes")."""
    m, rec = shared, new_record(emu)
    d = m.path("incident", rec)
    for i in range(150):
        (d / f"f{i}.txt").write_bytes(b"x%d" % i)
    synced(m)
    assert len(on_instance(emu, rec)) == 150
    assert until(lambda: status(m)["writes"], lambda w: w == {"locks": 0, "staged": 0})


@pytest.fixture
def small_spool(tmp_path: Path) -> Iterator[Path]:
    """A work dir whose spool is its own 1 MiB tmpfs, so a test can fill the spool's disk."""
    spool = tmp_path / "w" / "spool"
    spool.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(spool)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for the spool (root is needed): {mounted.stderr}")
    try:
        yield tmp_path / "w"
    finally:
        subprocess.run(["umount", "-l", str(spool)], capture_output=True)


def fill(disk: Path) -> Path:
    """Fill the file system of `disk` to the last byte; the filler's path (rm it to free)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as e:
        assert e.errno == errno.ENOSPC, e
    finally:
        os.close(fd)
    return filler


@MODES
def test_row7_spool_disk_full_at_close_is_never_synced_and_the_bytes_are_kept(
    emu: EmulatorProc, tmp_path: Path, small_spool: Path, mode: tuple[str, ...]
) -> None:
    """The spool's disk fills between the writes and the close that journals the file: the
    close fails, `snfs sync` never says synced while the instance lacks the file; the daemon
    is killed so; the next mount (space freed) keeps the bytes and names the file blocked."""
    rec = new_record(emu)
    m = start_mount(emu.url, tmp_path / "m", small_spool, *mode)
    p = m.path("incident", rec, "a.txt")
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, b"keep me")
        filler = fill(m.spool)
        with pytest.raises(OSError) as err:
            os.close(fd)
        assert err.value.errno in (errno.ENOSPC, errno.EIO)
        done = snfs("sync", str(m.mountpoint))
        assert done.returncode == 1 and "a.txt" in done.stderr, done.stderr
        assert on_instance(emu, rec) == {}
    finally:
        kill(m)
    filler.unlink()
    m = start_mount(emu.url, tmp_path / "m", small_spool, *mode)
    try:
        q = m.path("incident", rec, "a.txt")
        assert q.read_bytes() == b"keep me"
        assert os.getxattr(q, "user.snfs.state") == b"blocked"
        done = snfs("sync", str(m.mountpoint))
        assert done.returncode == 1 and "a.txt" in done.stderr, done.stderr
        save(q, b"keep me")  # written and closed again, it is sent
        synced(m)
        assert on_instance(emu, rec) == {"a.txt": [digest(b"keep me")]}
    finally:
        m.stop()


def test_no_patch_rename_then_killed_while_open_names_what_the_instance_keeps(
    emu: EmulatorProc, tmp_path: Path
) -> None:
    """`mv c.txt a.txt` (no PATCH: the copy's upload failing, so owed), then a.txt opened for
    writing and the daemon killed. The next mount shows a.txt blocked and not c.txt, while the
    instance keeps c.txt: `snfs sync` and `user.snfs.last_error` say so; `rm a.txt` finishes
    what the user asked for."""
    rec = new_record(emu)
    put(emu, rec, "c.txt", b"cee")
    m = start_mount(emu.url, tmp_path / "m", tmp_path / "w")
    d = m.path("incident", rec)
    try:
        assert os.listdir(d) == ["c.txt"]
        emu.fault(method="POST", path="/attachment/file", count=10_000, status=503)
        _quiet(os.rename, d / "c.txt", d / "a.txt")  # moved; the copy's upload is owed
        assert os.listdir(d) == ["a.txt"]
        fd = os.open(d / "a.txt", os.O_WRONLY)
        os.write(fd, b"half")
        until(lambda: [e["state"] for e in journal(m)], lambda s: s == ["open"])
    finally:
        kill(m)
    emu.json("DELETE", "/__emulator__/faults")
    m = start_mount(emu.url, tmp_path / "m", tmp_path / "w")
    try:
        assert os.listdir(d) == ["a.txt"]
        why = os.getxattr(d / "a.txt", "user.snfs.last_error").decode()
        assert "c.txt" in why, why
        done = snfs("sync", str(m.mountpoint))
        assert done.returncode == 1 and "keeps c.txt" in done.stderr, done.stderr
        assert on_instance(emu, rec) == {"c.txt": [digest(b"cee")]}
        os.unlink(d / "a.txt")
        assert on_instance(emu, rec) == {}
        assert os.listdir(d) == []
    finally:
        m.stop()
