"""Names that tools use for scratch files, which must never become attachments.

Uploading an attachment can fire business rules, notifications and audit entries on the
instance, so a temp file that appears and vanishes is a visible defect. Files with these names
live only in the local spool: a scratch file renamed to a real name is uploaded once, under
that name; lock and swap files stay local for good.
"""

from __future__ import annotations

import re

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
