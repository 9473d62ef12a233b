"""How attachment file names become POSIX names in a record directory, and back.

Two problems, two rules (documented in docs/SEMANTICS.md, "Names"):

1. An instance allows file names no POSIX directory entry can hold: containing `/` or NUL,
   exactly `.` or `..`, or longer than 255 bytes. Such characters are replaced by look-alikes
   (`/` -> U+FF0F `／`, NUL -> U+2400 `␀`, a whole name `.`/`..` -> U+FF0E `．`), and a literal
   look-alike (or the escape mark itself) in an instance name is prefixed with the escape mark
   U+201B `‛`. This is rclone's scheme: the mapping is one-to-one, so `decode(encode(n)) == n`.
   Names that need none of this are shown unchanged. A name over 255 bytes is cut and given a
   suffix from its sys_id; that one is reversible through the directory, not by itself.
2. Several attachments of one record may share a file name. The newest keeps the plain name;
   each older one is shown as `stem~<sys_id prefix>.ext`, with the shortest sys_id prefix (at
   least 8 hex digits) that makes the name unique in the directory.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

NAME_MAX = 255
ESCAPE = "\u201b"
SLASH = "\uff0f"
NUL = "\u2400"
DOT = "\uff0e"
_ENCODE = {"/": SLASH, "\0": NUL}
_DECODE = {v: k for k, v in _ENCODE.items()}
_LOOKALIKES = frozenset((SLASH, NUL, DOT, ESCAPE))


def encode(name: str) -> str:
    """Instance file name -> POSIX-safe name (without the length rule)."""
    if name in (".", ".."):
        return DOT * len(name)
    if not any(c in _ENCODE or c in _LOOKALIKES for c in name):
        return name  # the common case costs one scan
    out = []
    for c in name:
        if c in _LOOKALIKES:
            out.append(ESCAPE + c)
        else:
            out.append(_ENCODE.get(c, c))
    return "".join(out)


def decode(shown: str) -> str:
    """POSIX name -> instance file name; the inverse of `encode`."""
    if shown and set(shown) == {DOT} and len(shown) <= 2:
        return "." * len(shown)
    if not any(c in _LOOKALIKES for c in shown):
        return shown
    out = []
    escaped = False
    for c in shown:
        if escaped:
            out.append(c)
            escaped = False
        elif c == ESCAPE:
            escaped = True
        else:
            out.append(_DECODE.get(c, c))
    if escaped:  # a trailing lone escape mark stands for itself
        out.append(ESCAPE)
    return "".join(out)


def split_ext(name: str) -> tuple[str, str]:
    """`a.tar.gz` -> (`a.tar`, `.gz`); a leading dot is part of the stem (`.bashrc`)."""
    dot = name.rfind(".")
    if dot <= 0:
        return name, ""
    return name[:dot], name[dot:]


def _fit(stem: str, suffix: str) -> str:
    """Cut `stem` (on a character boundary) so that stem+suffix fits in NAME_MAX bytes."""
    room = NAME_MAX - len(suffix.encode())
    raw = stem.encode()[: max(room, 0)]
    return raw.decode(errors="ignore") + suffix


def with_tag(name: str, tag: str) -> str:
    """`report.pdf`, `1a2b3c4d` -> `report~1a2b3c4d.pdf`, kept within NAME_MAX bytes."""
    stem, ext = split_ext(name)
    if len(ext.encode()) > 32:  # an absurd "extension" is part of the stem
        stem, ext = name, ""
    return _fit(stem, f"~{tag}{ext}")


@dataclass(frozen=True, slots=True)
class Named:
    """One attachment as the namer needs it."""

    sys_id: str
    file_name: str
    created_on: datetime


def assign_names(items: Iterable[Named], reserved: Iterable[str] = ()) -> dict[str, str]:
    """Give every attachment of one record a unique POSIX name; returns name -> sys_id.

    Deterministic for a given set of attachments: the newest (created_on, then sys_id) of each
    name keeps the plain name; names in `reserved` (local staged files) are never used.
    """
    by_shown: dict[str, list[Named]] = {}
    for item in items:
        shown = encode(item.file_name)
        if len(shown.encode()) > NAME_MAX:
            shown = with_tag(shown, item.sys_id[:8])
        by_shown.setdefault(shown, []).append(item)
    taken: set[str] = set(reserved)
    result: dict[str, str] = {}
    # Plain names first, so a tagged name never steals a plain one.
    ordered = {shown: _newest_first(group) for shown, group in by_shown.items()}
    for shown, group in ordered.items():
        if shown not in taken:
            result[shown] = group[0].sys_id
            taken.add(shown)
            ordered[shown] = group[1:]
    for shown, rest in ordered.items():
        for item in rest:
            name = _unique_tagged(shown, item.sys_id, taken)
            result[name] = item.sys_id
            taken.add(name)
    return result


def _newest_first(group: Sequence[Named]) -> list[Named]:
    return sorted(group, key=lambda n: (n.created_on, n.sys_id), reverse=True)


def _unique_tagged(shown: str, sys_id: str, taken: set[str]) -> str:
    for width in range(8, len(sys_id) + 1):
        name = with_tag(shown, sys_id[:width])
        if name not in taken:
            return name
    return with_tag(shown, sys_id)  # unreachable for distinct sys_ids; keeps the type simple


def valid_new_name(name: str) -> bool:
    """Can a name the kernel handed us be created as an attachment's file name?"""
    return bool(name) and name not in (".", "..") and len(name.encode()) <= NAME_MAX
