"""The FUSE operations: a thin translation of kernel calls onto the tree, the content cache and
the write staging. Every handler goes through `handlers.handler` (errno mapping, never let a
non-FUSEError escape). Behaviour of each operation: docs/SEMANTICS.md.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyfuse3
import trio

from snfs import attrs, names
from snfs.attrs import Owner, Timeouts
from snfs.content_cache import ContentCache
from snfs.control import DIR_NAME, TRASH_NAME, Control
from snfs.errors import NotFound
from snfs.handlers import fail, handler
from snfs.inodes import Kind, Node
from snfs.prefetch import Prefetcher
from snfs.transfer import Buffer
from snfs.tree import Listing, Tree
from snfs.writes import Writes

log = logging.getLogger("snfs.fs")

BIG = 1 << 50  # statfs: plenty of room; the instance's real limit is per file


@dataclass
class DirHandle:
    node: Node
    entries: list[tuple[str, Node]] | None = None  # snapshot taken on first readdir
    listing: Listing | None = None  # a table's growing listing, kept for this open


@dataclass
class FileHandle:
    node: Node
    writable: bool


class Operations(pyfuse3.Operations):
    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(
        self,
        tree: Tree,
        cache: ContentCache,
        writes: Writes,
        control: Control,
        owner: Owner,
        timeouts: Timeouts,
        prefetch: Prefetcher | None = None,
    ) -> None:
        super().__init__()
        self.prefetch = prefetch
        self.tree = tree
        self.control = control
        self.inodes = tree.inodes
        self.cache = cache
        self.writes = writes
        self.owner = owner
        self.timeouts = timeouts
        self._fh = itertools.count(1)
        self._dirs: dict[int, DirHandle] = {}
        self._files: dict[int, FileHandle] = {}
        self.initialized = trio.Event()

    def init(self) -> None:
        """The kernel's FUSE INIT arrived (pyfuse3 calls this synchronously, in the loop)."""
        self.initialized.set()

    # -- helpers -------------------------------------------------------------------------------

    def _node(self, ino: int) -> Node:
        node = self.inodes.get(ino)
        if node is None:
            raise fail(errno.ENOENT)
        return node

    def _attr(self, node: Node) -> pyfuse3.EntryAttributes:
        if node.kind is Kind.FILE:
            return attrs.attachment_entry(
                node, node.data, self.owner, self.timeouts, self.tree.kept_times(node)
            )
        if node.kind is Kind.LOCAL:
            size, mtime = self.writes.size_and_mtime(node)
            return attrs.entry(
                node,
                self.owner,
                self.timeouts,
                size=size,
                mtime=mtime,
                times=self.tree.kept_times(node),
            )
        if node.kind is Kind.CONTROL and not self.control.is_dir(node):
            size, mtime = self.control.size_and_mtime(node)
            return attrs.entry(node, self.owner, self.timeouts, size=size, mtime=mtime)
        return attrs.entry(node, self.owner, self.timeouts)

    def _parent(self, node: Node) -> Node:
        if node.kind is Kind.TABLE and node.data is not None:  # /<table>/.query/<scope>
            return self.tree.scope_dir_node(node.table)
        if node.kind is Kind.SCOPES:
            return self.tree.table_node(node.table)
        if node.kind in (Kind.TABLE, Kind.ROOT, Kind.CONTROL):
            return (
                self.control.root if node.kind is Kind.CONTROL and node.data else self.inodes.root
            )
        if node.kind in (Kind.RECORD, Kind.ALIAS):
            return self.tree.table_node(node.table)
        return self.tree.record_node(node.table, node.record)

    async def _child(self, parent: Node, name: str) -> Node | None:
        if parent.kind is Kind.ROOT:
            if name == DIR_NAME:
                return self.control.root
            if TRASH_NAME.fullmatch(name):
                return self.control.trash_marker()
            return await self.tree.lookup_table(name)
        if parent.kind is Kind.TABLE:
            return await self.tree.lookup_record(parent.table, name)
        if parent.kind is Kind.SCOPES:
            return self.tree.lookup_scope(parent.table, name)
        if parent.kind is Kind.RECORD:
            local = self.writes.local_entry(parent.table, parent.record, name)
            if local is not None:
                return local
            node = await self.tree.lookup_file(parent.table, parent.record, name)
            if node is not None and node.data.sys_id in self.writes.hidden(
                parent.table, parent.record
            ):
                return None  # shown under a local (temporary) name instead
            return node
        if parent.kind is Kind.CONTROL and self.control.is_dir(parent):
            return self.control.child(name)
        raise fail(errno.ENOTDIR)

    async def _entries(self, node: Node) -> list[tuple[str, Node]]:
        if node.kind is Kind.ROOT:
            return [(t, self.tree.table_node(t)) for t in await self.tree.tables()]
        if node.kind is Kind.TABLE:
            return [
                (r, self.tree.record_node(node.table, r))
                for r in await self.tree.records(node.table)
            ]
        if node.kind is Kind.SCOPES:
            return []  # scopes are reached by name only
        if node.kind is Kind.RECORD:
            return await self._record_entries(node)
        if node.kind is Kind.CONTROL and self.control.is_dir(node):
            return self.control.entries()
        raise fail(errno.ENOTDIR)

    async def _record_entries(self, node: Node) -> list[tuple[str, Node]]:
        local = self.writes.local_entries(node.table, node.record)
        hidden = self.writes.hidden(node.table, node.record)
        out = dict(local)
        for name, att in (await self.tree.record_listing(node.table, node.record)).items():
            if name in out or att.sys_id in hidden:
                continue
            out[name] = self.tree.file_node(att)
        return sorted(out.items())

    def _name(self, raw: bytes, *, limit: bool = True) -> str:
        """A name from the kernel. Over NAME_MAX bytes is ENAMETOOLONG (as statfs's namemax
        says): no file can have such a name, here or on a disk a tool copies it from."""
        if limit and len(raw) > names.NAME_MAX:
            raise fail(errno.ENAMETOOLONG)
        try:
            return os.fsdecode(raw)
        except UnicodeDecodeError:
            raise fail(errno.EINVAL) from None

    # -- namespace -------------------------------------------------------------------------------

    @handler
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: Any = None
    ) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        text = self._name(name, limit=parent.kind is not Kind.SCOPES)  # a query may be long
        if text == ".":
            child: Node | None = parent
        elif text == "..":
            child = self._parent(parent)
        else:
            child = await self._child(parent, text)
        if child is None:
            raise fail(errno.ENOENT)
        self.inodes.looked_up(child)
        return self._attr(child)

    @handler
    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, count in inode_list:
            self.inodes.forget(ino, count)

    @handler
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return self._attr(self._node(inode))

    @handler
    async def readlink(self, inode: int, ctx: Any = None) -> bytes:
        node = self._node(inode)
        if node.kind is not Kind.ALIAS:
            raise fail(errno.EINVAL)
        return os.fsencode(node.data)

    @handler
    async def opendir(self, inode: int, ctx: Any = None) -> int:
        node = self._node(inode)
        if node.kind not in (Kind.ROOT, Kind.TABLE, Kind.RECORD, Kind.SCOPES) and not (
            node.kind is Kind.CONTROL and self.control.is_dir(node)
        ):
            raise fail(errno.ENOTDIR)
        fh = next(self._fh)
        self._dirs[fh] = DirHandle(node)
        node.busy += 1  # an open directory's inode stays whole (snfs.inodes, parking)
        return fh

    @handler
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        handle = self._dirs.get(fh)
        if handle is None:
            raise fail(errno.EBADF)
        if handle.node.kind is Kind.TABLE and self.tree.streams(handle.node.table):
            await self._readdir_listing(handle, start_id, token)
            return
        if handle.entries is None or start_id == 0:
            # One snapshot per open (refreshed on rewind): offsets stay stable while we reply.
            # `.` and `..` come first; pyfuse3 says they must not count as lookups.
            dots = [(".", handle.node), ("..", self._parent(handle.node))]
            handle.entries = dots + await self._entries(handle.node)
        for i in range(start_id, len(handle.entries)):
            name, child = handle.entries[i]
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self._attr(child), i + 1):
                return
            if i >= 2:
                self.inodes.looked_up(child)  # a readdirplus entry counts as a lookup

    async def _readdir_listing(self, handle: DirHandle, start_id: int, token: Any) -> None:
        """A table: entries as the listing's pages arrive. Offset n is entry n of one
        append-only listing generation, so offsets stay stable while it grows. A call waits
        for at most the next page, never for the whole listing: the kernel holds the directory
        lock during a readdir, so a lookup there waits one page at most (docs/PERFORMANCE.md)."""
        node = handle.node
        if handle.listing is None or start_id == 0:
            handle.listing = self.tree.listing(node.table, node.data)
        listing = handle.listing
        first = max(start_id, 2) - 2
        # Wait before replying anything: a listing that fails (no such table) must fail the
        # call, and an error after `.` and `..` were replied would read as an empty directory.
        await listing.wait_past(first)
        dots = [(".", node), ("..", self._parent(node))]
        for i in range(start_id, 2):
            if not pyfuse3.readdir_reply(
                token, os.fsencode(dots[i][0]), self._attr(dots[i][1]), i + 1
            ):
                return
        for i in range(first, len(listing.names)):
            name = listing.names[i]
            target = listing.aliases.get(name)
            child = (
                self.tree.alias_node(node.table, name, target)
                if target is not None
                else self.tree.record_node(node.table, name)
            )
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self._attr(child), i + 3):
                return
            self.inodes.looked_up(child)  # a readdirplus entry counts as a lookup

    @handler
    async def releasedir(self, fh: int) -> None:
        handle = self._dirs.pop(fh, None)
        if handle is not None:
            handle.node.busy -= 1

    @handler
    async def statfs(self, ctx: Any = None) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = attrs.BLOCK
        s.f_blocks = BIG // attrs.BLOCK
        s.f_bfree = s.f_bavail = s.f_blocks
        s.f_files = len(self.inodes) + (1 << 20)
        s.f_ffree = s.f_favail = 1 << 20
        s.f_namemax = names.NAME_MAX
        return s

    # -- reading ----------------------------------------------------------------------------------

    @handler
    async def open(self, inode: int, flags: int, ctx: Any = None) -> pyfuse3.FileInfo:
        node = self._node(inode)
        if node.kind in (Kind.TABLE, Kind.RECORD, Kind.ROOT) or (
            node.kind is Kind.CONTROL and self.control.is_dir(node)
        ):
            raise fail(errno.EISDIR)
        writable = (flags & os.O_ACCMODE) != os.O_RDONLY or bool(flags & os.O_TRUNC)
        if writable and node.kind is Kind.CONTROL:
            raise fail(errno.EACCES)
        if writable and node.kind is Kind.FILE:
            await self.tree.verify_record(node.table, node.record)
            if not self.tree.still_listed(node.data):
                # Replaced or deleted on the instance since this name was looked up: the
                # kernel looks the name up again and retries the open once (ESTALE).
                raise fail(errno.ESTALE)
        if writable:
            await self.writes.open_for_write(node, flags)
        fh = next(self._fh)
        self._files[fh] = FileHandle(node, writable)
        node.busy += 1  # an open file's inode stays whole (snfs.inodes, parking)
        if self.prefetch is not None and node.kind is Kind.FILE and not writable:
            self.prefetch.opened(node.data)  # a hint: never blocks, never fails the open
        # Content under a FILE inode never changes: let the kernel keep its page cache.
        return pyfuse3.FileInfo(
            fh=fh,
            keep_cache=node.kind is Kind.FILE and not writable,
            direct_io=node.kind is Kind.CONTROL,
        )

    @handler
    # pyfuse3 declares bytes but replies from any buffer (PyObject_GetBuffer in fuse_read_async):
    # the cache may answer with a view of a download's block, not a copy.
    async def read(self, fh: int, off: int, size: int) -> Buffer:  # type: ignore[override]
        node = self._handle(fh).node
        if node.kind is Kind.FILE:
            att = node.data
            if not self.tree.backend.capabilities(att.table_name).read:
                raise fail(errno.EACCES)  # a write-only system: content cannot be fetched
            try:
                return await self.cache.read(att.sys_id, att.size_bytes, off, size)
            except NotFound:
                # Deleted on the instance behind our back: drop the entry, tell the caller.
                self.tree.removed(att.sys_id)
                self.cache.forget(att.sys_id)
                raise
        if node.kind is Kind.CONTROL:
            return await self.control.read(node, off, size)
        return await self.writes.read(node, off, size)

    def _handle(self, fh: int) -> FileHandle:
        handle = self._files.get(fh)
        if handle is None:
            raise fail(errno.EBADF)
        return handle

    # -- extended attributes ---------------------------------------------------------------------

    def _xattrs(self, node: Node) -> dict[str, bytes]:
        if node.kind is Kind.FILE:
            return attrs.xattrs(node.data, self.tree.backend)
        if node.kind is Kind.LOCAL:
            return self.writes.xattrs(node)
        return {}

    @handler
    async def getxattr(self, inode: int, name: bytes, ctx: Any = None) -> bytes:
        if not name.startswith(b"user."):
            # No security.* or system.* (ACL) attributes here. ENOTSUP, unlike ENODATA, lets
            # `ls -l` remember that for the whole mount instead of asking for every file.
            raise fail(errno.ENOTSUP)
        value = self._xattrs(self._node(inode)).get(os.fsdecode(name))
        if value is None:
            raise fail(pyfuse3.ENOATTR)
        return value

    @handler
    async def listxattr(self, inode: int, ctx: Any = None) -> list[bytes]:
        return [os.fsencode(k) for k in self._xattrs(self._node(inode))]

    @handler
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any = None) -> None:
        raise fail(errno.ENOTSUP)

    @handler
    async def removexattr(self, inode: int, name: bytes, ctx: Any = None) -> None:
        raise fail(errno.ENOTSUP)

    # -- writing: each call is translated onto snfs.writes -----------------------------------------

    @handler
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any = None
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        parent = self._node(parent_inode)
        if parent.kind is Kind.RECORD:
            await self.tree.verify_record(parent.table, parent.record)
        node = await self.writes.create(parent, self._name(name))
        fh = next(self._fh)
        self._files[fh] = FileHandle(node, True)
        node.busy += 1
        self.inodes.looked_up(node)
        return pyfuse3.FileInfo(fh=fh), self._attr(node)

    @handler
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self.writes.write(self._handle(fh).node, off, buf)

    @handler
    async def flush(self, fh: int) -> None:
        handle = self._handle(fh)
        if handle.writable:
            await self.writes.flush(handle.node)

    @handler
    async def fsync(self, fh: int, datasync: bool) -> None:
        handle = self._handle(fh)
        if handle.writable:
            await self.writes.flush(handle.node, force=True)

    @handler
    async def release(self, fh: int) -> None:
        handle = self._files.pop(fh, None)
        if handle is not None:
            handle.node.busy -= 1
        if handle is not None and handle.writable:
            await self.writes.release(handle.node)

    @handler
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: Any,
        fh: int | None,
        ctx: Any = None,
    ) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        if fields.update_size:
            await self.writes.truncate(node, attr.st_size, has_handle=fh is not None)
        elif self.owner.read_only and (
            fields.update_mode or fields.update_uid or fields.update_gid or fields.update_mtime
        ):
            raise fail(errno.EROFS)
        if (fields.update_mtime or fields.update_atime) and node.kind in (Kind.FILE, Kind.LOCAL):
            # Kept for this attachment (in the index), so rsync -a finds it unchanged next
            # time; the instance has no field for them (docs/SEMANTICS.md, "Times").
            shown = self._attr(node)
            self.tree.keep_times(
                node,
                attr.st_mtime_ns if fields.update_mtime else shown.st_mtime_ns,
                attr.st_atime_ns if fields.update_atime else shown.st_atime_ns,
            )
        # mode and owner: accepted without effect, so cp -a, rsync -a and tar x work.
        return self._attr(node)

    @handler
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any = None) -> None:
        parent = self._node(parent_inode)
        text = self._name(name)
        child = await self._child(parent, text) if parent.kind is Kind.RECORD else None
        if child is None:
            raise fail(errno.ENOENT if parent.kind is Kind.RECORD else errno.EPERM)
        await self.writes.unlink(parent, text, child)

    @handler
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: Any = None,
    ) -> None:
        old_parent, new_parent = self._node(parent_inode_old), self._node(parent_inode_new)
        old_name, new_name = self._name(name_old), self._name(name_new)
        if old_parent.kind is not Kind.RECORD or new_parent.kind is not Kind.RECORD:
            raise fail(errno.EPERM)
        for record in {
            (old_parent.table, old_parent.record),
            (new_parent.table, new_parent.record),
        }:
            await self.tree.verify_record(*record)
        source = await self._child(old_parent, old_name)
        if source is None:
            raise fail(errno.ENOENT)
        target = await self._child(new_parent, new_name)
        if target is not None and flags & pyfuse3.RENAME_NOREPLACE:
            raise fail(errno.EEXIST)
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise fail(errno.EINVAL)
        await self.writes.rename(old_parent, old_name, source, new_parent, new_name, target)

    @handler
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: Any = None
    ) -> pyfuse3.EntryAttributes:
        node = await self.writes.mkdir(self._node(parent_inode), self._name(name))
        self.inodes.looked_up(node)
        return self._attr(node)

    @handler
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any = None) -> None:
        parent = self._node(parent_inode)
        child = await self._child(parent, self._name(name))
        if child is None:
            raise fail(errno.ENOENT)
        entries = await self._entries(child) if child.kind is Kind.RECORD else None
        await self.writes.rmdir(parent, child, bool(entries))

    @handler
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any = None
    ) -> pyfuse3.EntryAttributes:
        raise fail(errno.EPERM)

    @handler
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: Any = None
    ) -> pyfuse3.EntryAttributes:
        raise fail(errno.EPERM)

    @handler
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any = None
    ) -> pyfuse3.EntryAttributes:
        raise fail(errno.EPERM)
