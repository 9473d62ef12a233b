"""The spool: written bytes live here, on local disk, until the instance has stored them.

Layout under the spool directory (mode 0700, one per instance URL):
    <id>.data    the staged content (0600)
    <id>.json    the journal entry, present while an upload is owed: table, record, name, the
                 attachment it replaces, when it was queued, the last error

A journal entry is written (write, fsync, rename) before an upload starts and removed only
after the instance has stored the file and the replaced attachment is deleted. A daemon that
dies at any point leaves entries that the next mount of the same instance uploads again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from snfs.errors import ConfigError

log = logging.getLogger("snfs.spool")


@dataclass
class Entry:
    """What is owed to the instance for one staged file."""

    id: str
    table: str
    record: str
    name: str
    replaces: str | None = None  # sys_id of the attachment this content supersedes
    queued_at: float = field(default_factory=time.time)
    attempts: int = 0
    last_error: str = ""
    replaces_all: list[str] = field(default_factory=list)  # every attachment to delete once stored
    blocked: bool = False  # refused for good (size, extension, rights): kept, not retried


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) and make sure only the owner can enter it."""
    path.mkdir(parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != 0o700:
        os.chmod(path, 0o700)
    return path


def instance_dir(base: Path, instance_url: str) -> Path:
    """One spool per instance, so a remount of the same instance finds its owed uploads."""
    tag = hashlib.sha256(instance_url.rstrip("/").encode()).hexdigest()[:16]
    return private_dir(base / tag)


class SpoolBusy(ConfigError):
    """Another live mount owns this spool: two daemons retrying one journal would store
    every owed file twice."""


class Spool:
    def __init__(self, root: Path, *, exclusive: bool = True) -> None:
        self.root = private_dir(root)
        self._lock_fd: int | None = None
        if exclusive:
            self._lock()
        for tmp in self.root.glob("*.json.tmp"):
            tmp.unlink(missing_ok=True)  # a journal write cut short: its rename never happened

    def _lock(self) -> None:
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolBusy(
                f"another snfs mount of this instance is using the spool {self.root};"
                " give this one its own --spool-dir (or mount it -o ro)"
            ) from None
        self._lock_fd = fd  # held for the life of the process; the kernel drops it on exit

    def new_id(self) -> str:
        return secrets.token_hex(8)

    def data_path(self, sid: str) -> Path:
        return self.root / f"{sid}.data"

    def create_data(self, sid: str) -> int:
        """A fresh, empty staging file; returns an fd open for reading and writing."""
        return os.open(self.data_path(sid), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)

    def open_data(self, sid: str) -> int:
        return os.open(self.data_path(sid), os.O_RDWR)

    def journal(self, entry: Entry) -> None:
        """Durably record that `entry` is owed before anything is sent."""
        path = self.root / f"{entry.id}.json"
        tmp = path.with_suffix(".json.tmp")
        with open(tmp, "w") as f:
            json.dump(asdict(entry), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self._sync_dir()

    def settle(self, sid: str) -> None:
        """The upload is stored and the replaced attachment gone: forget the entry, keep no bytes."""
        (self.root / f"{sid}.json").unlink(missing_ok=True)
        self._sync_dir()

    def discard(self, sid: str) -> None:
        self.settle(sid)
        self.data_path(sid).unlink(missing_ok=True)

    def owed(self) -> list[Entry]:
        """Journal entries left by this or an earlier run, oldest first."""
        entries = []
        for path in self.root.glob("*.json"):
            try:
                entry = Entry(**json.loads(path.read_text()))
            except (ValueError, TypeError) as e:
                log.error("spool: unreadable journal entry %s kept aside: %s", path.name, e)
                path.rename(path.with_suffix(".bad"))
                continue
            if not self.data_path(entry.id).exists():
                log.error("spool: journal entry %s has no data file; dropped", path.name)
                path.unlink()
                continue
            entries.append(entry)
        return sorted(entries, key=lambda e: e.queued_at)

    def orphans(self, keep: set[str]) -> list[Path]:
        """Data files with no journal entry and no live owner (local scratch files of a past run)."""
        return [
            p
            for p in self.root.glob("*.data")
            if p.stem not in keep and not (self.root / f"{p.stem}.json").exists()
        ]

    def _sync_dir(self) -> None:
        fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
