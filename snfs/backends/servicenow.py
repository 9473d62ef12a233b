"""ServiceNow: the Attachment API (every table), plus CCCIF media uploads under `/.cccif/`.

Tables are ServiceNow tables, records are sys_ids (numbers such as INC0010001 are aliases),
files are sys_attachment rows. `/.cccif/<user_id>/` is a write-only area: a file written there
is uploaded with the CCCIF Media Resource API for that chat user; the API cannot list, so the
directory shows the files uploaded through this mount, readable and deletable through the
Attachment API by their attachmentId.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import cast

from snfs import pager, query
from snfs.backend import FULL, Capabilities, RecordIds
from snfs.client import Attachment, AttachmentClient, ClientStats
from snfs.errors import InvalidInput, SnfsError

CCCIF = ".cccif"
CCCIF_CAPS = Capabilities(
    list=False, read=True, create=True, delete=True, rename=False, discover=False
)
NUMBER_RE = re.compile(r"^[A-Z]{2,8}[0-9]{5,12}$")
# What a listing asks for (sysparm_fields): what snfs.client.Attachment keeps, nothing more.
ATTACHMENT_FIELDS = (
    "sys_id",
    "table_name",
    "table_sys_id",
    "file_name",
    "size_bytes",
    "content_type",
    "sys_created_on",
    "sys_updated_on",
    "sys_created_by",
    "hash",
    "download_link",
    "state",
)
# What a large table's listing asks for after its first page: the pager's keys only.
LISTING_KEYS = ("table_sys_id", "sys_id")
# sys_ids per `...IN` request: 200 ids keep the URL near 7 KB, under common proxy limits.
ID_BATCH = 200
USER_ID_RE = re.compile(r"^[A-Za-z0-9_.@+-]{1,100}$")


class ServiceNowBackend:
    name = "servicenow"

    def __init__(self, client: AttachmentClient) -> None:
        self.client = client
        self.base_url = client.config.base_url

    @property
    def stats(self) -> ClientStats:
        return self.client.stats

    @property
    def supports_range(self) -> bool | None:
        return self.client.supports_range

    def capabilities(self, table: str) -> Capabilities:
        return CCCIF_CAPS if table == CCCIF else FULL

    async def check(self) -> None:
        await self.client.check()

    async def aclose(self) -> None:
        await self.client.aclose()

    # -- namespace -------------------------------------------------------------------------------

    async def tables(self) -> list[str]:
        counts = await self.client.count_by("table_name")
        return sorted(t for t, n in counts.items() if n > 0 and self.valid_table_name(t))

    def valid_table_name(self, table: str) -> bool:
        if table == CCCIF:
            return True
        try:
            query.validate_table(table)
        except InvalidInput:
            return False
        return True

    async def table_exists(self, table: str) -> bool:
        return table == CCCIF or await self.client.table_exists(table)

    def valid_record_name(self, table: str, name: str) -> bool:
        return bool(USER_ID_RE.match(name)) if table == CCCIF else query.is_sys_id(name)

    async def record_exists(self, table: str, record: str) -> bool:
        return table == CCCIF or await self.client.record_exists(table, record)

    async def find_record(self, table: str, alias: str) -> str | None:
        if table == CCCIF or not NUMBER_RE.match(alias):
            return None
        return await self.client.find_record(table, alias)

    def list_table(self, table: str, *, page_size: int = 1000) -> AsyncIterator[list[Attachment]]:
        fetch = self._fetcher("sys_attachment", page_size, ATTACHMENT_FIELDS)
        return self._attachment_pages(table, fetch, None, page_size)

    async def list_table_parts(
        self,
        table: str,
        *,
        page_size: int = 1000,
        parts: int = 1,
        full_rows: int | None = None,
    ) -> AsyncIterator[AsyncIterator[list[Attachment]]]:
        """A table's attachments as keyset pagers over disjoint ranges of record sys_id, to
        run in parallel: one at first, up to `parts` once the first page shows a large table
        (`pager.Splitter`). Each yields rows grouped by record (ordered by `table_sys_id,
        sys_id`), so a record is complete once its pager moves past it.

        When the first page counts more than `full_rows` attachments, later pages ask only
        for the keys (`RecordIds` pages): the caller could not keep that much metadata
        anyway, and key-only pages cost the instance and the wire a fraction of full ones."""
        full = self._fetcher("sys_attachment", page_size, ATTACHMENT_FIELDS)
        keys = self._fetcher("sys_attachment", page_size, LISTING_KEYS)
        wanted = {"full": True}

        async def fetch(text: str, offset: int, count: bool) -> tuple[list[pager.Row], int | None]:
            return await (full if wanted["full"] else keys)(text, offset, count)

        def on_total(total: int | None) -> None:
            wanted["full"] = full_rows is None or total is None or total <= full_rows

        split = pager.Splitter(
            fetch, "table_sys_id", parts=parts, page_size=page_size, on_total=on_total
        )
        yield self._attachment_pages(table, split.fetch, split.first, page_size)
        await split.decided.wait()
        for span in split.extra:
            yield self._attachment_pages(table, fetch, span, page_size)

    async def _attachment_pages(
        self, table: str, fetch: pager.Fetch, span: pager.Span | None, page_size: int
    ) -> AsyncIterator[list[Attachment]]:
        base = query.attachments_of_table_by_record(table)
        pages = pager.keyset_pages(fetch, base, "table_sys_id", page_size=page_size, span=span)
        async for rows in pages:
            if all("file_name" in r for r in rows):
                yield [a for a in map(Attachment.from_json, rows) if a.sys_id]
            else:
                ids = RecordIds(dict.fromkeys(str(r.get("table_sys_id") or "") for r in rows))
                yield cast(list[Attachment], ids)

    def _fetcher(self, table: str, page_size: int, fields: tuple[str, ...]) -> pager.Fetch:
        async def fetch(text: str, offset: int, count: bool) -> tuple[list[pager.Row], int | None]:
            return await self.client.list_rows(
                table, text, offset=offset, limit=page_size, fields=fields, count=count
            )

        return fetch

    async def list_scoped(
        self, table: str, scope: str, *, page_size: int = 1000
    ) -> AsyncIterator[AsyncIterator[list[Attachment]]]:
        """Attachments of the records of `table` matching the encoded query `scope`: the
        records by keyset pages of the Table API (sys_id only), then one pager per batch of
        ID_BATCH records (`table_sys_idIN...`), to run in parallel; each batch is whole
        records, grouped by record."""
        records = pager.keyset_pages(
            self._fetcher(table, page_size, ("sys_id",)),
            query.validate_scope(scope),
            "sys_id",
            page_size=page_size,
        )
        async for rows in records:
            ids = [str(r.get("sys_id")) for r in rows if query.is_sys_id(r.get("sys_id"))]
            for i in range(0, len(ids), ID_BATCH):
                yield self._batch(table, ids[i : i + ID_BATCH], page_size)

    async def _batch(
        self, table: str, ids: list[str], page_size: int
    ) -> AsyncIterator[list[Attachment]]:
        atts = await self.client.list_all(
            query.attachments_of_records(table, ids), page_size=page_size
        )
        if atts:
            yield atts

    async def numbers(self, table: str, sys_ids: list[str]) -> dict[str, str]:
        """sys_id -> number for records of `table` (Table API, `sys_idIN`, one request per
        ID_BATCH ids); records without a number are left out."""
        if table == CCCIF:
            return {}
        out: dict[str, str] = {}
        ids = [s for s in sys_ids if query.is_sys_id(s)]
        for i in range(0, len(ids), ID_BATCH):
            batch = ids[i : i + ID_BATCH]
            rows, _ = await self.client.list_rows(
                table,
                query.records_by_sys_id(batch),
                offset=0,
                limit=len(batch),
                fields=("sys_id", "number"),
                count=False,
            )
            for r in rows:
                number = str(r.get("number") or "")
                if NUMBER_RE.match(number) and query.is_sys_id(r.get("sys_id")):
                    out[str(r["sys_id"])] = number
        return out

    async def list_record(self, table: str, record: str) -> list[Attachment]:
        if table == CCCIF:
            return []
        return await self.client.list_all(query.attachments_of_record(table, record))

    # -- content ---------------------------------------------------------------------------------

    def stream(self, file_id: str, *, offset: int = 0) -> AsyncIterator[bytes]:
        return self.client.stream(file_id, offset=offset)

    async def upload(
        self, table: str, record: str, file_name: str, source: Path, *, size: int
    ) -> Attachment:
        if table == CCCIF:
            att = await self.client.cccif_upload(record, file_name, source, size=size)
            # Shown where it was written, whatever record the instance filed it under.
            return replace(att, table_name=CCCIF, table_sys_id=record)
        return await self.client.upload(table, record, file_name, source, size=size)

    async def delete(self, file_id: str, *, missing_ok: bool = False) -> None:
        await self.client.delete(file_id, missing_ok=missing_ok)

    async def rename(self, file_id: str, new_name: str) -> Attachment:
        return await self.client.rename(file_id, new_name)

    async def find_uploaded(
        self, table: str, record: str, file_name: str, sha256: str, size: int, since: datetime
    ) -> Attachment | None:
        if table == CCCIF:
            return None  # CCCIF files hang off a record we cannot name: no look-up possible
        try:
            atts = await self.client.list_all(
                query.all_of(
                    query.term("table_name", "=", table),
                    query.term("table_sys_id", "=", record),
                    query.term("file_name", "=", file_name),
                )
            )
        except SnfsError:
            return None
        for att in atts:
            if (
                att.hash == sha256
                and att.size_bytes == size
                and att.created_on.timestamp() >= since.timestamp() - 120
            ):
                return att
        return None
