"""`/.snfs/`: read-only files that show the mount's state (`status` as JSON)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from snfs.inodes import Inodes, Kind, Node

DIR_NAME = ".snfs"


class Control:
    def __init__(self, inodes: Inodes, status: Callable[[], dict[str, Any]]) -> None:
        self.inodes = inodes
        self._renderers: dict[str, Callable[[], bytes]] = {
            "status": lambda: (json.dumps(status(), indent=2, default=str) + "\n").encode(),
        }
        self._cached: dict[str, tuple[float, bytes]] = {}
        self.root = inodes.ensure(("control",), Kind.CONTROL, data=None)

    def child(self, name: str) -> Node | None:
        if name not in self._renderers:
            return None
        return self.inodes.ensure(("control", name), Kind.CONTROL, data=name)

    def entries(self) -> list[tuple[str, Node]]:
        return [(name, self.child(name)) for name in self._renderers]  # type: ignore[misc]

    def content(self, node: Node) -> bytes:
        """Rendered at most once a second, so size (getattr) and content (read) agree."""
        name = node.data
        at, data = self._cached.get(name, (0.0, b""))
        if time.monotonic() - at > 1.0:
            data = self._renderers[name]()
            self._cached[name] = (time.monotonic(), data)
        return data

    def size_and_mtime(self, node: Node) -> tuple[int, datetime]:
        return len(self.content(node)), datetime.now(UTC)

    def is_dir(self, node: Node) -> bool:
        return node.data is None
