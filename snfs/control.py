"""`/.snfs/`: files that show the mount's state and let a command wait for it.

- `status`: the mount's state as JSON (`snfs status`), rendered at most once a second.
- `sync`: reading it (from offset 0) sends now whatever is owed to the instance and waits
  until nothing is in flight; it then answers JSON `{"synced": bool, "pending_uploads": [...]}`
  listing what is still owed or blocked, with reasons (`snfs sync`). A read at a later offset
  gets the rest of the last answer. Its size is 0: it is served with direct I/O, like `status`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from snfs.inodes import Inodes, Kind, Node

DIR_NAME = ".snfs"

# What GLib (GNOME Files, `gio trash`) looks up at the top of a mount before it offers "Move to
# Trash": `.Trash-<uid>` must be a directory of that user, or (when missing) the top must be
# writable, for `access::can-trash` to be TRUE. The instance has no trash, so the mount
# answers that name with a small read-only file that says so: can-trash is then FALSE and the
# file manager offers to delete permanently instead of failing half way.
TRASH_NAME = re.compile(r"\.Trash-\d+")
TRASH_NOTE = (
    b"snfs keeps no trash: a file deleted here is deleted on the instance at once.\n"
    b"This file tells file managers so (they then offer a permanent delete).\n"
)

Action = Callable[[], Awaitable[dict[str, Any]]]


def _json(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, default=str) + "\n").encode()


class Control:
    def __init__(
        self,
        inodes: Inodes,
        status: Callable[[], dict[str, Any]],
        *,
        sync: Action | None = None,
    ) -> None:
        self.inodes = inodes
        self._renderers: dict[str, Callable[[], bytes]] = {"status": lambda: _json(status())}
        # Files whose answer is computed by waiting for something (at offset 0 of a read).
        self._actions: dict[str, Action] = {"sync": sync} if sync is not None else {}
        self._answers: dict[str, bytes] = {}
        self._unlisted: dict[str, Callable[[], bytes]] = {"trash": lambda: TRASH_NOTE}
        self._cached: dict[str, tuple[float, bytes]] = {}
        self.root = inodes.ensure(("control",), Kind.CONTROL, data=None)

    def _names(self) -> list[str]:
        return [*self._renderers, *self._actions]

    def child(self, name: str) -> Node | None:
        if name not in self._names():
            return None
        return self.inodes.ensure(("control", name), Kind.CONTROL, data=name)

    def trash_marker(self) -> Node:
        """The node shown for `/.Trash-<uid>` (see TRASH_NAME); never listed."""
        return self.inodes.ensure(("control", "trash"), Kind.CONTROL, data="trash")

    def entries(self) -> list[tuple[str, Node]]:
        return [(name, self.child(name)) for name in self._names()]  # type: ignore[misc]

    def content(self, node: Node) -> bytes:
        """Rendered at most once a second, so size (getattr) and content (read) agree."""
        name = node.data
        if name in self._actions:
            return b""  # computed by `read`
        if name in self._unlisted:
            return self._unlisted[name]()
        at, data = self._cached.get(name, (0.0, b""))
        if time.monotonic() - at > 1.0:
            data = self._renderers[name]()
            self._cached[name] = (time.monotonic(), data)
        return data

    async def read(self, node: Node, off: int, size: int) -> bytes:
        name = node.data
        action = self._actions.get(name)
        if action is None:
            return self.content(node)[off : off + size]
        if off == 0:
            self._answers[name] = _json(await action())
        return self._answers.get(name, b"")[off : off + size]

    def size_and_mtime(self, node: Node) -> tuple[int, datetime]:
        return len(self.content(node)), datetime.now(UTC)

    def is_dir(self, node: Node) -> bool:
        return node.data is None
