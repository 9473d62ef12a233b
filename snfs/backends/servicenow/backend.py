"""ServiceNow: the Attachment API (every table); CCCIF media uploads under `/.cccif/`.

Tables are ServiceNow tables, records are sys_ids (numbers such as INC0010001 are aliases),
files are sys_attachment rows. The mounted backend is a `Router` that sends `/.cccif/...` to
`snfs.backends.servicenow.cccif` (the CCCIF Media Resource API) and everything else here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Collection
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, cast

from snfs import __version__
from snfs.backend import FULL, Backend, Capabilities, RecordIds, RemoteFile, XattrKeys
from snfs.backends.router import Router
from snfs.backends.servicenow import pager, query
from snfs.backends.servicenow.cccif import TABLE as CCCIF
from snfs.backends.servicenow.cccif import CccifBackend
from snfs.backends.servicenow.client import (
    Attachment,
    AttachmentClient,
    ClientConfig,
    ClientStats,
    normalize_instance_url,
)
from snfs.credentials import build_auth
from snfs.errors import ConfigError, InvalidInput, SnfsError
from snfs.option_schema import BOOL, STR, Kind, Option
from snfs.registry import System
from snfs.transfer import Sink

if TYPE_CHECKING:
    from snfs.options import MountOptions

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
# Attachments of image/video fields: the field holds the attachment's sys_id, so a file
# created there would be an orphan no field points at, and a delete would break the field.
IMAGE_FIELD_CAPS = Capabilities(create=False, delete=False, rename=False)
RECENT = 1000  # attachments the root listing's fallback looks at
log = logging.getLogger("snfs.servicenow")


class ServiceNowBackend(Backend):
    name = "servicenow"
    xattr_keys = XattrKeys("sys_id", "table", "table_sys_id")

    def __init__(
        self,
        client: AttachmentClient,
        *,
        scopes: dict[str, str] | None = None,
        numbers: bool = False,
    ) -> None:
        self.client = client
        self.base_url = client.config.base_url
        self.instance_key = self.base_url  # the first system: its spools predate the prefix
        self.scopes = dict(scopes or {})  # table -> encoded query listed instead of all
        self._numbers = numbers  # list each record's number next to its sys_id
        for table, scope in self.scopes.items():
            if not self.valid_table_name(table):
                raise ConfigError(f"--scope: {table!r} is not a table name")
            try:
                query.validate_scope(scope)
            except InvalidInput as e:
                raise ConfigError(f"--scope {table}: {e}") from None
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
        fetch = self._fetcher("sys_attachment", page_size, ATTACHMENT_FIELDS)
        return self._attachment_pages(table, fetch, None, page_size)

    # -- large tables: parallel keyset pagers, scopes, numbers (docs/PERFORMANCE.md) -------------

    def groups_by_record(self, table: str) -> bool:
        """`list_table_parts` pages come grouped by record (a record is complete once passed)."""
        return True

    def can_scope(self, table: str) -> bool:
        return True

    def default_scope(self, table: str) -> str | None:
        return self.scopes.get(table)

    def scope_from_name(self, table: str, name: str) -> str:
        """A `.query/<name>` directory name to the encoded query it stands for."""
        return query.decode_scope_name(name)

    async def list_table_parts(
        self,
        table: str,
        *,
        page_size: int = 1000,
        parts: int = 1,
        full_rows: int | None = None,
    ) -> AsyncIterator[AsyncIterator[list[RemoteFile]]]:
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
    ) -> AsyncIterator[list[RemoteFile]]:
        base = query.attachments_of_table_by_record(table)
        pages = pager.keyset_pages(fetch, base, "table_sys_id", page_size=page_size, span=span)
        async for rows in pages:
            if all("file_name" in r for r in rows):
                yield [a for a in map(Attachment.from_json, rows) if a.sys_id]
            else:
                ids = RecordIds(dict.fromkeys(str(r.get("table_sys_id") or "") for r in rows))
                yield cast(list[RemoteFile], ids)

    def _fetcher(self, table: str, page_size: int, fields: tuple[str, ...]) -> pager.Fetch:
        async def fetch(text: str, offset: int, count: bool) -> tuple[list[pager.Row], int | None]:
            return await self.client.list_rows(
                table, text, offset=offset, limit=page_size, fields=fields, count=count
            )

        return fetch

    async def list_scoped(
        self, table: str, scope: str, *, page_size: int = 1000
    ) -> AsyncIterator[AsyncIterator[list[RemoteFile]]]:
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
    ) -> AsyncIterator[list[RemoteFile]]:
        atts = await self.client.list_all(
            query.attachments_of_records(table, ids), page_size=page_size
        )
        if atts:
            yield [*atts]

    def lists_changes(self, table: str) -> bool:
        """`list_changed` works for `table` (every table has `sys_updated_on`)."""
        return True

    async def list_changed(
        self, table: str, since: datetime, *, page_size: int = 1000
    ) -> AsyncIterator[list[RemoteFile]]:
        """Attachments of `table` created or changed at or after `since` (`sys_updated_on>=`),
        by keyset pages grouped by record: what a metadata index needs to catch up."""
        base = query.all_of(
            query.attachments_of_table_by_record(table),
            query.term("sys_updated_on", ">=", since.strftime("%Y-%m-%d %H:%M:%S")),
        )
        fetch = self._fetcher("sys_attachment", page_size, ATTACHMENT_FIELDS)
        pages = pager.keyset_pages(fetch, base, "table_sys_id", page_size=page_size)
        async for rows in pages:
            yield [a for a in map(Attachment.from_json, rows) if a.sys_id]

    def batches_records(self, table: str) -> bool:
        return True

    async def list_records(self, table: str, records: list[str]) -> list[RemoteFile]:
        """Every attachment of a batch of records (`table_sys_idIN...`, ID_BATCH ids a
        request): fills record directories a listing showed without their rows."""
        out: list[RemoteFile] = []
        ids = [r for r in records if query.is_sys_id(r)]
        for i in range(0, len(ids), ID_BATCH):
            out += await self.client.list_all(
                query.attachments_of_records(table, ids[i : i + ID_BATCH])
            )
        return out

    def lists_numbers(self, table: str) -> bool:
        return self._numbers

    async def numbers(self, table: str, sys_ids: list[str]) -> dict[str, str]:
        """sys_id -> number for records of `table` (Table API, `sys_idIN`, one request per
        ID_BATCH ids); records without a number are left out."""
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

    async def list_record(self, table: str, record: str) -> list[RemoteFile]:
        return [*await self.client.list_all(query.attachments_of_record(table, record))]

    # -- content ---------------------------------------------------------------------------------

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
    mine = o.backend_options
    config = client_config(o, url)
    config.gzip_always = bool(mine.get("gzip_always"))
    client = AttachmentClient(config)
    backend = ServiceNowBackend(
        client, scopes=dict(mine.get("scope") or []), numbers=bool(mine.get("numbers"))
    )
    app_id = mine.get("cccif_provider_application_id") or None
    if app_id is not None and not query.is_sys_id(app_id):
        raise ConfigError(f"cccif_provider_application_id {app_id!r} is not a sys_id")
    cccif = CccifBackend(client, provider_application_id=app_id)
    return Router(backend, {CCCIF: cccif})


def _scope_pair(text: str) -> tuple[str, str]:
    table, sep, scope = text.partition("=")
    if not sep or not table.strip() or not scope.strip():
        raise ConfigError(f"--scope {text!r}: expected TABLE=ENCODED_QUERY")
    return table.strip(), scope.strip()


def _check_scopes(v: object, where: str) -> list[tuple[str, str]]:
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ConfigError(f'{where}: must be a list such as ["incident=active=true"]')
    return [_scope_pair(i) for i in items]


# Repeatable `--scope TABLE=QUERY`: the values collect into a list of (table, query).
SCOPES = Kind("scopes", _check_scopes, parse=_scope_pair, append=True)


SYSTEM = System(
    name="servicenow",
    summary="ServiceNow Attachment API; CCCIF media under /.cccif/",
    url="dev12345, https://acme.service-now.com",
    capabilities=FULL,
    build=build,
    options=(
        Option(
            "scope",
            SCOPES,
            [],
            "list only TABLE's records matching the encoded QUERY (repeatable)",
            metavar="TABLE=QUERY",
        ),
        Option(
            "numbers",
            BOOL,
            False,
            "list each record's number (INC0012345) as a symlink next to its sys_id",
        ),
        Option(
            "cccif_provider_application_id",
            STR,
            None,
            "CCCIF uploads under /.cccif/: the sys_id of the sys_cs_provider_application to "
            "send (default: the instance's VA Bot to Bot Provider Application)",
            metavar="SYS_ID",
        ),
        Option(
            "gzip_always",
            BOOL,
            False,
            "ask for gzip for every download, not only text-like files (for an instance that "
            "serves its stored compressed copy cheaper than the plain bytes)",
        ),
    ),
)
