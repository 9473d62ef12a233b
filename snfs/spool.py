"""The spool: written bytes live here, on local disk, until the instance has stored them.

Layout under the spool directory (mode 0700, one per instance URL and user):
    <id>.data    the staged content (0600)
    <id>.json    the journal entry, present while something is owed: table, record, name, the
                 attachments it replaces, when the last upload attempt started, the sys_id it
                 was stored as, the last error

A journal entry is written (write, fsync, rename, fsync of the directory) before an upload is
sent and removed only after the instance has stored the file and the replaced attachments are
deleted. A daemon that dies at any point leaves entries that the next mount of the same
instance, as the same user, finishes. The fsyncs run in a worker thread: a slow disk must not
stall the FUSE loop (docs/WRITES.md).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import secrets
import stat
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import trio

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
    # Wall-clock time an upload attempt was last sent (None: never sent). An attempt whose
    # outcome is unknown (killed, cancelled, unreadable answer) may have been stored: the next
    # attempt looks for it first (docs/WRITES.md, "In doubt").
    attempt_started: float | None = None
    # Attachments of this record with this name known before that attempt: never "ours".
    known: list[str] = field(default_factory=list)
    # The sys_id the content was stored as; set once the instance confirmed it. Only then are
    # the replaced attachments deleted.
    stored: str | None = None
    size: int = 0
    # What the file is, as recovery must treat it (docs/WRITES.md, "The journal is the state"):
    # "open" (open for writing, or damaged: its bytes are no close's, never sent), "owed"
    # (send it), "blocked" (refused: kept, never sent by itself), "local" (desktop metadata:
    # kept, never sent). Empty in entries of older versions: `blocked` decides.
    state: str = ""
    # Earlier attempts in doubt whose bytes were then changed: [started, sha256, size] each.
    # The attachment one of them may have stored is looked for and deleted once the current
    # bytes are stored, so a lost answer never leaves a second copy (issue 18, row 6).
    doubts: list[list] = field(default_factory=list)
    # Scratch names (snfs.temp_names): not sent before this wall-clock time (the grace).
    hold_until: float = 0.0

    def kind(self) -> str:
        return self.state or ("blocked" if self.blocked else "owed")


def _entry_from(data: dict) -> Entry:
    names = {f.name for f in fields(Entry)}
    return Entry(**{k: v for k, v in data.items() if k in names})


class UnsafeDirectory(ConfigError):
    """A cache, spool or log directory that another user could read or swap."""


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) and make sure it is ours alone: a real directory (not a
    symlink), owned by this user, mode 0700. An existing directory owned by someone else, or a
    symlink, is refused rather than adopted: files written into it could be read or replaced."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UnsafeDirectory(f"{path} is a symlink or not a directory; refusing to use it")
    if st.st_uid != os.geteuid():
        raise UnsafeDirectory(
            f"{path} belongs to uid {st.st_uid}, not to this user ({os.geteuid()}); refusing to"
            " use it (give a directory of your own)"
        )
    if st.st_mode & 0o777 != 0o700:
        os.chmod(path, 0o700, follow_symlinks=False)
    return path


def instance_dir(base: Path, instance_url: str, user: str = "") -> Path:
    """One spool per instance and user, so a remount of the same instance by the same user finds
    its owed uploads, and never another user's (they would be sent with the wrong rights)."""
    return private_dir(base / _tag(instance_url, user))


def _tag(instance_url: str, user: str) -> str:
    key = instance_url.rstrip("/") + (f"\0{user}" if user else "")
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def shared_token_spool(base: Path, instance_url: str) -> Path | None:
    """The spool that every bearer-token mount of this instance shared before the key named the
    token (`snfs.credentials.spool_identity`), if it still holds owed uploads. No mount sends
    them any more (they may be another token's): the mount says so once (docs/RUNNING.md)."""
    old = base / _tag(instance_url, "token")
    try:
        return old if any(old.glob("*.json")) else None
    except OSError:
        return None


class SpoolBusy(ConfigError):
    """Another live mount owns this spool: two daemons retrying one journal would store
    every owed file twice."""


class Spool:
    def __init__(self, root: Path, *, exclusive: bool = True) -> None:
        self.root = private_dir(root)
        self._lock_fd: int | None = None
        if exclusive:
            self._lock()
            self._sweep()

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

    def _sweep(self) -> None:
        """Before this run stages anything: drop what an earlier run left that nothing owes,
        journal writes cut short, and the bytes of scratch files and abandoned opens."""
        for tmp in self.root.glob("*.json.tmp"):
            tmp.unlink(missing_ok=True)  # a journal write cut short: its rename never happened
        gone = self.orphans(set())
        for path in gone:
            path.unlink(missing_ok=True)
        if gone:
            log.info("spool: removed %d leftover file(s) that nothing owed", len(gone))

    def new_id(self) -> str:
        return secrets.token_hex(8)

    def data_path(self, sid: str) -> Path:
        return self.root / f"{sid}.data"

    def create_data(self, sid: str) -> int:
        """A fresh, empty staging file; returns an fd open for reading and writing."""
        return os.open(
            self.data_path(sid), os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600
        )

    def open_data(self, sid: str) -> int:
        return os.open(self.data_path(sid), os.O_RDWR | os.O_CLOEXEC)

    async def journal(self, entry: Entry, *, data_fd: int | None = None) -> None:
        """Durably record that `entry` is owed before anything is sent. With `data_fd` the
        staged bytes are made durable first (write-back: `close` returns on this alone)."""
        await trio.to_thread.run_sync(self.journal_sync, entry, data_fd)

    def journal_sync(self, entry: Entry, data_fd: int | None = None, fsync: bool = True) -> None:
        if data_fd is not None:
            self._fsync(data_fd)
        path = self.root / f"{entry.id}.json"
        tmp = path.with_suffix(".json.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with open(fd, "w") as f:
            json.dump(asdict(entry), f)
            f.flush()
            if fsync:
                self._fsync(f.fileno())
        os.replace(tmp, path)
        if fsync:
            self._sync_dir()

    async def note(self, entry: Entry) -> None:
        """Record `entry` without fsyncs: for an entry that promises nothing (a file open for
        writing, desktop metadata), whose loss in a power cut loses no closed file."""
        await trio.to_thread.run_sync(self.journal_sync, entry, None, False)

    async def settle(self, sid: str) -> None:
        """Nothing is owed any more: forget the entry (the bytes stay while the file is open)."""
        await trio.to_thread.run_sync(self._settle_sync, sid)

    def _settle_sync(self, sid: str) -> None:
        path = self.root / f"{sid}.json"
        if path.exists():
            path.unlink(missing_ok=True)
            self._sync_dir()

    async def discard(self, sid: str) -> None:
        """Forget the entry and the bytes."""
        await self.settle(sid)
        self.data_path(sid).unlink(missing_ok=True)

    def owed(self) -> list[Entry]:
        """Journal entries left by this or an earlier run, oldest first."""
        entries = []
        for path in self.root.glob("*.json"):
            try:
                entry = _entry_from(json.loads(path.read_text()))
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
        """Data files with no journal entry and no live owner (scratch files of a past run)."""
        return [
            p
            for p in self.root.glob("*.data")
            if p.stem not in keep and not (self.root / f"{p.stem}.json").exists()
        ]

    def _fsync(self, fd: int) -> None:
        os.fsync(fd)

    def _sync_dir(self) -> None:
        fd = os.open(self.root, os.O_RDONLY)
        try:
            self._fsync(fd)
        finally:
            os.close(fd)
