"""Cross-file prefetch: fetch the next small files of a directory ahead of a reader.

`cat dir/*`, `grep -r`, `tar c`, `cp -r` out of the mount and a file manager's thumbnails open
the files of a record directory one after another. Over a WAN each open then costs a full round
trip before the next one starts. When a second, different file of the same directory is opened
within `window_s` of the first, this module assumes such a walk and asks the content cache to
load the next `depth` files (in listing order, smallest first) in the background, so the walk
finds them in memory.

Bounds: only files small enough for the memory cache are prefetched, the cache refuses a
prefetch once its prefetched-but-unread bytes reach a quarter of the memory budget, and at most
`depth` files per directory are asked for at a time. A single open (a thumbnailer, `file`,
`head`) never triggers anything. `depth` 0 turns the whole module off.

The kernel-facing side (`opened`) never blocks and never raises: it drops a notice when the
queue is full. The worker (`run`) lives in the mount's nursery.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

log = logging.getLogger("snfs.prefetch")

MAX_DIRS = 64  # directories whose walk we remember (LRU); a walk is short-lived
QUEUE = 256  # open notices waiting for the worker; more are dropped (prefetch is a hint)


class File(Protocol):
    """What prefetch needs of a remote file (snfs.backend's file description has these)."""

    sys_id: str
    table_name: str
    table_sys_id: str
    size_bytes: int


class Loader(Protocol):
    def prefetch(self, sys_id: str, size: int) -> bool:
        """Start loading a file in the background; False when the cache will take no more."""


Siblings = Callable[[File], Awaitable[list[File]]]


@dataclass
class _Walk:
    last: str  # sys_id of the last file opened in this directory
    at: float  # when
    opened: set[str] = field(default_factory=set)


class Prefetcher:
    def __init__(
        self, loader: Loader, siblings: Siblings, *, depth: int, window_s: float = 5.0
    ) -> None:
        self._loader = loader
        self._siblings = siblings
        self.depth = depth
        self._window = window_s
        self._walks: OrderedDict[tuple[str, str], _Walk] = OrderedDict()
        self._send, self._receive = trio.open_memory_channel[tuple[File, float]](QUEUE)
        self.asked = 0  # files handed to the cache (stats)

    def opened(self, f: File) -> None:
        """A file was opened for reading (called from the FUSE handler: never blocks)."""
        if self.depth <= 0:
            return
        try:
            self._send.send_nowait((f, trio.current_time()))
        except trio.WouldBlock:
            pass  # a hint only: losing one costs a round trip, never correctness

    async def run(self) -> None:
        async with self._receive:
            async for f, at in self._receive:
                try:
                    await self._handle(f, at)
                except Exception:  # a hint must never end the mount
                    log.exception("prefetch after opening %s failed", f.sys_id)

    async def _handle(self, f: File, at: float) -> None:
        if not self._is_walk(f, at):
            return
        walk = self._walks[(f.table_name, f.table_sys_id)]
        siblings = await self._siblings(f)
        ids = [s.sys_id for s in siblings]
        start = ids.index(f.sys_id) + 1 if f.sys_id in ids else 0
        ahead = [s for s in siblings[start:] if s.sys_id not in walk.opened][: self.depth]
        for s in sorted(ahead, key=lambda s: s.size_bytes):  # small first: done soonest
            if not self._loader.prefetch(s.sys_id, s.size_bytes):
                break
            self.asked += 1

    def _is_walk(self, f: File, now: float) -> bool:
        """Record the open at `now`; True when it is the second (or later) file of a walk."""
        key = (f.table_name, f.table_sys_id)
        walk = self._walks.pop(key, None)
        if walk is None or now - walk.at > self._window:
            walk = _Walk(f.sys_id, now)  # a new walk (or the first open of one)
        is_walk = walk.last != f.sys_id
        walk.last, walk.at = f.sys_id, now
        walk.opened.add(f.sys_id)
        self._walks[key] = walk
        while len(self._walks) > MAX_DIRS:
            self._walks.popitem(last=False)
        return is_walk
