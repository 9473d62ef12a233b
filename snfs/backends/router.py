"""A backend made of backends: `/<table>/...` goes to the one that owns `table`.

`Router(default, {".cccif": cccif})` sends `/.cccif/...` to `cccif` and every other table to
`default`. Files are addressed by id only (`stream`, `delete`, `rename`): an id goes to the
backend that returned it in this process, else to `default` (routed backends are expected to
share the default's file ids, as CCCIF shares ServiceNow's attachment sys_ids). The router
shows itself as `default`: same name, URL, statistics and xattr names.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from datetime import datetime
from pathlib import Path

from snfs.backend import Backend, Capabilities, RemoteFile, Stats, XattrKeys
from snfs.transfer import Sink


class Router(Backend):
    def __init__(self, default: Backend, routes: dict[str, Backend]) -> None:
        self.default = default
        self.routes = dict(routes)
        self.name = default.name
        self.base_url = default.base_url
        self.instance_key = default.instance_key
        self.xattr_keys: XattrKeys = default.xattr_keys
        self._owner: dict[str, Backend] = {}  # file id -> a routed backend that returned it

    def __repr__(self) -> str:
        return f"Router({self.default!r}, {sorted(self.routes)!r})"

    def _for(self, table: str) -> Backend:
        return self.routes.get(table, self.default)

    def _file(self, file_id: str) -> Backend:
        return self._owner.get(file_id, self.default)

    def _own(self, backend: Backend, f: RemoteFile) -> RemoteFile:
        if backend is not self.default:
            self._owner[f.sys_id] = backend
        return f

    @property
    def stats(self) -> Stats:
        return self.default.stats

    @property
    def supports_range(self) -> bool | None:
        return self.default.supports_range

    def capabilities(self, table: str) -> Capabilities:
        return self._for(table).capabilities(table)

    async def check(self) -> None:
        await self.default.check()

    async def aclose(self) -> None:
        for backend in (*self.routes.values(), self.default):
            await backend.aclose()

    # -- namespace -------------------------------------------------------------------------------

    async def tables(self) -> list[str]:
        return await self.default.tables()  # routed tables are reached by name, not listed

    def valid_table_name(self, table: str) -> bool:
        return self._for(table).valid_table_name(table)

    async def table_exists(self, table: str) -> bool:
        return await self._for(table).table_exists(table)

    def valid_record_name(self, table: str, name: str) -> bool:
        return self._for(table).valid_record_name(table, name)

    async def record_exists(self, table: str, record: str) -> bool:
        return await self._for(table).record_exists(table, record)

    async def find_record(self, table: str, alias: str) -> str | None:
        return await self._for(table).find_record(table, alias)

    def list_table(self, table: str, *, page_size: int = 1000) -> AsyncIterator[list[RemoteFile]]:
        return self._for(table).list_table(table, page_size=page_size)

    async def list_record(self, table: str, record: str) -> list[RemoteFile]:
        backend = self._for(table)
        return [self._own(backend, f) for f in await backend.list_record(table, record)]

    # -- optional features: each asked of the backend that owns the table ----------------------

    def groups_by_record(self, table: str) -> bool:
        return self._for(table).groups_by_record(table)

    def list_table_parts(
        self,
        table: str,
        *,
        page_size: int = 1000,
        parts: int = 1,
        full_rows: int | None = None,
    ) -> AsyncIterator[AsyncIterator[list[RemoteFile]]]:
        return self._for(table).list_table_parts(
            table, page_size=page_size, parts=parts, full_rows=full_rows
        )

    def can_scope(self, table: str) -> bool:
        return self._for(table).can_scope(table)

    def default_scope(self, table: str) -> str | None:
        return self._for(table).default_scope(table)

    def scope_from_name(self, table: str, name: str) -> str:
        return self._for(table).scope_from_name(table, name)

    def list_scoped(
        self, table: str, scope: str, *, page_size: int = 1000
    ) -> AsyncIterator[AsyncIterator[list[RemoteFile]]]:
        return self._for(table).list_scoped(table, scope, page_size=page_size)

    def lists_numbers(self, table: str) -> bool:
        return self._for(table).lists_numbers(table)

    async def numbers(self, table: str, sys_ids: list[str]) -> dict[str, str]:
        return await self._for(table).numbers(table, sys_ids)

    def batches_records(self, table: str) -> bool:
        return self._for(table).batches_records(table)

    async def list_records(self, table: str, records: list[str]) -> list[RemoteFile]:
        backend = self._for(table)
        return [self._own(backend, f) for f in await backend.list_records(table, records)]

    def lists_changes(self, table: str) -> bool:
        return self._for(table).lists_changes(table)

    def list_changed(
        self, table: str, since: datetime, *, page_size: int = 1000
    ) -> AsyncIterator[list[RemoteFile]]:
        return self._for(table).list_changed(table, since, page_size=page_size)

    # -- content ---------------------------------------------------------------------------------

    def stream(
        self, file_id: str, *, offset: int = 0, like: RemoteFile | None = None
    ) -> AsyncIterator[bytes]:
        return self._file(file_id).stream(file_id, offset=offset, like=like)

    async def stream_into(
        self, file_id: str, sink: Sink, *, offset: int = 0, like: RemoteFile | None = None
    ) -> None:
        await self._file(file_id).stream_into(file_id, sink, offset=offset, like=like)

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
        backend = self._for(table)
        stored = await backend.upload(
            table, record, file_name, source, size=size, replaces=replaces
        )
        return self._own(backend, stored)

    async def delete(self, file_id: str, *, missing_ok: bool = False) -> None:
        await self._file(file_id).delete(file_id, missing_ok=missing_ok)
        self._owner.pop(file_id, None)

    async def rename(self, file_id: str, new_name: str) -> RemoteFile:
        backend = self._file(file_id)
        return self._own(backend, await backend.rename(file_id, new_name))

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
        backend = self._for(table)
        found = await backend.find_uploaded(
            table, record, file_name, sha256, size, since, exclude=exclude
        )
        return self._own(backend, found) if found else None
