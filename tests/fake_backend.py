"""An in-memory backend for kernel-free tests of the write path (tests/test_writes_core.py).

The emulator is the real thing for end-to-end tests; this fake exists only for what the
emulator cannot do on demand and deterministically: hold an upload at an exact point (gated
by a trio Event), hang it, fail it, or store it and then answer with an error (an upload in
doubt). Every hook is one-shot or counted, so a test says exactly which request misbehaves.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import trio

from snfs import transfer
from snfs.backend import FULL, Capabilities, OptionalFeatures, XattrKeys
from snfs.backend import RemoteFile as Attachment
from snfs.errors import NotFound, ServerError, SnfsError, Unsupported
from snfs.transfer import Sink


@dataclass
class Stats:
    uploads: int = 0
    deletes: int = 0
    lookups: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"uploads": self.uploads, "deletes": self.deletes, "lookups": self.lookups}


@dataclass
class Hold:
    """Hold the next upload: `started` is set when it arrives, it waits for `release`."""

    started: trio.Event = field(default_factory=trio.Event)
    release: trio.Event = field(default_factory=trio.Event)
    # Store the file first, then hold: the answer is lost if the daemon dies meanwhile.
    store_first: bool = False


class FakeBackend(OptionalFeatures):
    name = "servicenow"
    base_url = "https://fake.example.com"
    instance_key = base_url
    xattr_keys = XattrKeys("sys_id", "table", "table_sys_id")

    def __init__(self, *, hashes: bool = True) -> None:
        self.stats = Stats()
        self.files: dict[str, tuple[Attachment, bytes]] = {}
        self.hashes = hashes  # False: like EasyVista, the listing carries no hash
        self._ids = itertools.count(1)
        # Fault hooks, consumed in order by the next uploads.
        self.fail_uploads: list[SnfsError] = []
        self.in_doubt_uploads = 0  # store, then answer with an error
        # Answer the next upload with this existing attachment, storing nothing (a wrong 2xx
        # body, e.g. an answer that names the attachment being replaced).
        self.answer_with: Attachment | None = None
        self.hold: Hold | None = None
        self.hang_uploads = 0  # never answer (until cancelled)
        self.fail_deletes: list[SnfsError] = []
        self.fail_lookups: list[SnfsError] = []
        # Uploads the instance acts on late (a dead sender's request left in its queue): each
        # is stored right after a look-up has missed it. (table, record, name, data)
        self.store_after_lookup: list[tuple[str, str, str, bytes]] = []
        self.fail_lists: list[SnfsError] = []
        self.fail_streams: list[SnfsError] = []
        self.stream_gate: trio.Event | None = None  # downloads wait for it
        self.upload_gate: trio.Event | None = None  # every upload waits for it (write-back)
        self.in_flight = 0  # uploads running now
        self.peak_in_flight = 0
        self.sent: list[tuple[str, bytes]] = []  # (name, content) of each upload, in order
        # False: like an instance without PATCH (the emulator's default release), rename
        # answers Unsupported and the core renames by a journaled copy.
        self.rename_supported = True
        self.wall: Callable[[], float] = time.time  # creation times (a test's virtual clock)
        self.fail_renames: list[SnfsError] = []

    # -- inspection ------------------------------------------------------------------------------

    def on_instance(self, record: str) -> dict[str, list[bytes]]:
        out: dict[str, list[bytes]] = {}
        for att, data in self.files.values():
            if att.table_sys_id == record:
                out.setdefault(att.file_name, []).append(data)
        return out

    def put(self, table: str, record: str, name: str, data: bytes) -> Attachment:
        """An attachment that exists on the instance before the test starts."""
        now = datetime.fromtimestamp(self.wall(), UTC)
        att = Attachment(
            sys_id=f"{next(self._ids):032x}",
            table_name=table,
            table_sys_id=record,
            file_name=name,
            size_bytes=len(data),
            content_type="application/octet-stream",
            created_on=now,
            updated_on=now,
            created_by="test",
            hash=hashlib.sha256(data).hexdigest() if self.hashes else "",
            download_link="",
            state="available",
        )
        self.files[att.sys_id] = (att, data)
        return att

    # -- the Backend protocol --------------------------------------------------------------------

    @property
    def supports_range(self) -> bool | None:
        return True

    def capabilities(self, table: str) -> Capabilities:
        return FULL

    async def check(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def tables(self) -> list[str]:
        return sorted({a.table_name for a, _ in self.files.values()})

    def valid_table_name(self, table: str) -> bool:
        return True

    async def table_exists(self, table: str) -> bool:
        return True

    def valid_record_name(self, table: str, name: str) -> bool:
        return len(name) == 32

    async def record_exists(self, table: str, record: str) -> bool:
        return True

    async def find_record(self, table: str, alias: str) -> str | None:
        return None

    async def list_table(
        self, table: str, *, page_size: int = 1000
    ) -> AsyncIterator[list[Attachment]]:
        yield [a for a, _ in self.files.values() if a.table_name == table]

    async def list_record(self, table: str, record: str) -> list[Attachment]:
        await trio.lowlevel.checkpoint()
        if self.fail_lists:
            raise self.fail_lists.pop(0)
        return [
            a for a, _ in self.files.values() if a.table_name == table and a.table_sys_id == record
        ]

    async def stream_into(
        self, file_id: str, sink: Sink, *, offset: int = 0, like: Attachment | None = None
    ) -> None:
        await transfer.feed(self.stream(file_id, offset=offset), sink, offset)

    async def stream(
        self, file_id: str, *, offset: int = 0, like: Attachment | None = None
    ) -> AsyncIterator[bytes]:
        if self.stream_gate is not None:
            await self.stream_gate.wait()
        if self.fail_streams:
            raise self.fail_streams.pop(0)
        if file_id not in self.files:
            raise NotFound(f"no {file_id}")
        yield self.files[file_id][1][offset:]

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
        self.stats.uploads += 1
        data = await trio.Path(source).read_bytes()
        assert len(data) == size
        self.sent.append((file_name, data))
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            return await self._upload(table, record, file_name, data)
        finally:
            self.in_flight -= 1

    async def _upload(self, table: str, record: str, file_name: str, data: bytes) -> Attachment:
        if self.upload_gate is not None:
            await self.upload_gate.wait()
        if self.hold is not None:
            hold, self.hold = self.hold, None
            if hold.store_first:
                att = self.put(table, record, file_name, data)
                hold.started.set()
                await hold.release.wait()
                return att
            hold.started.set()
            await hold.release.wait()
        if self.hang_uploads:
            self.hang_uploads -= 1
            await trio.sleep_forever()
        if self.fail_uploads:
            raise self.fail_uploads.pop(0)
        await trio.lowlevel.checkpoint()
        if self.answer_with is not None:
            answer, self.answer_with = self.answer_with, None
            return answer
        att = self.put(table, record, file_name, data)
        if self.in_doubt_uploads:
            self.in_doubt_uploads -= 1
            raise ServerError("200 with an unreadable body (in doubt)", status=200)
        return att

    async def delete(self, file_id: str, *, missing_ok: bool = False) -> None:
        self.stats.deletes += 1
        await trio.lowlevel.checkpoint()
        if self.fail_deletes:
            raise self.fail_deletes.pop(0)
        if self.files.pop(file_id, None) is None and not missing_ok:
            raise NotFound(f"no {file_id}")

    async def rename(self, file_id: str, new_name: str) -> Attachment:
        await trio.lowlevel.checkpoint()
        if not self.rename_supported:
            raise Unsupported("PATCH rename is not offered (405)")
        if self.fail_renames:
            raise self.fail_renames.pop(0)
        if file_id not in self.files:
            raise NotFound(f"no {file_id}")
        att, data = self.files[file_id]
        new = replace(att, file_name=new_name)
        self.files[file_id] = (new, data)
        return new

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
    ) -> Attachment | None:
        self.stats.lookups += 1
        await trio.lowlevel.checkpoint()
        if self.fail_lookups:
            raise self.fail_lookups.pop(0)
        for att, _ in self.files.values():
            if (
                att.sys_id not in exclude
                and (att.table_name, att.table_sys_id, att.file_name) == (table, record, file_name)
                and att.hash == sha256  # no hash (hashes=False): never a match
                and att.size_bytes == size
                and att.created_on >= since
            ):
                return att
        while self.store_after_lookup:
            self.put(*self.store_after_lookup.pop(0))
        return None
