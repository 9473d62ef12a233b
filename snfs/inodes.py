"""Inode numbers: one per thing shown, stable for the life of the mount, with kernel lookup counts.

Keys say what an inode stands for: `("table", name)`, `("record", table, sys_id)`,
`("alias", table, number)`, `file_key(table, attachment_sys_id)`, `("local", n)` for staged files,
`("scopes", table)` for `/<table>/.query` and `("scope", table, query)` for a scoped view.
A file inode is keyed by its attachment's sys_id, whose content never changes, which is what
makes long kernel cache timeouts and `keep_cache` safe; and by the table it is shown under,
because one file can be shown under two tables by two APIs of one system (a chat media upload
under its user's directory and under the record the instance filed it under): each path is its
own inode, so a write goes through the API of the path it was opened by. Numbers are never reused.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import pyfuse3


def file_key(table: str, sys_id: str) -> tuple[str, str, str]:
    """The key of the inode of attachment `sys_id` shown under `table`."""
    return ("file", table, sys_id)


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


class Inodes:
    def __init__(self) -> None:
        self._next = itertools.count(pyfuse3.ROOT_INODE + 1)
        self._by_ino: dict[int, Node] = {}
        self._by_key: dict[Hashable, int] = {}
        self.root = Node(pyfuse3.ROOT_INODE, Kind.ROOT, ("root",))
        self._by_ino[self.root.ino] = self.root
        self._by_key[self.root.key] = self.root.ino

    def get(self, ino: int) -> Node | None:
        return self._by_ino.get(ino)

    def by_key(self, key: Hashable) -> Node | None:
        ino = self._by_key.get(key)
        return None if ino is None else self._by_ino.get(ino)

    def ensure(self, key: Hashable, kind: Kind, **fields: Any) -> Node:
        """The node for `key`, created on first sight; `fields` refresh its data."""
        node = self.by_key(key)
        if node is None:
            ino = self._by_key.get(key) or next(self._next)
            node = Node(ino, kind, key, **fields)
            self._by_ino[ino] = node
            self._by_key[key] = ino
        else:
            for name, value in fields.items():
                setattr(node, name, value)
        return node

    def rekey(self, node: Node, key: Hashable, kind: Kind, data: Any) -> None:
        """The same inode now stands for something else (a staged file became an attachment,
        an attachment is being replaced); its number stays, the old key gets a new one."""
        if self._by_key.get(node.key) == node.ino:
            del self._by_key[node.key]
        stale = self._by_key.get(key)
        if stale is not None and stale != node.ino:
            self._by_ino.pop(stale, None)
        node.key, node.kind, node.data = key, kind, data
        self._by_key[key] = node.ino
        self._by_ino[node.ino] = node

    def looked_up(self, node: Node) -> None:
        """The kernel now holds one more reference (lookup, create, mkdir, readdirplus entry)."""
        node.nlookup += 1

    def forget(self, ino: int, count: int) -> None:
        """The kernel dropped `count` references. The node's data may go; its number stays
        reserved for its key, so a later lookup of the same sys_id gets the same inode."""
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
        if node.nlookup == 0 and node.ino != pyfuse3.ROOT_INODE:
            self._by_ino.pop(node.ino, None)

    def __len__(self) -> int:
        return len(self._by_ino)
