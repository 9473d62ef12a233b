"""File attributes and extended attributes of what the tree shows."""

from __future__ import annotations

import mimetypes
import stat
import time
from dataclasses import dataclass
from datetime import datetime

import pyfuse3

from snfs.backend import Backend, RemoteFile
from snfs.inodes import Kind, Node

BLOCK = 4096
# A file's preferred I/O size (st_blksize): cp, cat and most tools read and write in pieces of
# this size (coreutils: at least 128 KiB), and without the kernel's write-back cache each write
# is one FUSE request. 1 MiB (the largest request the kernel sends) makes a `cp` into the
# mount 256 requests per 256 MiB instead of 2048: the spool-writing phase of an upload spent
# most of its CPU on the per-request work (measured: daemon CPU per GiB uploaded -18 %).
IO_SIZE = 1 << 20


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int
    umask: int = 0o022
    read_only: bool = False


@dataclass(frozen=True)
class Timeouts:
    """Kernel cache lifetimes. Content never changes under a file inode (keyed by sys_id), so
    file attributes may live long; names and directories change remotely, so they do not."""

    file_attr: float = 3600.0
    entry: float = 60.0
    dir_attr: float = 1.0

    @classmethod
    def for_listings(cls, dir_cache_time: float) -> Timeouts:
        """A mount's: entries live as long as a listing (at most 60 s). A directory's
        attributes never change (mode, owner, mount time), so they live as long as its entry:
        a walk then does not stat each directory it enters again (one FUSE round trip per
        directory, a fifth of a `find`)."""
        seconds = min(dir_cache_time, 60.0)
        return cls(entry=seconds, dir_attr=seconds)


# With allow_other and no umask= given, only the owner (uid=) may read: the files are the
# instance's, read with the mounting user's rights, and allow_other alone must not hand them to
# every local account. docs/SEMANTICS.md, "Attributes".
ALLOW_OTHER_UMASK = 0o077


def umask_given(fuse_options: list[str]) -> bool:
    """Did the command line or profile say `-o umask=...`?"""
    return any(
        word.strip().startswith("umask=") for text in fuse_options for word in text.split(",")
    )


def effective_umask(allow_other: bool, umask: int, given: bool) -> tuple[int, str | None]:
    """The umask to show files with, and a warning to log (or None)."""
    if allow_other and not given:
        return ALLOW_OTHER_UMASK, (
            "allow_other without umask=: files and directories are shown 0600/0700, for the"
            " owner (uid=) only; give umask=027 (group) or umask=022 (everyone) to share them"
        )
    if allow_other and not umask & 0o004:
        return umask, (
            f"allow_other with umask={umask:03o}: every local user can read every attachment"
            " with the mount owner's rights"
        )
    return umask, None


# Directories have no time on the instance: they show when the mount started.
MOUNTED_AT = time.time_ns()


def _ns(dt: datetime | None) -> int:
    return int(dt.timestamp() * 1e9) if dt else MOUNTED_AT


def entry(
    node: Node,
    owner: Owner,
    timeouts: Timeouts,
    *,
    size: int | None = None,
    mtime: datetime | None = None,
    ctime: datetime | None = None,
    times: tuple[int, int] | None = None,
) -> pyfuse3.EntryAttributes:
    """`times`: (mtime_ns, atime_ns) a user set (`Tree.kept_times`), shown instead."""
    a = pyfuse3.EntryAttributes()
    a.st_ino = node.ino
    a.generation = 0
    a.st_uid, a.st_gid = owner.uid, owner.gid
    a.st_blksize = BLOCK
    write_bits = 0 if owner.read_only else 0o222
    if node.kind in (Kind.FILE, Kind.LOCAL, Kind.CONTROL) and size is not None:
        a.st_mode = stat.S_IFREG | ((0o444 | write_bits) & ~owner.umask)
        a.st_nlink = 1
        a.st_blksize = IO_SIZE
        a.st_size = size
        a.attr_timeout = timeouts.file_attr if node.kind is Kind.FILE else 0.5
        a.entry_timeout = timeouts.entry if node.kind is Kind.FILE else 0.5
    elif node.kind is Kind.ALIAS:
        a.st_mode = stat.S_IFLNK | 0o777
        a.st_nlink = 1
        a.st_size = len(str(node.data).encode())
        a.attr_timeout = a.entry_timeout = timeouts.entry
    else:
        a.st_mode = stat.S_IFDIR | ((0o555 | write_bits) & ~owner.umask)
        a.st_nlink = 2
        a.st_size = 0
        a.attr_timeout = timeouts.dir_attr
        a.entry_timeout = timeouts.entry
    a.st_blocks = (a.st_size + 511) // 512
    a.st_mtime_ns = a.st_atime_ns = _ns(mtime)
    a.st_ctime_ns = _ns(ctime or mtime)
    if times is not None:
        a.st_mtime_ns, a.st_atime_ns = times
    return a


def attachment_entry(
    node: Node,
    att: RemoteFile,
    owner: Owner,
    timeouts: Timeouts,
    times: tuple[int, int] | None = None,
) -> pyfuse3.EntryAttributes:
    return entry(
        node,
        owner,
        timeouts,
        size=att.size_bytes,
        mtime=att.updated_on,
        ctime=att.created_on,
        times=times,
    )


def mime_type(att: RemoteFile) -> str:
    """What file managers read from `user.mime_type`: the instance's content type, unless it is
    the generic one an upload tool sent, then a guess from the name."""
    ct = (att.content_type or "").split(";")[0].strip()
    if ct and ct not in ("application/octet-stream", "*/*", "multipart/form-data"):
        return ct
    return mimetypes.guess_type(att.file_name)[0] or ct or "application/octet-stream"


def xattrs(att: RemoteFile, backend: Backend) -> dict[str, bytes]:
    """`user.mime_type`, and `user.<backend>.*`: what the system knows of the file, its ids
    under the names the backend declares (`Backend.xattr_keys`)."""
    prefix = f"user.{backend.name}."
    keys = backend.xattr_keys
    values = {"user.mime_type": mime_type(att)}
    values.update(
        {
            prefix + keys.file_id: att.sys_id,
            prefix + keys.table: att.table_name,
            prefix + keys.record: att.table_sys_id,
            prefix + "file_name": att.file_name,
            prefix + "content_type": att.content_type,
            prefix + "download_link": att.download_link,
            prefix + "created_by": att.created_by,
            prefix + "hash": att.hash,
        }
    )
    values.update({prefix + k: v for k, v in att.extra.items()})
    return {k: v.encode() for k, v in values.items() if v}
