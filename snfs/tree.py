"""The namespace: which tables, records and attachments exist, cached for a short while.

`/`                      tables with attachments (one Aggregate API request), or `--tables`
`/<table>`               records of that table with attachments (or of its scope), by sys_id;
                         any existing record is reachable by sys_id, and by number as a
                         symlink to the sys_id (listed too when the backend lists numbers)
`/<table>/.query/<q>`    an ad-hoc scope, where the backend has scopes
`/<table>/<sys_id>`      the record's attachments, named by `snfs.names`

A table's listing (`Listing`) is filled by a background task, page by page, and read while it
grows (streaming readdir); it keeps record ids only. Records whose attachments the pages
carried whole go into a byte-bounded LRU of per-record listings, so walking a small table
costs about one request per 1000 attachments. Listings live for `dir_cache_time` seconds;
an expired one is still served while a new one is built behind it; `invalidate()` (SIGHUP)
drops them all. docs/PERFORMANCE.md, "Large tables".
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import trio
from cachetools import LRUCache

from snfs import names
from snfs.backend import Backend, RecordIds
from snfs.backend import RemoteFile as Attachment
from snfs.errors import ConfigError, InvalidInput, NotFound
from snfs.inodes import Inodes, Kind, Node

log = logging.getLogger("snfs.tree")


# Per-record listings kept in memory, in estimated bytes (an LRU: the least recently used go).
RECORD_CACHE_BYTES = 24 * 2**20
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

    def __init__(self, started_at: float) -> None:
        self.names: list[str] = []  # readdir order: record sys_ids and numbers
        self.records: set[str] = set()
        self.aliases: dict[str, str] = {}  # number -> sys_id
        self.started_at = started_at
        self.fetched_at = float("-inf")  # when complete
        self.done = False
        self.error: BaseException | None = None
        self.cancel = trio.CancelScope()
        self._grew = trio.Event()

    def add_record(self, sys_id: str) -> bool:
        if sys_id in self.records:
            return False
        self.records.add(sys_id)
        self.names.append(sys_id)
        return True

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
    ) -> None:
        self.backend = backend
        self.inodes = Inodes()
        self.dir_cache_time = dir_cache_time
        self.fixed_tables = list(tables) if tables else None
        for t in self.fixed_tables or ():
            if not backend.valid_table_name(t):
                raise ConfigError(f"--tables: {t!r} is not a table name")
        # Optional backend features (a backend without them lists tables as a whole).
        self._opt: Any = backend
        self.numbers = bool(getattr(backend, "lists_numbers", False))
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
            ("file", att.sys_id), Kind.FILE, table=att.table_name, record=att.table_sys_id, data=att
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
        can = getattr(self.backend, "can_scope", None)
        return self.streams(table) and bool(can and can(table))

    def listing(self, table: str, scope: str | None = None) -> Listing:
        """The listing to show for `/<table>` (or a scope of it), at once: a complete one, even
        if expired (a refresh then runs in the background and is swapped in when complete),
        or a growing one when there is none yet. Never waits for a request."""
        if scope is None:
            default = getattr(self.backend, "default_scope", None)
            scope = default(table) if default else None
        key = (table, scope)
        if scope is not None:
            self._scope_use[key] = None
            self._scope_use.move_to_end(key)
        current = self._listings.get(key)
        if current is None or (current.done and current.error is not None):
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
        listing = Listing(self._clock())
        trio.lowlevel.spawn_system_task(self._run, key, listing, swap, name=f"list {key[0]}")
        return listing

    async def _run(self, key: ListingKey, listing: Listing, swap: bool) -> None:
        """Background task: fill one generation; never raises (a system task must not)."""
        table, scope = key
        error: BaseException | None = None
        try:
            with listing.cancel:
                await self._fill(table, scope, listing)
        except Exception as e:  # shown to the readers waiting on it, logged once
            log.warning("listing %s%s failed: %s", table, f" ({scope})" if scope else "", e)
            error = e
        finally:
            listing.finish(self._clock(), error)
            if swap and self._refreshing.get(key) is listing:
                del self._refreshing[key]
                if error is None and not listing.cancel.cancelled_caught:
                    self._swap(key, listing)

    def _swap(self, key: ListingKey, listing: Listing) -> None:
        old = self._listings.get(key)
        self._listings[key] = listing
        if old is not None and key[1] is None:
            for gone in old.records - listing.records:
                # Listed before, not now: its attachments are gone, forget the cached ones.
                self._records.pop((key[0], gone), None)

    async def _fill(self, table: str, scope: str | None, listing: Listing) -> None:
        backend: Any = self.backend
        async with trio.open_nursery() as nursery:
            if scope is not None or hasattr(backend, "list_table_parts"):
                grouped = scope is not None or bool(
                    getattr(backend, "groups_by_record", lambda t: False)(table)
                )
                parts = (
                    backend.list_scoped(table, scope, page_size=self.page_size)
                    if scope is not None
                    else backend.list_table_parts(
                        table,
                        page_size=self.page_size,
                        parts=self.pagers,
                        full_rows=self._records.maxsize // 2 // (ATTACHMENT_OVERHEAD + 200),
                    )
                )
                limiter = trio.CapacityLimiter(self.pagers)
                async for pages in parts:
                    nursery.start_soon(
                        self._consume, table, pages, listing, grouped, nursery, limiter
                    )
            else:
                pages = backend.list_table(table, page_size=self.page_size)
                nursery.start_soon(self._consume, table, pages, listing, False, nursery)

    async def _consume(
        self,
        table: str,
        pages: AsyncIterator[list[Attachment]],
        listing: Listing,
        grouped: bool,
        nursery: trio.Nursery,
        limiter: trio.CapacityLimiter | None = None,
    ) -> None:
        if limiter is None:
            await self._consume_pages(table, pages, listing, grouped, nursery)
        else:
            async with limiter:  # at most `pagers` requests of one listing in flight
                await self._consume_pages(table, pages, listing, grouped, nursery)

    async def _consume_pages(
        self,
        table: str,
        pages: AsyncIterator[list[Attachment]],
        listing: Listing,
        grouped: bool,
        nursery: trio.Nursery,
    ) -> None:
        """Show each page's records as it arrives. With `grouped` pages (rows ordered by
        record) a record's attachments are complete when the next record starts, and go into
        the record cache then; otherwise they are stored when the listing ends."""
        held: dict[str, list[Attachment]] = {}
        async for page in pages:
            new: list[str] = []
            if isinstance(page, RecordIds):  # ids only: nothing to fill record directories
                if held and page and page[0] in held:
                    held.clear()  # that record continues here, unseen: its rows are partial
                self._store_held(table, held, listing.started_at)
                new = [r for r in page if listing.add_record(r)]
                page = []
            for att in page:
                record = att.table_sys_id
                if grouped and record not in held and held:
                    self._store_held(table, held, listing.started_at)
                held.setdefault(record, []).append(att)
                if listing.add_record(record):
                    new.append(record)
            listing.wake()
            if self.numbers and new:
                nursery.start_soon(self._add_numbers, table, new, listing)
        self._store_held(table, held, listing.started_at)

    def _store_held(self, table: str, held: dict[str, list[Attachment]], started: float) -> None:
        now = self._clock()
        for record, atts in held.items():
            if not self._older_than_a_change(table, record, started):
                self._store_record(table, record, atts, now)
        held.clear()

    async def _add_numbers(self, table: str, records: list[str], listing: Listing) -> None:
        numbers = await cast(Any, self.backend).numbers(table, records)
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
            scope = self._opt.scope_from_name(table, name)
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
        """POSIX name -> attachment for one record, fresh within dir_cache_time."""
        listing = self._cached_record(table, record)
        if listing is None or not self._fresh(listing.fetched_at):
            await self._flight.run(
                ("record", table, record), lambda: self._fetch_record(table, record)
            )
            listing = self._cached_record(table, record)
        return listing.names if listing else {}

    async def attachments(self, table: str, record: str) -> dict[str, str]:
        """POSIX name -> attachment sys_id for one record, fresh within dir_cache_time."""
        return {n: a.sys_id for n, a in (await self.record_listing(table, record)).items()}

    async def _fetch_record(self, table: str, record: str) -> None:
        started = self._clock()
        if self.backend.capabilities(table).list:
            atts = await self.backend.list_record(table, record)
        else:
            atts = list(self._uploaded.get((table, record), {}).values())
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
            node = self.inodes.by_key(("file", att.sys_id))
            if node is not None and node.kind is Kind.FILE:
                node.data = att
        reserved = self.reserved_names(table, record)
        by_id = {a.sys_id: a for a in atts}
        named = names.assign_names(
            (names.Named(a.sys_id, a.file_name, a.created_on) for a in atts), reserved
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
        node = self.inodes.by_key(("file", sys_id))
        if node is not None and node.kind is Kind.FILE:
            return cast(Attachment, node.data)
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
        return self.file_node(att)

    def removed(self, sys_id: str) -> None:
        """An attachment is gone (deleted here, or found missing): drop it from its listing."""
        att = self.attachment(sys_id)
        if att is None:
            return
        self._changed_at[(att.table_name, att.table_sys_id)] = self._clock()
        self._uploaded.get((att.table_name, att.table_sys_id), {}).pop(sys_id, None)
        if self._cached_record(att.table_name, att.table_sys_id) is not None:
            current, at = self._current(att.table_name, att.table_sys_id)
            rest = [a for a in current if a.sys_id != sys_id]
            self._store_record(att.table_name, att.table_sys_id, rest, at)
        node = self.inodes.by_key(("file", sys_id))
        if node is not None:
            self.inodes.drop(node)

    def renamed(self, old_sys_id: str, att: Attachment) -> Node:
        self.removed(old_sys_id)
        return self.added(att)

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
