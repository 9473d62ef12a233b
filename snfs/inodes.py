"""Inode numbers: one per thing shown, stable for the life of the mount, with kernel lookup counts.

Keys say what an inode stands for: `("table", name)`, `("record", table, sys_id)`,
`("alias", table, number)`, `file_key(table, attachment_sys_id)`, `("local", n)` for staged files,
`("scopes", table)` for `/<table>/.query` and `("scope", table, query)` for a scoped view.
A file inode is keyed by its attachment's sys_id, whose content never changes, which is what
makes long kernel cache timeouts and `keep_cache` safe. One file can be shown under two tables
by two APIs of one system (a chat media upload under its routed pseudo-table and under the
record the instance filed it under): each path is then its own inode, so a write goes through
the API of the path it was opened by (`file_key`). Numbers are never reused.

The kernel keeps an inode for every entry a readdirplus returned until memory pressure evicts
it: a `find` over 250,000 files leaves 250,000 of them. So only the `KEEP` most recently used
file and record nodes are kept whole; older ones the kernel still holds are *parked*: only
their number and key stay, and the node is built again from its key (`resolve`, set by the
tree: a record from its key, a file from the listing or the metadata index) when the kernel
asks for it. A node held open (`busy`) or pinned is never parked. The kernel forgets an
inode's references all at once when it evicts it, so a parked node comes back with one.
"""

from __future__ import annotations

import itertools
import re
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import pyfuse3


def file_key(table: str, sys_id: str) -> tuple[str, ...]:
    """The key of the inode of attachment `sys_id` shown under `table`: `("file", sys_id)` under
    a table of the system's own API (the common case, stored compactly when parked), and
    `("file", table, sys_id)` under a router's pseudo-table (a name starting with `.`, which no
    system's table has), which shows another table's attachments through another API."""
    return ("file", table, sys_id) if table.startswith(".") else ("file", sys_id)


class Kind(Enum):
    ROOT = "root"
    TABLE = "table"
    RECORD = "record"
    ALIAS = "alias"  # /<table>/<number> -> <sys_id>
    FILE = "file"  # an attachment on the instance
    LOCAL = "local"  # a staged file that exists only on local disk (write side)
    CONTROL = "control"  # /.snfs and the files in it
    SCOPES = "scopes"  # /<table>/.query: ad-hoc scopes by name (a TABLE node with data=query)


@dataclass(eq=False, slots=True)  # slots: one per record the kernel holds, 80,000 and more
class Node:
    ino: int
    kind: Kind
    key: Hashable
    table: str = ""
    record: str = ""  # record sys_id (RECORD, FILE, LOCAL)
    data: Any = None  # Attachment for FILE, target for ALIAS, staging state for LOCAL
    nlookup: int = field(default=0)
    busy: int = field(default=0)  # open handles: never parked while > 0


# File and record nodes kept whole; the rest the kernel holds are parked (see above).
KEEP = 5_000
Resolve = Callable[[Hashable], Node | None]


_HEX_ID = re.compile(r"[0-9a-f]{32}")


def _short(key: Hashable) -> Hashable:
    """How a key is stored: a file's `("file", sys_id)` as its sys_id alone (no other key is
    a bare string or number), and an id of 32 lowercase hex digits (the usual shape) as the number
    it spells (44 bytes, not 81): 250,000 files a walk leaves cost 25 MiB less."""
    if type(key) is tuple and len(key) == 2 and key[0] == "file":
        sys_id = key[1]
        return int(sys_id, 16) if _HEX_ID.fullmatch(sys_id) else sys_id
    return key


def _long(stored: Hashable) -> Hashable:
    if type(stored) is int:
        return ("file", f"{stored:032x}")
    return ("file", stored) if type(stored) is str else stored


class Inodes:
    def __init__(self, keep: int = KEEP) -> None:
        self._next = itertools.count(pyfuse3.ROOT_INODE + 1)
        self._by_ino: dict[int, Node] = {}
        self._by_key: dict[Hashable, int] = {}
        self.root = Node(pyfuse3.ROOT_INODE, Kind.ROOT, ("root",))
        self._by_ino[self.root.ino] = self.root
        self._by_key[_short(self.root.key)] = self.root.ino
        self.keep = keep
        # Files are parked only where they can be built again from an id (a metadata index).
        self.park_files = False
        self._recent: OrderedDict[int, Hashable] = OrderedDict()  # parkable nodes, oldest first
        self._parked: dict[int, Hashable] = {}  # ino -> short key, held by the kernel
        # Builds a parked node again from its key (with nlookup 0), or None if it is gone.
        self.resolve: Resolve = lambda key: None

    def get(self, ino: int) -> Node | None:
        node = self._by_ino.get(ino)
        if node is None and ino in self._parked:
            return self._unpark(ino)
        return node

    def by_key(self, key: Hashable) -> Node | None:
        ino = self._by_key.get(_short(key))
        return None if ino is None else self.get(ino)

    def whole(self, key: Hashable) -> Node | None:
        """The node for `key` if it is kept whole (not parked): never builds one."""
        ino = self._by_key.get(_short(key))
        return None if ino is None else self._by_ino.get(ino)

    def ensure(self, key: Hashable, kind: Kind, **fields: Any) -> Node:
        """The node for `key`, created on first sight; `fields` refresh its data."""
        short = _short(key)
        ino = self._by_key.get(short)
        node = None if ino is None else self._by_ino.get(ino)
        if node is None:
            held = ino is not None and self._parked.pop(ino, None) is not None
            ino = ino or next(self._next)
            node = Node(ino, kind, key, **fields)
            node.nlookup = 1 if held else 0
            self._by_ino[ino] = node
            self._by_key[short] = ino
        else:
            for name, value in fields.items():
                setattr(node, name, value)
        self._used(node, short)
        return node

    # -- parking -------------------------------------------------------------------------------

    def _parkable(self, node: Node) -> bool:
        if node.busy:
            return False
        if node.kind is Kind.FILE:
            return self.park_files and not bool(getattr(node.data, "pinned", False))
        return node.kind is Kind.RECORD

    def _used(self, node: Node, short: Hashable = None) -> None:
        """`short`: the node's stored key, if at hand. `_recent` keeps it, so that a parked
        node shares its key object with `_by_key` (an equal copy would cost 44 bytes more)."""
        if node.kind not in (Kind.FILE, Kind.RECORD):
            return
        if node.ino in self._recent:
            self._recent.move_to_end(node.ino)
        else:
            self._recent[node.ino] = _short(node.key) if short is None else short
        while len(self._recent) > self.keep:
            ino, stored = self._recent.popitem(last=False)
            old = self._by_ino.get(ino)
            if old is None or not self._parkable(old):
                continue
            del self._by_ino[ino]
            if old.nlookup > 0:
                self._parked[ino] = stored

    def _unpark(self, ino: int) -> Node | None:
        stored = self._parked.pop(ino)
        key = _long(stored)
        node = self.resolve(key)
        if node is None:  # gone meanwhile: the kernel gets ENOENT and drops it
            return None
        node.ino, node.key, node.nlookup = ino, key, 1
        self._by_ino[ino] = node
        self._used(node, stored)
        return node

    def rekey(self, node: Node, key: Hashable, kind: Kind, data: Any) -> None:
        """The same inode now stands for something else (a staged file became an attachment,
        an attachment is being replaced); its number stays, the old key gets a new one."""
        if self._by_key.get(_short(node.key)) == node.ino:
            del self._by_key[_short(node.key)]
        self._parked.pop(node.ino, None)
        stale = self._by_key.get(_short(key))
        if stale is not None and stale != node.ino:
            self._by_ino.pop(stale, None)
        node.key, node.kind, node.data = key, kind, data
        short = _short(key)
        self._by_key[short] = node.ino
        self._by_ino[node.ino] = node
        if node.ino in self._recent:  # parked later under its new key
            self._recent[node.ino] = short

    def looked_up(self, node: Node) -> None:
        """The kernel now holds one more reference (lookup, create, mkdir, readdirplus entry)."""
        node.nlookup += 1
        if node.ino not in self._by_ino:  # let go while unreferenced (a long directory's
            self._parked.pop(node.ino, None)  # entries are made before they are replied)
            self._by_ino[node.ino] = node
            self._used(node)

    def forget(self, ino: int, count: int) -> None:
        """The kernel dropped `count` references. The node's data may go; its number stays
        reserved for its key, so a later lookup of the same sys_id gets the same inode."""
        if self._parked.pop(ino, None) is not None:
            return  # evicted by the kernel: its references go all at once
        node = self._by_ino.get(ino)
        if node is None or ino == pyfuse3.ROOT_INODE:
            return
        node.nlookup = max(0, node.nlookup - count)
        if node.nlookup == 0 and self._disposable(node):
            del self._by_ino[ino]

    @staticmethod
    def _disposable(node: Node) -> bool:
        """Nodes rebuilt from a listing on the next lookup: free once the kernel forgot them,
        so memory follows what the kernel holds, not every record ever listed."""
        if node.kind in (Kind.FILE, Kind.ALIAS):
            return not bool(getattr(node.data, "pinned", False))
        if node.kind is Kind.TABLE:
            return isinstance(node.key, tuple) and node.key[0] == "scope"
        return node.kind in (Kind.RECORD, Kind.SCOPES)

    def drop(self, node: Node) -> None:
        """The thing is gone (deleted); keep the node only while the kernel still refers to it."""
        self._parked.pop(node.ino, None)
        if node.nlookup == 0 and node.ino != pyfuse3.ROOT_INODE:
            self._by_ino.pop(node.ino, None)

    def __len__(self) -> int:
        return len(self._by_ino) + len(self._parked)
