"""How attachment file names become POSIX names in a record directory, and back.

Two problems, two rules (documented in docs/SEMANTICS.md, "Names"):

1. An instance allows file names no POSIX directory entry can hold: containing `/` or NUL,
   exactly `.` or `..`, or longer than 255 bytes. Such characters are replaced by look-alikes
   (`/` -> U+FF0F `／`, NUL -> U+2400 `␀`, a whole name `.`/`..` -> U+FF0E `．`), and a literal
   look-alike (or the escape mark itself) in an instance name is prefixed with the escape mark
   U+201B `‛`. This is rclone's scheme: the mapping is one-to-one, so `decode(encode(n)) == n`.
   Names that need none of this are shown unchanged. An empty name is shown as a lone `‛`; a
   lone surrogate (valid JSON, not UTF-8) as `‛` and a private-use character, so every name
   that reaches a directory is non-empty and encodable. A name over 255 bytes is cut and given
   a suffix from its sys_id; that one is reversible through the directory, not by itself.
2. Several attachments of one record may share a file name. The newest keeps the plain name;
   each older one is shown as `stem~<sys_id prefix>.ext`, with the shortest sys_id prefix (at
   least 8 hex digits) that makes the name unique in the directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterable, Sequence
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


# A lone surrogate (U+D800..U+DFFF: JSON allows "\ud800", UTF-8 cannot hold it) is shown as
# the escape mark and a character of Supplementary Private Use Area-A at the same offset.
SURROGATES = range(0xD800, 0xE000)
SURROGATE_SHOWN = 0xF0000


# A character to escape: one POSIX names cannot hold, one of the marks, or a lone surrogate.
# One C scan of the whole name (a walk encodes every name it shows).
_NEEDS_ESCAPE = re.compile(
    "[" + re.escape("".join(sorted(set(_ENCODE) | _LOOKALIKES))) + "\ud800-\udfff]"
)


def encode(name: str) -> str:
    """Instance file name -> POSIX-safe name (without the length rule): never empty, and always
    encodable as UTF-8, whatever the instance holds."""
    if name in (".", ".."):
        return DOT * len(name)
    if not name:
        return ESCAPE  # an empty file name: a lone escape mark, which no other name becomes
    if _NEEDS_ESCAPE.search(name) is None:
        return name  # the common case costs one scan
    out = []
    for c in name:
        if c in _LOOKALIKES:
            out.append(ESCAPE + c)
        elif ord(c) in SURROGATES:
            out.append(ESCAPE + chr(SURROGATE_SHOWN + ord(c) - SURROGATES.start))
        else:
            out.append(_ENCODE.get(c, c))
    return "".join(out)


def decode(shown: str) -> str:
    """POSIX name -> instance file name; the inverse of `encode`."""
    if shown and set(shown) == {DOT} and len(shown) <= 2:
        return "." * len(shown)
    if shown == ESCAPE:
        return ""
    if not any(c in _LOOKALIKES for c in shown):
        return shown
    out = []
    escaped = False
    for c in shown:
        if escaped:
            offset = ord(c) - SURROGATE_SHOWN
            out.append(chr(SURROGATES.start + offset) if 0 <= offset < len(SURROGATES) else c)
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


def assign_names(
    items: Iterable[Named], reserved: Iterable[str] = (), last: Collection[str] = ()
) -> dict[str, str]:
    """Give every attachment of one record a unique POSIX name; returns name -> sys_id.

    Deterministic for a given set of attachments: the newest (created_on, then sys_id) of each
    name keeps the plain name; names in `reserved` (local staged files) are never used; an
    attachment in `last` (not shown: being replaced) keeps it only if no other has that name.
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
    ordered = {shown: _newest_first(group, last) for shown, group in by_shown.items()}
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


def _newest_first(group: Sequence[Named], last: Collection[str] = ()) -> list[Named]:
    return sorted(group, key=lambda n: (n.sys_id not in last, n.created_on, n.sys_id), reverse=True)


def _unique_tagged(shown: str, sys_id: str, taken: set[str]) -> str:
    for width in range(8, len(sys_id) + 1):
        name = with_tag(shown, sys_id[:width])
        if name not in taken:
            return name
    return with_tag(shown, sys_id)  # unreachable for distinct sys_ids; keeps the type simple


def valid_new_name(name: str) -> bool:
    """Can a name the kernel handed us be created as an attachment's file name? Not an empty
    or non-UTF-8 one (the kernel's bytes arrive with surrogate escapes; an instance name is
    text), and none that stands for an empty or non-text instance name."""
    if not name or name in (".", "..") or len(os.fsencode(name)) > NAME_MAX:
        return False
    real = decode(name)
    return bool(real) and not any(ord(c) in SURROGATES for c in name + real)
