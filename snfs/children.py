"""How snfs starts itself as a child process: `snfs mount --daemon`, `mount.snfs`, `snfs demo`
and the emulator's launcher all build the command line here."""

from __future__ import annotations

import sys


def snfs_command(*args: str) -> list[str]:
    """`snfs ARGS` as a child process of this Python: `python -P -m snfs`. `-P` keeps the
    current directory off `sys.path`, so a folder named `snfs` there (a clone's parent, a home
    directory) is never imported instead of the installed package."""
    return [sys.executable, "-P", "-m", "snfs", *args]
