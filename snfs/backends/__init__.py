"""Backends: the systems whose attachments snfs shows (see snfs.backend)."""

from __future__ import annotations

import re

_SAFE = re.compile(r"^[A-Za-z0-9_-]+$")


def id_part(value: str) -> str:
    """A system id as a file-id component in `[A-Za-z0-9_-]` (the core uses file ids as cache
    file names): kept as is when it already is, else `x` + hex of its UTF-8 bytes."""
    if _SAFE.match(value) and not value.startswith("x"):
        return value
    return "x" + value.encode().hex()


def from_id_part(part: str) -> str:
    """Inverse of `id_part`; ValueError when `part` is not one."""
    if not _SAFE.match(part):
        raise ValueError(part)
    if part.startswith("x"):
        return bytes.fromhex(part[1:]).decode()
    return part
