"""Logging: one line per event to stderr (journald-friendly) or a file; never a secret."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

FORMAT_TTY = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
FORMAT_PLAIN = "%(levelname)s %(name)s: %(message)s"  # journald adds its own timestamps


def level_for(verbose: int) -> int:
    return logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG


def setup_logging(verbose: int, log_file: Path | None = None) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(log_file)
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
