"""ServiceNow CCCIF media uploads: `/.cccif/<user_id>/` (mounted behind a `Router`).

A file written there is uploaded with the CCCIF Media Resource API (`POST /cccif/media/upload`)
for that chat user, whatever else the mount shows (the same attachment listed under
`/sys_cs_media/...` is another inode, written through the Attachment API). The directory name
is the `user_id` (any string, as the API allows), escaped as file names are (`snfs.names`: a
`/` shows as `／`). The API's 201 answer (`attachmentId`) is the proof of storage; the API
cannot list, so the directory shows the files uploaded through this mount (write-only listing),
and their `state` (pending at upload) is refreshed from the attachment's record each time the
directory is listed again, where the attachment's ACL lets the user read it. They are read
through the upload's `mediaUrl` (readable by the uploader; after a restart, through the
Attachment API by attachmentId) and deleted through the Attachment API. No rename, no
discovery, and no look-up of an upload in doubt. `provider_application_id` is sent when the
mount option `cccif_provider_application_id` gives one (the API's default: the VA Bot to Bot
application).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Collection
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from snfs import names, transfer
from snfs.backend import Backend, Capabilities, RemoteFile, Stats, XattrKeys
from snfs.backends.servicenow.client import AttachmentClient
from snfs.errors import Forbidden, NotFound, SnfsError, Unsupported
from snfs.transfer import Sink

log = logging.getLogger("snfs.backends.cccif")

TABLE = ".cccif"
CAPS = Capabilities(list=False, read=True, create=True, delete=True, rename=False, discover=False)
READ_ONLY_TO_US = Capabilities(
    list=False, read=True, create=True, delete=False, rename=False, discover=False
)
FINAL_STATES = frozenset({"available", "not available"})  # the documented values that stay


def user_id_of(record: str) -> str:
    """The chat `user_id` a `/.cccif/<record>/` directory stands for (its escaped name)."""
    return names.decode(record)


class CccifBackend(Backend):
    """The `.cccif` table over a ServiceNow client it shares (and does not close)."""

    name = "servicenow"
    xattr_keys = XattrKeys("sys_id", "table", "table_sys_id")

    def __init__(
        self, client: AttachmentClient, *, provider_application_id: str | None = None
    ) -> None:
        self.client = client
        self.provider_application_id = provider_application_id or None
        self.base_url = client.config.base_url
        self.instance_key = self.base_url
        # What this process uploaded, per directory: the files whose `state` can be refreshed.
        self._mine: dict[str, dict[str, RemoteFile]] = {}
        # Whether this user may read (and so delete) CCCIF media through the Attachment API:
        # learnt at the first upload. A chat bot's user often may not (sys_cs_media ACL); then
        # unlink and overwrite give EPERM at once, instead of a 404 taken for "already gone"
        # that would leave the old file on the instance.
        self.manageable: bool | None = None

    @property
    def stats(self) -> Stats:
        return self.client.stats

    @property
    def supports_range(self) -> bool | None:
        return self.client.supports_range

    def capabilities(self, table: str) -> Capabilities:
        return READ_ONLY_TO_US if self.manageable is False else CAPS

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
        """Any user id (the API: "any string that is unique for each user") that a directory
        name can hold once escaped."""
        if not name or name in (".", "..") or "/" in name or "\0" in name:
            return False
        return len(name.encode("utf-8", "surrogateescape")) <= names.NAME_MAX

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
        """Not a listing (capability `list` is off): the files uploaded here in this process,
        their `state` refreshed from the Attachment API while it is not final."""
        mine = self._mine.get(record, {})
        for f in list(mine.values()):
            if f.state not in FINAL_STATES and self.manageable is not False:
                await self._refresh(record, f)
        return list(mine.values())

    async def _refresh(self, record: str, f: RemoteFile) -> None:
        """The file's `state` from its attachment record; learns whether this user may read
        (and so delete) CCCIF media at all."""
        try:
            row = await self.client.get(f.sys_id)
        except (NotFound, Forbidden) as e:
            # An ACL may hide sys_cs_media from a chat bot's user: the 201 stays the truth.
            if self.manageable is None:
                log.info(
                    "CCCIF media cannot be read back through the Attachment API (%s): files "
                    "under /%s/ can be written and read, not deleted or replaced (EPERM)",
                    e.message,
                    TABLE,
                )
            self.manageable = False
            return
        except SnfsError as e:  # not an answer about this user's rights: the next listing asks
            log.debug("state of CCCIF media %s not refreshed: %s", f.sys_id, e.message)
            return
        self.manageable = True
        mine = self._mine.get(record, {})
        if f.sys_id in mine and row.state:
            mine[f.sys_id] = replace(f, state=row.state, extra={**f.extra, "state": row.state})

    def _media_url(self, file_id: str) -> tuple[str, int | None]:
        """The `mediaUrl` the upload answered and the size, where this process knows them (the
        uploader may not read `sys_cs_media` through the Attachment API)."""
        mine = next((m[file_id] for m in self._mine.values() if file_id in m), None)
        return (mine.extra.get("media_url", ""), mine.size_bytes) if mine else ("", None)

    def stream(
        self, file_id: str, *, offset: int = 0, like: RemoteFile | None = None
    ) -> AsyncIterator[bytes]:
        """Through the `mediaUrl` where known; else by sys_id."""
        media_url, size = self._media_url(file_id)
        if media_url:
            return self.client.stream_media(media_url, offset=offset, expected_size=size)
        return self.client.stream(file_id, offset=offset, like=like)

    async def stream_into(
        self, file_id: str, sink: Sink, *, offset: int = 0, like: RemoteFile | None = None
    ) -> None:
        media_url, size = self._media_url(file_id)
        if media_url:
            stream = self.client.stream_media(media_url, offset=offset, expected_size=size)
            await transfer.feed(stream, sink, offset)
            return
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
        att = await self.client.cccif_upload(
            user_id_of(record),
            file_name,
            source,
            size=size,
            provider_application_id=self.provider_application_id,
        )
        # Shown where it was written, whatever record the instance filed it under.
        shown = replace(att, table_name=TABLE, table_sys_id=record)
        self._mine.setdefault(record, {})[shown.sys_id] = shown
        if self.manageable is None:  # once: may this user delete what it uploads?
            await self._refresh(record, shown)
        return self._mine[record].get(shown.sys_id, shown)

    async def delete(self, file_id: str, *, missing_ok: bool = False) -> None:
        await self.client.delete(file_id, missing_ok=missing_ok)
        for mine in self._mine.values():
            mine.pop(file_id, None)

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
