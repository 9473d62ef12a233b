"""Logging: one line per event to stderr (journald-friendly) or a file; never a secret."""

from __future__ import annotations

import io
import logging
import os
import sys
from pathlib import Path

FORMAT_TTY = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
FORMAT_PLAIN = "%(levelname)s %(name)s: %(message)s"  # journald adds its own timestamps


def level_for(verbose: int) -> int:
    return logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG


def prepare_log_file(path: Path) -> None:
    """Make sure `path` can be logged to, privately: a missing directory is created 0700 (an
    existing one keeps its mode: it may be /var/log or a shared sticky directory), a missing
    file is created 0600 (log lines name tables, records and files)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600))


class PrivateFileHandler(logging.FileHandler):
    """A FileHandler whose file, when it creates it, is 0600 whatever the umask."""

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(
            self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
        )
        return open(fd, "a", encoding=self.encoding, errors=self.errors)


def setup_logging(verbose: int, log_file: Path | None = None) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    if log_file is not None:
        prepare_log_file(log_file)
        handler: logging.Handler = PrivateFileHandler(log_file)
        handler.setFormatter(logging.Formatter(FORMAT_TTY))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT_TTY if sys.stderr.isatty() else FORMAT_PLAIN))
    root.addHandler(handler)
    # Info-level by default for snfs itself: mount/unmount/upload lines are events worth keeping.
    root.setLevel(level_for(verbose))
    logging.getLogger("snfs").setLevel(min(logging.INFO, level_for(verbose)))
    # httpx/httpcore log every request at INFO/DEBUG: only at -vv.
    for noisy in ("httpx", "httpcore", "hpack", "hypercorn"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose >= 3 else logging.WARNING)
