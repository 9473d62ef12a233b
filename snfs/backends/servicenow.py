"""ServiceNow: the Attachment API (every table); CCCIF media uploads under `/.cccif/`.

Tables are ServiceNow tables, records are sys_ids (numbers such as INC0010001 are aliases),
files are sys_attachment rows. The mounted backend is a `Router` that sends `/.cccif/...` to
`snfs.backends.cccif` (the CCCIF Media Resource API) and everything else here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Collection
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, cast

from snfs import __version__, query
from snfs.backend import FULL, Backend, Capabilities, RemoteFile, XattrKeys
from snfs.backends.cccif import TABLE as CCCIF
from snfs.backends.cccif import CccifBackend
from snfs.backends.router import Router
from snfs.client import AttachmentClient, ClientConfig, ClientStats, normalize_instance_url
from snfs.credentials import build_auth
from snfs.errors import InvalidInput, SnfsError
from snfs.registry import System

if TYPE_CHECKING:
    from snfs.options import MountOptions

NUMBER_RE = re.compile(r"^[A-Z]{2,8}[0-9]{5,12}$")
# Attachments of image/video fields: the field holds the attachment's sys_id, so a file
# created there would be an orphan no field points at, and a delete would break the field.
IMAGE_FIELD_CAPS = Capabilities(create=False, delete=False, rename=False)
RECENT = 1000  # attachments the root listing's fallback looks at
log = logging.getLogger("snfs.servicenow")


class ServiceNowBackend:
    name = "servicenow"
    xattr_keys = XattrKeys("sys_id", "table", "table_sys_id")

    def __init__(self, client: AttachmentClient) -> None:
        self.client = client
        self.base_url = client.config.base_url
        self.instance_key = self.base_url  # the first system: its spools predate the prefix
        self._fallback_logged = False

    @property
    def stats(self) -> ClientStats:
        return self.client.stats

    @property
    def supports_range(self) -> bool | None:
        return self.client.supports_range

    def capabilities(self, table: str) -> Capabilities:
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
        try:
            query.validate_table(table)
        except InvalidInput:
            return False
        return True

    async def table_exists(self, table: str) -> bool:
        return await self.client.table_exists(table)

    def valid_record_name(self, table: str, name: str) -> bool:
        return query.is_sys_id(name)

    async def record_exists(self, table: str, record: str) -> bool:
        return await self.client.record_exists(table, record)

    async def find_record(self, table: str, alias: str) -> str | None:
        if not NUMBER_RE.match(alias):
            return None
        return await self.client.find_record(table, alias)

    def list_table(self, table: str, *, page_size: int = 1000) -> AsyncIterator[list[RemoteFile]]:
        pages = self.client.list_pages(query.attachments_of_table(table), page_size=page_size)
        return cast(AsyncIterator[list[RemoteFile]], pages)  # of Attachment, a RemoteFile

    async def list_record(self, table: str, record: str) -> list[RemoteFile]:
        return [*await self.client.list_all(query.attachments_of_record(table, record))]

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
    ) -> RemoteFile:
        """`replaces`: the attachments this upload is to replace; an answer naming one of
        them is no proof the new content is stored (the client then treats it as in doubt)."""
        return await self.client.upload(
            table, record, file_name, source, size=size, replaces=replaces
        )

    async def delete(self, file_id: str, *, missing_ok: bool = False) -> None:
        await self.client.delete(file_id, missing_ok=missing_ok)

    async def rename(self, file_id: str, new_name: str) -> RemoteFile:
        return await self.client.rename(file_id, new_name)

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
        atts = await self.client.list_all(
            query.all_of(
                query.term("table_name", "=", table),
                query.term("table_sys_id", "=", record),
                query.term("file_name", "=", file_name),
            )
        )
        for att in atts:
            if (
                att.sys_id not in exclude
                and att.hash == sha256
                and att.size_bytes == size
                and att.created_on.timestamp() >= since.timestamp()
            ):
                return att
        return None


def client_config(o: MountOptions, url: str) -> ClientConfig:
    base_url = normalize_instance_url(url, allow_insecure_http=o.allow_insecure_http)
    return ClientConfig(
        base_url=base_url,
        auth=build_auth(o, base_url),
        max_in_flight=o.max_in_flight,
        verify=str(o.ca_bundle) if o.ca_bundle else True,
        timeout=o.timeout,
        user_agent=f"snfs/{__version__}",
    )


def build(o: MountOptions, url: str) -> Backend:
    """The Attachment API for every table, CCCIF for `/.cccif/`, over one client."""
    client = AttachmentClient(client_config(o, url))
    return Router(ServiceNowBackend(client), {CCCIF: CccifBackend(client)})


SYSTEM = System(
    name="servicenow",
    summary="ServiceNow Attachment API; CCCIF media under /.cccif/",
    url="dev12345, https://acme.service-now.com",
    capabilities=FULL,
    build=build,
)
