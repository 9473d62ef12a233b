"""Local-side safety of issue 12 (rows 12, 13, 14, 16, 17): log files, private directories,
allow_other's default umask, mount paths, and whose spool an owed upload is in. No kernel and
no instance are needed: each is a decision snfs makes from local state alone."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from snfs import logs
from snfs.attrs import ALLOW_OTHER_UMASK, effective_umask, umask_given
from snfs.content_cache import ContentCache
from snfs.credentials import spool_identity as spool_user
from snfs.options import MountOptions
from snfs.spool import Spool, UnsafeDirectory, instance_dir, private_dir
from snfs.status import unescape_mount_field

# -- row 12: the log file and its directory --------------------------------------------------


def test_row12_log_dir_keeps_its_mode_and_the_file_is_private(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # like /tmp or a group log directory
    log_file = shared / "snfs.log"
    logs.prepare_log_file(log_file)  # what `snfs mount --daemon --log-file` does first
    logs.setup_logging(1, log_file)
    try:
        logging.getLogger("snfs.test").info("hello")
    finally:
        logs.setup_logging(0)
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o1777
    assert stat.S_IMODE(os.stat(log_file).st_mode) == 0o600
    assert "hello" in log_file.read_text()
    fresh = tmp_path / "new" / "dir" / "x.log"
    logs.prepare_log_file(fresh)
    assert stat.S_IMODE(os.stat(fresh.parent).st_mode) == 0o700


# -- row 13: cache and spool directories are ours alone -----------------------------------------


def test_row13_private_dir_refuses_a_symlink(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "spool").symlink_to(elsewhere)
    with pytest.raises(UnsafeDirectory):
        private_dir(tmp_path / "spool")
    with pytest.raises(UnsafeDirectory):
        Spool(tmp_path / "spool")


def test_row13_private_dir_refuses_another_users_directory(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chmod(theirs, 0o777)
    os.chown(theirs, os.geteuid() + 1, -1)  # the tests run as root: any other uid will do
    with pytest.raises(UnsafeDirectory, match="belongs to uid"):
        private_dir(theirs)
    assert stat.S_IMODE(os.stat(theirs).st_mode) == 0o777  # not adopted, not changed


async def test_row13_content_cache_refuses_a_symlinked_dir(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "cache").symlink_to(tmp_path / "real")
    cache = ContentCache(lambda sid, off: None, disk_dir=tmp_path / "cache")  # type: ignore
    with pytest.raises(UnsafeDirectory):
        async with cache:
            pass


def test_private_dir_tightens_its_own_directory(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o755)
    private_dir(mine)
    assert stat.S_IMODE(os.stat(mine).st_mode) == 0o700


# -- row 14: allow_other ---------------------------------------------------------------------------


def test_row14_allow_other_without_umask_is_owner_only() -> None:
    umask, warning = effective_umask(True, 0o022, given=umask_given(["allow_other"]))
    assert umask == ALLOW_OTHER_UMASK == 0o077 and warning and "umask=" in warning
    umask, warning = effective_umask(
        True, 0o027, given=umask_given(["ro", "allow_other,umask=027"])
    )
    assert umask == 0o027 and warning is None
    umask, warning = effective_umask(True, 0o022, given=umask_given(["umask=022,allow_other"]))
    assert umask == 0o022 and warning and "every local user" in warning  # explicit: kept, said
    assert effective_umask(False, 0o022, given=False) == (0o022, None)


# -- row 16: mount paths with non-ASCII characters ------------------------------------------------


def test_row16_mount_paths_are_unescaped_not_unicode_escaped() -> None:
    raw = "/mnt/café\\040and\\011tab\\134x".encode()
    assert unescape_mount_field(raw) == "/mnt/café and\ttab\\x"
    assert unescape_mount_field("/mnt/データ".encode()) == "/mnt/データ"


# -- row 17: the spool is per instance and user ----------------------------------------------


def test_row17_spool_is_per_user(tmp_path: Path) -> None:
    url = "https://example.service-now.com"
    a = MountOptions(instance=url, mountpoint=tmp_path, user="alice")
    b = MountOptions(instance=url, mountpoint=tmp_path, user="bob")
    assert spool_user(a) != spool_user(b)
    da = instance_dir(tmp_path, url, spool_user(a))
    db = instance_dir(tmp_path, url, spool_user(b))
    assert da != db and da.parent == db.parent == tmp_path
    assert instance_dir(tmp_path, url, spool_user(a)) == da  # stable across mounts


def test_issue18_each_bearer_token_has_its_own_spool(tmp_path: Path, monkeypatch) -> None:
    """Two tokens never share a spool (they may be two users, or one token and its successor);
    the key is a hash: the token is in neither the key nor the path. User and OAuth mounts keep
    their keys (no migration for them)."""
    url = "https://example.service-now.com"
    monkeypatch.delenv("SNFS_TOKEN", raising=False)
    one, two = "tok-" + "a" * 60, "tok-" + "b" * 60
    monkeypatch.setenv("SNFS_TOKEN", one)
    a = spool_user(MountOptions(instance=url, mountpoint=tmp_path))
    token_file = tmp_path / "token"
    token_file.write_text(one + "\n")
    token_file.chmod(0o600)
    a_file = spool_user(MountOptions(instance=url, mountpoint=tmp_path, token_file=token_file))
    monkeypatch.setenv("SNFS_TOKEN", two)
    b = spool_user(MountOptions(instance=url, mountpoint=tmp_path))
    assert a == a_file and a != b  # the same token from two sources: the same spool
    assert a.startswith("token:") and one not in a and two not in b
    da, db = instance_dir(tmp_path, url, a), instance_dir(tmp_path, url, b)
    assert da != db and one not in str(da) and two not in str(db)
    assert instance_dir(tmp_path, url, "token") not in (da, db)  # not the old shared spool
    assert spool_user(MountOptions(instance=url, mountpoint=tmp_path, user="alice")) == "user:alice"
