"""The seam between the file system core and the systems whose attachments it shows.

The core (tree, names, content cache, spool, journal) sees every system as
`/<table>/<record>/<file>`: a fixed set of top-level collections ("tables"), records in them,
and files attached to records. A backend maps that onto one system's API and declares, per
table, what the API can do; the core turns what it cannot into documented errnos:

- `list`:   the API lists a record's files. Without it the record directory shows the files
            uploaded through this mount (write-only backends), and says so in docs/SEMANTICS.md.
- `read`:   file content can be fetched. Without it `read` fails with EACCES.
- `create`: files can be uploaded. Without it `create` fails with EROFS.
- `delete`: files can be deleted. Without it `unlink` fails with EPERM.
- `rename`: files can be renamed in place. Without it a rename is copy-then-delete (if
            create, read and delete are there) or EPERM.
- `discover`: the API lists a table's records. Without it `ls /<table>` shows the records
            visited or written through this mount; any valid record id is still reachable.

Files are described by `RemoteFile`; a backend fills what it knows and puts system-specific
values (ids, URLs) in `extra`, which the mount shows as extended attributes
`user.<backend>.<key>`.

Optional features are declared here too, each with a default that means "not offered" (a
backend without them is listed as a whole, one record at a time). A backend subclasses
`Backend` to inherit the defaults, and overrides what its system offers:
`list_table_parts` / `groups_by_record` (parallel keyset pagers grouped by record),
`can_scope` / `list_scoped` / `default_scope` / `scope_from_name` (scoped views),
`lists_numbers` / `numbers` (record numbers listed next to ids; `find_record` resolves them),
`batches_records` / `list_records` (the attachments of a batch of records in few requests), and
`lists_changes` / `list_changed` (rows created or changed since a time: what lets a metadata
index catch up without listing a table again). The core calls them only through this
protocol, so mypy checks every call across the seam.

Which systems exist is the registry's business (`snfs.registry`): the core never names one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from snfs.errors import InvalidInput

if TYPE_CHECKING:
    from snfs.transfer import Sink


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """One file of a record, as the core sees it. The field names are the richest shape the
    systems share (ServiceNow's `sys_attachment`, which came first): `sys_id` is the file's id
    within its backend (what `stream`, `delete` and `rename` take), `table_name` and
    `table_sys_id` the table and record it hangs off."""

    sys_id: str
    table_name: str
    table_sys_id: str
    file_name: str
    size_bytes: int
    content_type: str
    created_on: datetime
    updated_on: datetime
    created_by: str
    hash: str
    download_link: str
    state: str
    # System-specific values (ids, URLs) a backend wants shown as xattrs user.<backend>.<key>.
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Capabilities:
    list: bool = True
    read: bool = True
    create: bool = True
    delete: bool = True
    rename: bool = True
    discover: bool = True


FULL = Capabilities()


class RecordIds(list[str]):
    """A page of a table's listing that names records only, without file metadata (what a
    large table's listing asks for): shown in `/<table>`, but fills no record directory."""


@dataclass(frozen=True)
class XattrKeys:
    """The names under `user.<backend>.` of a file's id, table and record (each system uses
    its own words, and scripts read them)."""

    file_id: str = "id"
    table: str = "table"
    record: str = "record"


class Stats(Protocol):
    def as_dict(self) -> dict[str, Any]: ...


class OptionalFeatures(Protocol):
    """The listings every system gives, and the optional features, each with a default that
    says "not offered" (built on the two listings). Part of `Backend`; a class that is not a
    whole backend (a test's fake) subclasses this alone to inherit the defaults."""

    def list_table(self, table: str, *, page_size: int = 1000) -> AsyncIterator[list[RemoteFile]]:
        """Every file of a table, page by page (capability `discover` and `list`)."""

    async def list_record(self, table: str, record: str) -> list[RemoteFile]: ...

    # -- optional features: the defaults say "not offered" ---------------------------------------
    def groups_by_record(self, table: str) -> bool:
        """`list_table_parts` pages come grouped by record (a record is complete once passed)."""
        return False

    def list_table_parts(
        self,
        table: str,
        *,
        page_size: int = 1000,
        parts: int = 1,
        full_rows: int | None = None,
    ) -> AsyncIterator[AsyncIterator[list[RemoteFile]]]:
        """A table's files as pagers to run in parallel (up to `parts`); a page may be
        `RecordIds` once more than `full_rows` files are counted. Default: one pager,
        `list_table`."""
        return _one(self.list_table(table, page_size=page_size))

    def can_scope(self, table: str) -> bool:
        """`list_scoped` works for `table` (a `.query/<name>` directory can be shown)."""
        return False

    def default_scope(self, table: str) -> str | None:
        """The scope `/<table>` shows when none is named (a mount option), or None."""
        return None

    def scope_from_name(self, table: str, name: str) -> str:
        """A `.query/<name>` directory name to the scope it stands for; InvalidInput if none."""
        raise InvalidInput(f"{table}: this system has no scoped listings")

    def list_scoped(
        self, table: str, scope: str, *, page_size: int = 1000
    ) -> AsyncIterator[AsyncIterator[list[RemoteFile]]]:
        """The files of the records of `table` in `scope`, as pagers grouped by record (only
        called where `can_scope`)."""
        raise InvalidInput(f"{table}: this system has no scoped listings")

    def lists_numbers(self, table: str) -> bool:
        """`numbers` gives the records of `table` a second name, listed next to their ids."""
        return False

    async def numbers(self, table: str, sys_ids: list[str]) -> dict[str, str]:
        """Record id -> number, for the records that have one."""
        return {}

    def batches_records(self, table: str) -> bool:
        """`list_records` lists several records of `table` in fewer requests than one each."""
        return False

    async def list_records(self, table: str, records: list[str]) -> list[RemoteFile]:
        """Every file of a batch of records. Default: one record at a time."""
        return [f for r in records for f in await self.list_record(table, r)]

    def lists_changes(self, table: str) -> bool:
        """`list_changed` works for `table`."""
        return False

    def list_changed(
        self, table: str, since: datetime, *, page_size: int = 1000
    ) -> AsyncIterator[list[RemoteFile]]:
        """The files of `table` created or changed at or after `since`, grouped by record (only
        called where `lists_changes`)."""
        raise InvalidInput(f"{table}: this system cannot list changes")


class Backend(OptionalFeatures, Protocol):
    name: str  # the registry's name ("servicenow", ...): also the xattr namespace
    base_url: str
    # Where this mount's spool and cache live: unique per system and URL, since file ids are
    # unique only there.
    instance_key: str
    xattr_keys: XattrKeys

    @property
    def stats(self) -> Stats: ...

    @property
    def supports_range(self) -> bool | None: ...

    def capabilities(self, table: str) -> Capabilities: ...

    async def check(self) -> None:
        """One cheap authenticated request; raises AuthError / ConnectionFailed / ..."""

    async def aclose(self) -> None: ...

    # -- namespace -----------------------------------------------------------------------------
    async def tables(self) -> list[str]:
        """Top-level collections to list at the root (those with files, where known)."""

    def valid_table_name(self, table: str) -> bool:
        """Could `table` be a table of this system (no request)?"""

    async def table_exists(self, table: str) -> bool: ...

    def valid_record_name(self, table: str, name: str) -> bool:
        """Is `name` syntactically a record id of `table` (no request)?"""

    async def record_exists(self, table: str, record: str) -> bool: ...

    async def find_record(self, table: str, alias: str) -> str | None:
        """A record's id from another name users know it by (a ticket number), or None."""

    # -- content -------------------------------------------------------------------------------
    def stream(
        self, file_id: str, *, offset: int = 0, like: RemoteFile | None = None
    ) -> AsyncIterator[bytes]:
        """The content from `offset` on. `like`: the file's metadata when known (a backend may
        choose how to ask by it, e.g. gzip only for text-like content)."""

    async def stream_into(
        self, file_id: str, sink: Sink, *, offset: int = 0, like: RemoteFile | None = None
    ) -> None:
        """`stream`, with the bytes put into `sink` by a worker thread (`snfs.transfer`);
        `transfer.feed(self.stream(...), sink, offset)` where a backend has no worker path."""

    async def upload(
        self,
        table: str,
        record: str,
        file_name: str,
        source: Path,
        *,
        size: int,
        replaces: Collection[str] = (),
    ) -> RemoteFile:
        """Store a file; `replaces`: the attachments it will replace once stored (an answer that
        names one of them is not a new attachment, so it is never taken as stored)."""

    async def delete(self, file_id: str, *, missing_ok: bool = False) -> None: ...

    async def rename(self, file_id: str, new_name: str) -> RemoteFile: ...

    async def find_uploaded(
        self,
        table: str,
        record: str,
        file_name: str,
        sha256: str,
        size: int,
        since: datetime,
        *,
        exclude: frozenset[str] = frozenset(),
    ) -> RemoteFile | None:
        """After an upload whose outcome is unknown (killed, cancelled, unreadable answer): the
        file it stored, so it is not stored twice. Only a file created at or after `since`
        whose content is known to be `sha256`, and whose id is not in `exclude` (what the
        upload replaces), counts. None when it is not there or the backend cannot tell: the
        caller then sends the file again, which may duplicate it but never loses anything.
        A failed look-up raises (the caller retries later)."""


async def _one(
    pages: AsyncIterator[list[RemoteFile]],
) -> AsyncIterator[AsyncIterator[list[RemoteFile]]]:
    yield pages
