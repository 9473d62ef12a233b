"""Every failure a user meets is answered in words (issue 19): each case through a real mount
of the emulator, checked through the errno the user gets, the one line the log or the
terminal shows, and the instance's view where something was (not) done."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from snfs.emulator.demo_data import demo_id
from tests.support.client_support import shared_emulator
from tests.support.emulator_proc import EmulatorProc, self_signed_cert
from tests.support.mount_proc import IN_CI, MountProc, start_mount, stop_mount
from tests.support.waiting import eventually

emu = shared_emulator("--demo", "--mfa-user", "hr")

INC1 = demo_id("inc1")
BIN = Path(sys.executable).parent  # the installed `snfs` and `mount.snfs` scripts


@pytest.fixture(autouse=True)
def _clean_faults(emu: EmulatorProc) -> Iterator[None]:
    yield
    emu.request("DELETE", "/__emulator__/faults")
    emu.json("POST", "/__emulator__/state", {"hibernate": False})


def new_log(m: MountProc, start: int) -> str:
    return m.log_text()[start:]


def snfs(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout=60):
    """The installed `snfs` script, as a user runs it."""
    return subprocess.run(
        [str(BIN / "snfs"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "SNFS_PASSWORD": "admin", **(env or {})},
        timeout=timeout,
    )


def mount_args(emu: EmulatorProc, mp: Path, work: Path, *extra: str) -> list[str]:
    return [
        "mount",
        emu.url,
        str(mp),
        "--user",
        "admin",
        "--spool-dir",
        str(work / "spool"),
        "--cache-dir",
        str(work / "cache"),
        *extra,
    ]


# -- listings refused -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "fault", "code", "said"),
    [
        ("problem", {"status": 403}, errno.EACCES, "403"),
        ("change_request", {"status": 401}, errno.EACCES, "401"),
        ("kb_knowledge", {"status": 503}, errno.EIO, "503"),
        ("hr_case", {"status": 429, "retry_after": 0}, errno.EAGAIN, "429"),
        ("incident", "hibernate", errno.EIO, "HTML page"),
    ],
)
def test_listing_refused_gives_its_errno_and_one_line(
    emu: EmulatorProc, mnt: MountProc, table: str, fault: object, code: int, said: str
) -> None:
    """A table's listing refused: EACCES for 401/403, EAGAIN past a 429's retries, EIO for 5xx
    and an HTML page; one log line that says so, never an exception group's traceback."""
    start = len(mnt.log_text())
    if fault == "hibernate":
        emu.json("POST", "/__emulator__/state", {"hibernate": True})
    else:
        assert isinstance(fault, dict)
        emu.fault(
            method="GET", path="/attachment$", query=f"table_name={table}", count=200, **fault
        )
    with pytest.raises(OSError) as e:
        os.listdir(mnt.path(table))
    assert e.value.errno == code, e.value
    log = new_log(mnt, start)
    assert "Traceback" not in log and "ExceptionGroup" not in log, log
    assert "unexpected error" not in log, log
    lines = [line for line in log.splitlines() if said in line]
    assert len(lines) == 1, log


# -- start-up ---------------------------------------------------------------------------------


def test_children_start_from_a_directory_holding_a_folder_named_snfs(
    emu: EmulatorProc, tmp_path: Path
) -> None:
    """`snfs mount --daemon` and `mount.snfs` from the clone's parent (or a home directory
    with an `snfs` folder) mount; a child that fails says why on the terminal."""
    home = tmp_path / "home"
    (home / "snfs").mkdir(parents=True)
    (home / "snfs" / "__init__.py").write_text("raise ImportError('the wrong snfs')\n")
    mp, log = tmp_path / "mp", tmp_path / "d.log"
    mp.mkdir()
    args = mount_args(emu, mp, tmp_path, "--log-file", str(log))
    try:
        r = snfs(*args, "--daemon", cwd=home)
        assert r.returncode == 0, (r.stderr, log.read_text())
        assert "incident" in os.listdir(mp)
        assert snfs("unmount", str(mp), cwd=home).returncode == 0
        eventually(lambda: not os.path.ismount(mp), what="unmounted")
        r = subprocess.run(
            [str(BIN / "mount.snfs"), emu.url, str(mp), "-o", f"user=admin,log_file={log}"]
            + ["-o", f"spool_dir={tmp_path / 'spool2'},cache_dir={tmp_path / 'cache2'}"],
            capture_output=True,
            text=True,
            cwd=home,
            env=dict(os.environ, SNFS_PASSWORD="admin"),
            timeout=60,
        )
        assert r.returncode == 0, (r.stderr, log.read_text())
        assert os.path.ismount(mp)
        assert snfs("unmount", str(mp), cwd=home).returncode == 0
        eventually(lambda: not os.path.ismount(mp), what="unmounted")
        # A child that fails: its reason on the terminal, and in the log.
        r = snfs(*args, "--daemon", cwd=home, env={"SNFS_PASSWORD": "wrong"})
        assert r.returncode == 1
        assert "mount failed" in r.stderr and "401" in r.stderr, r.stderr
        assert "the wrong snfs" not in log.read_text()
    finally:
        stop_mount(mp, None)


def test_an_existing_log_file_is_made_private(emu: EmulatorProc, tmp_path: Path) -> None:
    log = tmp_path / "snfs.log"
    log.write_text("old line\n")
    log.chmod(0o644)
    link = tmp_path / "link.log"
    link.symlink_to(log)
    mp = tmp_path / "mp"
    mp.mkdir()
    r = snfs(*mount_args(emu, mp, tmp_path, "--log-file", str(link)), "--daemon")
    assert r.returncode == 2 and "is a symlink" in r.stderr, r.stderr
    assert not os.path.ismount(mp)
    try:
        r = snfs(*mount_args(emu, mp, tmp_path, "--log-file", str(log)), "--daemon")
        assert r.returncode == 0, r.stderr
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
        assert log.read_text().startswith("old line\n")
    finally:
        stop_mount(mp, None)


def test_mfa_hint_names_options_that_exist(emu: EmulatorProc, tmp_path: Path) -> None:
    mp = tmp_path / "mp"
    mp.mkdir()
    args = mount_args(emu, mp, tmp_path)
    args[args.index("admin")] = "hr"
    r = snfs(*args, env={"SNFS_PASSWORD": "hr"})
    assert r.returncode == 1
    named = set(re.findall(r"--[a-z][a-z-]+", r.stderr))
    assert named >= {"--oauth-client-id", "--oauth-secret-file"}, r.stderr
    helped = snfs("mount", "--help").stdout
    assert all(f"{o} " in helped for o in named), (named, helped)


def test_tls_certificate_not_trusted_is_named_and_not_retried(
    emulator_factory, tmp_path: Path
) -> None:
    cert, key = self_signed_cert(tmp_path)
    tls = emulator_factory("--demo", "--certfile", str(cert), "--keyfile", str(key))
    assert tls.url.startswith("https://")
    m = start_mount(tls.url, tmp_path / "mp", tmp_path / "w", "-vv", expect_fail=True)
    assert m.proc.wait(timeout=60) == 1
    log = m.log_text()
    assert "TLS certificate not trusted (CERTIFICATE_VERIFY_FAILED" in log, log
    assert "--ca-bundle" in log and "self-signed" in log
    assert "retrying" not in log, log  # a certificate never becomes trusted by asking again
    ok = start_mount(tls.url, tmp_path / "mp", tmp_path / "w", "--ca-bundle", str(cert))
    try:
        assert "incident" in os.listdir(ok.mountpoint)
    finally:
        ok.stop()


def test_bogus_fuse_option_is_one_line(emu: EmulatorProc, tmp_path: Path) -> None:
    mp = tmp_path / "mp"
    mp.mkdir()
    r = snfs(*mount_args(emu, mp, tmp_path, "-o", "bogus"))
    assert r.returncode != 0 and not os.path.ismount(mp)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "bogus" in lines[0], r.stderr


def test_non_empty_mount_point_refused_unless_asked(emu: EmulatorProc, tmp_path: Path) -> None:
    mp = tmp_path / "mp"
    mp.mkdir()
    (mp / "my-notes.txt").write_text("mine\n")
    r = snfs(*mount_args(emu, mp, tmp_path))
    assert r.returncode == 2 and not os.path.ismount(mp)
    assert "is not empty (my-notes.txt)" in r.stderr and "--allow-non-empty" in r.stderr
    m = start_mount(emu.url, mp, tmp_path / "w", "--allow-non-empty")
    try:
        assert "my-notes.txt" not in os.listdir(mp)
    finally:
        m.stop()
    assert (mp / "my-notes.txt").read_text() == "mine\n"


def test_missing_mount_point_is_the_first_error(mnt: MountProc, emu: EmulatorProc) -> None:
    """Even while another mount of the instance owns the spool."""
    missing = mnt.mountpoint.parent / "does-not-exist"
    r = snfs(
        "mount",
        emu.url,
        str(missing),
        "--user",
        "admin",
        "--spool-dir",
        str(mnt.spool),
        "--cache-dir",
        str(mnt.cache),
    )
    assert r.returncode == 2
    assert f"mount point {missing}: No such file or directory" in r.stderr, r.stderr
    assert "spool" not in r.stderr


def test_unknown_profile_is_named(tmp_path: Path) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text('[instance.prod]\nurl = "https://prod.example.com"\n')
    mp = tmp_path / "mp"
    mp.mkdir()
    r = snfs("mount", "prodd", str(mp), env={"SNFS_CONFIG": str(conf), "SNFS_TOKEN": ""})
    assert r.returncode == 2
    assert "no credentials" in r.stderr
    assert f"no profile 'prodd' in {conf} (profiles: prod)" in r.stderr, r.stderr


def test_version() -> None:
    from snfs import __version__

    r = snfs("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"snfs {__version__}"


def test_source_of_the_mount_is_the_instance(mnt: MountProc, emu: EmulatorProc) -> None:
    with open("/proc/self/mounts") as f:
        mine = [line.split() for line in f if f" {mnt.mountpoint} " in line]
    assert mine and mine[0][0] == emu.url and mine[0][2] == "fuse.snfs"
    df = subprocess.run(["df", str(mnt.mountpoint)], capture_output=True, text=True)
    assert emu.url in df.stdout


# -- names, trash, deletes ------------------------------------------------------------------


def test_name_over_255_bytes_is_enametoolong(mnt: MountProc) -> None:
    long = mnt.path("incident", INC1, "x" * 300 + ".txt")
    for attempt in (lambda: long.write_text("x"), lambda: os.stat(long)):
        with pytest.raises(OSError) as e:
            attempt()
        assert e.value.errno == errno.ENAMETOOLONG


def test_file_managers_are_told_there_is_no_trash(mnt: MountProc, emu: EmulatorProc) -> None:
    """GLib's can-trash is FALSE on the mount, so GNOME Files offers a permanent delete."""
    if not shutil.which("gio"):
        if IN_CI:
            pytest.fail("gio is missing (apt libglib2.0-bin; make test-deps installs it)")
        pytest.skip("gio (apt libglib2.0-bin) is missing")
    target = mnt.path("incident", INC1, "trash-me.txt")
    target.write_text("bye\n")
    r = subprocess.run(
        ["gio", "info", "-a", "access::can-trash", str(target)], capture_output=True, text=True
    )
    assert "access::can-trash: FALSE" in r.stdout, (r.stdout, r.stderr)
    marker = mnt.path(f".Trash-{os.geteuid()}")
    assert marker.is_file() and "no trash" in marker.read_text()
    assert marker.name not in os.listdir(mnt.mountpoint)
    with pytest.raises(OSError):
        marker.write_text("x")
    r = subprocess.run(["gio", "remove", str(target)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not [a for a in emu.attachments(f"table_sys_id={INC1}") if a["file_name"] == target.name]


def test_each_delete_is_one_log_line(mnt: MountProc, emu: EmulatorProc) -> None:
    target = mnt.path("incident", INC1, "to-delete.txt")
    target.write_text("x\n")
    (att,) = [
        a for a in emu.attachments(f"table_sys_id={INC1}") if a["file_name"] == "to-delete.txt"
    ]
    start = len(mnt.log_text())
    target.unlink()
    lines = [line for line in new_log(mnt, start).splitlines() if "deleted" in line]
    assert (
        lines == [lines[0]]
        and f"incident/{INC1}/to-delete.txt (sys_id {att['sys_id']})" in (lines[0])
    ), lines


# -- unmount and status -----------------------------------------------------------------------


def test_unmount_names_each_unsent_file(emu: EmulatorProc, tmp_path: Path) -> None:
    m = start_mount(emu.url, tmp_path / "mp", tmp_path / "w")
    try:
        emu.fault(method="POST", query="file_name=refused", status=403, count=100)
        emu.fault(method="POST", query="file_name=owed", status=500, count=100)
        for name in ("refused.txt", "owed.txt"):
            with pytest.raises(OSError):
                m.path("incident", INC1, name).write_text("keep me\n")
        m.path("incident", INC1, ".DS_Store").write_bytes(b"finder")  # local only, by design
        r = snfs("unmount", str(m.mountpoint), timeout=90)
        assert r.returncode == 0, r.stderr
        assert not os.path.ismount(m.mountpoint)
        said = r.stderr
        assert re.search(rf"not sent: incident/{INC1}/refused\.txt: blocked: Forbidden", said), said
        assert re.search(rf"not sent: incident/{INC1}/owed\.txt: owed: .*500", said), said
        assert "2 file(s) kept in the spool; the next mount" in said, said
        assert f"kept local only, never sent: incident/{INC1}/.DS_Store" in said, said
        assert "not sent: incident/" + INC1 + "/.DS_Store" not in said, said
        assert m.proc.wait(timeout=60) == 0
        assert "not sent: incident" in m.log_text()
    finally:
        m.stop()


def transfers(m: MountProc, kind: str) -> list[dict]:
    data = json.loads(m.path(".snfs", "status").read_text())
    return [t for t in data["transfers_in_flight"] if t["kind"] == kind]


def test_status_shows_each_transfer_growing(emulator_factory, tmp_path: Path) -> None:
    slow = emulator_factory("--demo", "--file-rate", str(4 << 20))
    size = 24 << 20
    big = os.urandom(1 << 20) * 24
    status, _, raw = slow.request(
        "POST",
        f"/api/now/attachment/file?table_name=incident&table_sys_id={INC1}&file_name=big.bin",
        big,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert status == 201, raw
    m = start_mount(slow.url, tmp_path / "mp", tmp_path / "w")
    try:
        reader = threading.Thread(
            target=lambda: m.path("incident", INC1, "big.bin").read_bytes(), daemon=True
        )
        reader.start()
        first = eventually(lambda: transfers(m, "download"), what="a download in flight")[0]
        assert first["path"] == f"incident/{INC1}/big.bin" and first["bytes_total"] == size
        eventually(
            lambda: transfers(m, "download")[0]["bytes_done"] > first["bytes_done"],
            what="the download's bytes growing",
        )
        shown = snfs("status", str(m.mountpoint)).stdout
        assert re.search(rf"download +incident/{INC1}/big\.bin +[\d.]+ MiB of 24\.0 MiB", shown)
        reader.join(timeout=60)
        # An upload: the instance takes its time to answer.
        slow.fault(method="POST", path="/attachment/file", delay=8)
        local = tmp_path / "up.bin"
        local.write_bytes(big)
        cp = subprocess.Popen(["cp", str(local), str(m.path("incident", INC1, "up.bin"))])
        try:
            up = eventually(
                lambda: [t for t in transfers(m, "upload") if t["bytes_done"] > 0],
                what="an upload in flight",
            )[0]
            assert up["path"] == f"incident/{INC1}/up.bin" and up["bytes_total"] == size
            assert 0 < up["bytes_done"] <= size
        finally:
            assert cp.wait(timeout=60) == 0
    finally:
        m.stop()


def test_nonempty_is_the_mount8_and_fuse_word_for_allow_non_empty() -> None:
    import argparse

    from snfs.arguments import add_arguments, from_args
    from snfs.mount_helper import translate

    assert translate(["p", "/m", "-o", "nonempty"])[-1] == "--allow-non-empty"
    p = argparse.ArgumentParser()
    add_arguments(p)
    o = from_args(p.parse_args(["i", "/m", "-o", "nonempty,ro"]))
    assert o.allow_non_empty and o.read_only and o.extra_fuse_options == []
