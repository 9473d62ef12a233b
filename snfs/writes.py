"""The write side: staging in the spool, upload on close, replace, rename, delete.

Every staged file is in one of the states of `snfs.write_states` and moves only along that
module's table; every operation that changes a file (write, flush, release, fsync, truncate,
unlink, rename, the background retry, shutdown, recovery) holds that file's lock (`_locked`),
so no two of them interleave on one file. docs/WRITES.md is the design; the promises
(docs/SEMANTICS.md, "Writing"):
- Written bytes go to the spool on local disk, never to memory; `close` (flush) uploads them
  and returns the upload's error as an errno. With write-back (`--write-back`) `close` returns
  once the bytes and the journal entry are durable, and a bounded pool of background uploaders
  (`--transfers`) sends what is owed, each file under its lock; `fsync` and `sync` wait for it.
- A replaced attachment is deleted only after its replacement's new sys_id is confirmed.
- Scratch names (snfs.temp_names) are held for a grace, then sent if they still exist; desktop
  metadata never becomes an attachment; a dropped file is never uploaded; shutdown never
  uploads a file that is open for writing.
- The journal is the state: every move recovery needs is journaled before its effects, and
  recovery never sends a file whose entry says it was open or damaged.
- An upload is journaled before it is sent; a failed one stays visible and is retried in the
  background, first looking for what an attempt in doubt may have stored.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import trio

from snfs import names
from snfs.backend import Backend, Capabilities
from snfs.backend import RemoteFile as Attachment
from snfs.content_cache import ContentCache
from snfs.errors import (
    ExtensionRefused,
    Forbidden,
    InvalidInput,
    NotFound,
    ServerError,
    SnfsError,
    TooLarge,
    Unsupported,
)
from snfs.handlers import fail
from snfs.inodes import Kind, Node, file_key
from snfs.progress import Transfers
from snfs.spool import Entry, Spool
from snfs.temp_names import is_temp, local_only
from snfs.tree import Tree
from snfs.write_states import Staged, State

log = logging.getLogger("snfs.writes")

# Failures that another attempt cannot fix: the file stays local (and journaled as blocked).
PERMANENT = (TooLarge, ExtensionRefused, Forbidden, InvalidInput, NotFound)
RETRY_MIN, RETRY_MAX = 2.0, 300.0
# An attachment counts as an earlier attempt's only if the instance created it at most this
# long before that attempt started (its clock has 1 s resolution; clocks drift a little). A
# clock off by more makes a lost attempt unfindable: the file is sent again (a duplicate),
# never an existing attachment taken for it.
CLOCK_SLACK = 2.0
SHUTDOWN_OPEN = "the mount stopped while this file was open for writing; not uploaded"
# Journaled ("open") before the bytes of a file change: if the daemon dies before it is closed,
# the next mount shows it blocked (its writer may have been half way), never sends it.
REOPENED = "the mount died while this file was open for writing; not uploaded"
DAMAGED = "a local write failed ({}); the file was not uploaded"
LOCAL_ONLY = "local only: desktop metadata, never uploaded (docs/WRITES.md)"
# A closed file with a scratch name (snfs.temp_names) waits this long before it is uploaded:
# editors, rsync and downloaders rename their temp files well within it. `snfs sync` and
# unmount end it at once (docs/WRITES.md, "Held and local-only names").
HOLD_SECONDS = 10.0
# An attempt in doubt counts as "not stored" only when a look-up made at least this long after
# it started finds nothing: an instance may still act on a request whose sender gave up on it or
# died (it sat in a queue; the soak's slow uploads store 2 s after a killed daemon sent them).
# The client waits as long (in_doubt_wait) for its own attempts; docs/WRITES.md, "In doubt".
DOUBT_WAIT = 10.0
HELD = "held {:.0f} s more: a scratch name (uploaded if it still has this name then)"
# Journal kinds (spool.Entry.state) that tell recovery to send the file.
SENDABLE = frozenset({"owed"})
DEFAULT_TRANSFERS = 8  # docs/PERFORMANCE.md, "Write-back": the --transfers sweep
# A file at least this large is bandwidth-bound: at most half the transfer slots send such
# files, so a batch of large uploads never holds every HTTP slot that listings need.
LARGE_UPLOAD = 1 << 20

# Called with (summary, body) when an upload fails where no caller can be told (the background
# uploaders, release): a desktop notification. Must never block or raise.
Alert = Callable[[str, str], object]

__all__ = ["PERMANENT", "Staged", "State", "Writes"]


class Writes:
    def __init__(
        self,
        tree: Tree,
        backend: Backend,
        cache: ContentCache,
        spool: Spool,
        *,
        read_only: bool = False,
        write_back: bool = False,
        transfers: int = DEFAULT_TRANSFERS,
        alert: Alert | None = None,
        local_only: Sequence[str] = (),
        hold_seconds: float = HOLD_SECONDS,
        doubt_wait: float = DOUBT_WAIT,
        wall: Callable[[], float] = time.time,
        uploads: Transfers | None = None,
    ) -> None:
        # The wall clock: when an attempt started (compared with the instance's creation
        # times), the grace of a held name. A test gives a virtual one (deterministic runs).
        self._wall = wall
        self.tree = tree
        self.inodes = tree.inodes
        self.backend = backend
        self._uploads = uploads or Transfers()  # each upload shown by `snfs status`
        self.cache = cache
        self.spool = spool
        self.read_only = read_only
        # Per record: POSIX name -> node shown under it locally (staged files, and attachments
        # shown under a scratch name they were renamed to).
        self._local: dict[tuple[str, str], dict[str, Node]] = {}
        # One lock per inode: the inode number stays when a file is staged or settles.
        self._locks: dict[int, trio.Lock] = {}
        self._wake = trio.Event()
        self.write_back = write_back
        # Background uploads at once (the pool, sync, shutdown share it): each holds one slot,
        # then its file's lock, always in that order, so they never deadlock.
        self._slots = trio.CapacityLimiter(max(1, transfers))
        self._large_slots = trio.CapacityLimiter(max(1, transfers // 2))
        self._taken: set[int] = set()  # inodes a background uploader has been started for
        self._alert = alert
        self._local_only_patterns = tuple(local_only)
        self.hold_seconds = hold_seconds
        self.doubt_wait = doubt_wait
        tree.reserved_names = lambda t, r: self._local.get((t, r), {}).keys()
        tree.hidden_ids = self.hidden

    # -- the per-file lock ----------------------------------------------------------------------

    @asynccontextmanager
    async def _locked(self, *nodes: Node | None) -> AsyncIterator[None]:
        """Hold the locks of these files, taken in inode order (so two renames never deadlock).
        A caller must look at its nodes again once inside: they may have changed meanwhile."""
        inos = sorted({n.ino for n in nodes if n is not None})
        try:
            async with AsyncExitStack() as stack:
                for ino in inos:
                    await stack.enter_async_context(self._locks.setdefault(ino, trio.Lock()))
                yield
        finally:
            self._free_locks(inos)

    def _free_locks(self, inos: list[int]) -> None:
        """A lock nobody holds or waits for goes with its use: a mount that writes thousands
        of files keeps no lock per file for ever (issue 18, row 10). Nothing awaits between a
        caller's `setdefault` and its acquire, so a lock dropped here is never half taken."""
        for ino in inos:
            lock = self._locks.get(ino)
            if lock is not None and not lock.locked() and not lock.statistics().tasks_waiting:
                del self._locks[ino]

    def busy(self, node: Node) -> bool:
        lock = self._locks.get(node.ino)
        return lock is not None and lock.locked()

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
            elif node.data.uploaded:
                out.add(node.data.uploaded.sys_id)
        # What any staged file replaces, in any record: a file moved to another record leaves
        # its source behind until its copy is stored, and must not show in both places.
        for entries in self._local.values():
            for node in entries.values():
                if node.kind is Kind.LOCAL:
                    out.update(node.data.replaces)
        return out

    def size_and_mtime(self, node: Node) -> tuple[int, datetime]:
        st: Staged = node.data
        return st.size(), st.mtime

    def xattrs(self, node: Node) -> dict[str, bytes]:
        st: Staged = node.data
        out = {"user.snfs.state": self.state_name(st).encode()}
        why = self.reason(st, self._wall())
        if why:
            out["user.snfs.last_error"] = why.encode()
        if st.uploaded:
            key = self.backend.xattr_keys.file_id
            out[f"user.{self.backend.name}.{key}"] = st.uploaded.sys_id.encode()
        return out

    @staticmethod
    def state_name(st: Staged) -> str:
        """`user.snfs.state`, `snfs status` and `snfs sync`: desktop metadata shows as
        `local-only`, every other file as its state (docs/WRITES.md)."""
        return "local-only" if st.local_only else st.state.value

    def reason(self, st: Staged, now: float) -> str:
        if st.local_only:
            return st.local_only
        why = st.blocked or st.last_error
        if not why and st.state is State.OWED and st.hold_until > now:
            why = HELD.format(st.hold_until - now)
        if not why and st.opens and st.state is State.WRITING:
            why = "open for writing"
        if why and st.state is State.BLOCKED and st.replaces:
            # The two views differ until the user acts (a rename's source, the version a save
            # replaces): say what the instance still has, and how it goes.
            kept = ", ".join(self._known_name(sys_id) for sys_id in st.replaces)
            why += f"; the instance keeps {kept} until this file is saved again or removed"
        return why

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._wall(), UTC)

    def _known_name(self, sys_id: str) -> str:
        att = self.tree.attachment(sys_id)
        return att.file_name if att is not None else f"attachment {sys_id}"

    def pending(self) -> list[Staged]:
        """Every file the instance does not have as the user left it: owed, in flight,
        blocked, closed while open again, or kept local only. Never filtered on whether its
        journal could be written (issue 18, row 7: a file is never "synced" unsent)."""
        return [
            n.data
            for entries in self._local.values()
            for n in entries.values()
            if n.kind is Kind.LOCAL and _is_pending(n.data)
        ]

    def _local_only(self, name: str) -> bool:
        return local_only(name, self._local_only_patterns)

    def _staged_nodes(self) -> list[Node]:
        return [
            n for e in list(self._local.values()) for n in list(e.values()) if n.kind is Kind.LOCAL
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
        key = (parent.table, parent.record)
        remote = None
        if self.local_entry(*key, name) is None:
            # Before anything is staged: a failed look-up leaves no 0-byte ghost behind.
            remote = await self.tree.lookup_file(*key, name)
        old = self.local_entry(*key, name)
        async with self._locked(old, remote):
            old = self.local_entry(*key, name)  # another call may have staged the name meanwhile
            sid = self.spool.new_id()
            st = Staged(
                sid,
                parent.table,
                parent.record,
                name,
                self.spool.create_data(sid),
                mtime=self._now(),
            )
            if self._local_only(name):
                st.state, st.local_only = State.LOCAL, LOCAL_ONLY  # desktop metadata
            st.opens = 1  # create() returns an open handle
            if old is None and remote is not None and remote.kind is Kind.FILE:
                st.replaces.append(remote.data.sys_id)
            if old is not None:
                await self._inherit(st, old)
            try:  # journaled open before a byte is written: the sweep never takes it
                await self._journal(st, kind="open")
            except OSError:
                st.close()
                self.spool.data_path(sid).unlink(missing_ok=True)
                raise
            node = self._register(st)  # takes the name over in one step, then the old goes
            if old is not None and old.kind is Kind.LOCAL:
                await self._drop(old)
            return node

    def _register(self, st: Staged, node: Node | None = None) -> Node:
        """Show `st` under its name (on `node`'s inode, or a new one)."""
        if node is None:
            node = self.inodes.ensure(
                ("local", st.sid), Kind.LOCAL, table=st.table, record=st.record, data=st
            )
        else:
            self.inodes.rekey(node, ("local", st.sid), Kind.LOCAL, st)
            node.table, node.record = st.table, st.record
        self._local.setdefault((st.table, st.record), {})[st.name] = node
        return node

    def _unregister(self, node: Node, st: Staged) -> None:
        entries = self._local.get((st.table, st.record), {})
        if entries.get(st.name) is node:
            del entries[st.name]

    def footprint(self) -> dict[str, int]:
        """What the write path keeps per file now (`snfs status --json`, "writes"): its locks
        and its staged files. Both 0 once every file is settled and closed (issue 18, row 10:
        nothing is kept per file for the mount's life)."""
        return {
            "locks": len(self._locks),
            "staged": sum(len(entries) for entries in self._local.values()),
        }

    async def open_for_write(self, node: Node, flags: int) -> None:
        self._check_writable()
        async with self._locked(node):
            if node.kind is Kind.FILE:
                await self._stage_existing(node, truncate=bool(flags & os.O_TRUNC))
            elif node.kind is Kind.LOCAL:
                if node.data.dropped:
                    raise fail(errno.ENOENT)
                await self._before_change(node.data, changes=bool(flags & os.O_TRUNC))
                if flags & os.O_TRUNC:
                    os.ftruncate(node.data.fd, 0)
                    self._heal(node.data)
                    self._touch(node.data)
            else:
                raise fail(errno.EACCES)
            node.data.opens += 1

    async def _copy_into_spool(self, att: Attachment, *, empty: bool) -> tuple[str, int]:
        """A new spool file holding `att`'s content (or nothing); nothing is left behind when
        the copy fails."""
        sid = self.spool.new_id()
        fd = self.spool.create_data(sid)
        try:
            if not empty:
                await self.cache.copy_to(att.sys_id, att.size_bytes, self.spool.data_path(sid))
        except BaseException:
            os.close(fd)
            self.spool.data_path(sid).unlink(missing_ok=True)
            raise
        return sid, fd

    async def _stage_existing(self, node: Node, *, truncate: bool) -> None:
        """Turn an attachment's inode into a staged file that will replace it (same inode).
        The caller holds the file's lock, so two openers never stage one attachment twice."""
        att: Attachment = node.data
        caps = self._caps(att.table_name)
        if not (caps.create and caps.delete and (truncate or caps.read)):
            raise fail(errno.EPERM)  # the system cannot replace a file
        name = self._shown_name(node) or names.encode(att.file_name)
        sid, fd = await self._copy_into_spool(att, empty=truncate)
        st = Staged(
            sid,
            att.table_name,
            att.table_sys_id,
            name,
            fd,
            state=State.WRITING if truncate else State.STORED,
            replaces=[att.sys_id],
            dirty=truncate,
            origin=att,
            mtime=self._now(),
        )
        self._local.setdefault((st.table, st.record), {}).pop(name, None)
        self._register(st, node)

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
        async with self._locked(node):
            if node.kind is not Kind.LOCAL:
                raise fail(errno.EBADF)
            st: Staged = node.data
            await self._before_change(st)
            try:
                n = os.pwrite(st.fd, buf, off)
            except OSError as e:
                self._damage(st, e)
                raise
            self._touch(st)
            return n

    def _touch(self, st: Staged) -> None:
        st.mtime = self._now()
        if st.dropped:
            return  # an unlinked file can still be written through its handles; never sent
        st.dirty = st.wrote = True
        if st.state is State.LOCAL and not st.damaged and st.blocked in (REOPENED, SHUTDOWN_OPEN):
            st.blocked = ""  # written again: its bytes are the writer's now
        if st.state is State.LOCAL or st.damaged:
            return
        st.blocked = ""
        st.move(State.WRITING, "written")

    def _damage(self, st: Staged, e: OSError) -> None:
        """A write into the spool failed (ENOSPC, EIO): the staged content is not what the
        program wrote, so it must never be uploaded, nor replace anything."""
        if st.dropped:
            return
        st.damaged = True
        st.blocked = DAMAGED.format(e.strerror)
        log.error("%s/%s/%s: %s", st.table, st.record, st.name, st.blocked)
        if st.state is not State.LOCAL:
            st.move(State.BLOCKED, "local write failed")

    def _heal(self, st: Staged) -> None:
        """Truncated to nothing: whatever a failed write spoiled is gone."""
        if st.damaged:
            st.damaged, st.blocked = False, ""

    async def truncate(self, node: Node, size: int, *, has_handle: bool) -> None:
        self._check_writable()
        async with self._locked(node):
            if node.kind is Kind.FILE:
                await self._stage_existing(node, truncate=size == 0)
            if node.kind is not Kind.LOCAL:
                raise fail(errno.EINVAL)
            st: Staged = node.data
            await self._before_change(st)
            os.ftruncate(st.fd, size)
            if size == 0:
                self._heal(st)
            self._touch(st)
            if not has_handle and st.opens == 0 and st.state is State.WRITING:
                # truncate(2) has no close to upload at
                if self.write_back or is_temp(st.name):
                    await self._owe(node, "truncated")
                else:
                    await self._upload_locked(node)

    async def flush(self, node: Node, *, force: bool = False) -> None:
        """close(2) and fsync(2): upload what was written since the last upload.

        A file created (or truncated by O_TRUNC) but not written yet is left for `release`:
        a shell's `> file` opens, dup2()s and closes the first descriptor before writing, and
        that first close must not upload an empty attachment."""
        if node.kind is not Kind.LOCAL:
            return
        async with self._locked(node):
            if node.kind is not Kind.LOCAL:
                return
            st: Staged = node.data
            if st.damaged and not st.dropped:
                raise fail(errno.EIO)  # the write's error, again at close: nothing was sent
            held = is_temp(st.name)  # a scratch name: durable now, sent after the grace
            if force and st.state is State.OWED and not held:
                await self._upload_locked(node)  # fsync: what is owed now, even only deletes
                return
            sendable = st.state in (State.WRITING, State.OWED) or (
                st.state is State.BLOCKED and force
            )
            if sendable and st.dirty and (st.wrote or force):
                if (self.write_back and not force) or held:
                    await self._owe(node, "closed")
                else:
                    await self._upload_locked(node)

    async def release(self, node: Node) -> None:
        if node.kind is not Kind.LOCAL:
            return
        async with self._locked(node):
            if node.kind is not Kind.LOCAL:
                return
            st: Staged = node.data
            st.opens = max(0, st.opens - 1)
            if st.opens:
                return
            if st.dropped:
                st.close()
                await self.spool.discard(st.sid)
                return
            if st.damaged and st.state is not State.LOCAL:
                await self._give_up_damaged(node)
                return
            if self._untouched(st):
                await self._unstage(node)  # opened for writing, nothing written
                return
            if st.state is State.WRITING:
                # Never written (touch, `: > file`), or written with no flush (mmap): upload
                # now; errors go to the journal and the log, as release cannot return them.
                await self._send_or_owe(node, "released")
            elif st.jkind == "open" and st.state is not State.STORED:
                # Closed with nothing written since the entry said "open": it owes (or is)
                # what it was before, and the journal says so again.
                try:
                    await self._journal(st, durable=st.state is State.OWED)
                except OSError as e:
                    log.error("%s: cannot journal: %s", st.name, e)
            if st.state is State.OWED:
                self._wake.set()  # closed now: the background uploaders may take it
            await self._settle_if_done(node)

    @staticmethod
    def _untouched(st: Staged) -> bool:
        return (
            st.state is State.STORED
            and st.uploaded is None
            and st.origin is not None
            and st.replaces == [st.origin.sys_id]
        )

    async def _give_up_damaged(self, node: Node) -> None:
        """Closed after a failed write. A replace-open goes back to the attachment it came from
        (unchanged on the instance); a new file stays, blocked, for its owner to look at."""
        st: Staged = node.data
        if st.origin is not None and st.uploaded is None and st.replaces == [st.origin.sys_id]:
            log.warning("%s/%s/%s: kept the attachment as it was", st.table, st.record, st.name)
            st.move(State.STORED, "damaged copy dropped")
            await self._unstage(node)
            return
        try:
            await self._journal(st)  # "damaged": never sent by itself, after a crash either
        except OSError as e:  # the disk that failed the write may fail this too: the entry
            # still says "open", which recovery also never sends
            log.error("%s: cannot journal the blocked file: %s", st.name, e)

    # -- write-back -----------------------------------------------------------------------------

    async def _owe(self, node: Node, why: str) -> None:
        """Write-back: hand the file to the background uploaders (caller holds its lock).
        Returns once its bytes and its journal entry are on disk (fsynced): from then on a
        crash or a failed upload loses nothing. The upload's outcome goes to `fsync`, `snfs
        sync`, the status, the log and a desktop notification."""
        st: Staged = node.data
        if st.damaged:
            raise fail(errno.EIO)
        st.move(State.OWED, why)
        st.accepted = True
        st.wrote = False
        if is_temp(st.name):  # a scratch name: held for the grace, then sent if still named so
            st.hold_until = self._wall() + self.hold_seconds
            st.next_try = trio.current_time() + self.hold_seconds
        else:
            st.hold_until = 0.0
            st.next_try = 0.0  # due now; no uploader can take it before we release the lock
        # If this fails, close fails (EIO) but the file stays owed: sent later, never lost;
        # `pending` (status, sync) shows it, and the entry still says "open" (kept, blocked).
        await self._journal(st, durable=True)
        self._wake.set()

    async def _send_or_owe(self, node: Node, why: str) -> None:
        """Where no caller can be told of an error (release): owe the file (write-back) or
        upload it now; a failure is logged, journaled, retried and reported."""
        if self.write_back or is_temp(node.data.name):  # a scratch name: held, both modes
            try:
                await self._owe(node, why)
                return
            except OSError as e:  # the journal could not be written: try sending it now
                log.error(
                    "%s: cannot journal for write-back (%s); uploading now", node.data.name, e
                )
        try:
            await self._upload_locked(node)
        except (SnfsError, OSError):
            self._report(node.data)

    def _report(self, st: Staged) -> None:
        """A failure no caller sees: one desktop notification per file and reason (the log
        line was written where it failed). Best effort, never raises."""
        why = st.blocked or st.last_error
        if not why or why == st.alerted or self._alert is None:
            return
        st.alerted = why
        verb = "refused" if st.state is State.BLOCKED else "failed, will retry"
        try:
            self._alert(f"snfs: upload {verb}", f"{st.table}/{st.record}/{st.name}: {why}")
        except Exception:  # a notifier must never break an upload path
            log.debug("desktop notification failed", exc_info=True)

    def describe(self, st: Staged, now: float) -> dict[str, object]:
        """One owed or blocked file, as `snfs status` and `snfs sync` show it."""
        return {
            "path": f"{st.table}/{st.record}/{st.name}",
            "bytes": st.size(),
            "age_seconds": round(now - st.mtime.timestamp()),
            "attempts": st.attempts,
            "state": self.state_name(st),  # docs/WRITES.md
            "last_error": self.reason(st, now),
        }

    async def sync(self) -> list[Staged]:
        """`snfs sync`: send now everything owed (even a file waiting for its next retry), wait
        for uploads in flight, and return what is still owed or blocked. Files open for
        writing whose changes were never closed are not owed yet and are not waited for."""
        todo = [n for n in self._staged_nodes() if n.data.state in (State.OWED, State.UPLOADING)]
        async with trio.open_nursery() as nursery:
            for node in todo:  # held scratch names too: sync ends their grace
                nursery.start_soon(self._upload_one, node, False)
        return [st for st in self.pending() if st.state is not State.STORED and not st.local_only]

    def kept_local(self) -> list[Staged]:
        """Desktop metadata kept local only: shown by `snfs sync`, never waited for."""
        return [st for st in self.pending() if st.local_only]

    # -- uploading ------------------------------------------------------------------------------

    async def _upload_locked(self, node: Node) -> None:
        """Do what is owed for a staged file: upload its content (unless an earlier attempt in
        doubt turns out to have stored it), then delete what it replaces. The caller holds the
        file's lock. On failure the file is OWED (retried later) or BLOCKED (never retried)."""
        st: Staged = node.data
        if st.damaged:
            raise fail(errno.EIO)
        if st.state in (State.LOCAL, State.DROPPED):
            return
        if not st.dirty and st.uploaded is None:
            st.dirty = True  # nothing holds this content on the instance: store it
        st.move(State.UPLOADING)
        try:
            if st.dirty:
                await self._resolve_doubts(st)
                att = await self._earlier_attempt(st) or await self._send(st)
                await self._stored(st, att)
        except PERMANENT as e:
            st.attempt_started = None  # a refusal is a definite answer: nothing was stored
            st.blocked = e.instance_message or e.message
            st.move(State.BLOCKED, "refused")
            log.error(
                "upload of %s/%s/%s refused, kept locally in the spool: %s",
                st.table,
                st.record,
                st.name,
                st.blocked,
            )
            await self._journal(st)
            raise
        except (SnfsError, OSError) as e:
            st.move(State.OWED, "failed")
            self._retry_later(st, getattr(e, "message", None) or str(e))
            raise
        except BaseException:
            st.move(State.OWED, "cancelled")  # in doubt: the journal says an attempt started
            raise
        await self._finish_replacing(node)

    async def _send(self, st: Staged) -> Attachment:
        """One upload attempt, journaled as started before a byte is sent."""
        before = st.attempt_started
        st.attempt_started = self._wall()
        st.attempts += 1
        st.wrote = False
        st.accepted = True
        try:
            await self._journal(st)
        except OSError:
            # Not journaled, so not sent: this attempt never began, and is no attempt in
            # doubt to wait for (a spool disk full would make each sync wait DOUBT_WAIT).
            st.attempt_started = before
            raise
        name, size = names.decode(st.name), st.size()
        with self._uploads.upload(f"{st.table}/{st.record}/{name}", size):
            stored = await self.backend.upload(
                st.table,
                st.record,
                name,
                self.spool.data_path(st.sid),
                size=size,
                replaces=st.replaces,
            )
        if stored.sys_id in st.replaces:
            # Never taken as stored: the delete that follows would remove the only copy.
            raise ServerError(
                f"upload of {st.name}: the answer names {stored.sys_id}, the attachment it "
                "replaces, not a new one; nothing deleted"
            )
        return stored

    async def _earlier_attempt(self, st: Staged) -> Attachment | None:
        """After an attempt whose outcome is unknown (cut off, killed, an unreadable answer):
        the attachment it stored, if the instance has it, so it is not stored twice. Only an
        attachment created after that attempt started, with this content, and not one of those
        this file replaces, counts; where the backend cannot tell, None (send again)."""
        if st.attempt_started is None:
            return None
        digest = await trio.to_thread.run_sync(_sha256_file, self.spool.data_path(st.sid))
        exclude = set(st.replaces) | ({st.uploaded.sys_id} if st.uploaded else set())
        found = await self._find_attempt(
            st.table,
            st.record,
            names.decode(st.name),
            digest,
            st.size(),
            st.attempt_started,
            frozenset(exclude),
        )
        if found is not None:
            log.info(
                "%s/%s/%s: an earlier attempt was stored as %s; not sending it again",
                st.table,
                st.record,
                st.name,
                found.sys_id,
            )
        return found

    async def _resolve_doubts(self, st: Staged) -> None:
        """Earlier attempts in doubt whose bytes have changed since (issue 18, row 6): what
        each may have stored is superseded by the current bytes, so it goes once they are
        stored. A look-up that fails fails this upload (retried): never a second copy left
        behind by guessing there is none."""
        while st.doubts:
            started, digest, size, table, record, name = st.doubts[0]
            exclude = set(st.replaces) | ({st.uploaded.sys_id} if st.uploaded else set())
            found = await self._find_attempt(
                table, record, name, digest, size, started, frozenset(exclude)
            )
            if found is not None:
                log.info(
                    "%s/%s/%s: an earlier attempt in doubt was stored as %s; it goes once the"
                    " current content is stored",
                    table,
                    record,
                    name,
                    found.sys_id,
                )
                st.replaces.append(found.sys_id)
            st.doubts.pop(0)

    async def _find_attempt(
        self,
        table: str,
        record: str,
        name: str,
        digest: str,
        size: int,
        started: float,
        exclude: frozenset[str],
    ) -> Attachment | None:
        """What an attempt in doubt stored, if anything. Nothing found soon after the attempt
        started is no proof (the instance may still be acting on it, for a daemon that died):
        look again once `doubt_wait` has passed since it started (caller holds the lock)."""
        since = datetime.fromtimestamp(started - CLOCK_SLACK, UTC)
        found = await self.backend.find_uploaded(
            table, record, name, digest, size, since, exclude=exclude
        )
        left = started + self.doubt_wait - self._wall()
        if found is None and left > 0:
            log.info(
                "%s/%s/%s: an attempt in doubt started %.0f s ago is not on the instance yet;"
                " looking again in %.0f s",
                table,
                record,
                name,
                self.doubt_wait - left,
                left,
            )
            await trio.sleep(left)
            found = await self.backend.find_uploaded(
                table, record, name, digest, size, since, exclude=exclude
            )
        return found

    async def _doubt_of(self, st: Staged) -> None:
        """The bytes an attempt in doubt sent are about to change (or the file is dropped):
        remember that attempt by its content, so it can still be looked for."""
        if st.attempt_started is None:
            return
        digest = await trio.to_thread.run_sync(_sha256_file, self.spool.data_path(st.sid))
        st.doubts.append(
            [st.attempt_started, digest, st.size(), st.table, st.record, names.decode(st.name)]
        )
        st.attempt_started = None

    async def _before_change(self, st: Staged, *, changes: bool = True) -> None:
        """Before the bytes of a staged file change (write, truncate, open for writing again;
        `changes`: they do now): the journal says "open" (never send these bytes: they are no
        close's) before they do, durably when it said "send" (issue 18, rows 1 and 3). Caller
        holds the file's lock."""
        if st.dropped:
            return
        changed = changes and (st.attempt_started is not None or st.uploaded is not None)
        if changes:
            await self._doubt_of(st)
        if changes and st.uploaded is not None:
            # Stored while open (fsync, a dup'd descriptor's close): the next content replaces
            # that attachment too, and the journal must say so before it is sent.
            st.replaces.append(st.uploaded.sys_id)
            st.uploaded = None
        if st.jkind != "open" or changed:
            await self._journal(st, kind="open", durable=st.jkind in SENDABLE)

    async def _inherit(self, st: Staged, old: Node) -> None:
        """`st` takes the name `old` is shown under (create or rename over it; its lock held):
        whatever `old` stood for on the instance goes once `st` is stored, including what an
        attempt of it in doubt may have stored."""
        if old.kind is Kind.FILE:
            st.replaces.append(old.data.sys_id)
            return
        ost: Staged = old.data
        if ost.dropped:
            return
        await self._doubt_of(ost)
        st.doubts.extend(ost.doubts)
        st.replaces.extend(ost.replaces)
        if ost.uploaded:
            st.replaces.append(ost.uploaded.sys_id)

    async def _stored(self, st: Staged, att: Attachment) -> None:
        """The instance confirmed `att` holds this content: only now may replaced files go."""
        if st.uploaded is not None and st.uploaded.sys_id != att.sys_id:
            st.replaces.append(st.uploaded.sys_id)  # an earlier version stored through us
        st.uploaded = att
        st.dirty = False
        st.attempt_started = None
        st.last_error = ""
        # Its bytes are the instance's now: a reason it was blocked (open when the mount died,
        # then fsynced: the writer's word for them) no longer holds, and must not come back
        # at its next move (model seed 4072: a rename answered EIO, `stored -> blocked`).
        st.blocked = ""
        self.tree.added(att)
        log.info(
            "uploaded %s/%s/%s (%d bytes) as %s",
            st.table,
            st.record,
            st.name,
            att.size_bytes,
            att.sys_id,
        )
        if st.replaces:
            await self._journal(st)  # the new sys_id, durably, before anything is deleted

    async def _finish_replacing(self, node: Node) -> None:
        """The content is stored: delete what it replaces, then forget the journal entry.
        A delete that fails does not fail the upload (the data is safe; the old attachment
        is merely still there): it is retried in the background from the journal."""
        st: Staged = node.data
        try:
            await self._delete_replaced(st)
        except SnfsError as e:
            st.move(State.OWED, "delete failed")
            await self._journal(st)
            self._retry_later(st, f"deleting the replaced attachment: {e.message}")
            return
        st.move(State.STORED)
        st.accepted = False
        # Nothing is owed until the next write (which journals "open" first); the bytes stay
        # for open handles, and are the stored content if the daemon dies meanwhile.
        await self.spool.settle(st.sid)
        st.jkind = ""
        await self._settle_if_done(node)

    async def _delete_replaced(self, st: Staged) -> None:
        if st.uploaded is None:
            raise AssertionError("deleting what a file replaces before it is stored")
        while st.replaces:
            old = st.replaces[0]
            if old != st.uploaded.sys_id:  # never the replacement itself
                await self._delete_remote(old)
            st.replaces.pop(0)

    @staticmethod
    def _kind_of(st: Staged) -> str:
        """What the journal must say of `st` now (spool.Entry.state)."""
        if st.damaged:
            return "damaged"
        if st.local_only:
            return "local"
        if st.state is State.BLOCKED:
            return "blocked"
        if st.state is State.WRITING:
            return "open"
        return "owed"

    async def _journal(self, st: Staged, *, durable: bool = False, kind: str = "") -> None:
        """Write the file's journal entry, as `kind` (default: what its state says). An entry
        that tells recovery to send the file is always fsynced; `durable` also fsyncs its
        bytes first. Entries that promise nothing ("open" over no entry, "local") are written
        without fsyncs: lost in a power cut, they lose no closed file."""
        kind = kind or self._kind_of(st)
        entry = Entry(
            st.sid,
            st.table,
            st.record,
            names.decode(st.name),
            st.replaces[0] if st.replaces else None,
            queued_at=st.mtime.timestamp(),
            attempts=st.attempts,
            last_error=REOPENED if kind == "open" else st.blocked or st.last_error,
            replaces_all=list(st.replaces),
            blocked=kind in ("open", "damaged", "blocked"),
            attempt_started=st.attempt_started,
            stored=st.uploaded.sys_id if st.uploaded and not st.dirty else None,
            size=st.size(),
            state=kind,
            doubts=[list(d) for d in st.doubts],
            hold_until=st.hold_until,
        )
        if kind in SENDABLE or durable or st.jkind in SENDABLE:
            await self.spool.journal(entry, data_fd=st.fd if durable and st.fd >= 0 else None)
        else:
            await self.spool.note(entry)
        st.jkind = kind

    def _retry_later(self, st: Staged, why: str) -> None:
        st.last_error = why
        delay = min(RETRY_MAX, RETRY_MIN * 2 ** min(st.attempts, 10))
        wait = random.uniform(delay / 2, delay)
        st.next_try = trio.current_time() + wait
        log.warning(
            "upload of %s/%s/%s failed (%s); kept in the spool, retrying in %.0f s",
            st.table,
            st.record,
            st.name,
            why,
            wait,
        )
        self._wake.set()

    async def _settle_if_done(self, node: Node) -> None:
        """A staged file that is stored, with nothing owed and no open handle, becomes a plain
        attachment inode."""
        st = node.data
        if (
            node.kind is not Kind.LOCAL
            or st.opens
            or st.state is not State.STORED
            or st.uploaded is None
            or st.replaces
        ):
            return
        # The directory changes in one step (no await), so a readdir never sees it half done.
        self._unregister(node, st)
        st.close()
        self.inodes.rekey(
            node, file_key(st.uploaded.table_name, st.uploaded.sys_id), Kind.FILE, st.uploaded
        )
        node.table, node.record = st.uploaded.table_name, st.uploaded.table_sys_id
        self.tree.renumber(st.table, st.record)  # the name it held locally is free again
        await self.spool.discard(st.sid)

    async def _unstage(self, node: Node) -> None:
        st: Staged = node.data
        self._unregister(node, st)
        st.close()
        assert st.origin is not None
        self.inodes.rekey(
            node, file_key(st.origin.table_name, st.origin.sys_id), Kind.FILE, st.origin
        )
        self.tree.renumber(st.table, st.record)
        await self.spool.discard(st.sid)

    # -- the background uploaders ---------------------------------------------------------------

    async def run_retries(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Background task for the life of the mount: start an uploader for each owed file that
        is due (write-back closes, retries with backoff, recovery), at most `transfers` sending
        at once. Nothing that goes wrong in here may end the mount."""
        task_status.started()
        async with trio.open_nursery() as pool:
            while True:
                try:
                    wait = self._dispatch(pool)
                except Exception:
                    log.exception("background uploads failed unexpectedly; trying again later")
                    wait = RETRY_MAX
                with trio.move_on_after(wait):
                    await self._wake.wait()
                self._wake = trio.Event()

    def _owed(self) -> list[Node]:
        """Closed files waiting for the background uploaders, oldest change first."""
        nodes = [n for n in self._staged_nodes() if n.data.state is State.OWED and not n.data.opens]
        return sorted(nodes, key=lambda n: n.data.mtime)

    def _dispatch(self, nursery: trio.Nursery) -> float:
        """Start an uploader for each due file not taken yet; returns how long until the next
        one is due. The uploaders queue for the `transfers` slots."""
        now = trio.current_time()
        for node in self._owed():
            if node.data.next_try <= now and node.ino not in self._taken:
                self._taken.add(node.ino)
                nursery.start_soon(self._upload_one, node, True)
        waits = [n.data.next_try - now for n in self._owed() if n.ino not in self._taken]
        return max(0.0, min(waits, default=5.0))

    async def _upload_one(self, node: Node, due_only: bool) -> None:
        """One background upload: a slot, then the file's lock (always in that order), then
        the file as it is now (it may have been stored, dropped, renamed or reopened)."""
        try:
            async with self._slot(node), self._locked(node):
                st = node.data
                if node.kind is not Kind.LOCAL or st.state is not State.OWED or st.opens:
                    return
                if due_only and st.next_try > trio.current_time():
                    return  # failed meanwhile (fsync, sync): its backoff decides
                try:
                    await self._upload_locked(node)
                except (SnfsError, OSError):
                    self._report(st)  # logged and rescheduled by _upload_locked
        except Exception:
            log.exception("background upload failed unexpectedly; it stays owed")
        finally:
            if due_only:
                self._taken.discard(node.ino)
            self._wake.set()

    @asynccontextmanager
    async def _slot(self, node: Node) -> AsyncIterator[None]:
        """A transfer slot for a background upload (a large file also needs a large-file
        slot, taken first). Taken before the file's lock, never while holding one."""
        large = node.kind is Kind.LOCAL and node.data.size() >= LARGE_UPLOAD
        async with AsyncExitStack() as stack:
            if large:
                await stack.enter_async_context(self._large_slots)
            await stack.enter_async_context(self._slots)
            yield

    async def _retry_due(self) -> float:
        """One pass: upload every due file, wait for them; returns the wait until the next."""
        async with trio.open_nursery() as nursery:
            self._dispatch(nursery)
        return self._dispatch_wait()

    def _dispatch_wait(self) -> float:
        now = trio.current_time()
        return max(0.0, min((n.data.next_try - now for n in self._owed()), default=5.0))

    # -- recovery and shutdown ------------------------------------------------------------------

    async def recover(self) -> int:
        """Replay the journal: each entry becomes the staged file it says (docs/WRITES.md,
        "Recovery"); returns how many. "owed" is queued (the background retry looks first for
        what an attempt in doubt stored); "open" and "damaged" (their bytes are no close's)
        and "blocked" are shown blocked, never sent by themselves; "local" is kept."""
        count = 0
        now = self._wall()
        for entry in self.spool.owed():
            kind = entry.kind()
            crashed_open = kind == "open"
            if self._local_only(names.encode(entry.name)) and kind != "damaged":
                kind = "local"  # desktop metadata, whatever it was doing: never sent
            state = {"owed": State.OWED, "local": State.LOCAL}.get(kind, State.BLOCKED)
            blocked = ""
            if state is State.BLOCKED:
                blocked = entry.last_error or (REOPENED if kind == "open" else "blocked")
            elif crashed_open:
                blocked = REOPENED  # renamed to a real name later, still never sent
            st = Staged(
                entry.id,
                entry.table,
                entry.record,
                names.encode(entry.name),
                self.spool.open_data(entry.id),
                state=state,
                replaces=list(entry.replaces_all or ([entry.replaces] if entry.replaces else [])),
                jkind=kind,
                accepted=kind == "owed",
                attempts=entry.attempts,
                blocked=blocked,
                damaged=kind == "damaged",
                last_error=entry.last_error,
                mtime=datetime.fromtimestamp(entry.queued_at, UTC),
                local_only=LOCAL_ONLY if kind == "local" else "",
                doubts=[list(d) for d in entry.doubts],
                hold_until=entry.hold_until,
            )
            if entry.stored:
                st.dirty = False
                st.uploaded = _stored_stub(entry, st.size(), self._wall())
            elif kind != "local" and entry.attempt_started is not None:
                st.attempt_started = entry.attempt_started
            elif kind == "owed":
                # An entry from before attempts were journaled counts as one in doubt.
                st.attempt_started = entry.attempt_started or entry.queued_at
            if entry.hold_until > now:
                st.next_try = trio.current_time() + entry.hold_until - now
            node = self._register(st)
            self.tree.renumber(st.table, st.record)
            del node  # the retry task takes it from here, under its lock
            count += 1
        if count:
            log.info("spool: %d file(s) from an earlier run shown again", count)
            self._wake.set()
        return count

    async def finish(self, seconds: float) -> None:
        """Clean shutdown. A file still open for writing is never uploaded (its writer may be
        half way): its bytes are journaled as blocked, for its owner to check. Then, for up to
        `seconds`, what is owed is tried once more; the journal keeps the rest."""
        for node in self._staged_nodes():
            with trio.move_on_after(seconds):
                async with self._locked(node):
                    await self._keep_open_file(node)
        with trio.move_on_after(seconds):
            async with trio.open_nursery() as nursery:
                for node in self._staged_nodes():
                    nursery.start_soon(self._finish_one, node)
        for st in self.pending():
            if st.owed and st.jkind not in SENDABLE:  # the journal could not be written
                log.error(
                    "%s/%s/%s: not stored, and the journal could not record it as owed: %s",
                    st.table,
                    st.record,
                    st.name,
                    "the next mount shows it blocked" if st.jkind else "its bytes are lost",
                )

    async def _finish_one(self, node: Node) -> None:
        """At shutdown: one more try for a closed file that is owed, in a transfer slot."""
        async with self._slot(node), self._locked(node):
            st = node.data
            if node.kind is not Kind.LOCAL or st.opens:
                return
            if st.state in (State.OWED, State.WRITING):
                try:
                    await self._upload_locked(node)
                except (SnfsError, OSError):
                    pass  # journaled: the next mount finishes it

    async def _keep_open_file(self, node: Node) -> None:
        st = node.data
        if node.kind is not Kind.LOCAL or not st.opens or st.state is State.LOCAL:
            return
        if st.state in (State.WRITING, State.OWED) and st.dirty:
            st.blocked = SHUTDOWN_OPEN
            st.move(State.BLOCKED, "open at shutdown")
            log.warning("%s/%s/%s: %s", st.table, st.record, st.name, SHUTDOWN_OPEN)
            try:
                await self._journal(st)
            except OSError as e:
                log.error("%s: cannot journal: %s", st.name, e)

    # -- removing and renaming ------------------------------------------------------------------

    async def unlink(self, parent: Node, name: str, child: Node) -> None:
        self._check_writable()
        if child.kind not in (Kind.LOCAL, Kind.FILE):
            raise fail(errno.EISDIR)
        # Waits for an upload of this file in flight: its result is then deleted too.
        async with self._locked(child):
            if child.kind is Kind.LOCAL:
                st: Staged = child.data
                if st.dropped:
                    raise fail(errno.ENOENT)
                await self._doubt_of(st)
                await self._resolve_doubts(st)  # what a lost answer stored goes too
                doomed = list(st.replaces) + ([st.uploaded.sys_id] if st.uploaded else [])
            else:
                doomed = [child.data.sys_id]
            if doomed and not self._caps(parent.table).delete:
                raise fail(errno.EPERM)
            # The instance first: a delete that fails fails rm and leaves the file shown as it
            # was, never gone locally while its attachment stays, to come back at the next
            # listing.
            where = f"{parent.table}/{parent.record}/{name}"
            for sys_id in doomed:
                await self._delete_remote(sys_id)
                log.info("deleted %s (sys_id %s)", where, sys_id)  # the act a user may trace
                if child.kind is Kind.LOCAL and sys_id in child.data.replaces:
                    child.data.replaces.remove(sys_id)
            if not doomed:
                log.info("deleted %s (never uploaded: nothing to delete on the instance)", where)
            entries = self._local.get((parent.table, parent.record), {})
            if entries.get(name) is child:
                del entries[name]
            if child.kind is Kind.LOCAL:
                await self._drop(child)

    async def _delete_remote(self, sys_id: str) -> None:
        await self.backend.delete(sys_id, missing_ok=True)
        self.tree.removed(sys_id)
        self.cache.forget(sys_id)

    async def _drop(self, node: Node) -> None:
        """The file is unlinked or overwritten (caller holds its lock): never uploaded."""
        st: Staged = node.data
        st.move(State.DROPPED)
        self._unregister(node, st)
        st.dirty = False
        st.replaces = []
        st.doubts = []
        st.attempt_started = None
        st.accepted = False
        st.jkind = ""
        st.pinned = False
        if st.opens == 0:
            st.close()
            await self.spool.discard(st.sid)
        else:
            await self.spool.settle(st.sid)

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
        # Waits for uploads of either file in flight, so nothing is deleted before the
        # content replacing it is stored, and no upload lands after its file was renamed over.
        async with self._locked(source, target):
            if source.kind is Kind.LOCAL and source.data.dropped:
                raise fail(errno.ENOENT)
            if target is not None and target.kind is Kind.LOCAL and target.data.dropped:
                target = None
            await self._rename_locked(old_parent, old_name, source, new_parent, new_name, target)

    async def _rename_locked(
        self,
        old_parent: Node,
        old_name: str,
        source: Node,
        new_parent: Node,
        new_name: str,
        target: Node | None,
    ) -> None:
        old_entries = self._local.get((old_parent.table, old_parent.record), {})
        new_entries = self._local.setdefault((new_parent.table, new_parent.record), {})
        same_record = (old_parent.table, old_parent.record) == (new_parent.table, new_parent.record)
        held = is_temp(new_name) or self._local_only(new_name)
        if source.kind is Kind.FILE and not (
            same_record and self._caps(old_parent.table).rename and not held
        ):
            # Another record, a system that cannot rename, or a scratch name (held for the
            # grace like any file with such a name; renamed back within it, nothing is
            # renamed on the instance): a staged copy that replaces the source once stored.
            caps = self._caps(old_parent.table)
            if not (caps.read and caps.delete and self._caps(new_parent.table).create):
                raise fail(errno.EPERM)
            await self._copy_for_move(source, old_entries, old_name, new_parent)
        if source.kind is Kind.FILE:
            try:
                await self._rename_attachment(
                    old_entries, old_name, source, new_entries, new_name, target
                )
                return
            except Unsupported as e:
                # No rename in place (an instance without PATCH): the one fallback is the
                # core's, journaled like any move: a staged copy under the new name that
                # replaces the source once stored (issue 18, rows 11 and 12).
                caps = self._caps(old_parent.table)
                if not (caps.read and caps.delete and self._caps(new_parent.table).create):
                    raise fail(errno.EPERM) from None
                log.info("%s: %s; renaming by copy, then delete", old_name, e.message)
                await self._copy_for_move(source, old_entries, old_name, new_parent)
        st: Staged = source.data
        if st.uploaded and (not same_record or names.decode(new_name) != st.uploaded.file_name):
            # Stored under the old name or record: store it again there, then delete this one.
            st.replaces.append(st.uploaded.sys_id)
            st.uploaded, st.dirty = None, True
        elif not st.dirty and st.uploaded is None:
            st.dirty = True  # an unchanged copy of the attachment it replaces: store it anew
        await self._doubt_of(st)  # an attempt in doubt was made under the old name
        before = (st.name, st.table, st.record, list(st.replaces), list(st.doubts))
        fields = (st.state, st.local_only, st.blocked)
        if target is not None:
            await self._inherit(st, target)
        if old_entries.get(old_name) is source:
            del old_entries[old_name]
        st.name, st.table, st.record = new_name, new_parent.table, new_parent.record
        then = self._renamed_state(st)
        if st.jkind or st.dirty or st.replaces:
            # The entry moves with the file, in one atomic rename of the entry, before the
            # target's entry goes: a crash leaves one or the other, never neither (row 2).
            try:
                await self._journal(st, durable=st.jkind in SENDABLE)
            except OSError:  # nothing changed: the old entry still says what is true
                st.name, st.table, st.record, st.replaces, st.doubts = before
                st.state, st.local_only, st.blocked = fields
                old_entries[old_name] = source
                raise
        source.table, source.record = st.table, st.record
        new_entries[new_name] = source  # the name changes hands in one step
        if target is not None and target.kind is Kind.LOCAL and not target.data.dropped:
            await self._drop(target)
        self.tree.renumber(old_parent.table, old_parent.record)
        if then == "send":
            # The name has changed hands: from here the rename is done, and must be answered so.
            # Failed, the kernel would keep the target's old inode under the name, and the next
            # open of it would stage that attachment under another name (soak seed 205: an
            # upload named `w0-a~4aef8d1c.txt`). A failed upload is owed and retried, as after a
            # write-back close (journaled under its new name; a scratch name after the grace).
            await self._send_or_owe(source, "renamed")
        elif then == "settle":
            await self._settle_if_done(source)

    def _renamed_state(self, st: Staged) -> str:
        """A staged file got a new name: the name decides what it is owed. Returns what is
        left to do once the move is journaled: "send", "settle" or ""."""
        if self._local_only(st.name):
            st.local_only = LOCAL_ONLY
            if st.blocked not in (REOPENED, SHUTDOWN_OPEN):
                st.blocked = ""
            st.move(State.LOCAL, "desktop metadata")
            return ""
        st.local_only = ""
        if st.damaged or st.blocked in (REOPENED, SHUTDOWN_OPEN):
            # Its bytes are no close's (damaged, or open when the mount died): kept, never
            # sent because of a new name. Written and closed again, it is sent.
            st.move(State.BLOCKED, "damaged" if st.damaged else "open when the mount died")
            return ""
        st.blocked = ""  # a new name is a new chance: the refusal may have been the name's
        if st.dirty and st.opens:
            st.move(State.WRITING, "renamed while open")  # uploaded at close
            return ""
        if st.dirty or st.replaces:
            st.move(State.OWED, "renamed")
            return "send"
        st.move(State.STORED)
        return "settle"

    async def _rename_attachment(
        self,
        old_entries: dict[str, Node],
        old_name: str,
        source: Node,
        new_entries: dict[str, Node],
        new_name: str,
        target: Node | None,
    ) -> None:
        """An attachment renamed within its record. First the rename, confirmed; then what
        the target stood for on the instance is deleted; only then does the target go (row 4
        of issue 18: a failed rename leaves the target, and its unsent bytes, where they were).
        A delete that fails undoes the rename (back to the old name) and fails it: the old
        target is never left on the instance beside the renamed file, unknown to the mount."""
        att: Attachment = source.data
        doomed: list[str] = []
        if target is not None:
            if target.kind is Kind.FILE:
                doomed.append(target.data.sys_id)
            else:
                tst: Staged = target.data
                doomed += tst.replaces + ([tst.uploaded.sys_id] if tst.uploaded else [])
        doomed = [s for s in doomed if s != att.sys_id]
        if names.decode(new_name) != att.file_name:
            renamed = await self.backend.rename(att.sys_id, names.decode(new_name))
            try:
                for sys_id in doomed:
                    await self._delete_remote(sys_id)
            except SnfsError:
                await self._rename_back(att, renamed)
                raise
            self.tree.renamed(att.sys_id, renamed)
            self.inodes.rekey(
                source, file_key(renamed.table_name, renamed.sys_id), Kind.FILE, renamed
            )
            doomed = []
        if old_entries.get(old_name) is source:
            del old_entries[old_name]
        if target is not None:
            new_entries.pop(new_name, None)
            if target.kind is Kind.LOCAL:
                await self._drop(target)
        for sys_id in doomed:
            await self._delete_remote(sys_id)

    async def _rename_back(self, att: Attachment, renamed: Attachment) -> None:
        try:
            back = await self.backend.rename(renamed.sys_id, att.file_name)
        except SnfsError as e:  # the instance now has both: say so once, clearly
            log.error(
                "%s/%s: renamed to %s, but a replaced attachment could not be deleted and the"
                " rename could not be undone (%s)",
                att.table_name,
                att.table_sys_id,
                renamed.file_name,
                e.message,
            )
            self.tree.renamed(att.sys_id, renamed)
            return
        self.tree.renamed(att.sys_id, back)

    async def _copy_for_move(
        self, source: Node, old_entries: dict[str, Node], old_name: str, new_parent: Node
    ) -> None:
        """Moving an attachment to another record: stage a copy that replaces the source.
        The kernel moves its dentry to the new name with the same inode: so must we."""
        att: Attachment = source.data
        sid, fd = await self._copy_into_spool(att, empty=False)
        st = Staged(
            sid,
            new_parent.table,
            new_parent.record,
            old_name,
            fd,
            replaces=[att.sys_id],
            mtime=self._now(),
        )
        if old_entries.get(old_name) is source:
            del old_entries[old_name]
        self.inodes.rekey(source, ("local", sid), Kind.LOCAL, st)
        self.tree.removed(att.sys_id)

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


def _is_pending(st: Staged) -> bool:
    return st.state in (State.OWED, State.UPLOADING, State.BLOCKED, State.LOCAL) or (
        st.state is State.WRITING and st.accepted
    )


def _stored_stub(entry: Entry, size: int, wall: float) -> Attachment:
    """What the journal knows of an attachment an earlier run stored: enough to show it and
    to settle onto it; the next listing brings the rest."""
    now = datetime.fromtimestamp(wall, UTC)
    return Attachment(
        sys_id=entry.stored or "",
        table_name=entry.table,
        table_sys_id=entry.record,
        file_name=entry.name,
        size_bytes=size,
        content_type="",
        created_on=now,
        updated_on=now,
        created_by="",
        hash="",
        download_link="",
        state="",
    )


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
