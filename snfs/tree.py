"""The namespace: which tables, records and attachments exist, cached for a short while.

`/`                      tables with attachments (one Aggregate API request), or `--tables`
`/<table>`               records of that table with attachments (or of its scope), by sys_id;
                         any existing record is reachable by sys_id, and by number as a
                         symlink to the sys_id (listed too when the backend lists numbers)
`/<table>/.query/<q>`    an ad-hoc scope, where the backend has scopes
`/<table>/<sys_id>`      the record's attachments, named by `snfs.names`

A table's listing (`Listing`) is filled by a background task, page by page, and read while it
grows (streaming readdir); it keeps record ids only. Records whose attachments the pages
carried whole go into a byte-bounded LRU of per-record listings (the hot layer) and, with a
metadata index (`snfs.index`), onto disk as the pages arrive, so walking a table of any size
costs about one request per 1000 attachments. Listings live for `dir_cache_time` seconds;
an expired one is still served while a new one is built behind it, and so are the record
directories it shows; `invalidate()` (SIGHUP) drops them all. A remount starts from the
index's listings, served as expired ones. docs/PERFORMANCE.md, "Large tables";
docs/ARCHITECTURE.md, "The metadata index".
"""

from __future__ import annotations

import ctypes
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import trio
from cachetools import LRUCache

from snfs import names
from snfs.backend import Backend, RecordIds
from snfs.backend import RemoteFile as Attachment
from snfs.errors import ConfigError, InvalidInput, NotFound, SnfsError, unwrap
from snfs.index import MetadataIndex
from snfs.inodes import Inodes, Kind, Node, file_key

log = logging.getLogger("snfs.tree")


# Per-record listings kept in memory, in estimated bytes (an LRU: the least recently used go).
RECORD_CACHE_BYTES = 24 * 2**20
# With a metadata index the memory LRU is only the hot layer: the index holds the rest.
INDEXED_RECORD_CACHE_BYTES = 4 * 2**20
# What one attachment's metadata costs in memory beyond the strings counted in
# `RecordListing.of`: the object, its other strings (ids, table, user, state, link), two
# datetimes, the `extra` dict, the name's dict slot. tracemalloc on 20,000 listed attachments
# with typical values: 1,130 bytes each in all; this constant makes the estimate ~1,160.
ATTACHMENT_OVERHEAD = 1000
# Keyset pagers run at once over disjoint sys_id ranges of one table.
TABLE_PAGERS = 4
SCOPE_DIR = ".query"
SCOPES = 16  # scoped listings kept (the configured ones and ad-hoc `.query` ones)
EXISTS_MAX = 10_000  # existence checks kept before the expired ones are dropped
# With an index, a refresh asks only for rows changed since the last listing (`list_changed`);
# deletions show only in a full listing, made when the last one is this many times
# `dir_cache_time` old (10 minutes at the default 60 s). docs/SEMANTICS.md, "Freshness".
FULL_RELIST_FACTOR = 10
# How far before the newest `updated_on` a listing showed a check for changes starts: rows
# committed out of order, and an instance reading the value in the user's time zone (at most
# 14 hours off UTC), are still caught; rows seen twice are simply written again.
CHANGES_SLACK = timedelta(hours=24)
# Records of a listing filled in one request (`table_sys_idIN...`) when their rows are not
# known (ids-only pages, records new since the index was written).
FILL_BATCH = 200
# Records read from the index in one query when a walk reaches one of them: it and the next
# ones of its listing (one query per record cost a walk a quarter of its CPU).
INDEX_READ_AHEAD = 64


def _trimmer() -> Callable[[], None]:
    """glibc's malloc_trim(0), or nothing where there is no glibc."""
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim  # glibc's name (find_library forks)
    except (OSError, AttributeError):
        return lambda: None
    return lambda: trim(0) and None


# A large listing parses hundreds of pages of JSON, in the loop and in the index's writer
# thread; glibc keeps what they freed (in the heap and per-thread arenas) unless told.
_return_freed_memory = _trimmer()


@dataclass
class RecordListing:
    """One record's attachments as shown: POSIX name -> attachment."""

    names: dict[str, Attachment] = field(default_factory=dict)
    fetched_at: float = float("-inf")
    weight: int = 0

    @classmethod
    def of(cls, names: dict[str, Attachment], at: float) -> RecordListing:
        weight = 200 + sum(
            ATTACHMENT_OVERHEAD + len(n) + len(a.file_name) + len(a.content_type) + len(a.hash)
            for n, a in names.items()
        )
        return cls(names, at, weight)

    def ids(self) -> dict[str, str]:
        return {n: a.sys_id for n, a in self.names.items()}


class Listing:
    """One generation of a table's (or a scope's) listing, growing while its pages arrive.

    Append-only, so a readdir offset (an index into `names`) means the same entry for the life
    of the generation; a refresh builds a new generation and swaps it in when complete. Only
    ids are kept: the records' sys_ids, and numbers (aliases) when asked for."""

    def __init__(self, started_at: float, base: Listing | None = None) -> None:
        self.names: list[str] = []  # readdir order: record sys_ids and numbers
        self.records: dict[str, int] = {}  # sys_id -> its position in `names`
        self.aliases: dict[str, str] = {}  # number -> sys_id
        self.started_at = started_at
        self.fetched_at = float("-inf")  # when complete
        self.done = False
        self.error: BaseException | None = None
        self.cancel = trio.CancelScope()
        self._grew = trio.Event()
        # With an index: the generation its rows are written under, when the table was last
        # listed in full (wall clock), the newest `updated_on` seen, and the records whose
        # rows a pager holds half-read (the last of a page may go on in the next).
        self.gen = 0
        self.full_at = float("-inf")
        self.newest: datetime | None = None
        self.held: set[str] = set()
        self.changes_only = base is not None  # a check for changes on top of `base`
        self.filled_here = False  # listed in full by this mount (not loaded from the index)
        self.rows = 0  # attachments its pages carried whole
        if base is not None:
            self.names, self.records = list(base.names), dict(base.records)
            self.aliases = dict(base.aliases)
            self.gen, self.full_at, self.newest = base.gen, base.full_at, base.newest

    def add_record(self, sys_id: str) -> bool:
        if sys_id in self.records:
            return False
        self.records[sys_id] = len(self.names)
        self.names.append(sys_id)
        return True

    def saw(self, att: Attachment) -> None:
        if self.newest is None or att.updated_on > self.newest:
            self.newest = att.updated_on

    def add_alias(self, number: str, sys_id: str) -> None:
        if number not in self.aliases:
            self.aliases[number] = sys_id
            self.names.append(number)

    def wake(self) -> None:
        self._grew.set()
        self._grew = trio.Event()

    def finish(self, at: float, error: BaseException | None = None) -> None:
        self.done, self.error, self.fetched_at = True, error, at
        self.wake()

    async def wait_past(self, n: int) -> None:
        """Until the listing has more than `n` names or is complete; a failure is raised only
        when it leaves nothing new to show."""
        while len(self.names) <= n and not self.done:
            await self._grew.wait()
        if len(self.names) <= n and self.error is not None:
            raise self.error

    async def complete(self) -> None:
        while not self.done:
            await self._grew.wait()
        if self.error is not None:
            raise self.error

    async def passed(self, record: str) -> None:
        """Until no pager holds `record` half-read (at most the next page of its pager)."""
        while record in self.held and not self.done:
            await self._grew.wait()


class SingleFlight:
    """Callers asking for the same key while a fetch runs share that fetch's outcome."""

    def __init__(self) -> None:
        self._running: dict[Hashable, trio.Event] = {}
        self._errors: dict[Hashable, BaseException] = {}

    async def run(self, key: Hashable, fn: Callable[[], Awaitable[None]]) -> None:
        event = self._running.get(key)
        if event is not None:
            await event.wait()
            err = self._errors.get(key)
            if err is not None:
                raise err
            return
        event = self._running[key] = trio.Event()
        self._errors.pop(key, None)
        try:
            await fn()
        except Exception as e:
            self._errors[key] = e
            raise
        finally:
            del self._running[key]
            event.set()


ListingKey = tuple[str, str | None]  # (table, scope query or None for the whole table)


class Tree:
    def __init__(
        self,
        backend: Backend,
        *,
        dir_cache_time: float = 60.0,
        tables: Iterable[str] | None = None,
        page_size: int = 1000,
        clock: Callable[[], float] = time.monotonic,
        record_cache_bytes: int = RECORD_CACHE_BYTES,
        pagers: int = TABLE_PAGERS,
        index: MetadataIndex | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.index = index
        if index is not None:
            record_cache_bytes = min(record_cache_bytes, INDEXED_RECORD_CACHE_BYTES)
        self._wall = wall
        self.full_relist_every = FULL_RELIST_FACTOR * dir_cache_time
        self.inodes = Inodes()
        # With an index: attachments of one listing kept in memory as well (what the memory
        # layer holds); a larger listing's rows are on disk only (`_store_held`).
        self._hot_rows = record_cache_bytes // (ATTACHMENT_OVERHEAD + 200)
        # Records read ahead from the index: what the memory layer holds with room to spare
        # (a sixteenth of it at one attachment a record), so they are there when visited.
        self._read_ahead = min(INDEX_READ_AHEAD, self._hot_rows // 16)
        self.dir_cache_time = dir_cache_time
        self.fixed_tables = list(tables) if tables else None
        for t in self.fixed_tables or ():
            if not backend.valid_table_name(t):
                raise ConfigError(f"--tables: {t!r} is not a table name")
        self.page_size = page_size
        self.pagers = pagers
        self._clock = clock
        self._tables: list[str] = []
        self._tables_at = float("-inf")
        self._tables_refreshing = False
        self._scope_use: OrderedDict[ListingKey, None] = OrderedDict()  # LRU of scoped listings
        self._listings: dict[ListingKey, Listing] = {}
        self._refreshing: dict[ListingKey, Listing] = {}
        self._records: LRUCache[tuple[str, str], RecordListing] = LRUCache(
            maxsize=record_cache_bytes, getsizeof=lambda r: r.weight
        )
        self._oversize: dict[tuple[str, str], RecordListing] = {}  # the one too big for the LRU
        # Existence checks of names that no listing shows (records without attachments,
        # unlisted tables, numbers): value = (exists, checked_at).
        self._exists: dict[Hashable, tuple[Any, float]] = {}
        # Where the backend cannot list: records visited, and files uploaded through this mount.
        self._visited: dict[str, set[str]] = {}
        self._uploaded: dict[tuple[str, str], dict[str, Attachment]] = {}
        # When a record last changed through this mount (`added`, `removed`): a listing
        # fetched before that never overwrites the listing that has the change (issue 18,
        # row 9: the name would point at a deleted attachment, and the next save leave two).
        self._changed_at: dict[tuple[str, str], float] = {}
        self._flight = SingleFlight()
        # Names a record directory must keep free for local (staged) files: set by the write side.
        self.reserved_names: Callable[[str, str], Iterable[str]] = lambda table, record: ()
        # Attachments not shown (being replaced by a staged file): they never take a plain
        # name from one that is shown. Set by the write side.
        self.hidden_ids: Callable[[str, str], Collection[str]] = lambda table, record: ()
        # Records being filled by a batch request: wait for it rather than ask again.
        self._batching: dict[tuple[str, str], trio.Event] = {}
        # Times users set (rsync -a, touch, cp -p): attachment sys_id -> (mtime_ns, atime_ns),
        # kept in the index; and those set on staged files not yet stored, by inode, with the
        # staged file's own mtime then (a later write makes them void).
        self._times: dict[str, tuple[int, int]] = index.times() if index else {}
        self.inodes.resolve = self._resolve
        self.inodes.park_files = index is not None
        self._local_times: dict[int, tuple[int, int, object]] = {}

    # -- freshness -------------------------------------------------------------------------

    def _fresh(self, at: float) -> bool:
        return self._clock() - at < self.dir_cache_time

    def invalidate(self) -> None:
        """Forget every cached listing and existence check (SIGHUP): the next look lists anew."""
        self._tables_at = float("-inf")
        for listing in [*self._listings.values(), *self._refreshing.values()]:
            listing.cancel.cancel()
        self._listings.clear()
        self._scope_use.clear()
        self._refreshing.clear()
        self._records.clear()
        self._oversize.clear()
        self._exists.clear()
        if self.index is not None:
            self.index.forget_listings()

    async def aclose(self) -> None:
        """At unmount: write what the index has queued, and close it."""
        if self.index is not None:
            await self.index.aclose()

    # -- nodes -----------------------------------------------------------------------------

    def table_node(self, table: str) -> Node:
        return self.inodes.ensure(("table", table), Kind.TABLE, table=table)

    def scope_dir_node(self, table: str) -> Node:
        return self.inodes.ensure(("scopes", table), Kind.SCOPES, table=table)

    def scoped_node(self, table: str, scope: str) -> Node:
        return self.inodes.ensure(("scope", table, scope), Kind.TABLE, table=table, data=scope)

    def record_node(self, table: str, sys_id: str) -> Node:
        return self.inodes.ensure(
            ("record", table, sys_id), Kind.RECORD, table=table, record=sys_id
        )

    def file_node(self, att: Attachment) -> Node:
        return self.inodes.ensure(
            file_key(att.table_name, att.sys_id),
            Kind.FILE,
            table=att.table_name,
            record=att.table_sys_id,
            data=att,
        )

    def alias_node(self, table: str, number: str, target: str) -> Node:
        return self.inodes.ensure(("alias", table, number), Kind.ALIAS, table=table, data=target)

    # -- root ------------------------------------------------------------------------------

    async def tables(self) -> list[str]:
        if self.fixed_tables is not None:
            return list(self.fixed_tables)
        if not self._fresh(self._tables_at):
            await self._flight.run("tables", self._fetch_tables)
        return list(self._tables)

    async def _fetch_tables(self) -> None:
        self._tables = await self.backend.tables()
        self._tables_at = self._clock()

    def _refresh_tables_soon(self) -> None:
        if self._tables_refreshing:
            return
        self._tables_refreshing = True

        async def refresh() -> None:
            try:
                await self._flight.run("tables", self._fetch_tables)
            except Exception as e:  # the stale list stays; the next look tries again
                log.warning("refreshing the table list failed: %s", e)
            finally:
                self._tables_refreshing = False

        trio.lowlevel.spawn_system_task(refresh, name="list tables")

    async def lookup_table(self, name: str) -> Node | None:
        if not self.backend.valid_table_name(name):
            return None
        # The root listing is an optimisation, never a gate: a path below a table does not
        # wait for it (the Aggregate API may be slow, refused, or cut by its quota).
        listed = self.fixed_tables if self.fixed_tables is not None else self._tables
        if name in listed:
            if self.fixed_tables is None and not self._fresh(self._tables_at):
                self._refresh_tables_soon()  # stale while revalidate, as table listings
            return self.table_node(name)
        # Not listed (no attachments, or --tables): still reachable if the table exists.
        if await self._cached_check(("table", name), lambda: self.backend.table_exists(name)):
            return self.table_node(name)
        return None

    def warm_tables(self) -> None:
        """Start the root listing in the background (at mount): a path below a listed table
        then costs no table check, and nothing waits for it (the Aggregate API may be slow)."""
        if self.fixed_tables is None:
            self._refresh_tables_soon()

    # -- tables ----------------------------------------------------------------------------

    def streams(self, table: str) -> bool:
        """Whether `/<table>` is listed by a (streaming) listing, not from records seen."""
        caps = self.backend.capabilities(table)
        return caps.discover and caps.list

    def scopable(self, table: str) -> bool:
        return self.streams(table) and self.backend.can_scope(table)

    def listing(self, table: str, scope: str | None = None) -> Listing:
        """The listing to show for `/<table>` (or a scope of it), at once: a complete one, even
        if expired (a refresh then runs in the background and is swapped in when complete),
        or a growing one when there is none yet. Never waits for a request."""
        if scope is None:
            scope = self.backend.default_scope(table)
        key = (table, scope)
        if scope is not None:
            self._scope_use[key] = None
            self._scope_use.move_to_end(key)
        current = self._listings.get(key)
        if current is None or (current.done and current.error is not None):
            known = self._indexed(key) if current is None else None
            if known is not None:
                current = self._listings[key] = known
            else:
                current = self._listings[key] = self._start(key, swap=False)
            if scope is not None:
                self._forget_old_scopes(key)
        elif current.done and not self._fresh(current.fetched_at) and key not in self._refreshing:
            self._refreshing[key] = self._start(key, swap=True)
        return current

    def _forget_old_scopes(self, keep: ListingKey) -> None:
        """Keep the listings of the SCOPES most recently used scopes: ad-hoc `.query`
        directories must not pile up over a day. A forgotten one is listed again if visited."""
        while len(self._scope_use) > SCOPES:
            old = next(iter(self._scope_use))
            if old == keep:
                self._scope_use.move_to_end(old)
                continue
            del self._scope_use[old]
            for held in (self._listings.pop(old, None), self._refreshing.pop(old, None)):
                if held is not None:
                    held.cancel.cancel()

    async def records(self, table: str) -> list[str]:
        """Every record shown in `/<table>`, once the listing is complete."""
        if not self.streams(table):
            # The system cannot list a table's records: show the ones met through this mount.
            seen = self._visited.get(table, set()) | {r for t, r in self._records if t == table}
            return sorted(seen)
        listing = self.listing(table)
        await listing.complete()
        return sorted(listing.records)

    def _start(self, key: ListingKey, *, swap: bool) -> Listing:
        base = self._listings.get(key) if swap else None
        listing = Listing(self._clock(), base if self._changes_will_do(key, base) else None)
        listing.filled_here = not listing.changes_only
        if self.index is not None and not listing.changes_only:
            listing.gen = self.index.new_generation(key[0])
        trio.lowlevel.spawn_system_task(self._run, key, listing, swap, name=f"list {key[0]}")
        return listing

    def _changes_will_do(self, key: ListingKey, base: Listing | None) -> bool:
        """Whether a refresh of `base` may ask only for the rows changed since it: with an
        index (the unchanged rows are there), for a whole table (a scope's records may change
        without their attachments), without numbers (not kept in the index), and while its
        last full listing is younger than `full_relist_every` (deletions show only then)."""
        return (
            base is not None
            and base.done
            and base.error is None
            and base.newest is not None
            and self.index is not None
            and key[1] is None
            and not self.backend.lists_numbers(key[0])
            and self.backend.lists_changes(key[0])
            and self._wall() - base.full_at < self.full_relist_every
        )

    def _indexed(self, key: ListingKey) -> Listing | None:
        """A listing the index kept (from an earlier mount, or before its scope was forgotten):
        shown at once as an expired one, its records loaded in the background, then refreshed
        (stale while revalidate)."""
        state = self.index.listing(*key) if self.index is not None else None
        if state is None or self.index is None:
            return None
        listing = Listing(self._clock())
        listing.gen, listing.full_at, listing.newest = state.gen, state.full_at, state.newest
        index = self.index

        async def load() -> None:
            try:
                for record in await index.members(key[0], key[1], state.gen):
                    listing.add_record(record)
            except Exception as e:  # a system task must never raise; the refresh lists all
                log.warning("loading the listing of %s from the index failed: %s", key[0], e)
            finally:
                listing.finish(float("-inf"))  # expired: a refresh starts now
            if self._listings.get(key) is listing and key not in self._refreshing:
                self._refreshing[key] = self._start(key, swap=True)

        trio.lowlevel.spawn_system_task(load, name=f"load {key[0]}")
        return listing

    async def _run(self, key: ListingKey, listing: Listing, swap: bool) -> None:
        """Background task: fill one generation; never raises (a system task must not)."""
        table, scope = key
        error: BaseException | None = None
        try:
            with listing.cancel:
                await self._fill(table, scope, listing)
                await self._finish_in_index(key, listing)
        except Exception as e:  # shown to the readers waiting on it, logged once
            error = unwrap(e)  # the nursery's group: readers get the error itself
            where = f"{table}{f' ({scope})' if scope else ''}"
            if isinstance(error, SnfsError):  # the failed request was logged where it failed
                log.debug("listing %s failed: %s", where, error.message)
            else:
                log.warning("listing %s failed: %s", where, error)
        finally:
            listing.finish(self._clock(), error)
            if listing.rows > self._hot_rows:
                _return_freed_memory()
            if swap and self._refreshing.get(key) is listing:
                del self._refreshing[key]
                if error is None and not listing.cancel.cancelled_caught:
                    self._swap(key, listing)

    async def _finish_in_index(self, key: ListingKey, listing: Listing) -> None:
        if self.index is None or not listing.gen:
            return
        now = self._wall()
        if not listing.changes_only:
            listing.full_at = now
        await self.index.finish_listing(
            key[0],
            key[1],
            listing.gen,
            at=now,
            full=not listing.changes_only,
            newest=listing.newest,
        )

    def _swap(self, key: ListingKey, listing: Listing) -> None:
        old = self._listings.get(key)
        self._listings[key] = listing
        if old is not None and key[1] is None:
            for gone in old.records.keys() - listing.records.keys():
                # Listed before, not now: its attachments are gone, forget the cached ones.
                self._records.pop((key[0], gone), None)

    async def _fill(self, table: str, scope: str | None, listing: Listing) -> None:
        backend = self.backend
        if listing.changes_only:
            assert listing.newest is not None
            pages = backend.list_changed(
                table, listing.newest - CHANGES_SLACK, page_size=self.page_size
            )
            await self._consume_changes(table, pages, listing)
            return
        # With an index every page carries full rows: they go to disk, not to memory.
        full_rows = (
            None if self.index else int(self._records.maxsize) // 2 // (ATTACHMENT_OVERHEAD + 200)
        )
        # A system without parallel pagers gives one (its whole listing), not grouped.
        grouped = scope is not None or backend.groups_by_record(table)
        parts = (
            backend.list_scoped(table, scope, page_size=self.page_size)
            if scope is not None
            else backend.list_table_parts(
                table, page_size=self.page_size, parts=self.pagers, full_rows=full_rows
            )
        )
        limiter = trio.CapacityLimiter(self.pagers)
        async with trio.open_nursery() as nursery:
            async for pages in parts:
                nursery.start_soon(
                    self._consume, (table, scope), pages, listing, grouped, nursery, limiter
                )

    async def _consume(
        self,
        key: ListingKey,
        pages: AsyncIterator[list[Attachment]],
        listing: Listing,
        grouped: bool,
        nursery: trio.Nursery,
        limiter: trio.CapacityLimiter | None = None,
    ) -> None:
        if limiter is None:
            await self._consume_pages(key, pages, listing, grouped, nursery)
        else:
            async with limiter:  # at most `pagers` requests of one listing in flight
                await self._consume_pages(key, pages, listing, grouped, nursery)

    async def _consume_pages(
        self,
        key: ListingKey,
        pages: AsyncIterator[list[Attachment]],
        listing: Listing,
        grouped: bool,
        nursery: trio.Nursery,
    ) -> None:
        """Show each page's records as it arrives. With `grouped` pages (rows ordered by
        record) a record's attachments are complete when the next record starts, and go into
        the record cache then; otherwise they are stored when the listing ends. With an index,
        each page's rows, the records it completed and the ones it added are written while the
        next page is fetched, and that page waits for them: the listing runs at most one page
        ahead of the disk (a wait for each commit cost every pager a fifth of its time)."""
        table = key[0]
        held: dict[str, list[Attachment]] = {}
        written: trio.Event | None = None  # the last page queued for the index
        async for page in pages:
            new: list[str] = []
            done: list[str] = []
            if isinstance(page, RecordIds):  # ids only: nothing to fill record directories
                if held and page and page[0] in held:
                    listing.held.difference_update(held)  # nobody waits for them now
                    held.clear()  # that record continues here, unseen: its rows are partial
                done += self._store_held(table, held, listing)
                new = [r for r in page if listing.add_record(r)]
                page = []
            for att in page:
                record = att.table_sys_id
                if grouped and record not in held and held:
                    done += self._store_held(table, held, listing)
                held.setdefault(record, []).append(att)
                listing.rows += 1
                listing.saw(att)
                if listing.add_record(record):
                    new.append(record)
            if grouped:
                listing.held.update(held)
            listing.wake()
            if new and self.backend.lists_numbers(table):
                nursery.start_soon(self._add_numbers, table, new, listing)
            if self.index is not None and listing.gen:
                if written is not None:
                    await written.wait()
                written = self.index.queue_page(table, key[1], listing.gen, page, done, new)
        done = self._store_held(table, held, listing)
        listing.wake()
        if self.index is not None and listing.gen and done:
            await self.index.put_page(table, key[1], listing.gen, [], done)
        if written is not None:
            await written.wait()

    async def _consume_changes(
        self, table: str, pages: AsyncIterator[list[Attachment]], listing: Listing
    ) -> None:
        """A check for changes: rows new or changed since the listing it refreshes. They go to
        the index (a record that had all its rows there still has); the records they touch
        are dropped from memory, so they are read again from the index; new records join the
        listing (their other rows, if any, are filled on first visit, in batches)."""
        assert self.index is not None
        async for page in pages:
            touched = list(dict.fromkeys(a.table_sys_id for a in page))
            new = [r for r in touched if listing.add_record(r)]
            for att in page:
                listing.saw(att)
            await self.index.put_page(table, None, listing.gen, page, (), new)
            for record in touched:
                self._records.pop((table, record), None)
                self._oversize.pop((table, record), None)
            listing.wake()

    def _store_held(
        self, table: str, held: dict[str, list[Attachment]], listing: Listing | None = None
    ) -> list[str]:
        now = self._clock()
        started = listing.started_at if listing is not None else now
        stored = list(held)
        # With an index, a large listing's rows go to disk only: the memory layer could not
        # hold them, and building every record's names only to evict them cost a third of
        # the listing's CPU. A walk reads them back from the index, in batches.
        keep = self.index is None or listing is None or listing.rows <= self._hot_rows
        for record, atts in held.items():
            if self._older_than_a_change(table, record, started):
                continue  # a change made here is newer than these rows
            if keep:
                self._store_record(table, record, atts, now)
            else:  # an older copy must not hide the rows just written to the index
                self._records.pop((table, record), None)
                self._oversize.pop((table, record), None)
        held.clear()
        if listing is not None and listing.held:
            listing.held.difference_update(stored)
        return stored

    async def _add_numbers(self, table: str, records: list[str], listing: Listing) -> None:
        numbers = await self.backend.numbers(table, records)
        for sys_id, number in numbers.items():
            listing.add_alias(number, sys_id)
        listing.wake()

    def _listed(self, table: str, record: str) -> bool:
        return any(
            record in listing.records
            for (t, _), listing in [*self._listings.items(), *self._refreshing.items()]
            if t == table
        )

    def _alias(self, table: str, number: str) -> str | None:
        for (t, _), listing in self._listings.items():
            if t == table and number in listing.aliases:
                return listing.aliases[number]
        return None

    async def lookup_record(self, table: str, name: str) -> Node | None:
        if name == SCOPE_DIR and self.scopable(table):
            return self.scope_dir_node(table)
        if self.backend.valid_record_name(table, name):
            cached = self._cached_record(table, name)
            if self._listed(table, name) or (cached is not None and cached.names):
                return self.record_node(table, name)
            caps = self.backend.capabilities(table)
            if cached is None and caps.list and await self.record_listing(table, name):
                # The one request a file below it needs anyway proves the record exists.
                self._visited.setdefault(table, set()).add(name)
                return self.record_node(table, name)
            # Empty: does the record exist (without attachments)? An unknown table says no too.
            if await self._cached_check(
                ("record", table, name), lambda: self.backend.record_exists(table, name)
            ):
                self._visited.setdefault(table, set()).add(name)
                return self.record_node(table, name)
            return None
        target = self._alias(table, name) or await self._cached_check(
            ("alias", table, name), lambda: self.backend.find_record(table, name)
        )
        return self.alias_node(table, name, target) if target else None

    def lookup_scope(self, table: str, name: str) -> Node | None:
        """`/<table>/.query/<name>`: the records of `table` matching the encoded query that
        `name` percent-decodes to (docs/SEMANTICS.md, "Scoped tables")."""
        try:
            scope = self.backend.scope_from_name(table, name)
        except InvalidInput as e:
            log.warning("%s/%s/%s: %s", table, SCOPE_DIR, name, e)
            return None
        return self.scoped_node(table, scope)

    # -- records ---------------------------------------------------------------------------

    def _cached_record(self, table: str, record: str) -> RecordListing | None:
        key = (table, record)
        return self._records.get(key) or self._oversize.get(key)

    def _cache_record(self, table: str, record: str, listing: RecordListing) -> None:
        key = (table, record)
        self._oversize.pop(key, None)
        try:
            self._records[key] = listing
        except ValueError:  # larger than the whole cache: keep it alone, outside the LRU
            self._records.pop(key, None)
            self._oversize.clear()
            self._oversize[key] = listing

    async def record_listing(self, table: str, record: str) -> dict[str, Attachment]:
        """POSIX name -> attachment for one record: fresh within dir_cache_time, or, for a
        record a table listing shows, as fresh as that listing (stale while it refreshes)."""
        listing = self._cached_record(table, record)
        if listing is not None and self._fresh(listing.fetched_at):
            return listing.names
        cover = self._covering(table, record)
        if cover is not None:
            served = await self._from_listing(table, record, *cover)
            if served is not None:
                return served
        await self._flight.run(("record", table, record), lambda: self._fetch_record(table, record))
        listing = self._cached_record(table, record)
        return listing.names if listing else {}

    def _covering(self, table: str, record: str) -> tuple[ListingKey, Listing] | None:
        """A listing of `table` that shows `record`: the one being built first (its rows are
        the newest), else the one shown."""
        for held in (self._refreshing, self._listings):
            for key, listing in held.items():
                if key[0] == table and record in listing.records:
                    return key, listing
        return None

    async def _from_listing(
        self, table: str, record: str, key: ListingKey, cover: Listing
    ) -> dict[str, Attachment] | None:
        """The record's attachments as its table listing brought them (memory, then index),
        without a request; an expired listing is refreshed behind them. None when neither
        has its rows: then they are fetched, in a batch with the records listed after it."""
        if cover.done and not self._fresh(cover.fetched_at):
            self.listing(*key)  # starts the refresh, if none runs (stale while revalidate)
        await cover.passed(record)  # a pager holds it half-read: at most one page
        if self.index is not None and self.index.writing(table, record):
            # Its rows are being committed (a listing's last page or two, a local change):
            # a few milliseconds, where asking the instance would cost a request.
            await self.index.flush()
        cached = self._cached_record(table, record)
        if cached is not None:
            return cached.names
        if self.index is not None and self._read_index(table, record, cover):
            return self._cached_record(table, record).names  # type: ignore[union-attr]
        if self.backend.batches_records(table) and self.backend.capabilities(table).list:
            await self._fill_batch(table, record, cover)
            cached = self._cached_record(table, record)
            return cached.names if cached is not None else None
        return None

    def _read_index(self, table: str, record: str, cover: Listing) -> bool:
        """The record's rows from the index into memory, with those of the next records of
        its listing (a walk visits them next, in this order): one query for up to
        INDEX_READ_AHEAD + 1 records. False when the index does not have the record whole."""
        assert self.index is not None
        start = cover.records.get(record)
        ahead = [] if start is None else cover.names[start + 1 : start + 1 + self._read_ahead]
        ids = [record, *(n for n in ahead if n in cover.records and not self._has(table, n))]
        found = self.index.records(table, ids)
        mine = found.pop(record, None)
        # The record asked for goes in last: nothing read with it can push it out.
        for r, (atts, gen) in [*found.items(), *([(record, mine)] if mine else [])]:
            # Fresh only if this mount's own listing wrote them; else (an earlier mount, a
            # listing being refreshed) served stale: a write fetches the record first.
            fresh = cover.filled_here and gen == cover.gen
            self._store_record(table, r, atts, cover.started_at if fresh else float("-inf"))
        return self._has(table, record)

    def _has(self, table: str, record: str) -> bool:
        return (table, record) in self._records or (table, record) in self._oversize

    async def _fill_batch(self, table: str, record: str, cover: Listing) -> None:
        """One request (`table_sys_idIN...`) for `record` and the next records of its listing
        whose rows are known nowhere: a walk (find, du, rsync) visits them next."""
        waiting = self._batching.get((table, record))
        if waiting is not None:
            await waiting.wait()
            return
        ids = self._batch_ids(table, record, cover)
        event = trio.Event()
        for r in ids:
            self._batching[(table, r)] = event
        try:
            atts = await self.backend.list_records(table, ids)
            by_record: dict[str, list[Attachment]] = {r: [] for r in ids}
            for att in atts:
                if att.table_sys_id in by_record:
                    by_record[att.table_sys_id].append(att)
            now = self._clock()
            for r, rows in by_record.items():
                self._store_record(table, r, rows, now)
                if self.index is not None:
                    self.index.record_fetched(table, r, rows)
        finally:
            for r in ids:
                self._batching.pop((table, r), None)
            event.set()

    def _batch_ids(self, table: str, record: str, cover: Listing) -> list[str]:
        start = cover.records.get(record, 0)
        ahead = [
            n
            for n in cover.names[start + 1 : start + 1 + 2 * FILL_BATCH]
            if n in cover.records
            and (table, n) not in self._batching
            and self._cached_record(table, n) is None
        ]
        if self.index is not None:
            known = self.index.complete(table, ahead)
            ahead = [n for n in ahead if n not in known]
        return [record, *ahead[: FILL_BATCH - 1]]

    async def verify_record(self, table: str, record: str) -> None:
        """Before a write decides what it replaces or renames: the record's attachments as
        the instance has them, unless they were fetched within `dir_cache_time`. A listing
        served stale (an expired one, or the metadata index after a remount) never decides
        what a write deletes."""
        cached = self._cached_record(table, record)
        if cached is not None and self._fresh(cached.fetched_at):
            return
        if self.backend.capabilities(table).list:
            await self._flight.run(
                ("record", table, record), lambda: self._fetch_record(table, record)
            )

    def still_listed(self, att: Attachment) -> bool:
        """Whether the record's cached listing still shows `att` (True when none is cached)."""
        listing = self._cached_record(att.table_name, att.table_sys_id)
        return listing is None or any(a.sys_id == att.sys_id for a in listing.names.values())

    async def attachments(self, table: str, record: str) -> dict[str, str]:
        """POSIX name -> attachment sys_id for one record, fresh within dir_cache_time."""
        return {n: a.sys_id for n, a in (await self.record_listing(table, record)).items()}

    async def _fetch_record(self, table: str, record: str) -> None:
        started = self._clock()
        if self.backend.capabilities(table).list:
            atts = await self.backend.list_record(table, record)
            if self.index is not None and self.streams(table):
                self.index.record_fetched(table, record, atts)
        else:
            uploaded = self._uploaded.get((table, record), {})
            # A write-only system may know newer details of what it stored (its `state`).
            for fresh in await self.backend.list_record(table, record) if uploaded else ():
                if fresh.sys_id in uploaded:
                    uploaded[fresh.sys_id] = fresh
            atts = list(uploaded.values())
        if not self._older_than_a_change(table, record, started):
            self._store_record(table, record, atts, self._clock())

    def _older_than_a_change(self, table: str, record: str, started: float) -> bool:
        """A listing started at `started` predates a change made here since: keep the one
        that has the change (the next look lists again: it is not marked fresh)."""
        key = (table, record)
        return self._changed_at.get(key, float("-inf")) >= started and (
            self._cached_record(table, record) is not None
        )

    def _store_record(self, table: str, record: str, atts: list[Attachment], at: float) -> None:
        for att in atts:
            # a parked one is built anew
            node = self.inodes.whole(file_key(att.table_name, att.sys_id))
            if node is not None and node.kind is Kind.FILE:
                node.data = att
        reserved = self.reserved_names(table, record)
        by_id = {a.sys_id: a for a in atts}
        named = names.assign_names(
            (names.Named(a.sys_id, a.file_name, a.created_on) for a in atts),
            reserved,
            last=self.hidden_ids(table, record),
        )
        self._cache_record(
            table, record, RecordListing.of({n: by_id[s] for n, s in named.items()}, at)
        )

    def _current(self, table: str, record: str) -> tuple[list[Attachment], float]:
        listing = self._cached_record(table, record)
        if listing is None:
            return [], float("-inf")
        return list(listing.names.values()), listing.fetched_at

    def shown_name(self, table: str, record: str, sys_id: str) -> str | None:
        listing = self._cached_record(table, record)
        for name, att in listing.names.items() if listing else ():
            if att.sys_id == sys_id:
                return name
        return None

    def renumber(self, table: str, record: str) -> None:
        """Names reserved for local files changed: give the record's attachments names again."""
        if self._cached_record(table, record) is not None:
            atts, at = self._current(table, record)
            self._store_record(table, record, atts, at)

    def attachment(self, sys_id: str) -> Attachment | None:
        node = self.inodes.by_key(file_key("", sys_id))
        if node is not None and node.kind is Kind.FILE:
            return cast(Attachment, node.data)
        return self._known_attachment(sys_id)

    def _resolve(self, key: Hashable) -> Node | None:
        """A parked node built again from its key (`Inodes`): a record from its key, a file
        from the metadata index or the record cache; None if neither knows it any more."""
        if not isinstance(key, tuple):
            return None
        if key[0] == "record":
            return Node(0, Kind.RECORD, key, table=key[1], record=key[2])
        if key[0] == "file":
            # Under a pseudo-table (`file_key`) only what was uploaded there is that file.
            att = (
                self._known_attachment(key[-1])
                if len(key) == 2
                else next((u[key[2]] for u in self._uploaded.values() if key[2] in u), None)
            )
            if att is not None:
                return Node(
                    0, Kind.FILE, key, table=att.table_name, record=att.table_sys_id, data=att
                )
        return None

    def _known_attachment(self, sys_id: str) -> Attachment | None:
        if self.index is not None:
            found = self.index.attachment(sys_id)
            if found is not None:
                return found
        for uploaded in self._uploaded.values():
            if sys_id in uploaded:
                return uploaded[sys_id]
        for listing in [*self._records.values(), *self._oversize.values()]:
            for att in listing.names.values():
                if att.sys_id == sys_id:
                    return att
        return None

    async def lookup_file(self, table: str, record: str, name: str) -> Node | None:
        att = (await self.record_listing(table, record)).get(name)
        return self.file_node(att) if att else None

    # -- changes made through this mount -----------------------------------------------------

    def added(self, att: Attachment) -> Node:
        """An upload through this mount is stored: show it without waiting for a refresh."""
        key = (att.table_name, att.table_sys_id)
        self._changed_at[key] = self._clock()
        if not self.backend.capabilities(att.table_name).list:
            self._uploaded.setdefault(key, {})[att.sys_id] = att
        current, at = self._current(*key)
        current = [a for a in current if a.sys_id != att.sys_id]
        self._store_record(att.table_name, att.table_sys_id, current + [att], at)
        # Into the shown listing and into a refresh under way (whose pager may be past it).
        table: ListingKey = (att.table_name, None)
        for listing in (self._listings.get(table), self._refreshing.get(table)):
            if listing is not None and listing.add_record(att.table_sys_id):
                listing.wake()
        self._exists.pop(("record", att.table_name, att.table_sys_id), None)
        if self.index is not None and self.streams(att.table_name):
            self.index.added(att)
        self._adopt_times(att)
        return self.file_node(att)

    def removed(self, sys_id: str) -> None:
        """An attachment is gone (deleted here, or found missing): drop it from its listing."""
        att = self.attachment(sys_id)
        self._times.pop(sys_id, None)
        if self.index is not None:
            where = (att.table_name, att.table_sys_id) if att is not None else ("", "")
            self.index.removed(sys_id, *where)
        # Every place it is shown: its own table's listing, and a pseudo-table's uploads (one
        # attachment can show under both, `file_key`).
        shown = [a for u in self._uploaded.values() if (a := u.pop(sys_id, None)) is not None]
        shown += [att] if att is not None else []
        for where in {(a.table_name, a.table_sys_id) for a in shown}:
            self._changed_at[where] = self._clock()
            if self._cached_record(*where) is not None:
                current, at = self._current(*where)
                self._store_record(*where, [a for a in current if a.sys_id != sys_id], at)
            node = self.inodes.by_key(file_key(where[0], sys_id))
            if node is not None:
                self.inodes.drop(node)

    def renamed(self, old_sys_id: str, att: Attachment) -> Node:
        self.removed(old_sys_id)
        return self.added(att)

    # -- times users set (rsync -a, cp -p, touch): kept per attachment ---------------------

    def kept_times(self, node: Node) -> tuple[int, int] | None:
        """(mtime_ns, atime_ns) a user set on this file, if any: the instance has no field
        for them, so they live in the index, per attachment (docs/SEMANTICS.md, "Times")."""
        if node.kind is Kind.FILE:
            kept = self._times.get(node.data.sys_id)
            if kept is None and node.ino in self._local_times:
                self._adopt_times(node.data)  # a staged file settled into this attachment
                kept = self._times.get(node.data.sys_id)
            return kept
        local = self._local_times.get(node.ino)
        if local is None:
            return None
        if node.kind is not Kind.LOCAL or getattr(node.data, "mtime", None) is not local[2]:
            del self._local_times[node.ino]  # written since, or gone
            return None
        return local[0], local[1]

    def keep_times(self, node: Node, mtime_ns: int, atime_ns: int) -> None:
        if node.kind is Kind.FILE:
            self.keep_times_of(node.data.sys_id, mtime_ns, atime_ns)
        elif node.kind is Kind.LOCAL:
            # A staged file: its bytes' own mtime tells whether a write came after.
            self._local_times[node.ino] = (mtime_ns, atime_ns, getattr(node.data, "mtime", None))

    def _adopt_times(self, att: Attachment) -> None:
        """A staged file is stored as `att`: the times set on it become the attachment's."""
        for ino, (mtime_ns, atime_ns, stamp) in list(self._local_times.items()):
            node = self.inodes.get(ino)
            if node is None:
                del self._local_times[ino]
                continue
            uploaded = getattr(node.data, "uploaded", None) if node.kind is Kind.LOCAL else None
            stored = node.data if node.kind is Kind.FILE else uploaded
            if stored is None or stored.sys_id != att.sys_id:
                continue
            del self._local_times[ino]
            if node.kind is Kind.FILE or getattr(node.data, "mtime", None) is stamp:
                self.keep_times_of(att.sys_id, mtime_ns, atime_ns)

    def keep_times_of(self, sys_id: str, mtime_ns: int, atime_ns: int) -> None:
        self._times[sys_id] = (mtime_ns, atime_ns)
        if self.index is not None:
            self.index.set_times(sys_id, mtime_ns, atime_ns)

    # -- helpers -----------------------------------------------------------------------------

    async def _cached_check(self, key: Hashable, check: Callable[[], Awaitable[Any]]) -> Any:
        hit = self._exists.get(key)
        if hit is not None and self._fresh(hit[1]):
            return hit[0]
        try:
            value = await check()
        except (NotFound, InvalidInput):
            value = None
        now = self._clock()
        if len(self._exists) >= EXISTS_MAX:  # names looked up over a day: keep the fresh ones
            self._exists = {k: v for k, v in self._exists.items() if self._fresh(v[1])}
        self._exists[key] = (value, now)
        return value
