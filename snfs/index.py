"""The metadata index: what the tree has listed, on disk, so a walk and a remount need no requests.

One SQLite file per instance and user in the cache directory (0600 in a 0700 directory). It holds
the full rows of every listed table (`attachments`), which records have all their rows there
(`records`), the records shown by each listing generation (`members`, `listings`) and the times
a user set on attachments (`times`, e.g. by `rsync -a`). It is a cache: nothing in it is the only
copy of anything, a damaged or old-format file is dropped and rebuilt, and the tree decides how
fresh its rows are (docs/ARCHITECTURE.md, "The metadata index").

Threads: the trio loop never waits on a disk write. Every write goes through one queue to one
writer task, which applies what has queued, in order, in one transaction in a worker thread
(`trio.to_thread`), so a page of 1,000 rows or a checkpoint never stalls a lookup. Reads are
point queries on an indexed key (one record's rows: well under a millisecond) and run inline
on their own connection: in WAL mode a reader never waits for the writer. A read of a record
with a write still queued answers "not known" (the caller asks the instance), so a read never
sees an index older than what the tree already told it. The one large read (a listing's
member ids at a remount) runs in a thread too.

Generations: every listing run gets a new number; its rows, members and completed records
carry it. A completed full listing of a table deletes that table's rows and records older than
its generation (what it did not see is gone); local changes are stamped with the newest
generation handed out for their table, so a listing that started before them cannot delete
them, and an attachment deleted through this mount is never written back by a page that
was read before the delete.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from snfs.backend import RemoteFile

log = logging.getLogger("snfs.index")

# Bump when the schema or the meaning of a column changes: an index of another format is
# dropped and rebuilt (it is only a cache).
FORMAT = 2
FILE_NAME = "metadata.sqlite3"
WAL_PAGES = 4000  # pages of WAL between checkpoints (SQLite's default: 1,000)
# Ids of attachments deleted through this mount, kept so that a page read before the delete
# never writes them back (sys_ids are never reused; the oldest are forgotten first).
DELETED_MAX = 10_000

# Rows are a rowid table with sys_id UNIQUE, and no index on `gen` (a full relist's delete
# scans the table once): a page of 1,000 rows then commits in ~15 ms instead of ~50.
SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE attachments (
    sys_id TEXT NOT NULL UNIQUE, tbl TEXT NOT NULL, record TEXT NOT NULL, gen INTEGER NOT NULL,
    file_name TEXT NOT NULL, size INTEGER NOT NULL, content_type TEXT NOT NULL,
    created_on REAL NOT NULL, updated_on REAL NOT NULL, created_by TEXT NOT NULL,
    hash TEXT NOT NULL, download_link TEXT NOT NULL, state TEXT NOT NULL, extra TEXT
);
CREATE INDEX attachments_by_record ON attachments (tbl, record);
CREATE TABLE records (
    tbl TEXT NOT NULL, record TEXT NOT NULL, gen INTEGER NOT NULL, PRIMARY KEY (tbl, record)
) WITHOUT ROWID;
CREATE TABLE listings (
    tbl TEXT NOT NULL, scope TEXT NOT NULL, gen INTEGER NOT NULL, full_at REAL NOT NULL,
    checked_at REAL NOT NULL, newest REAL, PRIMARY KEY (tbl, scope)
) WITHOUT ROWID;
CREATE TABLE members (
    tbl TEXT NOT NULL, scope TEXT NOT NULL, gen INTEGER NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (tbl, scope, gen, record)
) WITHOUT ROWID;
CREATE TABLE times (
    sys_id TEXT PRIMARY KEY, mtime_ns INTEGER NOT NULL, atime_ns INTEGER NOT NULL
) WITHOUT ROWID;
"""

COLUMNS = (
    "sys_id, tbl, record, gen, file_name, size, content_type, created_on, updated_on,"
    " created_by, hash, download_link, state, extra"
)
JOINED = ", ".join(f"a.{c.strip()}" for c in COLUMNS.split(","))
UPSERT = f"INSERT OR REPLACE INTO attachments ({COLUMNS}) VALUES ({', '.join('?' * 14)})"

Op = Callable[[sqlite3.Connection], object]
Keys = list[tuple[str, str]]  # (table, record) a queued write changes
LISTINGS = ("\0listings", "")  # the key of a queued write that forgets every listing


@dataclass(frozen=True)
class ListingState:
    """The last complete generation of a listing: when it was last listed in full (wall
    clock), when last checked for changes, and the newest `updated_on` its rows showed."""

    gen: int
    full_at: float
    checked_at: float
    newest: datetime | None


def _row(att: RemoteFile, gen: int) -> tuple[Any, ...]:
    return (
        att.sys_id,
        att.table_name,
        att.table_sys_id,
        gen,
        att.file_name,
        att.size_bytes,
        att.content_type,
        att.created_on.timestamp(),
        att.updated_on.timestamp(),
        att.created_by,
        att.hash,
        att.download_link,
        att.state,
        json.dumps(att.extra) if att.extra else None,
    )


def _file(r: sqlite3.Row | tuple[Any, ...]) -> RemoteFile:
    return RemoteFile(
        sys_id=r[0],
        table_name=r[1],
        table_sys_id=r[2],
        file_name=r[4],
        size_bytes=r[5],
        content_type=r[6],
        created_on=datetime.fromtimestamp(r[7], UTC),
        updated_on=datetime.fromtimestamp(r[8], UTC),
        created_by=r[9],
        hash=r[10],
        download_link=r[11],
        state=r[12],
        extra=json.loads(r[13]) if r[13] else {},
    )


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # A crash of the process loses nothing committed; a power cut may lose the last
    # transactions but never corrupts the file (WAL). Enough for a cache.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


class IndexBroken(Exception):
    """The file cannot be used (damaged, or another format): drop it and start again."""


class MetadataIndex:
    """See the module's docstring. Build with `MetadataIndex.open(directory)`."""

    def __init__(self, path: Path, *, lock_fd: int | None = None) -> None:
        self.path = path
        self._lock_fd = lock_fd
        self._writer = _connect(str(path))
        # Checkpoint every 16 MiB of WAL, not every 4: a large listing's pages rewrite the
        # same b-tree pages, and each checkpoint copied them (and synced) again.
        self._writer.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
        self._reader = _connect(str(path))
        try:
            self._check_or_create()
        except BaseException:
            self._writer.close()
            self._reader.close()
            raise
        self._gen = int(self._meta("gen") or 0)
        self._newest_gen: dict[str, int] = {}  # table -> newest generation handed out
        self._dirty: Counter[tuple[str, str]] = Counter()  # (table, record) with writes queued
        self._deleted: dict[str, None] = {}
        self._send: trio.MemorySendChannel[tuple[Op, trio.Event | None, Keys]] | None = None
        self._writer_done = trio.Event()
        self._closed = False
        self.broken = False

    # -- opening ---------------------------------------------------------------------------------

    @classmethod
    def open(cls, directory: Path) -> MetadataIndex:
        """The index in `directory` (private), dropped and rebuilt when it is damaged or of
        another format. A second mount of the same instance and user gets a private index of
        its own, removed when it closes (two mounts would swap each other's generations)."""
        fd = os.open(directory / "index.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path = directory / FILE_NAME
        except BlockingIOError:
            os.close(fd)
            fd = -1
            path = directory / f"metadata-{os.getpid()}.sqlite3"
            log.info("another mount holds the metadata index in %s: using a private one", directory)
            _remove(path)
        broken = path.with_name(path.name + ".broken")
        if broken.exists():  # a mount found it damaged: start again
            log.warning("the metadata index %s was found damaged: rebuilding it", path)
            _remove(path)
            broken.unlink(missing_ok=True)
        for attempt in (1, 2):
            try:
                _create_private(path)
                return cls(path, lock_fd=fd if fd >= 0 else None)
            except (sqlite3.DatabaseError, IndexBroken) as e:
                if attempt == 2:
                    if fd >= 0:
                        os.close(fd)
                    raise
                log.warning("the metadata index %s is unusable (%s): rebuilding it", path, e)
                _remove(path)
        raise AssertionError("unreachable")

    def _check_or_create(self) -> None:
        c = self._writer
        version = c.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if version == 0 and not tables:
            c.executescript(f"BEGIN; {SCHEMA} PRAGMA user_version={FORMAT}; COMMIT;")
            c.execute("INSERT INTO meta VALUES ('gen', '0')")
            return
        if version != FORMAT:
            raise IndexBroken(f"format {version}, this snfs writes format {FORMAT}")
        # A cheap look at every table (a damaged page or schema shows here, not mid-listing).
        for name in ("meta", "attachments", "records", "listings", "members", "times"):
            c.execute(f"SELECT * FROM {name} LIMIT 1").fetchall()

    def _meta(self, key: str) -> str | None:
        row = self._reader.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    # -- the writer ------------------------------------------------------------------------------

    def _submit(
        self, op: Op, done: trio.Event | None = None, keys: Iterable[tuple[str, str]] = ()
    ) -> None:
        """Queue a write. Until it is committed, reads of the records in `keys` answer "not
        known" (the caller asks the instance), so no read sees the index behind the tree."""
        if self.broken or self._closed:
            if done is not None:
                done.set()
            return
        if self._send is None:
            send, receive = trio.open_memory_channel[tuple[Op, trio.Event | None, Keys]](
                float("inf")
            )
            self._send = send
            trio.lowlevel.spawn_system_task(self._write_loop, receive, name="metadata index")
        marked = [k for k in keys if k[0]]
        self._dirty.update(marked)
        self._send.send_nowait((op, done, marked))

    async def _apply(self, op: Op, keys: Iterable[tuple[str, str]] = ()) -> None:
        """Queue `op` and wait until it is committed (a page: keeps the listing from running
        ahead of the disk by more than a page)."""
        done = trio.Event()
        self._submit(op, done, keys)
        await done.wait()

    def writing(self, table: str, record: str) -> bool:
        """Whether a write to the record is queued (its reads answer "not known" until then)."""
        return (table, record) in self._dirty

    async def flush(self) -> None:
        """Until everything queued so far is committed."""
        await self._apply(lambda c: None)

    async def _write_loop(self, receive: trio.MemoryReceiveChannel[tuple[Op, Any, Keys]]) -> None:
        try:
            async for first in receive:
                batch = [first]
                while True:
                    try:
                        batch.append(receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                ops = [op for op, _, _ in batch]
                try:
                    await trio.to_thread.run_sync(self._commit, ops)
                except Exception as e:  # a system task must never raise: the index goes
                    self._break(e)
                for _, done, keys in batch:
                    self._unmark(keys)
                    if done is not None:
                        done.set()
        finally:
            self._writer_done.set()

    def _commit(self, ops: list[Op]) -> None:
        c = self._writer
        c.execute("BEGIN IMMEDIATE")
        try:
            for op in ops:
                op(c)
            c.execute("UPDATE meta SET value = ? WHERE key = 'gen'", (str(self._gen),))
            c.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                c.execute("ROLLBACK")
            raise

    def _break(self, e: BaseException) -> None:
        """A write or read failed: the file is damaged (or the disk full). The mount goes on
        without it (listings from the instance, as without an index); the next mount drops
        and rebuilds it."""
        if not self.broken:
            log.warning(
                "the metadata index %s failed (%s): going on without it; it is rebuilt at the "
                "next mount",
                self.path,
                e,
            )
        self.broken = True
        self._dirty.clear()
        with contextlib.suppress(OSError):
            self.path.with_name(self.path.name + ".broken").touch(mode=0o600)

    async def aclose(self) -> None:
        """Write what is queued and close (at unmount)."""
        self._closed = True
        if self._send is not None:
            self._send.close()
            with trio.move_on_after(30):
                await self._writer_done.wait()
        for conn in (self._reader, self._writer):
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        if self._lock_fd is None:  # a private index of a second mount
            _remove(self.path)
        else:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- generations -----------------------------------------------------------------------------

    def new_generation(self, table: str) -> int:
        self._gen += 1
        self._newest_gen[table] = self._gen
        return self._gen

    def _local_gen(self, table: str) -> int:
        """The generation of a local change: the newest handed out for its table, so that no
        listing that started earlier removes it."""
        return self._newest_gen.get(table) or self.new_generation(table)

    # -- listings --------------------------------------------------------------------------------

    def _unmark(self, keys: Keys) -> None:
        self._dirty.subtract(keys)
        for k in keys:
            if self._dirty[k] <= 0:
                del self._dirty[k]

    async def put_page(
        self,
        table: str,
        scope: str | None,
        gen: int,
        rows: list[RemoteFile],
        complete: Iterable[str] = (),
        members: Iterable[str] = (),
    ) -> None:
        """One page of a listing: its rows, the records whose rows are now all here, and the
        records it adds to the listing's generation; returns once it is committed."""
        await self.queue_page(table, scope, gen, rows, complete, members).wait()

    def queue_page(
        self,
        table: str,
        scope: str | None,
        gen: int,
        rows: list[RemoteFile],
        complete: Iterable[str] = (),
        members: Iterable[str] = (),
    ) -> trio.Event:
        """`put_page` without waiting: the event is set once the page is committed."""
        rows = [r for r in rows if r.sys_id not in self._deleted]
        done = list(complete)
        add = list(members)
        s = scope or ""

        def op(c: sqlite3.Connection) -> None:
            c.executemany(UPSERT, [_row(r, gen) for r in rows])
            c.executemany(
                "INSERT OR REPLACE INTO records VALUES (?, ?, ?)", [(table, r, gen) for r in done]
            )
            c.executemany(
                "INSERT OR IGNORE INTO members VALUES (?, ?, ?, ?)",
                [(table, s, gen, r) for r in add],
            )

        written = trio.Event()
        self._submit(op, written, [(table, r) for r in done])
        return written

    async def finish_listing(
        self,
        table: str,
        scope: str | None,
        gen: int,
        *,
        at: float,
        full: bool,
        newest: datetime | None,
    ) -> None:
        """A listing generation is complete. A full one becomes the listing's generation (the
        older members go; for the whole table, so do rows and records it did not see); a
        check for changes only moves `checked_at` and `newest` (its members were added to
        the generation it checked)."""
        s = scope or ""
        stamp = newest.timestamp() if newest is not None else None

        def op(c: sqlite3.Connection) -> None:
            if full:
                c.execute(
                    "INSERT OR REPLACE INTO listings VALUES (?, ?, ?, ?, ?, ?)",
                    (table, s, gen, at, at, stamp),
                )
                c.execute(
                    "DELETE FROM members WHERE tbl = ? AND scope = ? AND gen <> ?", (table, s, gen)
                )
                if scope is None:
                    c.execute("DELETE FROM attachments WHERE tbl = ? AND gen < ?", (table, gen))
                    c.execute("DELETE FROM records WHERE tbl = ? AND gen < ?", (table, gen))
            else:
                c.execute(
                    "UPDATE listings SET checked_at = ?, newest = max(coalesce(newest, 0), ?)"
                    " WHERE tbl = ? AND scope = ?",
                    (at, stamp or 0, table, s),
                )

        await self._apply(op)

    def listing(self, table: str, scope: str | None) -> ListingState | None:
        if self.broken or LISTINGS in self._dirty:
            return None
        try:
            row = self._reader.execute(
                "SELECT gen, full_at, checked_at, newest FROM listings WHERE tbl = ? AND scope = ?",
                (table, scope or ""),
            ).fetchone()
        except sqlite3.Error as e:
            self._break(e)
            return None
        if row is None:
            return None
        newest = datetime.fromtimestamp(row[3], UTC) if row[3] else None
        return ListingState(row[0], row[1], row[2], newest)

    async def members(self, table: str, scope: str | None, gen: int) -> list[str]:
        """The records a listing generation showed (in a thread: 80,000 ids take a while)."""

        def read() -> list[str]:
            rows = self._reader.execute(
                "SELECT record FROM members WHERE tbl = ? AND scope = ? AND gen = ?",
                (table, scope or "", gen),
            )
            return [r[0] for r in rows]

        try:
            return await trio.to_thread.run_sync(read)
        except sqlite3.Error as e:
            self._break(e)
            return []

    def forget_listings(self) -> None:
        """SIGHUP: the next look at any table lists it anew (rows stay until a listing drops
        them; records stay complete, as a fresh listing would make them again)."""
        self._submit(lambda c: c.execute("DELETE FROM listings"), keys=[LISTINGS])

    # -- records ---------------------------------------------------------------------------------

    def record(self, table: str, record: str) -> tuple[list[RemoteFile], int] | None:
        """A record's attachments and the generation that wrote them whole, if the index
        holds all of them and no write to them is still queued; None when it does not know."""
        return self.records(table, [record]).get(record)

    def records(self, table: str, records: list[str]) -> dict[str, tuple[list[RemoteFile], int]]:
        """`record` for several records in one query (a walk reads the records it visits next
        with the one it asks for: one query for many records, not two per record)."""
        ids = [r for r in records if (table, r) not in self._dirty]
        if self.broken or not ids:
            return {}
        try:
            rows = self._reader.execute(
                f"SELECT r.record, r.gen, {JOINED} FROM records r LEFT JOIN attachments a"
                " ON a.tbl = r.tbl AND a.record = r.record"
                f" WHERE r.tbl = ? AND r.record IN ({','.join('?' * len(ids))})",
                (table, *ids),
            ).fetchall()
        except sqlite3.Error as e:
            self._break(e)
            return {}
        out: dict[str, tuple[list[RemoteFile], int]] = {}
        for r in rows:
            atts = out.setdefault(r[0], ([], int(r[1])))[0]
            if r[2] is not None:  # NULL: a record known to have no attachments left
                atts.append(_file(r[2:]))
        return out

    def attachment(self, sys_id: str) -> RemoteFile | None:
        """One attachment by its id (a parked inode built again), or None."""
        if self.broken:
            return None
        try:
            row = self._reader.execute(
                f"SELECT {COLUMNS} FROM attachments WHERE sys_id = ?", (sys_id,)
            ).fetchone()
        except sqlite3.Error as e:
            self._break(e)
            return None
        return None if row is None else _file(row)

    def complete(self, table: str, records: list[str]) -> set[str]:
        """Which of `records` have all their rows here (one query per call)."""
        if self.broken or not records:
            return set()
        try:
            rows = self._reader.execute(
                "SELECT record FROM records WHERE tbl = ? AND record IN"
                f" ({','.join('?' * len(records))})",
                (table, *records),
            ).fetchall()
        except sqlite3.Error as e:
            self._break(e)
            return set()
        return {r[0] for r in rows} - {r for t, r in self._dirty if t == table}

    def record_fetched(self, table: str, record: str, atts: list[RemoteFile]) -> None:
        """A record listed on its own (or in a batch): all its rows, replacing what was known."""
        gen = self._local_gen(table)
        rows = [_row(a, gen) for a in atts if a.sys_id not in self._deleted]

        def op(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM attachments WHERE tbl = ? AND record = ?", (table, record))
            c.executemany(UPSERT, rows)
            c.execute("INSERT OR REPLACE INTO records VALUES (?, ?, ?)", (table, record, gen))

        self._submit(op, keys=[(table, record)])

    # -- changes made through this mount ---------------------------------------------------------

    def added(self, att: RemoteFile) -> None:
        gen = self._local_gen(att.table_name)
        self._deleted.pop(att.sys_id, None)
        row = _row(att, gen)
        self._submit(lambda c: c.execute(UPSERT, row), keys=[(att.table_name, att.table_sys_id)])

    def removed(self, sys_id: str, table: str = "", record: str = "") -> None:
        """An attachment is gone (deleted through this mount, or found missing)."""
        self._deleted[sys_id] = None
        while len(self._deleted) > DELETED_MAX:
            del self._deleted[next(iter(self._deleted))]
        sid = sys_id

        def op(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM attachments WHERE sys_id = ?", (sid,))
            c.execute("DELETE FROM times WHERE sys_id = ?", (sid,))

        self._submit(op, keys=[(table, record)])

    # -- times set by users (rsync -a, touch, cp -p) ------------------------------------------

    def times(self) -> dict[str, tuple[int, int]]:
        """Every kept time: sys_id -> (mtime_ns, atime_ns). Read once at mount (few rows:
        only files whose times a user set)."""
        if self.broken:
            return {}
        try:
            rows = self._reader.execute("SELECT sys_id, mtime_ns, atime_ns FROM times")
            return {r[0]: (r[1], r[2]) for r in rows}
        except sqlite3.Error as e:
            self._break(e)
            return {}

    def set_times(self, sys_id: str, mtime_ns: int, atime_ns: int) -> None:
        self._submit(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO times VALUES (?, ?, ?)", (sys_id, mtime_ns, atime_ns)
            )
        )


def _create_private(path: Path) -> None:
    """Create the file 0600 before SQLite opens it (its -wal and -shm files take its mode)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _family(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def _remove(path: Path) -> None:
    for p in _family(path):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


async def open_index(directory: Path) -> MetadataIndex | None:
    """The mount's index (opened in a thread: a rebuild deletes files), or None when it cannot
    be had at all (the mount then lists from the instance only, as before)."""
    try:
        return await trio.to_thread.run_sync(MetadataIndex.open, directory)
    except (OSError, sqlite3.Error, IndexBroken) as e:
        log.warning("no metadata index (%s): listings are kept in memory only", e)
        return None
