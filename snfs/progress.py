"""Transfers in flight, for `snfs status`: each download and upload with its bytes done of its
total, as they move.

Downloads are counted as their bytes reach the content cache (`Transfers.download`, which
`snfs.mount` puts between the cache and the backend). Uploads are counted as their body is
handed to the connection: `Transfers.upload` marks the running task's upload
(`current_upload`, a context variable), and the HTTP core counts the request body it sends
in that task (`counted`); an attempt sent again starts again at 0.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterator, Sequence
from contextlib import aclosing, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from snfs.transfer import Buffer, Sink


@dataclass
class Transfer:
    kind: str  # "download" or "upload"
    path: str  # table/record/file name, as the mount shows it
    total: int | None  # bytes, when known
    done: int = 0
    started: float = field(default_factory=time.monotonic)

    def as_dict(self, now: float) -> dict[str, Any]:
        done = self.done if self.total is None else min(self.done, self.total)
        return {
            "kind": self.kind,
            "path": self.path,
            "bytes_done": done,
            "bytes_total": self.total,
            "seconds": round(now - self.started, 1),
        }


# The upload whose request body the running task sends (set by `Transfers.upload`).
current_upload: ContextVar[Transfer | None] = ContextVar("snfs_current_upload", default=None)


def counted(body: AsyncIterable[bytes]) -> AsyncIterable[bytes]:
    """`body`, counted into the running task's upload when there is one (the HTTP core wraps
    every request body it sends with this)."""
    transfer = current_upload.get()
    if transfer is None:
        return body
    return _count(body, transfer)


async def _count(body: AsyncIterable[bytes], transfer: Transfer) -> AsyncIterator[bytes]:
    transfer.done = 0  # each attempt sends the whole body again
    async for chunk in body:
        transfer.done += len(chunk)
        yield chunk


class _CountingSink:
    """A worker's sink that counts what it puts (in the worker thread: one int add per batch,
    read by `snfs status` on the event loop)."""

    def __init__(self, sink: Sink, transfer: Transfer) -> None:
        self._sink, self._transfer = sink, transfer

    def urgent(self, ahead: int) -> bool:
        return self._sink.urgent(ahead)

    def put(self, pieces: Sequence[Buffer]) -> None:
        self._sink.put(pieces)
        self._transfer.done += sum(map(len, pieces))


class Transfers:
    def __init__(self) -> None:
        self._live: dict[int, Transfer] = {}
        self._ids = itertools.count()

    @contextmanager
    def track(self, kind: str, path: str, total: int | None) -> Iterator[Transfer]:
        key = next(self._ids)
        transfer = self._live[key] = Transfer(kind, path, total)
        try:
            yield transfer
        finally:
            del self._live[key]

    @contextmanager
    def upload(self, path: str, total: int | None) -> Iterator[Transfer]:
        """Around one upload call: its request bodies are counted into it."""
        with self.track("upload", path, total) as transfer:
            token = current_upload.set(transfer)
            try:
                yield transfer
            finally:
                current_upload.reset(token)

    async def download(
        self, stream: AsyncIterator[bytes], path: str, total: int | None, offset: int
    ) -> AsyncIterator[bytes]:
        """`stream` (a download from `offset` on), counted while it runs."""
        with self.track("download", path, total) as transfer:
            transfer.done = offset
            async with aclosing(stream) as chunks:  # type: ignore[type-var]
                async for chunk in chunks:
                    transfer.done += len(chunk)
                    yield chunk

    @contextmanager
    def counting(self, sink: Sink, path: str, total: int | None, offset: int) -> Iterator[Sink]:
        """`sink` (a download's worker path from `offset` on), counted while it runs."""
        with self.track("download", path, total) as transfer:
            transfer.done = offset
            yield _CountingSink(sink, transfer)

    def as_list(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [t.as_dict(now) for t in self._live.values()]
