"""Logging: one line per event to stderr (journald-friendly) or a file; never a secret."""

from __future__ import annotations

import errno
import io
import logging
import os
import stat
import sys
from pathlib import Path

from snfs.errors import ConfigError

FORMAT_TTY = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
FORMAT_PLAIN = "%(levelname)s %(name)s: %(message)s"  # journald adds its own timestamps


def level_for(verbose: int) -> int:
    return logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG


class LogFileError(ConfigError):
    """A log file that cannot be made private (a symlink, another user's file)."""


def _open_private(path: Path) -> int:
    """A descriptor to append to `path`, which is then 0600: created so when missing; an
    existing file is taken only if it is a regular file of this user (never through a
    symlink: O_NOFOLLOW), and made private (log lines name tables, records and files)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise LogFileError(f"log file {path} is a symlink; give the real path") from None
        raise LogFileError(f"log file {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise LogFileError(f"log file {path} is not a regular file")
        if st.st_uid != os.geteuid():
            raise LogFileError(f"log file {path} belongs to another user (uid {st.st_uid})")
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def prepare_log_file(path: Path) -> None:
    """Make sure `path` can be logged to, privately: a missing directory is created 0700 (an
    existing one keeps its mode: it may be /var/log or a shared sticky directory), and the file
    is 0600 (see `_open_private`)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(_open_private(path))


def open_log_file(path: Path) -> io.BufferedWriter:
    """The log file, private, for a child's stderr."""
    return open(_open_private(path), "ab")


class PrivateFileHandler(logging.FileHandler):
    """A FileHandler whose file is private (0600) and never opened through a symlink."""

    def _open(self) -> io.TextIOWrapper:
        fd = _open_private(Path(self.baseFilename))
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
