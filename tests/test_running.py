"""Running snfs as a real file system: config profiles, systemd notify, stale mounts, mount(8)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.emulator_proc import EmulatorProc
from tests.support.mount_proc import require_fuse, start_mount, stop_mount
from tests.support.waiting import eventually


def write_config(path: Path, emu: EmulatorProc, mountpoint: Path, mode: int = 0o600) -> Path:
    path.write_text(f"""
[instance.prod]
url = "{emu.url}"
user = "admin"
password = "admin"
tables = ["incident"]
dir_cache_time = 5
mountpoint = "{mountpoint}"
""")
    os.chmod(path, mode)
    return path


def snfs_mount(args: list[str], env: dict[str, str], work: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "snfs",
            "mount",
            *args,
            "--spool-dir",
            str(work / "spool"),
            "--cache-dir",
            str(work / "cache"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_mounted(mp: Path, proc: subprocess.Popen, timeout: float = 30) -> None:
    def mounted() -> bool:
        if proc.poll() is not None:
            assert proc.stdout is not None
            raise RuntimeError(f"exited {proc.returncode}: {proc.stdout.read()}")
        return os.path.ismount(mp)

    eventually(mounted, timeout=timeout, what=f"a mount on {mp}")


def test_profile_mount_and_notify(demo_emulator: EmulatorProc, tmp_path: Path) -> None:
    require_fuse()
    mp = tmp_path / "prod"
    mp.mkdir()
    cfg = write_config(tmp_path / "config.toml", demo_emulator, mp)
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(30)
    env = dict(os.environ, SNFS_CONFIG=str(cfg), NOTIFY_SOCKET=str(sock_path))
    env.pop("SNFS_PASSWORD", None)
    proc = snfs_mount(["prod"], env, tmp_path)  # everything else from the profile
    try:
        ready = sock.recv(4096).decode()
        assert "READY=1" in ready.splitlines() and f"MAINPID={proc.pid}" in ready
        assert os.path.ismount(mp)  # READY=1 only once the mount is live
        assert os.listdir(mp) == ["incident"]  # tables = ["incident"] from the profile
        proc.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in sock.recv(4096).decode()
        assert proc.wait(timeout=30) == 0
        out = proc.stdout.read()
        assert "admin" not in out.replace("user admin", "")  # the password never shows
    finally:
        sock.close()
        stop_mount(mp, proc)


def test_config_with_secret_readable_by_others_is_refused(
    demo_emulator: EmulatorProc, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path / "config.toml", demo_emulator, tmp_path / "mp", mode=0o644)
    proc = snfs_mount(["prod"], dict(os.environ, SNFS_CONFIG=str(cfg)), tmp_path)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert f"chmod 600 {cfg}" in out


def test_command_line_overrides_profile(demo_emulator: EmulatorProc, tmp_path: Path) -> None:
    require_fuse()
    mp = tmp_path / "other"
    mp.mkdir()
    cfg = write_config(tmp_path / "config.toml", demo_emulator, tmp_path / "unused")
    proc = snfs_mount(
        ["prod", str(mp), "--tables", "problem,incident", "-o", "ro"],
        dict(os.environ, SNFS_CONFIG=str(cfg)),
        tmp_path,
    )
    try:
        wait_mounted(mp, proc)
        assert sorted(os.listdir(mp)) == ["incident", "problem"]
        with pytest.raises(OSError):
            (mp / "incident" / "x.txt").write_bytes(b"x")
    finally:
        stop_mount(mp, proc)


def test_stale_mount_is_recovered(demo_emulator: EmulatorProc, tmp_path: Path) -> None:
    m = start_mount(demo_emulator.url, tmp_path / "m", tmp_path / "w")
    os.kill(m.proc.pid, signal.SIGKILL)
    m.proc.wait()
    with pytest.raises(OSError) as e:
        os.listdir(m.mountpoint)
    assert e.value.errno == 107  # ENOTCONN: "Transport endpoint is not connected"
    m2 = start_mount(demo_emulator.url, tmp_path / "m", tmp_path / "w2")
    try:
        assert "incident" in os.listdir(m2.mountpoint)
        assert "dead snfs mount" in m2.log_text()
    finally:
        m2.stop()


def test_mount_8_with_fuse_snfs_type(demo_emulator: EmulatorProc, tmp_path: Path) -> None:
    """`mount -t fuse.snfs URL MP -o ...` goes through mount.snfs (installed as a link)."""
    require_fuse()
    helper = Path(sys.executable).parent / "mount.snfs"
    assert helper.exists(), "console script mount.snfs"
    link = Path("/sbin/mount.fuse.snfs")
    if os.geteuid() != 0 or (link.exists() and not link.is_symlink()):
        pytest.skip("needs root and a free /sbin/mount.fuse.snfs")
    mp = tmp_path / "mnt"
    mp.mkdir()
    created = not link.exists()
    if created:
        link.symlink_to(helper)
    try:
        env = dict(os.environ, SNFS_PASSWORD="admin")
        r = subprocess.run(
            [
                "mount",
                "-t",
                "fuse.snfs",
                demo_emulator.url,
                str(mp),
                "-o",
                f"_netdev,user=admin,tables=incident,spool_dir={tmp_path / 's'},"
                f"cache_dir={tmp_path / 'c'}",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr + r.stdout
        assert os.listdir(mp) == ["incident"]
        subprocess.run(["umount", str(mp)], check=True, timeout=30)
    finally:
        stop_mount(mp, None)
        if created:
            link.unlink()


def test_snfs_demo(tmp_path: Path) -> None:
    """`snfs demo MP`: emulator + mount in one command; Ctrl-C unmounts and stops both. Run
    from a directory holding a folder named `snfs` (a clone's parent): its children must not
    import that folder."""
    require_fuse()
    mp = tmp_path / "demo"
    home = tmp_path / "home"
    (home / "snfs").mkdir(parents=True)
    (home / "snfs" / "__init__.py").write_text("raise ImportError('the wrong snfs')\n")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "snfs"), "demo", str(mp)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        cwd=home,
    )
    try:

        def up() -> bool:
            assert proc.poll() is None, "snfs demo exited"
            return os.path.ismount(mp) and (mp / ".snfs" / "status").exists()

        eventually(up, timeout=60)
        assert {"incident", "problem", "kb_knowledge"} <= set(os.listdir(mp))
        status = (mp / ".snfs" / "status").read_text()
        url = __import__("json").loads(status)["instance"]
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        out, _ = proc.communicate(timeout=60)
        assert "Try, in another terminal" in out
        assert not os.path.ismount(mp)
        import urllib.request

        with pytest.raises(OSError):
            urllib.request.urlopen(url + "/api/now/attachment", timeout=5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        stop_mount(mp, None)


def test_mount_with_oauth_and_with_a_token_file(
    demo_emulator: EmulatorProc, tmp_path: Path
) -> None:
    """OAuth password grant (secret from the environment), then a static bearer token file."""
    m = start_mount(
        demo_emulator.url,
        tmp_path / "m1",
        tmp_path / "w1",
        "--oauth-client-id",
        "snfs",
        env={"SNFS_OAUTH_CLIENT_SECRET": "snfs-secret"},
    )
    try:
        assert "incident" in os.listdir(m.mountpoint)
        assert demo_emulator.stats()["by_route"]["POST /oauth_token.do"] >= 1
        assert "snfs-secret" not in m.log_text()
    finally:
        m.stop()
    import urllib.parse
    import urllib.request

    form = urllib.parse.urlencode(
        {
            "grant_type": "password",
            "client_id": "snfs",
            "client_secret": "snfs-secret",
            "username": "admin",
            "password": "admin",
        }
    ).encode()
    with urllib.request.urlopen(demo_emulator.url + "/oauth_token.do", form, timeout=30) as r:
        token = __import__("json").loads(r.read())["access_token"]
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    mp = tmp_path / "m2"
    mp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "SNFS_PASSWORD"}
    proc = snfs_mount([demo_emulator.url, str(mp), "--token-file", str(token_file)], env, tmp_path)
    try:
        wait_mounted(mp, proc)
        assert "incident" in os.listdir(mp)
    finally:
        stop_mount(mp, proc)
    assert token not in proc.stdout.read()


def test_two_mounts_never_share_a_spool(demo_emulator: EmulatorProc, tmp_path: Path) -> None:
    """Two daemons retrying one journal would store every owed file twice: the second refuses,
    and says what to do; a read-only mount needs no spool and is let in."""
    work = tmp_path / "w"  # start_mount puts the spool in work/spool: the same for all three
    first = start_mount(demo_emulator.url, tmp_path / "a", work)
    try:
        second = start_mount(demo_emulator.url, tmp_path / "b", work, expect_fail=True)
        assert second.proc.wait(timeout=30) == 1
        assert "is using the spool" in second.log_text() and "--spool-dir" in second.log_text()
        assert not os.path.ismount(tmp_path / "b")
        ro = start_mount(demo_emulator.url, tmp_path / "ro", work, "-o", "ro")
        ro.stop()
        assert "incident" in os.listdir(first.mountpoint)
    finally:
        first.stop()


def password_grant(emu: EmulatorProc, user: str, password: str) -> str:
    import json
    import urllib.parse
    import urllib.request

    form = urllib.parse.urlencode(
        {
            "grant_type": "password",
            "client_id": "snfs",
            "client_secret": "snfs-secret",
            "username": user,
            "password": password,
        }
    ).encode()
    with urllib.request.urlopen(emu.url + "/oauth_token.do", form, timeout=30) as r:
        return json.loads(r.read())["access_token"]


def test_two_tokens_never_share_a_spool(emulator_factory, tmp_path: Path) -> None:
    """Issue 18: bearer-token mounts of one instance were all keyed `token`, so one token's
    owed uploads were sent with another's rights. Now the key names the token (a hash of it):
    two tokens mount side by side with the same --spool-dir, each with its own spool; one
    token twice is still refused; the token is in no path and no log line; and an old shared
    spool that still owes uploads is named once, never adopted."""
    require_fuse()
    emu = emulator_factory("--user", "bob:bob-pw:admin")
    tokens = {
        "alice": password_grant(emu, "admin", "admin"),
        "bob": password_grant(emu, "bob", "bob-pw"),
    }
    assert tokens["alice"] != tokens["bob"]
    # What an older snfs left: the spool all token mounts of this instance shared, still owing.
    from snfs.spool import instance_dir

    old = instance_dir(tmp_path / "spool", emu.url, "token")
    (old / "0123456789abcdef.json").write_text("{}")
    env = {k: v for k, v in os.environ.items() if k != "SNFS_PASSWORD"}
    procs: dict[str, subprocess.Popen] = {}
    try:
        for who, token in tokens.items():
            (tmp_path / who).mkdir()
            env_who = dict(env, SNFS_TOKEN=token)
            procs[who] = snfs_mount([emu.url, str(tmp_path / who), "-v"], env_who, tmp_path)
            wait_mounted(tmp_path / who, procs[who])
        spools = {p for p in (tmp_path / "spool").iterdir() if p != old}
        assert len(spools) == 2  # one per token, both beside the old shared one
        (tmp_path / "again").mkdir()
        again = snfs_mount(
            [emu.url, str(tmp_path / "again")], dict(env, SNFS_TOKEN=tokens["alice"]), tmp_path
        )
        assert again.wait(timeout=30) == 1
        assert again.stdout is not None and "is using the spool" in again.stdout.read()
    finally:
        for who in procs:
            stop_mount(tmp_path / who, procs[who])
    for who, proc in procs.items():
        assert proc.stdout is not None
        out = proc.stdout.read()
        assert f"{old} still holds uploads owed by token mounts" in out, out
        assert tokens[who] not in out
        for p in (tmp_path / "spool").rglob("*"):
            assert tokens[who] not in str(p)
    assert (old / "0123456789abcdef.json").exists()  # never adopted, never deleted
