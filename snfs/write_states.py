"""The states of a staged file, and the only moves between them (docs/WRITES.md).

A staged file is a file whose current content lives in the spool: created through the mount,
opened for writing, truncated, or moved to another record. `Staged.move` is the one place its
state changes, and it refuses a move the table does not allow, so a new code path cannot
quietly upload a dropped file or delete what an unstored file replaces.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum

from snfs.backend import RemoteFile as Attachment

log = logging.getLogger("snfs.writes")


class State(Enum):
    WRITING = "writing"  # changed locally since the last upload; not handed over yet
    OWED = "owed"  # journaled: an upload, or deletes of what it replaces, are owed
    UPLOADING = "uploading"  # a request for it is in flight (look-up, upload, deletes)
    STORED = "stored"  # the instance has this content; nothing owed
    BLOCKED = "blocked"  # refused for good, or damaged locally: kept, never sent by itself
    LOCAL = "local"  # desktop metadata: stays in the spool, never uploaded
    DROPPED = "dropped"  # unlinked or overwritten: never uploaded; bytes go with the last handle


_W, _O, _U, _S, _B, _L, _D = State  # short names for the table below

# state -> states it may move to. Everything else is a bug and raises.
TRANSITIONS: dict[State, frozenset[State]] = {
    _W: frozenset({_O, _U, _S, _B, _L, _D}),  # S: a damaged replace-open, given up at close
    _O: frozenset({_W, _U, _B, _L, _D}),
    _U: frozenset({_S, _O, _B}),  # never D: unlink and rename wait for the upload (the lock)
    _S: frozenset({_W, _O, _U, _L, _D}),  # U: renamed or moved, so stored again
    _B: frozenset({_W, _O, _U, _S, _L, _D}),  # S: a damaged replace-open, given up at close
    # renamed to a real name; B: one that was open when the mount died stays blocked
    _L: frozenset({_W, _O, _U, _S, _B, _D}),
    _D: frozenset(),
}


class BadTransition(RuntimeError):
    pass


@dataclass(eq=False)
class Staged:
    """A file whose current content lives in the spool. Changed only under its file's lock."""

    sid: str
    table: str
    record: str
    name: str  # POSIX name shown in the record directory
    fd: int
    state: State = State.WRITING
    replaces: list[str] = field(default_factory=list)  # attachments to delete once stored
    dirty: bool = True  # the content is not on the instance (under `name`)
    wrote: bool = False  # write/truncate calls since the last upload attempt
    opens: int = 0  # open writable handles
    mtime: datetime = field(default_factory=lambda: datetime.now(UTC))
    uploaded: Attachment | None = None  # the attachment holding this content, once stored
    # What the file's journal entry says now (spool.Entry.kind): "" (no entry), "open",
    # "damaged", "owed", "blocked", "local". Every move recovery needs is written there before
    # its effects (docs/WRITES.md, "The journal is the state").
    jkind: str = ""
    accepted: bool = False  # a close (or fsync) handed over bytes the instance has not stored
    blocked: str = ""  # why the file is BLOCKED
    damaged: bool = False  # a local write failed: the content is not what was written
    last_error: str = ""
    local_only: str = ""  # desktop metadata (snfs.temp_names): why it is never sent
    hold_until: float = 0.0  # wall clock: a scratch name is not sent before (the grace)
    doubts: list[list] = field(default_factory=list)  # see spool.Entry
    alerted: str = ""  # the reason last shown in a desktop notification (once per reason)
    attempts: int = 0
    next_try: float = 0.0  # trio clock
    attempt_started: float | None = None  # wall clock; see spool.Entry
    known: list[str] = field(default_factory=list)  # see spool.Entry
    pinned: bool = True  # keep the inode while staged (snfs.inodes)
    origin: Attachment | None = None  # opened for writing from this attachment
    last_size: int = 0

    def move(self, to: State, why: str = "") -> None:
        if to is self.state:
            return
        if to not in TRANSITIONS[self.state]:
            raise BadTransition(f"{self.name}: {self.state.value} -> {to.value} ({why})")
        log.debug(
            "%s/%s/%s: %s -> %s %s",
            self.table,
            self.record,
            self.name,
            self.state.value,
            to.value,
            why,
        )
        self.state = to

    @property
    def dropped(self) -> bool:
        return self.state is State.DROPPED

    @property
    def owed(self) -> bool:
        """Something is still to be done on the instance for this file."""
        return self.state in (State.OWED, State.UPLOADING) or (
            self.state is State.WRITING and self.accepted
        )

    @property
    def journaled(self) -> bool:
        return bool(self.jkind)

    def size(self) -> int:
        if self.fd >= 0:
            self.last_size = os.fstat(self.fd).st_size
        return self.last_size

    def close(self) -> None:
        if self.fd >= 0:
            self.size()
            os.close(self.fd)
            self.fd = -1
