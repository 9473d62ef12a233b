"""The write side: staging in the spool, upload on close, replace, rename, delete.

The promises (docs/SEMANTICS.md, "Writing"):
- Written bytes go to the spool on local disk, never to memory; `close` (flush) uploads them
  and returns the upload's error as an errno.
- A replaced attachment is deleted only after its replacement is stored.
- Scratch names (snfs.temp_names) never become attachments: such files stay local; renamed to
  a real name, they are uploaded once, under that name.
- An upload owed to the instance is journaled first; a failed one stays visible and is retried
  in the background; the next mount of the instance finishes what a killed daemon left.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import trio

from snfs import names
from snfs.backend import Backend, Capabilities
from snfs.backend import RemoteFile as Attachment
from snfs.content_cache import ContentCache
from snfs.errors import ExtensionRefused, Forbidden, InvalidInput, NotFound, SnfsError, TooLarge
from snfs.handlers import fail
from snfs.inodes import Kind, Node
from snfs.spool import Entry, Spool
from snfs.temp_names import is_temp
from snfs.tree import Tree

log = logging.getLogger("snfs.writes")

# Failures that another attempt cannot fix: the file stays local (and journaled as blocked).
PERMANENT = (TooLarge, ExtensionRefused, Forbidden, InvalidInput, NotFound)
RETRY_MIN, RETRY_MAX = 2.0, 300.0


@dataclass(eq=False)
class Staged:
    """A file whose current content lives in the spool."""

    sid: str
    table: str
    record: str
    name: str  # POSIX name shown in the record directory
    fd: int
    replaces: list[str] = field(default_factory=list)  # attachments to delete once stored
    dirty: bool = True  # content not yet on the instance
    wrote: bool = False  # write/truncate calls since the last upload attempt
    opens: int = 0
    mtime: datetime = field(default_factory=lambda: datetime.now(UTC))
    uploaded: Attachment | None = None
    journaled: bool = False
    blocked: str = ""  # a permanent failure: kept local, not retried
    last_error: str = ""
    attempts: int = 0
    next_try: float = 0.0
    lock: trio.Lock = field(default_factory=trio.Lock)  # one upload at a time per file
    pinned: bool = True  # keep the inode while staged (snfs.inodes)
    origin: Attachment | None = None  # opened for writing from this attachment
    dropped: bool = False  # unlinked or overwritten: goes when the last handle closes
    last_size: int = 0

    @property
    def local_only(self) -> bool:
        return is_temp(self.name)

    @property
    def busy(self) -> bool:
        return self.lock.locked()

    @property
    def owed(self) -> bool:
        """Something is still to be done on the instance for this file."""
        return (self.dirty and not self.local_only) or bool(self.uploaded and self.replaces)

    def size(self) -> int:
        if self.fd >= 0:
            self.last_size = os.fstat(self.fd).st_size
        return self.last_size

    def close(self) -> None:
        if self.fd >= 0:
            self.size()
            os.close(self.fd)
            self.fd = -1


class Writes:
    def __init__(
        self,
        tree: Tree,
        backend: Backend,
        cache: ContentCache,
        spool: Spool,
        *,
        read_only: bool = False,
    ) -> None:
        self.tree = tree
        self.inodes = tree.inodes
        self.backend = backend
        self.cache = cache
        self.spool = spool
        self.read_only = read_only
        # Per record: POSIX name -> node shown under it locally (staged files, and attachments
        # shown under a scratch name they were renamed to).
        self._local: dict[tuple[str, str], dict[str, Node]] = {}
        self._wake = trio.Event()
        tree.reserved_names = lambda t, r: self._local.get((t, r), {}).keys()

    # -- what the directory shows -------------------------------------------------------------

    def local_entry(self, table: str, record: str, name: str) -> Node | None:
        return self._local.get((table, record), {}).get(name)

    def local_entries(self, table: str, record: str) -> list[tuple[str, Node]]:
        return list(self._local.get((table, record), {}).items())

    def hidden(self, table: str, record: str) -> set[str]:
        """Attachments not to show under their own name: shown under a local name, or being
        replaced by a staged file."""
        out: set[str] = set()
        for node in self._local.get((table, record), {}).values():
            if node.kind is Kind.FILE:
                out.add(node.data.sys_id)
            else:
                out.update(node.data.replaces)
                if node.data.uploaded:
                    out.add(node.data.uploaded.sys_id)
        return out

    def size_and_mtime(self, node: Node) -> tuple[int, datetime]:
        st: Staged = node.data
        return st.size(), st.mtime

    def xattrs(self, node: Node) -> dict[str, bytes]:
        st: Staged = node.data
        state = (
            "blocked"
            if st.blocked
            else (
                "pending"
                if st.dirty and not st.local_only
                else "local"
                if st.local_only
                else "stored"
            )
        )
        out = {"user.snfs.state": state.encode()}
        if st.last_error or st.blocked:
            out["user.snfs.last_error"] = (st.blocked or st.last_error).encode()
        if st.uploaded:
            key = self.backend.xattr_keys.file_id
            out[f"user.{self.backend.name}.{key}"] = st.uploaded.sys_id.encode()
        return out

    def pending(self) -> list[Staged]:
        return [
            n.data
            for entries in self._local.values()
            for n in entries.values()
            if n.kind is Kind.LOCAL and n.data.journaled
        ]

    # -- creating and opening ------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self.read_only:
            raise fail(errno.EROFS)

    def _caps(self, table: str) -> Capabilities:
        return self.backend.capabilities(table)

    async def create(self, parent: Node, name: str) -> Node:
        self._check_writable()
        if parent.kind is not Kind.RECORD:
            raise fail(errno.EPERM)  # tables and records are not created through the mount
        if not self._caps(parent.table).create:
            raise fail(errno.EROFS)
        if not names.valid_new_name(name):
            raise fail(errno.EINVAL)
        old = self.local_entry(parent.table, parent.record, name)
        node = self._stage(parent.table, parent.record, name, self.spool.new_id())
        node.data.opens = 1  # create() returns an open handle
        if old is not None:
            self._supersede(node.data, old)
        else:
            remote = await self.tree.lookup_file(parent.table, parent.record, name)
            if remote is not None:
                node.data.replaces.append(remote.data.sys_id)
        return node

    def _stage(self, table: str, record: str, name: str, sid: str, fd: int | None = None) -> Node:
        st = Staged(sid, table, record, name, self.spool.create_data(sid) if fd is None else fd)
        node = self.inodes.ensure(("local", sid), Kind.LOCAL, table=table, record=record, data=st)
        self._local.setdefault((table, record), {})[name] = node
        return node

    async def open_for_write(self, node: Node, flags: int) -> None:
        self._check_writable()
        if node.kind is Kind.FILE:
            await self._stage_existing(node, truncate=bool(flags & os.O_TRUNC))
        elif node.kind is Kind.LOCAL:
            if flags & os.O_TRUNC:
                os.ftruncate(node.data.fd, 0)
                self._touch(node.data)
        else:
            raise fail(errno.EACCES)
        node.data.opens += 1

    async def _stage_existing(self, node: Node, *, truncate: bool) -> None:
        """Turn an attachment's inode into a staged file that will replace it (same inode)."""
        att: Attachment = node.data
        caps = self._caps(att.table_name)
        if not (caps.create and caps.delete and (truncate or caps.read)):
            raise fail(errno.EPERM)  # the system cannot replace a file
        name = self._shown_name(node) or names.encode(att.file_name)
        sid = self.spool.new_id()
        fd = self.spool.create_data(sid)
        if not truncate:
            await self.cache.copy_to(att.sys_id, att.size_bytes, self.spool.data_path(sid))
        entries = self._local.setdefault((att.table_name, att.table_sys_id), {})
        entries.pop(name, None)
        st = Staged(
            sid,
            att.table_name,
            att.table_sys_id,
            name,
            fd,
            replaces=[att.sys_id],
            dirty=truncate,
            origin=att,
        )
        self.inodes.rekey(node, ("local", sid), Kind.LOCAL, st)
        entries[name] = node

    def _shown_name(self, node: Node) -> str | None:
        for name, n in self._local.get((node.table, node.record), {}).items():
            if n is node:
                return name
        return self.tree.shown_name(node.table, node.record, node.data.sys_id)

    # -- data -----------------------------------------------------------------------------------

    async def read(self, node: Node, off: int, size: int) -> bytes:
        if node.kind is not Kind.LOCAL:
            raise fail(errno.EIO)
        return os.pread(node.data.fd, size, off)

    async def write(self, node: Node, off: int, buf: bytes) -> int:
        self._check_writable()
        if node.kind is not Kind.LOCAL:
            raise fail(errno.EBADF)
        n = os.pwrite(node.data.fd, buf, off)
        self._touch(node.data)
        return n

    def _touch(self, st: Staged) -> None:
        st.dirty = st.wrote = True
        st.blocked = ""
        st.mtime = datetime.now(UTC)

    async def truncate(self, node: Node, size: int, *, has_handle: bool) -> None:
        self._check_writable()
        if node.kind is Kind.FILE:
            await self._stage_existing(node, truncate=size == 0)
        if node.kind is not Kind.LOCAL:
            raise fail(errno.EINVAL)
        os.ftruncate(node.data.fd, size)
        self._touch(node.data)
        if not has_handle and node.data.opens == 0:
            await self._upload_now(node)  # truncate(2) has no close to upload at

    async def flush(self, node: Node, *, force: bool = False) -> None:
        """close(2) and fsync(2): upload what was written since the last upload.

        A file created (or truncated by O_TRUNC) but not written yet is left for `release`:
        a shell's `> file` opens, dup2()s and closes the first descriptor before writing, and
        that first close must not upload an empty attachment."""
        st = node.data
        if node.kind is Kind.LOCAL and st.dirty and (st.wrote or force) and not st.local_only:
            await self._upload_now(node)

    async def release(self, node: Node) -> None:
        if node.kind is not Kind.LOCAL:
            return
        st: Staged = node.data
        st.opens = max(0, st.opens - 1)
        if st.dropped:
            if st.opens == 0:
                st.close()
                self.spool.discard(st.sid)
            return
        if (
            st.opens == 0
            and not st.dirty
            and st.uploaded is None
            and st.origin is not None
            and st.replaces == [st.origin.sys_id]
        ):
            self._unstage(node)  # opened for writing, nothing written: still the attachment
            return
        if st.opens == 0 and st.dirty and not st.local_only and not st.journaled:
            # Never written (touch, `: > file`), or written with no flush (mmap): upload now;
            # errors go to the journal and the log, as release cannot return them.
            try:
                await self._upload_now(node)
            except (SnfsError, OSError):
                pass  # logged, journaled and retried in the background
        self._settle_if_done(node)

    # -- uploading ------------------------------------------------------------------------------

    async def _upload_now(self, node: Node) -> None:
        """Upload a staged file; on failure it stays staged (and journaled unless hopeless).
        A second close of the same file waits for the first one's upload, then uploads only
        what was written since."""
        st: Staged = node.data
        async with st.lock:
            if not st.dirty:
                return
            self._journal(st)
            try:
                await self._upload(node)
            except PERMANENT as e:
                st.blocked = e.instance_message or e.message
                log.error(
                    "upload of %s/%s/%s refused, kept locally in the spool: %s",
                    st.table,
                    st.record,
                    st.name,
                    st.blocked,
                )
                self._journal(st)
                raise
            except SnfsError as e:
                self._retry_later(st, e.message)
                raise
            except OSError as e:
                self._retry_later(st, str(e))
                raise
        self._settle_if_done(node)

    async def _upload(self, node: Node) -> None:
        st: Staged = node.data
        st.dirty = st.wrote = False  # writes that land during the upload set them again
        st.attempts += 1
        try:
            att = await self.backend.upload(
                st.table,
                st.record,
                names.decode(st.name),
                self.spool.data_path(st.sid),
                size=st.size(),
            )
        except BaseException:
            st.dirty = True
            raise
        if st.uploaded is not None:
            st.replaces.append(st.uploaded.sys_id)
        st.uploaded = att
        self.tree.added(att)
        st.last_error = ""
        log.info(
            "uploaded %s/%s/%s (%d bytes) as %s",
            st.table,
            st.record,
            st.name,
            att.size_bytes,
            att.sys_id,
        )
        await self._finish_replacing(node)

    async def _finish_replacing(self, node: Node) -> None:
        """The new content is stored: delete what it replaces, then forget the journal entry.
        A delete that fails does not fail the upload (the data is safe; the old attachment
        is merely still there): it is retried in the background from the journal."""
        st: Staged = node.data
        try:
            await self._delete_replaced(st)
        except SnfsError as e:
            self._journal(st)
            self._retry_later(st, f"deleting the replaced attachment: {e.message}")
            return
        if not st.dirty:
            self.spool.settle(st.sid)
            st.journaled = False
        self._settle_if_done(node)

    async def _delete_replaced(self, st: Staged) -> None:
        while st.replaces:
            old = st.replaces[0]
            await self.backend.delete(old, missing_ok=True)
            self.tree.removed(old)
            self.cache.forget(old)
            st.replaces.pop(0)

    def _journal(self, st: Staged) -> None:
        self.spool.journal(
            Entry(
                st.sid,
                st.table,
                st.record,
                names.decode(st.name),
                st.replaces[0] if st.replaces else None,
                attempts=st.attempts,
                last_error=st.blocked or st.last_error,
                replaces_all=list(st.replaces),
                blocked=bool(st.blocked),
            )
        )
        st.journaled = True

    def _retry_later(self, st: Staged, why: str) -> None:
        st.last_error = why
        delay = min(RETRY_MAX, RETRY_MIN * 2 ** min(st.attempts, 10))
        st.next_try = time.monotonic() + random.uniform(delay / 2, delay)
        log.warning(
            "upload of %s/%s/%s failed (%s); kept in the spool, retrying in %.0f s",
            st.table,
            st.record,
            st.name,
            why,
            st.next_try - time.monotonic(),
        )
        self._wake.set()

    def _settle_if_done(self, node: Node) -> None:
        """A staged file that is stored, clean and closed becomes a plain attachment inode."""
        st = node.data
        if (
            node.kind is not Kind.LOCAL
            or st.opens
            or st.dirty
            or st.busy
            or st.uploaded is None
            or st.replaces
            or st.local_only
        ):
            return
        entries = self._local.get((st.table, st.record), {})
        if entries.get(st.name) is node:
            del entries[st.name]
        st.close()
        self.spool.discard(st.sid)
        self.inodes.rekey(node, ("file", st.uploaded.sys_id), Kind.FILE, st.uploaded)
        node.table, node.record = st.uploaded.table_name, st.uploaded.table_sys_id
        self.tree.renumber(st.table, st.record)  # the name it held locally is free again

    def _unstage(self, node: Node) -> None:
        st: Staged = node.data
        entries = self._local.get((st.table, st.record), {})
        if entries.get(st.name) is node:
            del entries[st.name]
        st.close()
        self.spool.discard(st.sid)
        assert st.origin is not None
        self.inodes.rekey(node, ("file", st.origin.sys_id), Kind.FILE, st.origin)
        self.tree.renumber(st.table, st.record)

    async def run_retries(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Background task: retry what is owed to the instance, with backoff, for the life of
        the mount. Nothing that goes wrong in here may end the mount."""
        task_status.started()
        while True:
            try:
                wait = await self._retry_due()
            except Exception:
                log.exception("background upload retry failed unexpectedly; trying again later")
                wait = RETRY_MAX
            with trio.move_on_after(wait):
                await self._wake.wait()
            self._wake = trio.Event()

    def _owed(self) -> list[Node]:
        return [
            n
            for e in list(self._local.values())
            for n in list(e.values())
            if n.kind is Kind.LOCAL
            and n.data.journaled
            and n.data.owed
            and not n.data.blocked
            and not n.data.busy
            and not n.data.opens
        ]

    async def _retry_due(self) -> float:
        """One pass over what is owed and due; returns how long to sleep until the next one."""
        for node in self._owed():
            if node.kind is not Kind.LOCAL or node.data.next_try > time.monotonic():
                continue  # settled meanwhile, or not due yet
            try:
                if node.data.dirty:
                    await self._upload_now(node)
                else:
                    async with node.data.lock:
                        await self._finish_replacing(node)
                    self._settle_if_done(node)
            except (SnfsError, OSError):
                pass  # logged and rescheduled by _upload_now / _finish_replacing
        now = time.monotonic()
        return max(0.0, min((n.data.next_try - now for n in self._owed()), default=5.0))

    # -- recovery -------------------------------------------------------------------------------

    async def recover(self) -> int:
        """Show and re-queue what an earlier run owed the instance; returns how many."""
        count = 0
        for entry in self.spool.owed():
            shown = names.encode(entry.name)
            node = self._stage(
                entry.table, entry.record, shown, entry.id, fd=self.spool.open_data(entry.id)
            )
            st: Staged = node.data
            st.replaces = list(entry.replaces_all or ([entry.replaces] if entry.replaces else []))
            st.journaled, st.attempts, st.blocked = (
                True,
                entry.attempts,
                (entry.last_error if entry.blocked else ""),
            )
            st.mtime = datetime.fromtimestamp(entry.queued_at, UTC)
            stored = await self._already_stored(st, entry.queued_at)
            if stored is not None:
                # The killed daemon's upload did reach the instance: don't store it twice.
                st.dirty, st.uploaded = False, stored
                self.tree.added(stored)
                await self._delete_replaced(st)
                self.spool.settle(st.sid)
                st.journaled = False
                self._settle_if_done(node)
            count += 1
        if count:
            log.info("spool: %d upload(s) from an earlier run queued again", count)
            self._wake.set()
        return count

    async def _already_stored(self, st: Staged, since: float) -> Attachment | None:
        digest = await trio.to_thread.run_sync(_sha256_file, self.spool.data_path(st.sid))
        return await self.backend.find_uploaded(
            st.table,
            st.record,
            names.decode(st.name),
            digest,
            st.size(),
            datetime.fromtimestamp(since, UTC),
        )

    async def finish(self, timeout: float) -> None:
        """Clean shutdown: try once more to upload what is owed; the journal keeps the rest."""
        with trio.move_on_after(timeout):
            for node in [n for e in list(self._local.values()) for n in list(e.values())]:
                if (
                    node.kind is Kind.LOCAL
                    and node.data.dirty
                    and not node.data.local_only
                    and not node.data.blocked
                ):
                    try:
                        await self._upload_now(node)
                    except (SnfsError, OSError):
                        pass

    # -- removing and renaming ------------------------------------------------------------------

    async def unlink(self, parent: Node, name: str, child: Node) -> None:
        self._check_writable()
        if child.kind is Kind.LOCAL:
            st: Staged = child.data
            doomed = list(st.replaces) + ([st.uploaded.sys_id] if st.uploaded else [])
        elif child.kind is Kind.FILE:
            doomed = [child.data.sys_id]
        else:
            raise fail(errno.EISDIR)
        if doomed and not self._caps(parent.table).delete:
            raise fail(errno.EPERM)
        entries = self._local.get((parent.table, parent.record), {})
        if entries.get(name) is child:
            del entries[name]
        if child.kind is Kind.LOCAL:
            self._drop_staged(child)
        for sys_id in doomed:
            await self._delete_remote(sys_id)

    async def _delete_remote(self, sys_id: str) -> None:
        await self.backend.delete(sys_id, missing_ok=True)
        self.tree.removed(sys_id)
        self.cache.forget(sys_id)

    def _drop_staged(self, node: Node) -> None:
        st: Staged = node.data
        st.dirty = False
        st.replaces = []
        self.spool.settle(st.sid)
        if st.opens == 0:
            st.close()
            self.spool.discard(st.sid)
        st.journaled = False
        st.pinned = False
        st.dropped = True

    def _supersede(self, st: Staged, old: Node) -> None:
        """`old` (shown under the name `st` takes) is overwritten: whatever it stood for on the
        instance goes once `st` is stored."""
        if old.kind is Kind.FILE:
            st.replaces.append(old.data.sys_id)
            return
        ost: Staged = old.data
        st.replaces.extend(ost.replaces)
        if ost.uploaded:
            st.replaces.append(ost.uploaded.sys_id)
        self._drop_staged(old)

    async def rename(
        self,
        old_parent: Node,
        old_name: str,
        source: Node,
        new_parent: Node,
        new_name: str,
        target: Node | None,
    ) -> None:
        self._check_writable()
        if not names.valid_new_name(new_name):
            raise fail(errno.EINVAL)
        if target is source:
            return
        old_entries = self._local.get((old_parent.table, old_parent.record), {})
        new_entries = self._local.setdefault((new_parent.table, new_parent.record), {})
        same_record = (old_parent.table, old_parent.record) == (new_parent.table, new_parent.record)
        if source.kind is Kind.FILE and not (
            same_record and (is_temp(new_name) or self._caps(old_parent.table).rename)
        ):
            # Another record, or a system that cannot rename: copy, then delete the source.
            caps = self._caps(old_parent.table)
            if not (caps.read and caps.delete and self._caps(new_parent.table).create):
                raise fail(errno.EPERM)
            source = await self._copy_for_move(source, old_name, new_parent)
        if source.kind is Kind.LOCAL:
            st: Staged = source.data
            if old_entries.get(old_name) is source:
                del old_entries[old_name]
            if target is not None:
                self._supersede(st, target)
                new_entries.pop(new_name, None)
            if not same_record and st.uploaded:
                st.replaces.append(st.uploaded.sys_id)
                st.uploaded, st.dirty = None, True
            elif st.uploaded and not st.dirty and names.decode(new_name) != st.uploaded.file_name:
                st.replaces.append(st.uploaded.sys_id)  # stored under the old name: store again
                st.uploaded, st.dirty = None, True
            st.name, st.table, st.record = new_name, new_parent.table, new_parent.record
            source.table, source.record = st.table, st.record
            new_entries[new_name] = source
            if not st.local_only and st.dirty and st.opens == 0:
                await self._upload_now(source)  # a scratch file renamed to its real name
            elif not st.dirty:
                await self._delete_replaced(st)
                self._settle_if_done(source)
            return
        await self._rename_attachment(old_entries, old_name, source, new_entries, new_name, target)

    async def _rename_attachment(
        self,
        old_entries: dict[str, Node],
        old_name: str,
        source: Node,
        new_entries: dict[str, Node],
        new_name: str,
        target: Node | None,
    ) -> None:
        """An attachment renamed within its record."""
        att: Attachment = source.data
        if old_entries.get(old_name) is source:
            del old_entries[old_name]
        doomed: list[str] = []
        if target is not None:
            new_entries.pop(new_name, None)
            if target.kind is Kind.FILE:
                doomed.append(target.data.sys_id)
            else:
                tst: Staged = target.data
                doomed += tst.replaces + ([tst.uploaded.sys_id] if tst.uploaded else [])
                self._drop_staged(target)
        if is_temp(new_name):
            # Renamed to a scratch name (an editor's backup): a local view only; the instance
            # keeps the attachment under its name until the user deletes or renames it back.
            new_entries[new_name] = source
        elif names.decode(new_name) != att.file_name:
            renamed = await self.backend.rename(att.sys_id, names.decode(new_name))
            self.tree.renamed(att.sys_id, renamed)
            if renamed.sys_id != att.sys_id:  # copy-then-delete fallback: a new attachment
                self.cache.forget(att.sys_id)
            self.inodes.rekey(source, ("file", renamed.sys_id), Kind.FILE, renamed)
        for sys_id in doomed:
            await self._delete_remote(sys_id)

    async def _copy_for_move(self, source: Node, old_name: str, new_parent: Node) -> Node:
        """Moving an attachment to another record: stage a copy that replaces the source."""
        att: Attachment = source.data
        sid = self.spool.new_id()
        fd = self.spool.create_data(sid)
        await self.cache.copy_to(att.sys_id, att.size_bytes, self.spool.data_path(sid))
        st = Staged(sid, new_parent.table, new_parent.record, old_name, fd, replaces=[att.sys_id])
        # The kernel moves its dentry to the new name with the same inode: so must we.
        self.inodes.rekey(source, ("local", sid), Kind.LOCAL, st)
        self.tree.removed(att.sys_id)
        return source

    # -- directories -----------------------------------------------------------------------------

    async def mkdir(self, parent: Node, name: str) -> Node:
        self._check_writable()
        if parent.kind is not Kind.TABLE:
            raise fail(errno.EPERM)  # tables and attachments' folders are the instance's
        node = await self.tree.lookup_record(parent.table, name)
        if node is None:
            raise fail(errno.ENOENT)
        if node.kind is not Kind.RECORD:
            raise fail(errno.EEXIST)  # a number: the symlink to the record is already there
        return node

    async def rmdir(self, parent: Node, child: Node, non_empty: bool) -> None:
        self._check_writable()
        if child.kind is not Kind.RECORD:
            raise fail(errno.EPERM if child.kind in (Kind.TABLE, Kind.CONTROL) else errno.ENOTDIR)
        if non_empty:
            raise fail(errno.ENOTEMPTY)
        # Nothing to do on the instance: the record stays, with no attachments.


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
