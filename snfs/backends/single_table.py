"""What the backends with one fixed table over `snfs.http.HttpCore` share (EasyVista, Huawei).

`SingleTableBackend` holds the settings plumbing, the namespace of one table whose records
match a pattern, the argument checks and the calls these APIs do not offer (listing a table,
finding a record by alias, renaming). `FileBody` is one upload attempt's body streamed from a
file. Each system fills in its own names, paths and requests.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar

import httpx
import trio

from snfs.backend import Backend, RemoteFile, XattrKeys
from snfs.backends.common import validate_file_name
from snfs.errors import InvalidInput, Unsupported
from snfs.http import CHUNK, ErrorMapper, HttpCore, HttpSettings, HttpStats, http_error
from snfs.transfer import Sink


class SingleTableBackend(Backend):
    """Subclasses set the class attributes and implement `_file_location` and the rest of
    `snfs.backend.Backend` (capabilities, check, records, listing, upload, delete)."""

    system: ClassVar[str]  # the system's name in messages ("EasyVista")
    table: ClassVar[str]  # the one table
    record_re: ClassVar[re.Pattern[str]]
    record_word: ClassVar[str]  # what a record is called in messages
    no_list: ClassVar[str]  # why list_table is not offered
    no_rename: ClassVar[str]  # why rename is not offered
    name: str  # the registry's name
    xattr_keys: XattrKeys = XattrKeys()

    def __init__(
        self,
        base_url: str,
        api_path: str,
        auth: httpx.Auth | None,
        *,
        kinds: tuple[str, ...],
        verify: bool | str,
        timeout: float,
        max_in_flight: int,
        error_mapper: ErrorMapper = http_error,
        default_headers: dict[str, str] | None = None,
        **retry: Any,
    ) -> None:
        """`api_path` is appended to `base_url` for the core; `default_headers` go with every
        request; `retry` may set `retry_attempts`, `retry_total_seconds`, `retry_base_delay`,
        `retry_max_delay`."""
        self.base_url = base_url.rstrip("/")
        self.instance_key = f"{self.name}+{self.base_url}"
        self._stats = HttpStats(kinds=kinds)
        settings = HttpSettings(
            f"{self.base_url}{api_path}",
            timeout=timeout,
            max_in_flight=max_in_flight,
            verify=verify,
            **retry,
        )
        self.core = HttpCore(
            settings,
            auth,
            stats=self._stats,
            error_mapper=error_mapper,
            default_headers=default_headers,
        )

    @property
    def stats(self) -> HttpStats:
        return self._stats

    @property
    def supports_range(self) -> bool | None:
        return False  # neither API shows Range support: the core skips instead

    async def aclose(self) -> None:
        await self.core.aclose()

    # -- namespace -------------------------------------------------------------------------------

    async def tables(self) -> list[str]:
        return [self.table]

    def valid_table_name(self, table: str) -> bool:
        return table == self.table

    async def table_exists(self, table: str) -> bool:
        return table == self.table

    def valid_record_name(self, table: str, name: str) -> bool:
        return table == self.table and isinstance(name, str) and bool(self.record_re.match(name))

    async def find_record(self, table: str, alias: str) -> str | None:
        return None

    def list_table(self, table: str, *, page_size: int = 1000) -> AsyncIterator[list[RemoteFile]]:
        async def none() -> AsyncIterator[list[RemoteFile]]:
            raise Unsupported(self.no_list)
            yield []  # pragma: no cover

        return none()

    def _check(self, table: str, record: str) -> None:
        if table != self.table:
            raise InvalidInput(f"{self.system} has one table, {self.table!r}, not {table!r}")
        if not self.valid_record_name(table, record):
            raise InvalidInput(f"invalid {self.record_word} {record!r}")

    def _check_upload(self, table: str, record: str, file_name: str, size: int) -> None:
        self._check(table, record)
        validate_file_name(file_name)
        if size < 0:
            raise InvalidInput("size must not be negative")

    # -- content ---------------------------------------------------------------------------------

    @staticmethod
    def _attempt_bodies(
        make: Callable[[], FileBody],
    ) -> tuple[list[FileBody], Callable[[], AsyncIterator[bytes]]]:
        """(bodies, body) for `HttpCore.send`: each attempt reads the file again into a new
        body, kept in order, so the last one tells whether the content fully left."""
        bodies: list[FileBody] = []

        def body() -> AsyncIterator[bytes]:
            b = make()
            bodies.append(b)
            return b.__aiter__()

        return bodies, body

    def _file_location(self, file_id: str) -> tuple[str, int | None]:
        """The core path of a file's content and its size when known; InvalidInput for an id
        that is not one of this system's."""
        raise NotImplementedError

    def stream(
        self, file_id: str, *, offset: int = 0, like: RemoteFile | None = None
    ) -> AsyncIterator[bytes]:
        path, size = self._file_location(file_id)
        if offset < 0:
            raise InvalidInput("offset must not be negative")
        return self.core.stream("file", path, offset=offset, expected_size=size)

    async def stream_into(
        self, file_id: str, sink: Sink, *, offset: int = 0, like: RemoteFile | None = None
    ) -> None:
        path, size = self._file_location(file_id)
        if offset < 0:
            raise InvalidInput("offset must not be negative")
        await self.core.stream_into("file", path, sink, offset=offset, expected_size=size)

    async def rename(self, file_id: str, new_name: str) -> RemoteFile:
        raise Unsupported(self.no_rename)


class FileBody:
    """One attempt's body: `head`, the file's content as `encode` turns it (streamed in
    chunks of `chunk_size`), then `finish()` and `tail`. Hashes the raw content and checks it
    against the `size` announced in Content-Length."""

    chunk_size: ClassVar[int] = CHUNK

    def __init__(self, stats: HttpStats, path: Path, size: int, head: bytes, tail: bytes) -> None:
        self.stats, self.path, self.size, self.head, self.tail = stats, path, size, head, tail
        self._sha = hashlib.sha256()
        self.sent = 0
        self.complete = False  # all content read and handed to the connection

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def encode(self, chunk: bytes) -> bytes:
        return chunk

    def finish(self) -> bytes:
        """What `encode` still holds back once the content has ended."""
        return b""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.stats.bytes_out += len(self.head)
        yield self.head
        try:
            f = await trio.open_file(self.path, "rb")
        except OSError as e:
            raise InvalidInput(f"upload source {self.path}: {e.strerror}") from None
        async with f:
            while True:
                chunk = await f.read(self.chunk_size)
                if not chunk:
                    break
                self.sent += len(chunk)
                if self.sent > self.size:
                    raise InvalidInput(
                        f"upload source is larger than the {self.size} bytes announced"
                    )
                self._sha.update(chunk)
                out = self.encode(chunk)
                if out:
                    self.stats.bytes_out += len(out)
                    yield out
        if self.sent != self.size:
            raise InvalidInput(f"upload source has {self.sent} bytes, {self.size} announced")
        out = self.finish() + self.tail
        self.stats.bytes_out += len(out)
        self.complete = True
        yield out
