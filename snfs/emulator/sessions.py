"""Server sessions by `JSESSIONID` (kept by the emulator's state, used by its middleware)."""

from __future__ import annotations

import secrets
from typing import Any

import trio

SESSION_COOKIE = "JSESSIONID"
MAX_SESSIONS = 10000  # sessions kept; a client sending a forgotten cookie gets a new one


class Sessions:
    """Server sessions by `JSESSIONID`: a request without a known cookie opens a new one (as
    Basic auth without a cookie does, KB0552064); requests of one session run one at a time
    (KB0755706), queued in arrival order."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.locks: dict[str, trio.Semaphore] = {}
        self.created = 0

    def of(self, scope: Any) -> tuple[str, bool]:
        cookie = dict(scope.get("headers") or []).get(b"cookie", b"").decode("latin-1")
        for part in cookie.split(";"):
            name, _, value = part.strip().partition("=")
            if name == SESSION_COOKIE and value in self.locks:
                return value, False
        sid = secrets.token_hex(16).upper()
        self.locks[sid] = trio.Semaphore(self.concurrency)
        self.created += 1
        if len(self.locks) > MAX_SESSIONS:  # like session expiry: forget the oldest idle ones
            for old in [k for k, v in self.locks.items() if v.value == self.concurrency][:1000]:
                del self.locks[old]
        return sid, True

    def lock(self, sid: str) -> trio.Semaphore:
        return self.locks[sid]
