"""ServiceNow CCCIF media uploads: `/.cccif/<user_id>/` (mounted behind a `Router`).

A file written there is uploaded with the CCCIF Media Resource API (`POST /cccif/media/upload`)
for that chat user. The API cannot list, so the directory shows the files uploaded through
this mount (write-only listing); they are read and deleted through the Attachment API by
their attachmentId. No rename, no discovery, and no look-up of an upload in doubt.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Collection
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from snfs.backend import Capabilities, RemoteFile, Stats, XattrKeys
from snfs.client import AttachmentClient
from snfs.errors import Unsupported
from snfs.transfer import Sink

TABLE = ".cccif"
CAPS = Capabilities(list=False, read=True, create=True, delete=True, rename=False, discover=False)
USER_ID_RE = re.compile(r"^[A-Za-z0-9_.@+-]{1,100}$")


class CccifBackend:
    """The `.cccif` table over a ServiceNow client it shares (and does not close)."""

    name = "servicenow"
    xattr_keys = XattrKeys("sys_id", "table", "table_sys_id")

    def __init__(self, client: AttachmentClient) -> None:
        self.client = client
        self.base_url = client.config.base_url
        self.instance_key = self.base_url

    @property
    def stats(self) -> Stats:
        return self.client.stats

    @property
    def supports_range(self) -> bool | None:
        return self.client.supports_range

    def capabilities(self, table: str) -> Capabilities:
        return CAPS

    async def check(self) -> None:
        await self.client.check()

    async def aclose(self) -> None:
        pass  # the client belongs to the ServiceNow backend

    async def tables(self) -> list[str]:
        return [TABLE]

    def valid_table_name(self, table: str) -> bool:
        return table == TABLE

    async def table_exists(self, table: str) -> bool:
        return table == TABLE

    def valid_record_name(self, table: str, name: str) -> bool:
        return bool(USER_ID_RE.match(name))

    async def record_exists(self, table: str, record: str) -> bool:
        return True  # any chat user id: the instance says at upload time

    async def find_record(self, table: str, alias: str) -> str | None:
        return None

    def list_table(self, table: str, *, page_size: int = 1000) -> AsyncIterator[list[RemoteFile]]:
        async def none() -> AsyncIterator[list[RemoteFile]]:
            raise Unsupported("CCCIF cannot list uploaded media")
            yield []  # pragma: no cover

        return none()

    async def list_record(self, table: str, record: str) -> list[RemoteFile]:
        return []

    def stream(
        self, file_id: str, *, offset: int = 0, like: RemoteFile | None = None
    ) -> AsyncIterator[bytes]:
        return self.client.stream(file_id, offset=offset, like=like)

    async def stream_into(
        self, file_id: str, sink: Sink, *, offset: int = 0, like: RemoteFile | None = None
    ) -> None:
        await self.client.stream_into(file_id, sink, offset=offset, like=like)

    async def upload(
        self,
        table: str,
        record: str,
        file_name: str,
        source: Path,
        *,
        size: int,
        replaces: Collection[str] = (),
    ) -> RemoteFile:  # `replaces`: checked by the core
        att = await self.client.cccif_upload(record, file_name, source, size=size)
        # Shown where it was written, whatever record the instance filed it under.
        return replace(att, table_name=TABLE, table_sys_id=record)

    async def delete(self, file_id: str, *, missing_ok: bool = False) -> None:
        await self.client.delete(file_id, missing_ok=missing_ok)

    async def rename(self, file_id: str, new_name: str) -> RemoteFile:
        raise Unsupported("CCCIF media cannot be renamed")

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
        return None  # CCCIF files hang off a record we cannot name: no look-up possible
