"""The namespace: which tables, records and attachments exist, cached for a short while.

`/`                      tables with attachments (one Aggregate API request), or `--tables`
`/<table>`               records of that table with attachments, by sys_id; any existing record
                         is reachable by sys_id, and by number as a symlink to the sys_id
`/<table>/<sys_id>`      the record's attachments, named by `snfs.names`

Listing a table streams its attachments page by page and fills every record directory it
sees, so walking a table costs about one request per 1000 attachments, not one per record.
Listings live for `dir_cache_time` seconds; `invalidate()` (SIGHUP) drops them all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

import trio

from snfs import names
from snfs.backend import Backend
from snfs.backend import RemoteFile as Attachment
from snfs.errors import ConfigError, InvalidInput, NotFound
from snfs.inodes import Inodes, Kind, Node

log = logging.getLogger("snfs.tree")


@dataclass
class RecordListing:
    """One record's attachments as shown: POSIX name -> attachment sys_id."""

    names: dict[str, str] = field(default_factory=dict)
    fetched_at: float = float("-inf")


@dataclass
class TableListing:
    records: set[str] = field(default_factory=set)
    fetched_at: float = float("-inf")


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


class Tree:
    def __init__(
        self,
        backend: Backend,
        *,
        dir_cache_time: float = 60.0,
        tables: Iterable[str] | None = None,
        page_size: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.inodes = Inodes()
        self.dir_cache_time = dir_cache_time
        self.fixed_tables = list(tables) if tables else None
        for t in self.fixed_tables or ():
            if not backend.valid_table_name(t):
                raise ConfigError(f"--tables: {t!r} is not a table name")
        self.page_size = page_size
        self._clock = clock
        self._tables: list[str] = []
        self._tables_at = float("-inf")
        self._table_listings: dict[str, TableListing] = {}
        self._records: dict[tuple[str, str], RecordListing] = {}
        self._attachments: dict[str, Attachment] = {}
        # Existence checks of names that no listing shows (records without attachments,
        # unlisted tables, numbers): value = (exists, checked_at).
        self._exists: dict[Hashable, tuple[Any, float]] = {}
        # Where the backend cannot list: records visited, and files uploaded through this mount.
        self._visited: dict[str, set[str]] = {}
        self._uploaded: dict[tuple[str, str], dict[str, Attachment]] = {}
        self._flight = SingleFlight()
        # Names a record directory must keep free for local (staged) files: set by the write side.
        self.reserved_names: Callable[[str, str], Iterable[str]] = lambda table, record: ()

    # -- freshness -------------------------------------------------------------------------

    def _fresh(self, at: float) -> bool:
        return self._clock() - at < self.dir_cache_time

    def invalidate(self) -> None:
        """Forget every cached listing and existence check (SIGHUP)."""
        self._tables_at = float("-inf")
        for listing in self._table_listings.values():
            listing.fetched_at = float("-inf")
        for rec in self._records.values():
            rec.fetched_at = float("-inf")
        self._exists.clear()

    # -- nodes -----------------------------------------------------------------------------

    def table_node(self, table: str) -> Node:
        return self.inodes.ensure(("table", table), Kind.TABLE, table=table)

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

    async def lookup_table(self, name: str) -> Node | None:
        if not self.backend.valid_table_name(name):
            return None
        # The root listing is an optimisation, never a gate: a path below a table does not
        # wait for it (the Aggregate API may be slow, refused, or cut by its quota).
        listed = self.fixed_tables if self.fixed_tables is not None else self._tables
        if name in listed and (self.fixed_tables is not None or self._fresh(self._tables_at)):
            return self.table_node(name)
        # Not listed (no attachments, or --tables): still reachable if the table exists.
        if await self._cached_check(("table", name), lambda: self.backend.table_exists(name)):
            return self.table_node(name)
        return None

    # -- tables ----------------------------------------------------------------------------

    async def records(self, table: str) -> list[str]:
        caps = self.backend.capabilities(table)
        if not (caps.discover and caps.list):
            # The system cannot list a table's records: show the ones met through this mount.
            seen = self._visited.get(table, set()) | {r for t, r in self._records if t == table}
            return sorted(seen)
        listing = self._table_listings.get(table)
        if listing is None or not self._fresh(listing.fetched_at):
            await self._flight.run(("table", table), lambda: self._fetch_table(table))
            listing = self._table_listings[table]
        return sorted(listing.records)

    async def _fetch_table(self, table: str) -> None:
        seen: dict[str, list[Attachment]] = {}
        async for page in self.backend.list_table(table, page_size=self.page_size):
            for att in page:
                seen.setdefault(att.table_sys_id, []).append(att)
        now = self._clock()
        old = self._table_listings.get(table)
        for record in (old.records if old else set()) - seen.keys():
            # Listed before, no attachments now: the whole-table listing proves it empty.
            self._store_record(table, record, [], now)
        for record, atts in seen.items():
            self._store_record(table, record, atts, now)
        self._table_listings[table] = TableListing(set(seen), now)

    async def lookup_record(self, table: str, name: str) -> Node | None:
        if self.backend.valid_record_name(table, name):
            if (
                name in self._table_listings.get(table, TableListing()).records
                or (table, name) in self._records
            ):
                return self.record_node(table, name)
            if await self._cached_check(
                ("record", table, name), lambda: self.backend.record_exists(table, name)
            ):
                self._visited.setdefault(table, set()).add(name)
                return self.record_node(table, name)
            return None
        target = await self._cached_check(
            ("alias", table, name), lambda: self.backend.find_record(table, name)
        )
        return self.alias_node(table, name, target) if target else None

    # -- records ---------------------------------------------------------------------------

    async def attachments(self, table: str, record: str) -> dict[str, str]:
        """POSIX name -> attachment sys_id for one record, fresh within dir_cache_time."""
        listing = self._records.get((table, record))
        if listing is None or not self._fresh(listing.fetched_at):
            await self._flight.run(
                ("record", table, record), lambda: self._fetch_record(table, record)
            )
            listing = self._records[(table, record)]
        return listing.names

    async def _fetch_record(self, table: str, record: str) -> None:
        if self.backend.capabilities(table).list:
            atts = await self.backend.list_record(table, record)
        else:
            atts = list(self._uploaded.get((table, record), {}).values())
        self._store_record(table, record, atts, self._clock())

    def _store_record(self, table: str, record: str, atts: list[Attachment], at: float) -> None:
        old = self._records.get((table, record))
        for att in atts:
            self._attachments[att.sys_id] = att
            node = self.inodes.by_key(("file", att.sys_id))
            if node is not None:
                node.data = att
        reserved = self.reserved_names(table, record)
        named = names.assign_names(
            (names.Named(a.sys_id, a.file_name, a.created_on) for a in atts), reserved
        )
        if old is not None:
            for gone in set(old.names.values()) - set(named.values()):
                self._attachments.pop(gone, None)
        self._records[(table, record)] = RecordListing(named, at)
        table_listing = self._table_listings.get(table)
        if table_listing is not None and atts:
            table_listing.records.add(record)

    def shown_name(self, table: str, record: str, sys_id: str) -> str | None:
        listing = self._records.get((table, record))
        for name, sid in listing.names.items() if listing else ():
            if sid == sys_id:
                return name
        return None

    def renumber(self, table: str, record: str) -> None:
        """Names reserved for local files changed: give the record's attachments names again."""
        listing = self._records.get((table, record))
        if listing is not None:
            atts = [self._attachments[s] for s in listing.names.values() if s in self._attachments]
            self._store_record(table, record, atts, listing.fetched_at)

    def attachment(self, sys_id: str) -> Attachment | None:
        return self._attachments.get(sys_id)

    async def lookup_file(self, table: str, record: str, name: str) -> Node | None:
        sys_id = (await self.attachments(table, record)).get(name)
        if sys_id is None:
            return None
        att = self._attachments.get(sys_id)
        return self.file_node(att) if att else None

    # -- changes made through this mount -----------------------------------------------------

    def added(self, att: Attachment) -> Node:
        """An upload through this mount is stored: show it without waiting for a refresh."""
        key = (att.table_name, att.table_sys_id)
        if not self.backend.capabilities(att.table_name).list:
            self._uploaded.setdefault(key, {})[att.sys_id] = att
        listing = self._records.get(key)
        current = [
            self._attachments[s]
            for s in (listing.names.values() if listing else ())
            if s in self._attachments
        ]
        at = listing.fetched_at if listing else float("-inf")
        self._store_record(att.table_name, att.table_sys_id, current + [att], at)
        table_listing = self._table_listings.get(att.table_name)
        if table_listing is not None:
            table_listing.records.add(att.table_sys_id)
        self._exists.pop(("record", att.table_name, att.table_sys_id), None)
        return self.file_node(att)

    def removed(self, sys_id: str) -> None:
        """An attachment is gone (deleted here, or found missing): drop it from its listing."""
        att = self._attachments.pop(sys_id, None)
        if att is None:
            return
        self._uploaded.get((att.table_name, att.table_sys_id), {}).pop(sys_id, None)
        listing = self._records.get((att.table_name, att.table_sys_id))
        if listing is not None:
            rest = [self._attachments[s] for s in listing.names.values() if s in self._attachments]
            self._store_record(att.table_name, att.table_sys_id, rest, listing.fetched_at)
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
        self._exists[key] = (value, self._clock())
        return value
