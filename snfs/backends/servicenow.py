"""ServiceNow: the Attachment API (every table), plus CCCIF media uploads under `/.cccif/`.

Tables are ServiceNow tables, records are sys_ids (numbers such as INC0010001 are aliases),
files are sys_attachment rows. `/.cccif/<user_id>/` is a write-only area: a file written there
is uploaded with the CCCIF Media Resource API for that chat user; the API cannot list, so the
directory shows the files uploaded through this mount, readable and deletable through the
Attachment API by their attachmentId.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Collection
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from snfs import query
from snfs.backend import FULL, Capabilities
from snfs.client import Attachment, AttachmentClient, ClientStats
from snfs.errors import InvalidInput, SnfsError

CCCIF = ".cccif"
CCCIF_CAPS = Capabilities(
    list=False, read=True, create=True, delete=True, rename=False, discover=False
)
# Attachments of image/video fields: the field holds the attachment's sys_id, so a file
# created there would be an orphan no field points at, and a delete would break the field.
IMAGE_FIELD_CAPS = Capabilities(create=False, delete=False, rename=False)
RECENT = 1000  # attachments the root listing's fallback looks at
log = logging.getLogger("snfs.servicenow")
NUMBER_RE = re.compile(r"^[A-Z]{2,8}[0-9]{5,12}$")
USER_ID_RE = re.compile(r"^[A-Za-z0-9_.@+-]{1,100}$")


class ServiceNowBackend:
    name = "servicenow"

    def __init__(self, client: AttachmentClient) -> None:
        self.client = client
        self.base_url = client.config.base_url
        self._fallback_logged = False

    @property
    def stats(self) -> ClientStats:
        return self.client.stats

    @property
    def supports_range(self) -> bool | None:
        return self.client.supports_range

    def capabilities(self, table: str) -> Capabilities:
        if table == CCCIF:
            return CCCIF_CAPS
        return IMAGE_FIELD_CAPS if table.startswith("ZZ_YY") else FULL

    async def check(self) -> None:
        await self.client.check()

    async def aclose(self) -> None:
        await self.client.aclose()

    # -- namespace -------------------------------------------------------------------------------

    async def tables(self) -> list[str]:
        """Tables with attachments, by the Aggregate API. That API is refused (403) to users
        without read on sys_attachment and cut by its transaction quota on big instances: then
        the tables of the most recent attachments the user can read (one list request)."""
        try:
            counts = await self.client.count_by("table_name")
        except SnfsError as e:
            if not self._fallback_logged:
                log.warning(
                    "the Aggregate API failed (%s): `ls /` shows the tables of the %d most "
                    "recent attachments instead; name them with --tables to list them all",
                    e.instance_message or e.message,
                    RECENT,
                )
                self._fallback_logged = True
            names = await self.client.recent_tables(RECENT)
            return sorted(t for t in names if self.valid_table_name(t))
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
        return self.client.list_pages(query.attachments_of_table(table), page_size=page_size)

    async def list_record(self, table: str, record: str) -> list[Attachment]:
        if table == CCCIF:
            return []
        return await self.client.list_all(query.attachments_of_record(table, record))

    # -- content ---------------------------------------------------------------------------------

    def stream(self, file_id: str, *, offset: int = 0) -> AsyncIterator[bytes]:
        return self.client.stream(file_id, offset=offset)

    async def upload(
        self,
        table: str,
        record: str,
        file_name: str,
        source: Path,
        *,
        size: int,
        replaces: Collection[str] = (),
    ) -> Attachment:
        """`replaces`: the attachments this upload is to replace; an answer naming one of
        them is no proof the new content is stored."""
        if table == CCCIF:
            att = await self.client.cccif_upload(record, file_name, source, size=size)
            # Shown where it was written, whatever record the instance filed it under.
            return replace(att, table_name=CCCIF, table_sys_id=record)
        return await self.client.upload(
            table, record, file_name, source, size=size, replaces=replaces
        )

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
