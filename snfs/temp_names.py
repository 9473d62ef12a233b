"""Names that tools use for scratch files, and the desktop metadata that never leaves.

Uploading an attachment can fire business rules, notifications and audit entries on the
instance, so a temp file that appears and vanishes is a visible defect. But a scratch-looking
name is no reason to lose a file (`data.tmp`, `notes.txt~` may be real): a closed file with
such a name is held for a short grace period (`snfs.writes.HOLD_SECONDS`; editors and rsync
rename their temp files within it) and uploaded if it still has that name then. Only desktop
metadata (`LOCAL_ONLY`, extendable by `--local-only`) stays local for good, and is shown as
local only (docs/WRITES.md, "Held and local-only names").
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from fnmatch import fnmatchcase

# Files desktops write into every folder they open: Finder, Dolphin, Windows Explorer, macOS
# AppleDouble. Never uploaded (each could fire business rules), kept in the spool, shown.
LOCAL_ONLY: tuple[str, ...] = (".DS_Store", ".directory", "Thumbs.db", "desktop.ini", "._*")

# Each pattern: (tool, regex on the whole name).
PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (tool, re.compile(rx))
    for tool, rx in (
        ("rsync", r"^\..+\.[A-Za-z0-9]{6}$"),  # .name.XXXXXX
        # .name.swp, then .swo ... .swa when taken; .swx is the probe vim writes to test the
        # file system before its swap file (ex mode, `vim -es`, default settings).
        ("vim swap", r"^\..*\.sw[a-px]$"),
        ("vim probe", r"^4913$"),  # vim's can-I-create-here probe
        ("backup", r".+~$"),  # vim/emacs backup: name~
        ("emacs lock", r"^\.#.+$"),  # .#name
        ("emacs autosave", r"^#.+#$"),  # #name#
        ("gio", r"^\.goutputstream-[A-Za-z0-9]+$"),  # GNOME save
        ("libreoffice lock", r"^\.~lock\..+#$"),  # .~lock.name#
        ("libreoffice temp", r"^lu[A-Za-z0-9_]+\.tmp$"),  # luXXXX.tmp
        ("kate/kde", r"^.+\.[a-zA-Z0-9]{6}\.kate-swp$|^\..+\.kate-swp$"),
        ("fuse hidden", r"^\.fuse_hidden[0-9a-f]+$"),
        ("partial download", r".+\.(part|crdownload|partial)$"),
        ("generic temp", r".+\.(tmp|temp)$|^~\$.+"),  # x.tmp, MS Office ~$name
    )
)


def temp_kind(name: str) -> str | None:
    """The tool whose scratch-name pattern `name` matches, or None for a real file name."""
    for tool, rx in PATTERNS:
        if rx.match(name):
            return tool
    return None


def is_temp(name: str) -> bool:
    return temp_kind(name) is not None


def local_only(name: str, extra: Iterable[str] = ()) -> bool:
    """Desktop metadata (`LOCAL_ONLY`, or one of the `--local-only` patterns `extra`)."""
    return any(fnmatchcase(name, pattern) for pattern in (*LOCAL_ONLY, *extra))
